"""Task leases (streamapp/runner/leases.py) on the real database: who may write, and what.

Every write is one conditional UPDATE; these pin each condition and each column it sets
(scripts/mutation runs these).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from django.db import IntegrityError, connection
from django.db.models.signals import post_save
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.exceptions import LeaseLost
from streamapp.models import STARTABLE_STATUSES, Status
from streamapp.runner import lease_sql, leases, outcomes
from tests.runnerapp.models import RetryTask
from tests.testapp.models import BurstTask, StepTask

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


def claims_of(tasks, owner=ME, seconds=30.0):
    return [(task, owner, seconds, tuple(STARTABLE_STATUSES)) for task in tasks]


def updates_while(run):
    with CaptureQueriesContext(connection) as queries:
        answer = run()
    return answer, [q["sql"] for q in queries if q["sql"].startswith("UPDATE")]


@pytest.mark.parametrize("returning", [True, False], ids=["RETURNING", "no RETURNING"])
def test_claims_that_wait_together_win_what_is_startable_each_read_back(monkeypatch, returning):
    """One UPDATE for the group where the database answers with the rows it changed (SQLite
    3.35+, PostgreSQL), else one each and the row read again; either way the same leases."""
    monkeypatch.setattr(lease_sql, "returns_rows", lambda _: returning)
    first, taken, last = (StepTask.objects.create() for _ in range(3))
    assert leases._claim_all(claims_of([taken], owner=OTHER))[0] is not None
    store.insert_many([(last.task_key, [LoggedEvent(1, "e", "{}", timezone.now()),
                                        LoggedEvent(2, "e", "{}", timezone.now())], None)])
    answers, updates = updates_while(lambda: leases._claim_all(claims_of([first, taken, last])))
    assert len(updates) == (1 if returning else 3)
    won_first, lost, won_last = answers
    assert lost is None
    assert (won_first.pk, won_first.owner, won_first.attempt, won_first.logged_seq) == (
        first.pk, ME, 1, 0)
    assert (won_last.pk, won_last.attempt, won_last.logged_seq) == (last.pk, 1, 2)
    for task in (first, last):  # the callers' instances: the row as the claim left it
        assert (task.status, task.lease_owner, task.attempts) == (Status.RUNNING, ME, 1)
        assert near(task.lease_expires_at, 30)
    assert StepTask.objects.get(pk=taken.pk).lease_owner == OTHER


def test_a_claim_group_that_fails_answers_its_own_claims_and_the_next_group_still_claims(
    monkeypatch,
):
    claim_group = leases._claim_group
    broken = RuntimeError("the statement failed")

    def failing_for_steptasks(model, *args):
        if model is StepTask:
            raise broken
        return claim_group(model, *args)

    monkeypatch.setattr(leases, "_claim_group", failing_for_steptasks)
    step_tasks = [StepTask.objects.create() for _ in range(2)]
    retry_task = RetryTask.objects.create()
    answers = leases._claim_all(claims_of([*step_tasks, retry_task]))
    assert answers[:2] == [broken, broken]
    assert answers[2] is not None and answers[2].pk == retry_task.pk


def test_new_tasks_saved_together_are_one_insert_per_model_each_with_its_own_answer():
    fresh = [StepTask(), StepTask()]
    other_model = RetryTask()
    with CaptureQueriesContext(connection) as queries:
        answers = leases._create_all([fresh[0], other_model, fresh[1]])
    assert answers == [None, None, None]
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    shared = connection.features.can_return_rows_from_bulk_insert
    assert len(inserts) == (2 if shared else 3)
    for task in (*fresh, other_model):
        assert task.pk is not None
        assert type(task).objects.get(pk=task.pk).status == Status.PENDING
    clash = StepTask(pk=fresh[0].pk)  # a pk already taken: that statement fails
    answers = leases._create_all([clash, StepTask(), RetryTask()])
    assert isinstance(answers[0], Exception)
    # With one INSERT for the model, its other task hears the same error; alone, it went in.
    assert answers[1] is (answers[0] if shared else None)
    assert answers[2] is None


def test_a_lease_names_its_row_only_while_it_holds_it():
    task = StepTask.objects.create()
    lease = leases._claim_all(claims_of([task]))[0]
    sql, params = lease.fence_sql(connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert [pk for (pk,) in cursor.fetchall()] == [task.pk]
    assert list(lease.rows().values_list("pk", flat=True)) == [task.pk]
    StepTask.objects.filter(pk=task.pk).update(attempts=2)  # claimed again meanwhile
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.fetchall() == []
    assert not lease.rows().exists()


def test_a_lone_new_task_is_inserted_with_save_never_written_over_another():
    saved = []

    def note(sender, instance, created, **kwargs):
        saved.append((instance.pk, created))

    post_save.connect(note, sender=BurstTask)
    try:
        alone = BurstTask(count=3)
        assert leases._create_all([alone]) == [None]
        assert saved == [(alone.pk, True)]  # a lone task goes through save(): its signals fire
        clash = BurstTask(pk=alone.pk, count=9)
        [error] = leases._create_all([clash])
        assert isinstance(error, IntegrityError)  # an INSERT, not an UPDATE of the other row
        assert BurstTask.objects.get(pk=alone.pk).count == 3
    finally:
        post_save.disconnect(note, sender=BurstTask)


def test_a_lease_matches_only_its_own_running_row():
    task, neighbour = StepTask.objects.create(), StepTask.objects.create()
    lease, _ = leases._claim_all(claims_of([task, neighbour]))  # same owner, same attempt
    assert list(lease.rows().values_list("pk", flat=True)) == [task.pk]
    StepTask.objects.filter(pk=task.pk).update(lease_owner=OTHER)
    assert not lease.rows().exists()
    StepTask.objects.filter(pk=task.pk).update(lease_owner=ME, status=Status.COMPLETED)
    assert not lease.rows().exists()


async def test_create_saves_a_new_task_pending_with_the_others_of_the_moment():
    tasks = [StepTask(), StepTask(), RetryTask()]
    assert await asyncio.gather(*(leases.create(task) for task in tasks)) == [None] * 3
    for task in tasks:
        assert (await type(task).objects.aget(pk=task.pk)).status == Status.PENDING
