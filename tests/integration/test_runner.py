"""The coordinator: claims, outcomes, timeouts, restarts, and what it writes (DESIGN §2, §4)."""

from __future__ import annotations

import asyncio

import pytest

from demo.models import ExampleTask, FailingTask
from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from streamapp.exceptions import EventTooLarge
from streamapp.models import StreamTask
from tests.testapp.models import BurstTask, ErrorTask, GeneratorTask, StepTask, TimeoutTask

pytestmark = pytest.mark.django_db(transaction=True)


async def logged(task: StreamTask) -> list[dict]:
    import json

    return [json.loads(frame) for _, frame in await store.since(task.task_key, 0)]


async def test_start_task_returns_true_once_and_false_while_running_or_done():
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task) is True
    assert await coordinator.start_task(task) is False
    assert coordinator.is_task_running(task)
    await task.send_signal("step", "stop")
    assert await coordinator.wait_task(task, timeout=5)
    assert not coordinator.is_task_running(task)
    assert await coordinator.start_task(task) is False  # completed tasks do not run again


async def test_concurrent_start_task_runs_once():
    """Ten concurrent start_task calls on separately loaded instances: exactly one run."""
    task = await BurstTask.objects.acreate(count=3)
    copies = [await BurstTask.objects.aget(pk=task.pk) for _ in range(10)]
    results = await asyncio.gather(*(coordinator.start_task(c) for c in copies))
    assert results.count(True) == 1
    await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.attempts == 1
    assert [e["seq"] for e in await logged(task)] == [1, 2, 3]


@pytest.mark.parametrize("kind", ["ValueError", "MemoryError", "TimeoutError", "KeyError"])
async def test_process_raising_records_failed_with_the_error(kind):
    task = await ErrorTask.objects.acreate(kind=kind)
    assert await coordinator.start_task(task)
    await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "failed"
    assert task.error["type"] == kind
    assert task.completed_at is not None and task.lease_owner == ""
    assert coordinator.running_keys == []
    assert [e["event"] for e in await logged(task)] == ["before"]


async def test_a_failed_task_can_be_started_again_and_counts_attempts():
    task = await FailingTask.objects.acreate(fail_at=2)
    for attempt in (1, 2):
        assert await coordinator.start_task(task)
        await coordinator.wait_task(task, timeout=5)
        await task.arefresh_from_db()
        assert task.status == "failed" and task.attempts == attempt
    # seq keeps counting across runs: a client's `since` stays meaningful
    assert [e["seq"] for e in await logged(task)] == [1, 2]


async def test_timeout_fails_the_task_with_timeout_error():
    task = await TimeoutTask.objects.acreate()
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "failed"
    assert task.error["type"] == "TimeoutError"
    assert "timeout of 0.3 s" in task.error["message"]


async def test_cancel_task_cancels_a_running_task_and_process_sees_cancellation():
    task = await StepTask.objects.acreate()
    await coordinator.start_task(task)
    assert await coordinator.cancel_task(task) is True
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.completed_at is not None
    assert await coordinator.cancel_task(task) is False  # already ended


async def test_cancel_task_cancels_a_pending_task():
    task = await StepTask.objects.acreate()
    assert await coordinator.cancel_task(task) is True
    await task.arefresh_from_db()
    assert task.status == "cancelled"
    assert await coordinator.start_task(task)  # a cancelled task may run again
    await coordinator.cancel_task(task)


async def test_runner_writes_only_its_own_columns():
    """A user's change to a task's own fields while it runs survives the runner's writes."""
    task = await StepTask.objects.acreate(label="before")
    await coordinator.start_task(task)
    await StepTask.objects.filter(pk=task.pk).aupdate(label="changed by the user")
    await task.send_signal("step", "stop")
    await coordinator.wait_task(task, timeout=5)
    fresh = await StepTask.objects.aget(pk=task.pk)
    assert fresh.label == "changed by the user" and fresh.status == "completed"


@pytest.mark.parametrize("sync", [False, True])
async def test_generators_stream_each_item_as_progress(sync):
    task = await GeneratorTask.objects.acreate(count=4, sync=sync)
    await coordinator.start_task(task)
    await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    events = await logged(task)
    steps = [(e["event"], e["data"]["step"]) for e in events]
    assert steps == [("progress", i) for i in range(1, 5)]
    assert task.final_value == {"step": 4, "total": 4}


async def test_send_event_outside_a_run_logs_the_next_seq():
    task = await BurstTask.objects.acreate(count=2)
    await coordinator.start_task(task)
    await coordinator.wait_task(task)
    assert await task.send_event("note", {"by": "hand"}) == 3
    assert [e["event"] for e in await logged(task)] == ["tick", "tick", "note"]


async def test_oversized_event_raises_event_too_large_and_logs_nothing(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_EVENT_BYTES": 1000}
    task = await BurstTask.objects.acreate(count=1)
    with pytest.raises(EventTooLarge, match="limit is 1000"):
        await task.send_event("big", {"pad": "x" * 2000})
    assert await logged(task) == []


async def test_unserializable_final_value_fails_the_task(proxy_of):
    async def process(task):
        return object()

    task = await proxy_of(ExampleTask, process=process).objects.acreate(message="x")
    await coordinator.start_task(task)
    await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "failed" and task.error["type"] == "EventNotSerializable"


async def test_shutdown_cancels_running_tasks_and_leaves_none_running():
    tasks = [await StepTask.objects.acreate() for _ in range(3)]
    for task in tasks:
        await coordinator.start_task(task)
    await coordinator.shutdown(timeout=0.05)
    assert coordinator.running_keys == []
    for task in tasks:
        await task.arefresh_from_db()
        assert task.status == "cancelled"
        assert task.error["type"] == "WorkerShutdown"
    assert await coordinator.start_task(await StepTask.objects.acreate()) is False  # closed
