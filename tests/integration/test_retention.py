"""Event log retention: events kept per task while it runs, and for how long after it ends."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from django.utils import timezone

from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.runner.retention import purge_expired_events
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


async def logged_task(model, status, ended_ago=None, events=3, **fields):
    """A task row in ``status`` with ``events`` logged events, ended ``ended_ago`` before now."""
    now = timezone.now()
    completed_at = now - ended_ago if ended_ago is not None else None
    task = await model.objects.acreate(status=status, completed_at=completed_at, **fields)
    written = completed_at or now
    await store.append(task.task_key, [
        LoggedEvent(seq, "tick", f'{{"seq":{seq}}}', written - timedelta(seconds=events - seq))
        for seq in range(1, events + 1)
    ])
    return task


async def kept(task):
    return await store.current_seq(task.task_key)


async def test_events_go_once_the_task_ended_longer_ago_than_the_setting(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_RETENTION_SECONDS": 2 * 86400}
    old = await logged_task(BurstTask, "completed", ended_ago=3 * DAY)
    old_failure = await logged_task(BurstTask, "failed", ended_ago=5 * DAY)
    recent = await logged_task(BurstTask, "completed", ended_ago=1 * DAY)
    running = await logged_task(StepTask, "running", ended_ago=None)
    await store.append(running.task_key, [  # running for days: old events, not expired
        LoggedEvent(4, "tick", "{}", timezone.now() - 9 * DAY)
    ])

    assert await purge_expired_events() == 6
    assert [await kept(t) for t in (old, old_failure, recent, running)] == [0, 0, 3, 4]
    assert await purge_expired_events() == 0  # nothing left to find


async def test_a_models_own_retention_wins_and_none_keeps_for_ever(settings, monkeypatch):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_RETENTION_SECONDS": None}
    monkeypatch.setattr(StepTask, "event_retention_seconds", 3600)
    forever = await logged_task(BurstTask, "completed", ended_ago=400 * DAY)
    short = await logged_task(StepTask, "cancelled", ended_ago=timedelta(hours=2))
    fresh = await logged_task(StepTask, "cancelled", ended_ago=timedelta(minutes=10))

    assert await purge_expired_events() == 3
    assert [await kept(t) for t in (forever, short, fresh)] == [3, 0, 3]


async def test_events_of_a_deleted_task_go_too(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_RETENTION_SECONDS": 60}
    gone = await logged_task(BurstTask, "completed", ended_ago=DAY)
    key = gone.task_key
    await gone.adelete()
    assert await purge_expired_events() == 3
    assert await store.current_seq(key) == 0


async def test_a_running_task_keeps_its_newest_events(monkeypatch):
    monkeypatch.setattr(BurstTask, "event_retention", 20)
    task = await BurstTask.objects.acreate(count=500)
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=10)
    rows = await store.since(task.task_key, 0)
    assert 20 <= len(rows) <= 22  # trimmed in steps of a tenth of the retention
    assert [seq for seq, _ in rows] == list(range(501 - len(rows), 501))


async def test_a_running_coordinator_purges_on_its_own(settings):
    settings.STREAMAPP = {
        **settings.STREAMAPP, "EVENT_RETENTION_SECONDS": 60, "PURGE_SECONDS": 0.05,
    }
    old = await logged_task(BurstTask, "completed", ended_ago=DAY)
    await coordinator.ensure_started()
    deadline = asyncio.get_running_loop().time() + 5
    while await kept(old):  # the purge runs in the background: nothing to await but the rows
        assert asyncio.get_running_loop().time() < deadline, "events never purged"
        await asyncio.sleep(0.05)
