"""The worker in this process: claiming, the concurrency limit, wake-ups, hand-off, batch mode."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from channels.layers import get_channel_layer

from demo.models import ExampleTask, FailingTask
from streamapp import broadcast
from streamapp.coordinator import coordinator
from streamapp.keys import stream_task_models
from streamapp.runner import leases
from streamapp.runner import worker as worker_module
from streamapp.runner.coordinator import Coordinator
from streamapp.runner.worker import Worker, pick_pending
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def start_worker():
    """``worker, reports = start_worker(**options)``: a Worker running in the background.

    ``worker.running`` is its ``run()``; ``reports`` gets every line it reports.
    """
    started: list[Worker] = []

    def start(**options):
        reports: asyncio.Queue[str] = asyncio.Queue()
        worker = Worker(report=reports.put_nowait, **options)
        worker.running = asyncio.create_task(worker.run())
        started.append(worker)
        return worker, reports

    yield start
    for worker in started:
        worker.stop()
        await asyncio.wait_for(worker.running, timeout=10)


async def next_claim(reports: asyncio.Queue[str]) -> str:
    while not (line := await asyncio.wait_for(reports.get(), timeout=5)).startswith("claimed "):
        continue
    return line.removeprefix("claimed ")


async def test_until_idle_runs_every_pending_task_of_every_model_and_nothing_else():
    pending = [await ExampleTask.objects.acreate(message=str(i), delay=0) for i in range(3)]
    pending += [await BurstTask.objects.acreate(count=2) for _ in range(2)]
    failed = await FailingTask.objects.acreate()
    assert await coordinator.start_task(failed) and await coordinator.wait_task(failed)

    assert await Worker(concurrency=2).run(until_idle=True) == 5

    for task in pending:
        await task.arefresh_from_db()
        assert task.status == "completed" and task.attempts == 1
    await failed.arefresh_from_db()
    assert failed.status == "failed" and failed.attempts == 1  # only pending tasks are picked
    assert coordinator.running_keys == []


async def test_oldest_pending_tasks_are_claimed_first_up_to_the_concurrency(start_worker):
    tasks = [await StepTask.objects.acreate(label=str(i)) for i in range(3)]
    _, reports = start_worker(concurrency=2, poll_seconds=60)
    assert {await next_claim(reports), await next_claim(reports)} == {
        tasks[0].task_key, tasks[1].task_key
    }
    assert sorted(coordinator.running_keys) == sorted([tasks[0].task_key, tasks[1].task_key])
    await tasks[2].arefresh_from_db()
    assert tasks[2].status == "pending"

    await tasks[0].send_signal("step", "stop")  # a slot frees: the worker claims the third
    assert await next_claim(reports) == tasks[2].task_key
    for task in tasks[1:]:
        await task.send_signal("step", "stop")
        assert await coordinator.wait_task(task, timeout=5)
    await tasks[0].arefresh_from_db()
    assert tasks[0].status == "completed"


async def test_a_task_handed_off_by_start_task_wakes_the_worker(start_worker, settings):
    """With RUN_TASKS off start_task only hands over; the wake-up, not the poll, brings it."""
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    _, reports = start_worker(poll_seconds=60)
    await reports.get()  # ready: joined the workers' group
    task = await ExampleTask.objects.acreate(message="handed", delay=0)

    assert await coordinator.start_task(task) is True  # handed over, pending
    assert await next_claim(reports) == task.task_key
    assert await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "completed" and task.attempts == 1
    assert await coordinator.start_task(task) is False  # completed: nothing to hand over


async def test_hand_off_makes_a_failed_task_pending_again_and_tells_subscribers(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    task = await FailingTask.objects.acreate(fail_at=1)
    assert await coordinator.run_pending(task)  # a worker path runs it whatever RUN_TASKS says
    await coordinator.wait_task(task)
    layer = get_channel_layer()
    subscriber, waker = await layer.new_channel(), await layer.new_channel()
    await layer.group_add(broadcast.task_group(task.task_key), subscriber)
    await layer.group_add(broadcast.WORKERS_GROUP, waker)

    assert await coordinator.start_task(task) is True
    await task.arefresh_from_db()
    assert task.status == "pending" and task.error is None and task.completed_at is None
    message = await asyncio.wait_for(layer.receive(subscriber), timeout=5)
    assert message["type"] == "stream.state" and json.loads(message["frame"])["status"] == "pending"
    assert (await asyncio.wait_for(layer.receive(waker), timeout=5))["type"] == "workers.wake"
    assert not coordinator.is_task_running(task)
    assert await coordinator.start_task(task) is True  # still pending: still waiting


async def test_run_pending_claims_only_pending_tasks():
    task = await FailingTask.objects.acreate(fail_at=1)
    assert await coordinator.start_task(task)
    await coordinator.wait_task(task)
    assert await coordinator.run_pending(task) is False  # failed: start_task may, a worker not
    await task.arefresh_from_db()
    assert task.status == "failed" and task.attempts == 1


async def test_a_new_task_is_handed_over_even_when_a_worker_takes_it_at_once(
    settings, monkeypatch
):
    """Saved pending by start_task is handed over, whatever a worker did with it since."""
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    layer = get_channel_layer()
    waker = await layer.new_channel()
    await layer.group_add(broadcast.WORKERS_GROUP, waker)
    create = leases.create

    async def create_and_lose_the_race(task):
        await create(task)  # a worker woken for another task claims this one at once:
        await type(task).objects.filter(pk=task.pk).aupdate(status="running")

    monkeypatch.setattr(leases, "create", create_and_lose_the_race)
    task = ExampleTask(message="new", delay=0)

    assert await coordinator.start_task(task) is True
    assert (await asyncio.wait_for(layer.receive(waker), timeout=5))["type"] == "workers.wake"


async def test_the_tasks_a_worker_picks_are_claimed_together_in_one_group(monkeypatch):
    tasks = [await StepTask.objects.acreate(label=str(i)) for i in range(4)]
    groups = []
    claim_all = leases._claim_all

    def claim_and_count(claims):
        groups.append(sorted(task.pk for task, *_ in claims))
        return claim_all(claims)

    monkeypatch.setattr(leases, "_claim_all", claim_and_count)

    assert await Worker(concurrency=4).claim_available() == 4
    assert groups == [sorted(task.pk for task in tasks)]  # one thread hop, one UPDATE
    for task in tasks:
        await task.send_signal("step", "stop")
        assert await coordinator.wait_task(task, timeout=5)
        await task.arefresh_from_db()
        assert task.status == "completed" and task.attempts == 1


async def test_a_worker_that_lost_its_picks_to_another_looks_past_them(monkeypatch):
    tasks = [await StepTask.objects.acreate(label=str(i)) for i in range(4)]
    stale = await pick_pending(2)  # what this worker picked, before the other claimed them
    other = Worker(concurrency=2, coordinator=Coordinator())
    picks = iter([stale])

    async def pick_late(limit):
        return next(picks, None) or await pick_pending(limit)

    monkeypatch.setattr(worker_module, "pick_pending", pick_late)
    try:
        assert await other.coordinator.run_all_pending(stale) == [True, True]

        assert await Worker(concurrency=2).claim_available() == 2  # not idle until the next poll

        assert sorted(coordinator.running_keys) == sorted(t.task_key for t in tasks[2:])
    finally:
        for task in tasks:
            await task.send_signal("step", "stop")
        await other.coordinator.shutdown(timeout=5)


async def test_a_worker_whose_coordinator_shut_down_claims_nothing_and_returns():
    task = await StepTask.objects.acreate()
    await coordinator.shutdown(timeout=0)

    assert await asyncio.wait_for(Worker().claim_available(), timeout=5) == 0

    await task.arefresh_from_db()
    assert task.status == "pending"


async def test_a_claim_that_fails_answers_only_its_own_task(monkeypatch):
    good, bad, running = [await StepTask.objects.acreate(label=label) for label in "gbr"]
    claim = leases.claim

    async def claim_or_fail(task, *args):
        if task.pk == bad.pk:
            raise ConnectionError("the claim went missing")
        return await claim(task, *args)

    monkeypatch.setattr(leases, "claim", claim_or_fail)
    assert await coordinator.run_pending(running)

    answers = await coordinator.run_all_pending([good, bad, running, good])

    assert answers[0] is True and answers[2:] == [False, False]  # running here already, twice
    assert isinstance(answers[1], ConnectionError)
    assert sorted(coordinator.running_keys) == sorted([good.task_key, running.task_key])
    await bad.arefresh_from_db()
    assert bad.status == "pending" and bad.lease_owner == ""
    for task in (good, running):
        await task.send_signal("step", "stop")
        assert await coordinator.wait_task(task, timeout=5)


async def test_a_row_read_by_a_proxy_too_is_picked_once_through_its_table(proxy_of):
    proxy = proxy_of(BurstTask)
    assert [m for m in stream_task_models() if m in (BurstTask, proxy)] == [BurstTask, proxy]
    task = await proxy.objects.acreate(count=1)

    assert [t.task_key for t in await pick_pending(10)] == [f"testapp.bursttask.{task.pk}"]
    assert await Worker().run(until_idle=True) == 1


async def test_wake_ups_asked_for_while_one_is_sent_share_the_next_one(monkeypatch):
    sending, go_on, sent = asyncio.Event(), asyncio.Event(), []

    async def group_send(group, message):
        sent.append((group, message["type"]))
        sending.set()
        await go_on.wait()
        return True

    monkeypatch.setattr(broadcast, "_group_send", group_send)
    first = [asyncio.create_task(broadcast.wake_workers()) for _ in range(5)]
    await asyncio.wait_for(sending.wait(), timeout=5)
    later = [asyncio.create_task(broadcast.wake_workers()) for _ in range(5)]
    await asyncio.sleep(0)  # let them ask while the first wake-up is still being sent
    assert len(sent) == 1  # theirs may already have been read: they wait for another one

    go_on.set()
    assert await asyncio.wait_for(asyncio.gather(*first, *later), timeout=5) == [True] * 10
    assert sent == [(broadcast.WORKERS_GROUP, "workers.wake")] * 2


async def test_stop_ends_running_tasks_within_the_shutdown_timeout(start_worker, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "SHUTDOWN_TIMEOUT": 0.1}
    task = await StepTask.objects.acreate()
    worker, reports = start_worker(poll_seconds=60)
    assert await next_claim(reports) == task.task_key
    worker.stop()
    assert await asyncio.wait_for(worker.running, timeout=5) == 1
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.error["type"] == "WorkerShutdown"
    assert task.lease_owner == ""


async def test_polling_finds_a_task_nobody_announced(start_worker):
    """The fallback: a task created with no wake-up is found at the next poll."""
    _, reports = start_worker(poll_seconds=0.2)
    await reports.get()  # ready, and idle
    task = await ExampleTask.objects.acreate(message="unannounced", delay=0)
    assert await next_claim(reports) == task.task_key


async def test_sigterm_stops_the_worker_gracefully(start_worker):
    worker, reports = start_worker(poll_seconds=60)
    await reports.get()
    loop = asyncio.get_running_loop()
    assert worker.install_signal_handlers()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(worker.running, timeout=5) == 0
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
