"""The lifespan app and the handover, in-process: what uvicorn and hypercorn drive at start-up
and shutdown (tests/e2e/test_servers.py shows them under the real servers)."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import ApplicationCommunicator

from streamapp.asgi import lifespan, servers
from streamapp.coordinator import coordinator
from streamapp.handover import open_sockets
from tests.support.helpers import receive_until
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lifespan_server():
    """This process as a lifespan server sees it; forgotten after the test."""
    yield ApplicationCommunicator(lifespan, {"type": "lifespan", "asgi": {"version": "3.0"}})
    servers.forget_lifespan_server()


async def test_startup_then_shutdown_closes_sockets_with_1012_and_ends_running_tasks(
    lifespan_server, communicator_for, settings
):
    settings.STREAMAPP = {**settings.STREAMAPP, "SHUTDOWN_TIMEOUT": 0}
    await lifespan_server.send_input({"type": "lifespan.startup"})
    assert await lifespan_server.receive_output(timeout=5) == {"type": "lifespan.startup.complete"}
    assert servers.served_with_lifespan()

    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    assert len(open_sockets) == 1

    await lifespan_server.send_input({"type": "lifespan.shutdown"})
    assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 1012}
    assert await lifespan_server.receive_output(timeout=15) == {
        "type": "lifespan.shutdown.complete"
    }
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.error["type"] == "WorkerShutdown"
    assert len(open_sockets) == 0


async def test_coordinator_shutdown_closes_both_endpoints_sockets(communicator_for):
    task = await StepTask.objects.acreate()
    one = await communicator_for(task)
    await receive_until(one, lambda f: f.get("status") == "running")
    many = await communicator_for("/ws/tasks/")
    await coordinator.shutdown(timeout=0)
    for ws in (one, many):
        assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 1012}


async def test_a_failed_startup_is_reported_to_the_server(lifespan_server, monkeypatch):
    async def broken():
        raise RuntimeError("no database")

    monkeypatch.setattr("streamapp.asgi.lifecycle.server_started", broken)
    await lifespan_server.send_input({"type": "lifespan.startup"})
    assert await lifespan_server.receive_output(timeout=5) == {
        "type": "lifespan.startup.failed", "message": "streamapp: no database"
    }


async def test_under_a_lifespan_server_frames_queue_in_front_of_a_send_that_waits(
    lifespan_server, application, settings
):
    """A client that does not read: the server's send waits, the queue holds the frames, the
    task and the hub go on; past SLOW_CLIENT_SECONDS the socket is closed with 4408."""
    settings.STREAMAPP = {**settings.STREAMAPP, "SEND_BUFFER_BYTES": 200,
                          "SLOW_CLIENT_SECONDS": 0.5}
    await lifespan_server.send_input({"type": "lifespan.startup"})
    await lifespan_server.receive_output(timeout=5)
    task = await StepTask.objects.acreate()
    stalled = asyncio.Event()
    closed, running = asyncio.Event(), asyncio.Event()
    sent: list[dict] = []
    inbox: asyncio.Queue = asyncio.Queue()

    async def server_send(message):
        if message["type"] == "websocket.send" and len(sent) >= 3:
            stalled.set()
            await asyncio.Event().wait()  # the client reads no more: backpressure for ever
        sent.append(message)
        if len(sent) == 3:
            running.set()  # accept, pending, running: the client reads no more after these
        if message["type"] == "websocket.close":
            closed.set()

    await inbox.put({"type": "websocket.connect"})
    scope = {"type": "websocket", "path": f"/ws/tasks/testapp/steptask/{task.pk}/",
             "query_string": b"", "headers": [], "subprotocols": [], "server": ("t", 1)}
    app = asyncio.create_task(application(scope, inbox.get, server_send))
    await asyncio.wait_for(running.wait(), timeout=5)
    for _ in range(20):
        await task.send_signal("step", "x" * 50)  # the task goes on regardless
    await asyncio.wait_for(closed.wait(), timeout=10)  # too slow: the close waits no more
    assert stalled.is_set()
    await inbox.put({"type": "websocket.disconnect", "code": 4408})
    await asyncio.wait_for(app, timeout=5)
    assert sent[0]["type"] == "websocket.accept" and len(sent) == 4
    assert sent[-1] == {"type": "websocket.close", "code": 4408}
    await coordinator.cancel_task(task)
