"""A run that lost its lease, in one process: it writes and announces nothing more (DESIGN §4).

The run goes on in its event loop while a sweeper ends its task, as a frozen worker's would when
it resumes; another Coordinator plays the worker that takes a retry over. tests/e2e/
test_zombie_worker.py does the same with real processes and SIGSTOP.
"""

from __future__ import annotations

import logging

import pytest
from django.utils import timezone

from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from streamapp.runner.coordinator import Coordinator
from tests.runnerapp.models import RetryTask
from tests.support.helpers import (
    events_of,
    receive_until,
    receive_until_closed,
    started_step_task,
    step,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def lease_runs_out(task) -> None:
    """As if its worker had stopped renewing: the lease is past, and a sweeper ends it."""
    await type(task).objects.filter(pk=task.pk).aupdate(
        lease_expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    # The coordinator's own sweeper may be first (its first pass runs as the task starts).
    await coordinator.sweep()
    assert not await type(task).objects.filter(pk=task.pk, status="running").aexists()


async def subscribed(communicator_for, task, status):
    ws = await communicator_for("/ws/tasks/")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key, "since": 0})
    await receive_until(ws, lambda f: f.get("status") == status)
    return ws


async def test_a_swept_run_writes_nothing_after_the_final_state(communicator_for, caplog):
    caplog.set_level(logging.WARNING, logger="streamapp")
    task, one = await started_step_task(communicator_for)
    many = await subscribed(communicator_for, task, "running")
    await step(task, 2)
    await receive_until(many, lambda f: f.get("seq") == 2)

    await lease_runs_out(task)
    frames, code = await receive_until_closed(one)
    assert [f["seq"] for f in events_of(frames)] == [1, 2] and code == 1000
    final = frames[-1]
    assert (final["status"], final["error"]["type"], final["seq"]) == ("failed", "WorkerLost", 2)
    assert (await receive_until(many, lambda f: f["type"] == "state"))[-1] == final

    await step(task)  # the run, still going here, sends event 3: refused, and it stops
    assert await coordinator.wait_task(task, timeout=5)
    assert "event log write refused, the lease is gone" in caplog.text
    await task.arefresh_from_db()
    assert (task.status, task.error["type"], task.last_seq) == ("failed", "WorkerLost", 2)
    assert await store.current_seq(task.task_key) == 2
    assert await many.receive_nothing(timeout=0.5)  # no event, no state after the final one


async def test_a_retry_continues_the_stream_and_the_old_run_writes_nothing(communicator_for):
    """max_attempts = 2: the sweeper makes the task pending, another worker runs it again. The
    old run, still going, is refused at its next append; the subscriber sees one gap-free
    sequence and the retry's outcome."""
    task = await RetryTask.objects.acreate(seconds=1.5)
    assert await coordinator.start_task(task)
    ws = await subscribed(communicator_for, task, "running")
    await receive_until(ws, lambda f: f.get("seq", 0) >= 3)

    await lease_runs_out(task)
    other = Coordinator()  # another worker
    try:
        assert await other.run_pending(task)
        assert await coordinator.wait_task(task, timeout=5)  # the old run stopped itself
        frames = await receive_until(
            ws, lambda f: f["type"] == "state" and f["status"] == "completed", timeout=10
        )
        assert await other.wait_task(task, timeout=5)
        assert await ws.receive_nothing(timeout=0.3)
    finally:
        await other.shutdown(timeout=0)  # (it closes this process's sockets, as a server's would)

    await task.arefresh_from_db()
    assert (task.status, task.attempts, task.final_value) == ("completed", 2, {"attempt": 2})
    seqs = [f["seq"] for f in events_of(frames)]
    assert seqs == list(range(seqs[0], task.last_seq + 1)) and seqs[0] <= 4
    attempts = [f["data"]["attempt"] for f in events_of(frames)]
    assert attempts == sorted(attempts) and attempts[-1] == 2  # the old run's stop before
    assert frames[-1]["seq"] == task.last_seq == await store.current_seq(task.task_key)
    assert [seq for seq, _ in await store.since(task.task_key, 0)] == list(
        range(1, task.last_seq + 1)
    )
