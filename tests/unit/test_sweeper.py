"""The sweeper (streamapp/runner/sweeper.py): a running task whose lease ran out is ended or
retried, once, and its subscribers and the workers are told (scripts/mutation runs these)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.layers import get_channel_layer
from django.db import OperationalError

from streamapp import broadcast, outages
from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.models import Status
from streamapp.runner import leases, sweeper
from tests.runnerapp.models import RetryTask
from tests.testapp.models import StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp", "tests.runnerapp"]
)


async def abandoned(model=StepTask, lease=-1.0, **fields):
    """A task claimed by a worker that then died: its lease ends ``lease`` seconds from now."""
    task = await model.objects.acreate(**fields)
    assert await leases.claim(task, "host:1:dead", lease)
    return task


async def listening(*groups):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)

    async def heard():
        messages = []
        while True:
            try:
                messages.append(await asyncio.wait_for(layer.receive(channel), timeout=0.05))
            except TimeoutError:
                return messages

    return heard


async def until(condition, timeout=5.0):
    """Let the loop run until ``condition()`` holds."""

    async def turns():
        while not condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(turns(), timeout)


async def test_an_expired_task_fails_as_worker_lost_and_subscribers_are_told():
    task = await abandoned()
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=2)
    await store.append(task.task_key, [LoggedEvent(seq, "s", "{}", task.started_at)
                                       for seq in (1, 2, 3)])
    heard = await listening(broadcast.task_group(task.task_key), broadcast.WORKERS_GROUP)
    assert await sweeper.sweep() == 1
    seen = await StepTask.objects.aget(pk=task.pk)
    assert (seen.status, seen.error, seen.last_seq) == (
        Status.FAILED, sweeper.WORKER_LOST_ERROR, 3,
    )
    assert sweeper.WORKER_LOST_ERROR == {
        "type": "WorkerLost", "message": "the worker running the task stopped",
    }
    (message,) = await heard()
    assert (message["type"], message["status"], message["seq"], message["revision"]) == (
        "stream.state", "failed", 3, 2,
    )
    assert '"WorkerLost"' in message["frame"]


async def test_the_row_last_seq_counts_when_the_log_has_less():
    task = await abandoned()
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=5)
    await sweeper.sweep()
    assert (await StepTask.objects.aget(pk=task.pk)).last_seq == 5


async def test_a_task_with_attempts_left_is_retried_and_the_workers_woken():
    task = await abandoned(RetryTask)
    heard = await listening(broadcast.task_group(task.task_key), broadcast.WORKERS_GROUP)
    assert await sweeper.sweep() == 1
    assert (await RetryTask.objects.aget(pk=task.pk)).status == Status.PENDING
    assert [m["type"] for m in await heard()] == ["stream.state", "workers.wake"]


async def test_a_task_on_its_last_attempt_wakes_no_worker():
    task = await abandoned(RetryTask, attempts=1)  # the claim makes it 2 of 2
    heard = await listening(broadcast.WORKERS_GROUP)
    assert await sweeper.sweep() == 1
    assert (await RetryTask.objects.aget(pk=task.pk)).status == Status.FAILED
    assert await heard() == []


async def test_live_leases_and_other_statuses_are_left_alone():
    alive = await abandoned(lease=30.0)
    await StepTask.objects.acreate(status=Status.PENDING)
    assert await sweeper.sweep() == 0
    assert (await StepTask.objects.aget(pk=alive.pk)).status == Status.RUNNING


async def test_every_expired_task_of_every_model_is_swept_once():
    for model in (StepTask, StepTask, RetryTask):
        await abandoned(model)
    assert await sweeper.sweep() == 3
    assert await sweeper.sweep() == 0


async def test_a_task_another_sweeper_ended_first_is_not_counted_and_the_rest_are_swept(
    monkeypatch,
):
    await abandoned()
    await abandoned()
    raced, other = [task async for task in StepTask.objects.expired()]  # the order swept in
    real_expire = leases.expire

    async def expire(task, **kwargs):
        if task.pk == raced.pk:
            await real_expire(task, **kwargs)  # the other sweeper, just before this one
        return await real_expire(task, **kwargs)

    monkeypatch.setattr(leases, "expire", expire)
    heard = await listening(broadcast.task_group(raced.task_key))
    assert await sweeper.sweep() == 1
    assert (await StepTask.objects.aget(pk=other.pk)).status == Status.FAILED
    assert await heard() == []  # the one that won announced it, not this sweeper


async def test_holding_off_only_looks():
    """Right after a database outage the owners may not have renewed yet: nothing is ended."""
    task = await abandoned()
    assert await sweeper.sweep(hold_off=True) == 0
    assert (await StepTask.objects.aget(pk=task.pk)).status == Status.RUNNING


async def test_sweeping_goes_on_after_a_failed_sweep(monkeypatch, settings, caplog):
    settings.STREAMAPP = {**settings.STREAMAPP, "SWEEP_SECONDS": 0.01}
    calls = []
    second = asyncio.Event()

    async def sweep(*, hold_off=False):
        calls.append(hold_off)
        if len(calls) == 1:
            raise RuntimeError("query went wrong")
        second.set()
        return 0

    monkeypatch.setattr(sweeper, "sweep", sweep)
    with caplog.at_level(logging.WARNING, logger="streamapp.runner"):
        running = asyncio.create_task(sweeper.sweep_forever())
        await asyncio.wait_for(second.wait(), timeout=5)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert "sweep failed" in caplog.text and len(calls) >= 2


# -- after a database outage -----------------------------------------------------------------


def test_owners_have_had_time_to_renew_when_there_was_no_outage():
    assert sweeper.owners_had_time_to_renew()


def test_owners_have_not_had_time_to_renew_during_an_outage():
    outages.database.failed("sweep", OperationalError("gone"))
    assert not sweeper.owners_had_time_to_renew()


@pytest.mark.parametrize(("since_return", "had_time"), [(9.99, False), (10.0, True), (10.01, True)])
def test_owners_have_had_time_to_renew_one_heartbeat_after_the_outage(
    settings, monkeypatch, since_return, had_time
):
    settings.STREAMAPP = {**settings.STREAMAPP, "HEARTBEAT_SECONDS": 10.0}
    outages.database.failed("sweep", OperationalError("gone"))
    outages.database.answered()
    monkeypatch.setattr(outages.database, "seconds_since_return", lambda: since_return)
    assert sweeper.owners_had_time_to_renew() is had_time


async def test_the_sweeper_holds_off_through_an_outage_and_one_heartbeat_after_it(
    monkeypatch, settings, caplog
):
    settings.STREAMAPP = {**settings.STREAMAPP, "SWEEP_SECONDS": 0.01, "HEARTBEAT_SECONDS": 0.05}
    calls = []
    outage_seen = []

    async def sweep(*, hold_off=False):
        calls.append(hold_off)
        if len(calls) == 1:
            raise OperationalError("server closed the connection")
        outage_seen.append(outages.database.down)
        return 0

    monkeypatch.setattr(sweeper, "sweep", sweep)
    running = asyncio.create_task(sweeper.sweep_forever())
    try:
        await until(lambda: len(calls) > 2 and calls[-1] is False)
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    # the failed sweep started an outage (reported as one, not as a failed sweep); the next
    # sweep only looks, and ends it; sweeping resumes a heartbeat later
    assert calls[0] is False and calls[1] is True and set(calls[1:-1]) == {True}
    assert outage_seen[0] is True and not outages.database.down
    assert "database unavailable, riding it out what=sweep error=OperationalError" in caplog.text
    assert "sweep failed" not in caplog.text
