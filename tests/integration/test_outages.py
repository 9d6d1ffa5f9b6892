"""A run through a database outage, in one process (DESIGN §4): shorter than the lease, events
wait in memory and are logged in order when it answers; beyond the bound ``send_event`` blocks;
longer than the lease, the task fails with an error that says so. One warning when an outage
starts, one line with counts when it ends.

The outage is made at the doors of a run's writes, ``store.append`` and ``leases.renew``, and at
the background sweeper's: they raise ``OperationalError`` as a refused connection does.
tests/e2e/test_database_outage.py cuts a real PostgreSQL connection instead.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from django.db import OperationalError
from prometheus_client import REGISTRY

from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from streamapp.runner import leases, sweeper
from tests.support.helpers import (
    events_of,
    receive_until,
    receive_until_closed,
    started_step_task,
    step,
)
from tests.testapp.models import BurstTask

pytestmark = pytest.mark.django_db(transaction=True)


class DatabaseAway:
    """While ``away``, a run's appends and heartbeats and the sweeps fail as if the database
    were down."""

    def __init__(self, monkeypatch) -> None:
        self.away = False
        self.refused = 0
        self._refusal = asyncio.Condition()
        self.swept = asyncio.Event()  # a sweep went through: none is in flight from before
        for module, name in ((store, "append"), (leases, "renew"), (sweeper, "sweep")):
            monkeypatch.setattr(module, name, self._door(getattr(module, name)))

    def _door(self, write):
        async def door(*args, **kwargs):
            if self.away:
                async with self._refusal:
                    self.refused += 1
                    self._refusal.notify_all()
                raise OperationalError("connection refused (the test's outage)")
            result = await write(*args, **kwargs)
            if write.__name__ == "sweep":
                self.swept.set()
            return result

        return door

    async def go_away(self) -> None:
        """From now on; a sweep that started before would still be answered, so wait for it."""
        await asyncio.wait_for(self.swept.wait(), 10)
        self.away = True

    async def refused_at_least(self, count: int) -> None:
        async with self._refusal:
            await asyncio.wait_for(self._refusal.wait_for(lambda: self.refused >= count), 10)


@pytest.fixture
def database(monkeypatch):
    return DatabaseAway(monkeypatch)


def outage_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "streamapp.outages"]


def outages_counted() -> float:
    return REGISTRY.get_sample_value("streamapp_outages_total", {"dependency": "database"}) or 0


async def test_events_wait_for_the_database_and_are_logged_in_order(
    database, communicator_for, caplog
):
    caplog.set_level(logging.INFO, logger="streamapp")
    counted = outages_counted()
    task, ws = await started_step_task(communicator_for)
    await step(task, 2)
    await receive_until(ws, lambda f: f.get("seq") == 2)

    await database.go_away()
    await step(task, 3)
    await database.refused_at_least(3)  # the writer keeps trying
    assert await ws.receive_nothing(timeout=0.2)  # nothing is announced before it is logged
    assert await store.current_seq(task.task_key) == 2
    assert coordinator.is_task_running(task)

    database.away = False
    await task.send_signal("step", "stop")
    frames, code = await receive_until_closed(ws)
    assert [f["seq"] for f in events_of(frames)] == [3, 4, 5]
    assert frames[-1]["status"] == "completed" and frames[-1]["seq"] == 5 and code == 1000
    await task.arefresh_from_db()
    assert (task.status, task.attempts, task.last_seq) == ("completed", 1, 5)
    assert [seq for seq, _ in await store.since(task.task_key, 0)] == [1, 2, 3, 4, 5]

    started, ended = outage_lines(caplog)  # one line each, no traceback per attempt
    assert started.startswith("database unavailable, riding it out what=event log")
    assert ended.startswith("database back after ") and "event_log=" in ended
    assert not any(r.exc_info for r in caplog.records if r.name.startswith("streamapp"))
    assert outages_counted() == counted + 1


async def test_beyond_the_buffer_send_event_waits_for_the_database(database, settings):
    """EVENT_BUFFER events queued, the next ``send_event`` blocks: the task is held back, not
    its memory let grow, and goes on when the database answers."""
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_BUFFER": 3}
    database.away = True
    task = await BurstTask.objects.acreate(count=10)
    assert await coordinator.start_task(task)
    await database.refused_at_least(3)
    run = coordinator._runs[task.task_key]
    assert run.stream.seq == 3 and coordinator.is_task_running(task)  # blocked in send_event

    database.away = False
    assert await coordinator.wait_task(task, timeout=10)
    await task.arefresh_from_db()
    assert (task.status, task.final_value, task.last_seq) == ("completed", 10, 10)
    assert [seq for seq, _ in await store.since(task.task_key, 0)] == list(range(1, 11))


async def test_an_outage_longer_than_the_lease_fails_the_task_clearly(
    database, communicator_for, settings, caplog
):
    settings.STREAMAPP = {**settings.STREAMAPP, "LEASE_SECONDS": 0.6, "HEARTBEAT_SECONDS": 0.1}
    task, ws = await started_step_task(communicator_for)
    database.away = True
    await step(task)  # event 1 can never be logged
    frames, code = await receive_until_closed(ws, timeout=10)
    database.away = False

    final = frames[-1]
    assert events_of(frames) == [] and code == 1000
    assert (final["status"], final["seq"]) == ("failed", 0)
    assert final["error"]["type"] == "OperationalError"
    assert "the database did not answer for" in final["error"]["message"]
    await task.arefresh_from_db()
    assert (task.status, task.error, task.last_seq) == ("failed", final["error"], 0)
    assert await store.current_seq(task.task_key) == 0
