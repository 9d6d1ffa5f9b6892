"""Group commits (streamapp/eventlog/commits.py): writes that wait together share a thread hop,
the appends of many tasks one INSERT, and each keeps its own fence (DESIGN §4)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connections
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streamapp.coordinator import coordinator
from streamapp.eventlog import commits, store
from streamapp.eventlog.store import LoggedEvent
from streamapp.exceptions import LeaseLost
from streamapp.runner import leases, outcomes
from tests.runnerapp.models import RetryTask
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


def _capture(on: bool) -> list[str]:
    connection = connections["default"]
    connection.force_debug_cursor = on
    found = [query["sql"] for query in connection.queries_log]
    connection.queries_log.clear()
    return found


@contextlib.asynccontextmanager
async def statements():
    """The SQL the database thread runs meanwhile."""
    found: list[str] = []
    await sync_to_async(_capture)(True)
    try:
        yield found
    finally:
        found.extend(await sync_to_async(_capture)(False))


def events(task, first, last):
    now = timezone.now()
    return [LoggedEvent(seq, "step", f'{{"seq": {seq}}}', now) for seq in range(first, last + 1)]


async def claimed(count):
    tasks = [await StepTask.objects.acreate() for _ in range(count)]
    return [(task, await leases.claim(task, "owner-a", 30)) for task in tasks]


async def test_appends_that_wait_together_share_one_insert_each_behind_its_own_fence():
    held = await claimed(4)
    stale_task, stale_lease = held[1]
    # The sweeper ended that run and another worker took it: its lease is gone.
    await StepTask.objects.filter(pk=stale_task.pk).aupdate(attempts=stale_lease.attempt + 1)

    async with statements() as sql:
        answers = await asyncio.gather(
            *(store.append(task.task_key, events(task, 1, 3), lease.rows())
              for task, lease in held),
            return_exceptions=True,
        )
    assert [type(o).__name__ for o in answers] == ["NoneType", "LeaseLost", "NoneType",
                                                    "NoneType"]
    assert str(answers[1]) == (f"{stale_task.task_key}: the run's lease is gone; "
                               "3 events not logged")
    inserts = [q for q in sql if q.startswith("INSERT")]
    assert len(inserts) == 1 and inserts[0].count("UNION ALL") == 3
    for task, _ in held:
        logged = [seq for seq, _ in await store.since(task.task_key, 0)]
        assert logged == ([] if task is stale_task else [1, 2, 3])


async def test_a_batch_that_breaks_the_shared_statement_fails_alone():
    held = await claimed(3)
    first_task, first_lease = held[0]
    await store.append(first_task.task_key, events(first_task, 1, 1), first_lease.rows())
    answers = await asyncio.gather(
        *(store.append(task.task_key, events(task, 1, 2), lease.rows()) for task, lease in held),
        return_exceptions=True,
    )  # seq 1 of the first task is logged already: only its batch breaks the unique key
    assert answers[0] is not None and not isinstance(answers[0], LeaseLost)
    assert answers[1:] == [None, None]
    assert [seq for seq, _ in await store.since(first_task.task_key, 0)] == [1]


async def test_other_writes_share_the_hop_and_keep_their_own_answers():
    hops = 0
    execute = commits.execute

    def counted(group):
        nonlocal hops
        hops += 1
        return execute(group)

    committer = commits.committer()
    original, commits.execute = commits.execute, counted
    try:
        tasks = [await StepTask.objects.acreate() for _ in range(5)]
        won = await asyncio.gather(*(leases.claim(task, "owner-b", 30) for task in tasks),
                                   *(leases.claim(task, "owner-c", 30) for task in tasks))
    finally:
        commits.execute = original
    assert [lease is not None for lease in won] == [True] * 5 + [False] * 5  # first come wins
    assert hops <= 2  # a first hop for whatever came first, then the rest together
    assert committer._task is None or not committer._waiting


async def test_claims_that_wait_together_are_one_update_and_first_come_wins():
    tasks = [await StepTask.objects.acreate() for _ in range(4)]
    async with statements() as sql:
        won = await asyncio.gather(*(leases.claim(task, "owner-d", 30) for task in tasks),
                                   leases.claim(tasks[0], "owner-e", 30))
    assert [lease is not None for lease in won] == [True, True, True, True, False]
    assert all(task.status == "running" and task.lease_owner == "owner-d" for task in tasks)
    assert all(lease.attempt == 1 and lease.logged_seq == 0 for lease in won[:4])
    claims = [q for q in sql if q.startswith("UPDATE") and "owner-d" in q]
    assert len(claims) == 1  # the four claims of owner-d, one statement


async def test_a_new_task_is_saved_with_the_others_started_at_the_same_moment():
    tasks = [BurstTask(count=3) for _ in range(5)]
    async with statements() as sql:
        started = await asyncio.gather(*(coordinator.start_task(task) for task in tasks))
    assert started == [True] * 5 and len({task.pk for task in tasks}) == 5
    assert len([q for q in sql if q.startswith("INSERT INTO \"testapp_bursttask\"")]) == 1
    for task in tasks:
        assert await coordinator.wait_task(task, timeout=10)
        await task.arefresh_from_db()
        assert (task.status, task.last_seq, task.attempts) == ("completed", 3, 1)
        assert [seq for seq, _ in await store.since(task.task_key, 0)] == [1, 2, 3]


async def test_outcomes_recorded_together_share_one_commit_each_under_its_own_lease(
    monkeypatch,
):
    held = await claimed(4)
    stale_task, stale_lease = held[1]
    await StepTask.objects.filter(pk=stale_task.pk).aupdate(attempts=stale_lease.attempt + 1)
    groups = []
    finish_together = outcomes._finish_together

    def watched(written, alias):
        groups.append((len(written), connections[alias].in_atomic_block))
        return finish_together(written, alias)

    monkeypatch.setattr(outcomes, "_finish_together", watched)
    async with statements() as sql:
        answers = await asyncio.gather(
            *(outcomes.finish(lease, "completed", last_seq=0, final_value=n)
              for n, (_, lease) in enumerate(held)),
            return_exceptions=True,
        )
    assert [type(o).__name__ for o in answers] == ["NoneType", "LeaseLost", "NoneType",
                                                    "NoneType"]
    assert groups == [(4, True)]  # the four together, in one transaction: one commit
    updates = [q for q in sql if q.startswith("UPDATE")]
    # PostgreSQL: one UPDATE from a VALUES list; elsewhere one each, in that transaction.
    assert len(updates) == (1 if connections["default"].vendor == "postgresql" else 4)
    for n, (task, _) in enumerate(held):
        await task.arefresh_from_db()
        if task is stale_task:
            assert (task.status, task.final_value) == ("running", None)  # fenced out
        else:
            assert (task.status, task.final_value, task.lease_owner) == ("completed", n, "")
            assert task.completed_at is not None and task.revision == 2  # claimed, finished


async def test_an_outcome_the_database_refuses_fails_alone():
    held = await claimed(3)
    refused = object()  # no JSON for it: its UPDATE fails, and the transaction with it
    answers = await asyncio.gather(
        *(outcomes.finish(lease, "completed", last_seq=0, final_value=refused if n == 1 else n)
          for n, (_, lease) in enumerate(held)),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in answers] == ["NoneType", "TypeError", "NoneType"]
    statuses = []
    for task, _ in held:
        await task.arefresh_from_db()
        statuses.append(task.status)
    assert statuses == ["completed", "running", "completed"]  # the others written on their own


async def test_outcomes_of_every_kind_written_together_read_back_as_written():
    held = await claimed(3)
    error = {"type": "ValueError", "message": "no"}
    await asyncio.gather(
        outcomes.finish(held[0][1], "completed", last_seq=4, final_value={"rows": [1, 2]}),
        outcomes.finish(held[1][1], "failed", last_seq=2, error=error),
        outcomes.finish(held[2][1], "pending", last_seq=1, error=error),  # a retry
    )
    found = []
    for task, _ in held:
        await task.arefresh_from_db()
        found.append((task.status, task.last_seq, task.final_value, task.error,
                      task.completed_at is None, task.lease_owner, task.lease_expires_at))
    assert found == [
        ("completed", 4, {"rows": [1, 2]}, None, False, "", None),
        ("failed", 2, None, error, False, "", None),
        ("pending", 1, None, error, True, "", None),
    ]


async def test_two_outcomes_share_a_commit_and_each_model_its_own_statement(monkeypatch):
    """From two outcomes on, one transaction; the outcomes of each model apart, whatever the
    order they came in (a statement names one model's table)."""
    step = await claimed(2)
    retry = [(task, await leases.claim(task, "owner-a", 30))
             for task in [await RetryTask.objects.acreate() for _ in range(2)]]
    finish_together = outcomes._finish_together
    groups = []

    def watched(written, alias):
        groups.append(({o.lease.model for o in written}, len(written),
                       connections[alias].in_atomic_block))
        return finish_together(written, alias)

    monkeypatch.setattr(outcomes, "_finish_together", watched)
    await asyncio.gather(*(outcomes.finish(lease, "completed", last_seq=0) for _, lease in step))
    assert groups == [({StepTask}, 2, True)]
    groups.clear()
    mixed = [*await claimed(1), *retry]
    answers = await asyncio.gather(
        *(outcomes.finish(lease, "completed", last_seq=0) for _, lease in mixed),
        return_exceptions=True,
    )
    assert answers == [None, None, None]
    assert sorted((sorted(m.__name__ for m in models), n) for models, n, _ in groups) == [
        (["RetryTask"], 2), (["StepTask"], 1)]
    assert all(in_transaction for _, _, in_transaction in groups)
    for task, _ in mixed:
        assert (await type(task).objects.aget(pk=task.pk)).status == "completed"


def test_batches_share_statements_up_to_the_parameter_limit_and_a_bigger_one_goes_alone(
    monkeypatch,
):
    """Five parameters an event: with a limit of 30, two batches of 3 events fill a statement
    exactly, the next batch starts another, and a batch of 7 events (35) goes alone, itself
    split where the limit falls."""
    connection = connections["default"]
    if not connection.features.can_return_rows_from_bulk_insert:
        pytest.skip("a database that cannot say which rows went in writes each batch alone")
    monkeypatch.setattr(connection.features, "max_query_params", 30)
    sizes = {"a": 3, "b": 3, "c": 2, "d": 7, "e": 1}
    batches = [(f"testapp.steptask.{name}", events(None, 1, count), None)
               for name, count in sizes.items()]
    with CaptureQueriesContext(connection) as queries:
        assert store.insert_many(batches) == [None] * 5
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    # a + b together; d alone, in two statements (6 events fill one); c + e together
    assert len(inserts) == 4
    shared = [sql for sql in inserts if " UNION ALL " in sql]
    assert sorted(sql.count("VALUES") for sql in shared) == [2, 2]
    for key, stored in zip(sizes, batches, strict=True):
        assert [seq for seq, _ in async_to_sync(store.since)(stored[0], 0)] == list(
            range(1, sizes[key] + 1))
    # Two batches fill a statement, and the last one is left on its own: it goes alone.
    batches = [(f"testapp.steptask.{name}", events(None, 1, count), None)
               for name, count in {"x": 3, "y": 3, "z": 1}.items()]
    with CaptureQueriesContext(connection) as queries:
        assert store.insert_many(batches) == [None] * 3
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    assert [sql.count("UNION ALL") for sql in inserts] == [1, 0]
    assert [seq for seq, _ in async_to_sync(store.since)("testapp.steptask.z", 0)] == [1]
    # After a flush the count starts again from nothing: q and r fill the next one exactly.
    batches = [(f"testapp.steptask.{name}", events(None, 1, count), None)
               for name, count in {"p": 6, "q": 3, "r": 3}.items()]
    with CaptureQueriesContext(connection) as queries:
        assert store.insert_many(batches) == [None] * 3
    inserts = [q["sql"] for q in queries if q["sql"].startswith("INSERT")]
    assert [sql.count("UNION ALL") for sql in inserts] == [0, 1]


def test_a_batch_too_big_to_share_a_statement_still_goes_behind_its_fence(monkeypatch):
    connection = connections["default"]
    monkeypatch.setattr(connection.features, "max_query_params", 30)
    task = StepTask.objects.create()
    [lease] = leases._claim_all([(task, "owner-a", 30.0, ("pending",))])
    StepTask.objects.filter(pk=task.pk).update(attempts=lease.attempt + 1)  # taken from it
    answers = store.insert_many([
        ("testapp.steptask.small", events(None, 1, 1), None),
        (task.task_key, events(task, 1, 7), lease.rows()),
    ])
    assert answers[0] is None and isinstance(answers[1], LeaseLost)
    assert async_to_sync(store.since)(task.task_key, 0) == []
