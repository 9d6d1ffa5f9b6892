"""The daphne hooks in this process: what Twisted's triggers call at start-up and shutdown.

The subprocess tests (test_scaling) show them working inside a real daphne; these show each
hook's job deterministically.
"""

from __future__ import annotations

import asyncio

import pytest

from demo.models import SlowTask
from streamapp.coordinator import coordinator
from streamapp.handover import open_sockets
from streamapp.runner import leases, server_hooks
from tests.support.helpers import receive_until_closed
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def taking_sockets_again(monkeypatch):
    """on_server_stop stops this process taking sockets; the next test's process takes them."""
    monkeypatch.setattr(open_sockets, "refusing", False)


def test_the_hooks_are_registered_on_the_installed_twisted_reactor():
    assert server_hooks.install_daphne_hooks() is True  # the daphne app installed the reactor


async def test_server_start_sweeps_at_once_with_no_task_started_here(communicator_for):
    task = await SlowTask.objects.acreate()
    assert await leases.claim(task, "dead-host:1:deadbeef", lease_seconds=-1)  # its worker died
    ws = await communicator_for(task)
    assert (await ws.receive_json_from(timeout=5))["status"] == "running"

    server_hooks.on_server_start()
    frames, _ = await receive_until_closed(ws)
    assert frames[-1]["status"] == "failed" and frames[-1]["error"]["type"] == "WorkerLost"


async def test_server_stop_shuts_the_coordinator_down_before_the_reactor_stops(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "SHUTDOWN_TIMEOUT": 0}
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    stopping = server_hooks.on_server_stop()  # Twisted waits for this Deferred
    await asyncio.wait_for(stopping.asFuture(asyncio.get_running_loop()), timeout=10)
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.error["type"] == "WorkerShutdown"


async def test_web_processes_that_run_no_tasks_have_nothing_to_start_or_stop(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    server_hooks.on_server_start()
    assert server_hooks.on_server_stop() is None
    assert coordinator.running_keys == []


async def test_once_the_server_stops_a_new_socket_is_refused_before_it_is_accepted(
    settings, communicator_for
):
    """daphne still listens while it waits for its consumers to end: a client that reconnects
    at once must not land here and be dropped at exit without a close frame."""
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    task = await StepTask.objects.acreate()
    before = await communicator_for(task)
    assert (await before.receive_json_from(timeout=5))["type"] == "state"
    server_hooks.on_server_stop()
    closed = await before.receive_output(timeout=5)
    assert (closed["type"], closed["code"]) == ("websocket.close", 1012)  # 4012 under daphne
    await communicator_for(task, expect_accept=False)  # refused: its client goes elsewhere
