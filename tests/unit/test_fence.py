"""The fencing rule, without processes: a run's writes take effect only while its lease holds.

A lease is the (owner, attempt) pair its claim wrote on a running row. A stale owner's or a
stale attempt's log append, heartbeat and outcome are refused with LeaseLost and change nothing;
the sweeper's expiry counts every event an append committed before it. Runs on the run's
database: SQLite on the embedded default, PostgreSQL with DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from django.db import connections, transaction
from django.utils import timezone

from streamapp import protocol
from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.exceptions import LeaseLost
from streamapp.runner import leases, outcomes
from streamapp.runner.sweeper import WORKER_LOST_ERROR
from tests.conftest import USING_POSTGRES
from tests.runnerapp.models import RetryTask
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)

OWNER, THIEF = "host-a:1:aaaaaaaa", "host-b:2:bbbbbbbb"


def events(key: str, first: int, last: int) -> list[LoggedEvent]:
    now = timezone.now()
    return [
        LoggedEvent(seq, "step", protocol.encode(protocol.event(key, seq, "step", {}, now)), now)
        for seq in range(first, last + 1)
    ]


async def row_of(task):
    return await type(task).objects.aget(pk=task.pk)


async def expire_now(task) -> leases.Expired | None:
    """The lease runs out and a sweeper ends the task."""
    await type(task).objects.filter(pk=task.pk).aupdate(
        lease_expires_at=timezone.now() - timezone.timedelta(seconds=1)
    )
    return await leases.expire(task, error=WORKER_LOST_ERROR)


async def assert_refused(lease: leases.Lease, key: str, seq: int) -> None:
    """Every kind of write under ``lease`` is refused and changes nothing."""
    task = await lease.model.objects.aget(pk=lease.pk)
    before = (task.status, task.lease_owner, task.lease_expires_at, task.last_seq, task.revision)
    logged = await store.current_seq(key)

    with pytest.raises(LeaseLost):
        await store.append(key, events(key, seq, seq + 2), fence=lease.rows())
    with pytest.raises(LeaseLost):
        await leases.renew(lease, lease_seconds=30)
    with pytest.raises(LeaseLost):
        await outcomes.finish(lease, "completed", last_seq=seq + 2, final_value="stale")

    task = await lease.model.objects.aget(pk=lease.pk)
    after = (task.status, task.lease_owner, task.lease_expires_at, task.last_seq, task.revision)
    assert after == before
    assert await store.current_seq(key) == logged


async def test_the_holder_writes_under_its_lease():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=30)
    assert (lease.owner, lease.attempt) == (OWNER, 1)

    await store.append(task.task_key, events(task.task_key, 1, 3), fence=lease.rows())
    old_expiry = (await row_of(task)).lease_expires_at
    await leases.renew(lease, lease_seconds=60)
    assert (await row_of(task)).lease_expires_at > old_expiry
    await outcomes.finish(lease, "completed", last_seq=3, final_value=3)

    row = await row_of(task)
    assert (row.status, row.last_seq, row.final_value, row.lease_owner) == ("completed", 3, 3, "")
    assert [seq for seq, _ in await store.since(task.task_key, 0)] == [1, 2, 3]


async def test_another_owners_writes_are_refused():
    task = await StepTask.objects.acreate()
    mine = await leases.claim(task, OWNER, lease_seconds=30)
    await store.append(task.task_key, events(task.task_key, 1, 2), fence=mine.rows())
    stale = leases.Lease(StepTask, task.pk, THIEF, mine.attempt)
    await assert_refused(stale, task.task_key, 3)


async def test_a_stale_attempt_of_the_same_owner_is_refused():
    """Expired and retried, the task is claimed again by the same process: the old run's token
    differs from the new one's by its attempt, and only the new one writes."""
    task = await RetryTask.objects.acreate(seconds=0)
    first = await leases.claim(task, OWNER, lease_seconds=30)
    await store.append(task.task_key, events(task.task_key, 1, 2), fence=first.rows())
    assert await expire_now(task) == leases.Expired(retry=True, last_seq=2)
    second = await leases.claim(task, OWNER, lease_seconds=30, statuses=("pending",))
    assert (second.owner, second.attempt) == (OWNER, 2)

    await assert_refused(first, task.task_key, 3)
    await store.append(task.task_key, events(task.task_key, 3, 3), fence=second.rows())
    await outcomes.finish(second, "completed", last_seq=3)
    assert (await row_of(task)).status == "completed"


async def test_an_expired_lease_is_refused_once_swept_not_before():
    """The fence is the token, not the clock: a lease past its time that nobody ended still
    holds (nobody else can have the task); once the sweeper ended it, nothing gets through."""
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=-1)
    await store.append(task.task_key, events(task.task_key, 1, 1), fence=lease.rows())

    assert await leases.expire(task, error=WORKER_LOST_ERROR) == leases.Expired(False, 1)
    row = await row_of(task)
    assert (row.status, row.error["type"], row.last_seq) == ("failed", "WorkerLost", 1)
    await assert_refused(lease, task.task_key, 2)


async def test_a_cancelled_or_finished_run_writes_nothing_more():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=30)
    await outcomes.finish(lease, "cancelled", last_seq=0)
    await assert_refused(lease, task.task_key, 1)


async def test_the_sweeper_counts_what_was_logged_in_last_seq():
    """The task's last_seq after an expiry is the log's top, even past the row's old value."""
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=-1)
    await store.append(task.task_key, events(task.task_key, 1, 7), fence=lease.rows())
    expired = await leases.expire(task, error=WORKER_LOST_ERROR)
    assert expired.last_seq == 7 == (await row_of(task)).last_seq
    assert await leases.expire(task, error=WORKER_LOST_ERROR) is None  # ended once


@pytest.mark.skipif(not USING_POSTGRES, reason="row locks: PostgreSQL")
async def test_a_write_under_way_holds_the_sweeper_off_until_it_commits():
    """An append locks the task row while its statement runs; a sweep meanwhile skips the row
    instead of waiting, and the next sweep counts the committed events in last_seq. Here the
    append is slowed down inside a transaction that took the same lock."""
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=-1)
    locked, release = threading.Event(), threading.Event()

    def append_slowly() -> None:
        try:
            with transaction.atomic():
                assert lease.rows().select_for_update(no_key=True).exists()
                locked.set()
                release.wait(10)
                store._insert(task.task_key, events(task.task_key, 1, 4), fence=lease.rows())
        finally:
            connections.close_all()

    writer = threading.Thread(target=append_slowly)
    writer.start()
    try:
        assert await asyncio.to_thread(locked.wait, 10)
        assert await leases.expire(task, error=WORKER_LOST_ERROR) is None  # skipped, not blocked
    finally:
        release.set()
        await asyncio.to_thread(writer.join, 10)
    assert await leases.expire(task, error=WORKER_LOST_ERROR) == leases.Expired(False, 4)
    await assert_refused(lease, task.task_key, 5)


def wait_until_blocked(statement_start: str, timeout: float = 10) -> None:
    """Until a backend runs a statement starting so and waits for a lock (its own connection:
    the ORM's thread is the one blocked)."""
    import psycopg

    params = connections["default"].get_connection_params()
    deadline = time.monotonic() + timeout
    with psycopg.connect(**params, autocommit=True) as conn:
        while time.monotonic() < deadline:
            if conn.execute(
                "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s", [statement_start + "%"]
            ).fetchone():
                return
            time.sleep(0.01)  # pg_stat_activity has no notification to wait on
    raise TimeoutError(f"no {statement_start!r} waiting for a lock")


@pytest.mark.skipif(not USING_POSTGRES, reason="row locks: PostgreSQL")
async def test_an_append_that_waited_for_a_sweeper_is_refused_once_the_task_ended():
    """The append's fence locks the row in the INSERT itself: it waits for the sweeper's
    transaction, then checks the row as the sweeper left it, and writes nothing."""
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=-1)
    locked, release = threading.Event(), threading.Event()

    def sweep_slowly() -> None:
        try:
            with transaction.atomic():
                assert StepTask.objects.filter(pk=task.pk).select_for_update().exists()
                locked.set()
                release.wait(10)
                StepTask.objects.filter(pk=task.pk).update(status="failed", lease_owner="")
        finally:
            connections.close_all()

    sweeper = threading.Thread(target=sweep_slowly)
    sweeper.start()
    try:
        assert await asyncio.to_thread(locked.wait, 10)
        append = asyncio.ensure_future(
            store.append(task.task_key, events(task.task_key, 1, 3), fence=lease.rows())
        )
        await asyncio.to_thread(wait_until_blocked, "INSERT INTO")
    finally:
        release.set()
        await asyncio.to_thread(sweeper.join, 10)
    with pytest.raises(LeaseLost):
        await append
    assert await store.current_seq(task.task_key) == 0


async def test_a_batch_too_big_for_one_statement_is_written_whole_or_not_at_all():
    """SQLite takes 999 parameters a statement: 500 events go in several, in one transaction."""
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, OWNER, lease_seconds=30)
    await store.append(task.task_key, events(task.task_key, 1, 500), fence=lease.rows())
    assert await store.current_seq(task.task_key) == 500
    stale = leases.Lease(StepTask, task.pk, THIEF, lease.attempt)
    with pytest.raises(LeaseLost):
        await store.append(task.task_key, events(task.task_key, 501, 1000), fence=stale.rows())
    assert await store.current_seq(task.task_key) == 500
