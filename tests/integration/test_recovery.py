"""The runner when things go wrong: dead workers, lost leases, stubborn tasks, database errors."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from demo.models import SlowTask
from streamapp import broadcast
from streamapp.coordinator import coordinator
from streamapp.runner import coordinator as runner_coordinator  # the module
from streamapp.runner import leases
from tests.conftest import USING_POSTGRES
from tests.runnerapp.models import CleanupTask, QueryTask, RetryTask, StubbornTask
from tests.support.helpers import receive_until, receive_until_closed
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)


async def claimed_by_a_dead_worker(task):
    """``task`` as a worker that died leaves it: running, its lease already run out."""
    assert await leases.claim(task, "dead-host:1:deadbeef", lease_seconds=-1)
    return task


async def test_the_sweeper_fails_a_dead_workers_task_and_tells_subscribers(communicator_for):
    task = await claimed_by_a_dead_worker(await SlowTask.objects.acreate())
    ws = await communicator_for(task)
    assert (await ws.receive_json_from(timeout=5))["status"] == "running"

    assert await coordinator.sweep() == 1
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "failed" and frames[-1]["error"]["type"] == "WorkerLost"
    assert code == 1000
    await task.arefresh_from_db()
    assert task.status == "failed" and task.lease_owner == "" and task.completed_at is not None
    assert await coordinator.sweep() == 0  # the conditional UPDATE ends it once


async def test_the_sweeper_retries_when_attempts_remain_and_wakes_the_workers():
    task = await claimed_by_a_dead_worker(await RetryTask.objects.acreate(seconds=0))
    layer = get_channel_layer()
    waker = await layer.new_channel()
    await layer.group_add(broadcast.WORKERS_GROUP, waker)

    assert await coordinator.sweep() == 1
    await task.arefresh_from_db()
    assert task.status == "pending" and task.error["type"] == "WorkerLost"
    assert task.completed_at is None
    assert (await asyncio.wait_for(layer.receive(waker), timeout=5))["type"] == "workers.wake"
    assert await coordinator.run_pending(task)  # another worker takes it: the second attempt
    await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "completed" and task.final_value == {"attempt": 2}


async def test_a_run_that_loses_its_lease_stops_and_records_nothing(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "LEASE_SECONDS": 5.0, "HEARTBEAT_SECONDS": 0.05}
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    # Another process took the task over (its sweeper expired the lease, its worker claimed it).
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="thief:2:cafebabe")
    assert await coordinator.wait_task(task, timeout=5)  # the next heartbeat stops the run
    row = await StepTask.objects.aget(pk=task.pk)
    assert row.status == "running" and row.lease_owner == "thief:2:cafebabe"


async def test_heartbeats_keep_a_run_longer_than_its_lease_alive(settings):
    settings.STREAMAPP = {
        **settings.STREAMAPP, "LEASE_SECONDS": 0.4, "HEARTBEAT_SECONDS": 0.1,
        "SWEEP_SECONDS": 0.05,
    }
    task = await SlowTask.objects.acreate(seconds=1.2)  # three leases long, sweeps all along
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=10)
    await task.arefresh_from_db()
    assert task.status == "completed" and task.attempts == 1


async def test_cancel_reaches_process_which_can_clean_up(communicator_for):
    task = await CleanupTask.objects.acreate()
    ws = await communicator_for(task)  # starts it
    await receive_until(ws, lambda f: f.get("event") == "waiting")
    assert await coordinator.cancel_task(task)
    frames, _ = await receive_until_closed(ws)
    assert [f.get("event") or f["status"] for f in frames] == ["cleanup", "cancelled"]
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.error is None


async def test_shutdown_does_not_wait_forever_for_a_task_that_ignores_cancellation(monkeypatch):
    monkeypatch.setattr(runner_coordinator, "CANCEL_GRACE_SECONDS", 0.2)
    task = await StubbornTask.objects.acreate()
    assert await coordinator.start_task(task)
    await asyncio.wait_for(coordinator.shutdown(timeout=0), timeout=5)
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.error["type"] == "WorkerShutdown"
    assert task.lease_owner == ""
    await coordinator.cancel_task(task)  # a second cancellation does end it
    assert await coordinator.wait_task(task, timeout=5)


async def test_shutdown_sets_a_retryable_task_pending_again():
    task = await RetryTask.objects.acreate(seconds=30)
    assert await coordinator.start_task(task)
    await coordinator.shutdown(timeout=0)
    await task.arefresh_from_db()
    assert task.status == "pending" and task.error["type"] == "WorkerShutdown"
    assert task.lease_owner == "" and task.completed_at is None


async def test_default_timeout_setting_fails_a_task_with_timeout_error(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "DEFAULT_TIMEOUT": 0.2}
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "failed" and task.error["type"] == "TimeoutError"
    assert "timeout of 0.2 s" in task.error["message"]


# On PostgreSQL the task's query kills its own connection: the runner's next writes meet a dead
# connection, a real transient error, and must retry on a new one to record the failure.
BROKEN_QUERY = (
    "SELECT pg_terminate_backend(pg_backend_pid())" if USING_POSTGRES
    else "SELECT * FROM streamapp_no_such_table"
)


async def test_a_task_whose_own_query_fails_ends_failed_with_that_error(communicator_for):
    task = await QueryTask.objects.acreate(sql=BROKEN_QUERY)
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("event") == "querying")
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "failed" and code == 1000
    assert frames[-1]["error"]["type"] == "OperationalError"
    await task.arefresh_from_db()
    assert task.status == "failed" and task.error["type"] == "OperationalError"
    assert task.lease_owner == "" and coordinator.running_keys == []

    after = await StepTask.objects.acreate()  # the runner goes on with healthy connections
    assert await coordinator.start_task(after)
    await after.send_signal("step", "stop")
    assert await coordinator.wait_task(after, timeout=5)
