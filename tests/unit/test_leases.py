"""Task leases (streamapp/runner/leases.py) on the real database: who may write, and what.

Every write is one conditional UPDATE; these pin each condition and each column it sets
(scripts/mutation runs these).
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.exceptions import LeaseLost
from streamapp.models import Status
from streamapp.runner import leases, outcomes
from tests.runnerapp.models import RetryTask
from tests.testapp.models import StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp", "tests.runnerapp"]
)

ME, OTHER = "host:1:me", "host:2:other"
ERROR = {"type": "WorkerLost", "message": "gone"}


async def row(task):
    return await StepTask.objects.aget(pk=task.pk)


async def running(owner=ME, expires_in=30.0, model=StepTask, **fields):
    task = await model.objects.acreate(**fields)
    task.lease = await leases.claim(task, owner, expires_in)
    assert task.lease is not None
    return task


def near(moment, seconds):
    expected = timezone.now() + dt.timedelta(seconds=seconds)
    return abs((moment - expected).total_seconds()) < 5


async def test_claiming_a_pending_task_makes_it_running_under_the_lease():
    task = await StepTask.objects.acreate(final_value=1, error=ERROR)
    lease = await leases.claim(task, ME, 30.0)
    assert (lease.model, lease.pk, lease.owner, lease.attempt) == (StepTask, task.pk, ME, 1)
    assert str(lease) == f"testapp.steptask.{task.pk} owner={ME} attempt=1"
    for seen in (task, await row(task)):  # the caller's instance is refreshed
        assert (seen.status, seen.lease_owner, seen.attempts, seen.revision) == (
            Status.RUNNING, ME, 1, 1,
        )
        assert near(seen.lease_expires_at, 30) and near(seen.started_at, 0)
        assert seen.completed_at is None and seen.final_value is None and seen.error is None


async def test_a_task_can_be_claimed_again_once_it_ended_and_counts_its_attempts():
    task = await running()
    await outcomes.finish(task.lease, Status.FAILED, last_seq=0, error=ERROR)
    again = await leases.claim(task, OTHER, 60.0)
    assert again.attempt == 2 and again != task.lease
    seen = await row(task)
    assert (seen.status, seen.lease_owner, seen.attempts, seen.revision) == (
        Status.RUNNING, OTHER, 2, 3,
    )
    assert seen.error is None and seen.completed_at is None and near(seen.lease_expires_at, 60)


async def test_a_running_task_cannot_be_claimed_and_the_instance_is_left_alone():
    task = await running()
    stale = await StepTask.objects.aget(pk=task.pk)
    stale.label = "unsaved"
    assert await leases.claim(stale, OTHER, 30.0) is None
    assert stale.label == "unsaved" and (await row(task)).lease_owner == ME


async def test_a_worker_claims_only_from_the_statuses_it_names():
    task = await StepTask.objects.acreate(status=Status.FAILED)
    assert await leases.claim(task, ME, 30.0, statuses=(Status.PENDING,)) is None
    assert (await row(task)).status == Status.FAILED
    assert await leases.claim(task, ME, 30.0, statuses=(Status.FAILED,)) is not None


async def test_renew_extends_the_lease_of_its_owner_only():
    task = await running(expires_in=1.0)
    await leases.renew(task.lease, 90.0)
    assert near((await row(task)).lease_expires_at, 90)
    stranger = leases.Lease(StepTask, task.pk, OTHER, task.lease.attempt)
    with pytest.raises(LeaseLost, match="the lease is gone; not renewed"):
        await leases.renew(stranger, 500.0)
    assert near((await row(task)).lease_expires_at, 90)


async def test_renew_fails_once_the_task_is_no_longer_running():
    task = await running()
    await StepTask.objects.filter(pk=task.pk).aupdate(status=Status.COMPLETED)
    with pytest.raises(LeaseLost):
        await leases.renew(task.lease, 90.0)


async def test_a_lease_of_an_earlier_attempt_is_gone_even_for_the_same_owner():
    task = await running()
    first = task.lease
    await outcomes.finish(first, Status.FAILED, last_seq=0, error=ERROR)
    await leases.claim(task, ME, 30.0)  # this same process runs it again
    with pytest.raises(LeaseLost):
        await leases.renew(first, 90.0)


async def test_finish_records_the_outcome_and_lets_go_of_the_lease():
    task = await running()
    await outcomes.finish(task.lease, Status.COMPLETED, last_seq=7, final_value={"rows": 3})
    seen = await row(task)
    assert (seen.status, seen.last_seq, seen.final_value, seen.error, seen.revision) == (
        Status.COMPLETED, 7, {"rows": 3}, None, 2,
    )
    assert seen.lease_owner == "" and seen.lease_expires_at is None
    assert near(seen.completed_at, 0)


async def test_finish_as_pending_again_is_not_completed():
    task = await running()
    await outcomes.finish(task.lease, Status.PENDING, last_seq=2, error=ERROR)
    seen = await row(task)
    assert (seen.status, seen.error, seen.completed_at) == (Status.PENDING, ERROR, None)


async def test_finish_by_a_worker_that_lost_the_lease_changes_nothing():
    task = await running()
    stranger = leases.Lease(StepTask, task.pk, OTHER, task.lease.attempt)
    with pytest.raises(LeaseLost, match="the lease is gone; outcome .* not recorded"):
        await outcomes.finish(stranger, Status.FAILED, last_seq=9, error=ERROR)
    seen = await row(task)
    assert (seen.status, seen.lease_owner, seen.last_seq, seen.revision) == (
        Status.RUNNING, ME, 0, 1,
    )
    await StepTask.objects.filter(pk=task.pk).aupdate(status=Status.FAILED)
    with pytest.raises(LeaseLost):
        await outcomes.finish(task.lease, Status.COMPLETED, last_seq=9)
    assert (await row(task)).status == Status.FAILED


async def test_cancel_pending_cancels_only_a_task_nobody_runs():
    task = await StepTask.objects.acreate()
    assert await leases.cancel_pending(task)
    seen = await row(task)
    assert (seen.status, seen.revision) == (Status.CANCELLED, 1) and near(seen.completed_at, 0)
    assert seen.error is None
    assert not await leases.cancel_pending(task)
    busy = await running()
    assert not await leases.cancel_pending(busy)
    assert (await row(busy)).status == Status.RUNNING


async def test_requeue_makes_a_failed_or_cancelled_task_pending_and_clean():
    for status in (Status.FAILED, Status.CANCELLED):
        task = await StepTask.objects.acreate(
            status=status, final_value=5, error=ERROR, completed_at=timezone.now(), revision=4,
        )
        assert await leases.requeue(task)
        seen = await row(task)
        assert (seen.status, seen.final_value, seen.error, seen.completed_at, seen.revision) == (
            Status.PENDING, None, None, None, 5,
        )


async def test_requeue_leaves_other_statuses_alone():
    for status in (Status.PENDING, Status.COMPLETED):
        task = await StepTask.objects.acreate(status=status, final_value=5)
        assert not await leases.requeue(task)
        assert (await row(task)).final_value == 5
    assert not await leases.requeue(await running())


async def test_expire_fails_a_running_task_whose_lease_ran_out():
    task = await running(expires_in=-1.0)
    await store.append(task.task_key, [LoggedEvent(seq, "s", "{}", task.started_at)
                                       for seq in (1, 2, 3, 4)])
    assert await leases.expire(task, error=ERROR) == leases.Expired(retry=False, last_seq=4)
    seen = await row(task)
    assert (seen.status, seen.error, seen.last_seq, seen.revision) == (
        Status.FAILED, ERROR, 4, 2,
    )
    assert seen.lease_owner == "" and seen.lease_expires_at is None and near(seen.completed_at, 0)


async def test_expire_keeps_the_row_last_seq_when_the_log_has_less():
    task = await running(expires_in=-1.0)
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=6)
    assert (await leases.expire(task, error=ERROR)).last_seq == 6


async def test_expire_with_attempts_left_makes_it_pending_again():
    task = await running(expires_in=-1.0, model=RetryTask)
    assert (await leases.expire(task, error=ERROR)).retry
    seen = await RetryTask.objects.aget(pk=task.pk)
    assert (seen.status, seen.error, seen.completed_at, seen.lease_owner) == (
        Status.PENDING, ERROR, None, "",
    )


async def test_expire_leaves_a_live_lease_or_an_ended_task_alone():
    task = await running(expires_in=30.0)
    assert await leases.expire(task, error=ERROR) is None
    assert (await row(task)).status == Status.RUNNING
    ended = await running(expires_in=-1.0)
    await StepTask.objects.filter(pk=ended.pk).aupdate(status=Status.COMPLETED)
    assert await leases.expire(ended, error=ERROR) is None
    assert (await row(ended)).status == Status.COMPLETED


async def test_cancel_pending_records_who_cancelled():
    task = await StepTask.objects.acreate()
    assert await leases.cancel_pending(task, error={"type": "Cancelled", "message": "by ann"})
    assert (await row(task)).error == {"type": "Cancelled", "message": "by ann"}


async def test_a_lease_holds_its_own_task_only():
    """Two tasks of one worker, both on their first attempt: each lease writes its own row."""
    mine, neighbour = await running(), await running()
    await outcomes.finish(mine.lease, Status.COMPLETED, last_seq=1)
    await leases.renew(neighbour.lease, 90.0)
    seen = await row(neighbour)
    assert seen.status == Status.RUNNING and near(seen.lease_expires_at, 90)
    assert (await row(mine)).lease_expires_at is None


async def test_expire_looks_at_its_own_task_only():
    live = await running(expires_in=30.0)
    expired = await running(expires_in=-1.0)
    await StepTask.objects.filter(pk=expired.pk).aupdate(last_seq=9)
    assert await leases.expire(live, error=ERROR) is None
    assert (await row(live)).status == Status.RUNNING
    assert (await leases.expire(expired, error=ERROR)).last_seq == 9
