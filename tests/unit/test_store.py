"""The event log (streamapp/eventlog/store.py) on the real database: what each read returns.

scripts/mutation runs these.
"""

from __future__ import annotations

import datetime as dt

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError
from django.utils import timezone

from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.exceptions import LeaseLost
from streamapp.runner import leases
from tests.testapp.models import StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp"]
)

KEY = "app.model.1"
OTHER = "app.model.2"


def events(first, last, at=None, name="step"):
    at = at or timezone.now()
    return [LoggedEvent(seq, name, f'{{"seq":{seq}}}', at) for seq in range(first, last + 1)]


async def test_a_batch_is_stored_as_given_and_read_back_in_order():
    moment = timezone.now().replace(microsecond=0)
    await store.append(KEY, list(reversed(events(1, 3, moment))))
    await store.append(OTHER, events(1, 1, moment))
    assert await store.since(KEY, 0) == [(1, '{"seq":1}'), (2, '{"seq":2}'), (3, '{"seq":3}')]
    assert await sync_to_async(store.recent)(KEY, 2) == [
        LoggedEvent(3, "step", '{"seq":3}', moment), LoggedEvent(2, "step", '{"seq":2}', moment),
    ]


async def test_a_batch_is_written_whole_or_not_at_all():
    await store.append(KEY, events(1, 1))
    with pytest.raises(IntegrityError):
        await store.append(KEY, events(2, 2) + events(1, 1))  # seq 1 again: the batch fails
    assert await store.since(KEY, 0) == [(1, '{"seq":1}')]


async def test_a_batch_tried_again_after_its_answer_was_lost_is_in_once():
    """The connection dropped as the INSERT committed: the retry finds its own rows."""
    batch = events(1, 3)
    await store.append(KEY, batch)
    await store.append(KEY, batch)  # the retry: no error, nothing twice
    assert [seq for seq, _ in await store.since(KEY, 0)] == [1, 2, 3]
    other = [LoggedEvent(2, "step", '{"seq":"someone else"}', timezone.now())]
    with pytest.raises(IntegrityError):  # a taken seq with other content is still refused
        await store.append(KEY, other)


async def test_since_reads_after_a_seq_up_to_another_a_page_at_a_time():
    await store.append(KEY, events(1, 6))
    await store.append(OTHER, events(1, 9))
    assert [s for s, _ in await store.since(KEY, 2)] == [3, 4, 5, 6]
    assert [s for s, _ in await store.since(KEY, 2, upto=4)] == [3, 4]
    assert [s for s, _ in await store.since(KEY, 2, upto=5, limit=2)] == [3, 4]
    assert [s for s, _ in await store.since(KEY, 0, limit=1)] == [1]
    assert await store.since(KEY, 6) == [] and await store.since("none.of.them", 0) == []


async def test_sizes_are_the_frame_lengths_of_a_stretch():
    await store.append(KEY, [LoggedEvent(1, "a", "x" * 5, timezone.now()),
                             LoggedEvent(2, "a", "é" * 7, timezone.now()),
                             LoggedEvent(3, "a", "y", timezone.now()),
                             LoggedEvent(4, "a", "zz", timezone.now())])
    await store.append(OTHER, [LoggedEvent(5, "a", "other task", timezone.now())])
    assert await store.sizes(KEY, 0, 9, 10) == [(1, 5), (2, 7), (3, 1), (4, 2)]
    assert await store.sizes(KEY, 1, 3, 10) == [(2, 7), (3, 1)]
    assert await store.sizes(KEY, 0, 4, 2) == [(1, 5), (2, 7)]


async def test_the_latest_current_and_oldest_seq():
    assert await store.latest(KEY) is None
    assert await store.current_seq(KEY) == 0 and await store.oldest_seq(KEY) == 0
    await store.append(KEY, events(4, 7))
    await store.append(OTHER, events(1, 9))
    assert await store.latest(KEY) == (7, '{"seq":7}')
    assert await store.current_seq(KEY) == 7 and await store.oldest_seq(KEY) == 4


async def test_current_seqs_of_many_tasks_in_one_query():
    await store.append(KEY, events(1, 3))
    await store.append(OTHER, events(1, 5))
    await store.append("app.model.3", events(1, 1))
    assert await store.current_seqs([KEY, OTHER, "app.model.4"]) == {KEY: 3, OTHER: 5}
    assert await store.current_seqs([]) == {}


async def test_trim_keeps_the_newest_events_of_one_task():
    await store.append(KEY, events(1, 10))
    await store.append(OTHER, events(1, 10))
    assert await store.trim(KEY, 4) == 6
    assert [s for s, _ in await store.since(KEY, 0)] == [7, 8, 9, 10]
    assert await store.trim(KEY, 4) == 0
    assert await store.trim(KEY, 10) == 0
    assert await store.count([OTHER]) == 10


async def test_delete_and_count_by_task():
    await store.append(KEY, events(1, 3))
    await store.append(OTHER, events(1, 2))
    await store.append("app.model.3", events(1, 1))
    assert await store.count([KEY, OTHER]) == 5 and await store.count([]) == 0
    assert await store.delete([KEY, "app.model.3"]) == 4
    assert await store.count([KEY, OTHER, "app.model.3"]) == 2


async def test_recent_is_newest_first_and_bounded():
    await store.append(KEY, events(1, 5))
    assert [e.seq for e in await sync_to_async(store.recent)(KEY, 3)] == [5, 4, 3]
    assert await sync_to_async(store.recent)(OTHER, 3) == []


async def test_keys_logged_before_a_time_by_prefix():
    old = timezone.now() - dt.timedelta(days=2)
    await store.append("app.model.1", events(1, 2, old))
    await store.append("app.model.2", events(1, 1, timezone.now()))
    await store.append("app.other.3", events(1, 1, old))
    await store.append("app.model.4", events(1, 1, old) + events(2, 2, timezone.now()))
    cutoff = timezone.now() - dt.timedelta(days=1)
    assert sorted(await store.keys_logged_before("app.model.", cutoff)) == [
        "app.model.1", "app.model.4",
    ]
    assert await store.keys_logged_before("app.model.", old) == []


async def test_a_batch_bigger_than_one_statement_is_stored_whole():
    await store.append(KEY, events(1, 450))  # several INSERTs under SQLite's parameter limit
    assert await store.count([KEY]) == 450 and await store.current_seq(KEY) == 450
    assert await sync_to_async(store.last_logged_seq)(KEY) == 450
    assert await sync_to_async(store.last_logged_seq)(OTHER) == 0


async def test_a_fenced_batch_is_written_only_while_the_lease_holds():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, "host:1:me", 30.0)
    await store.append(task.task_key, events(1, 2), fence=lease.rows())
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="host:2:other")
    with pytest.raises(LeaseLost, match="the run's lease is gone; 3 events not logged"):
        await store.append(task.task_key, events(3, 5), fence=lease.rows())
    assert [s for s, _ in await store.since(task.task_key, 0)] == [1, 2]


async def test_a_fenced_batch_of_many_statements_is_all_or_nothing():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, "host:1:me", 30.0)
    await store.append(task.task_key, events(1, 450), fence=lease.rows())
    await StepTask.objects.filter(pk=task.pk).aupdate(status="failed")
    with pytest.raises(LeaseLost):
        await store.append(task.task_key, events(451, 900), fence=lease.rows())
    assert await store.current_seq(task.task_key) == 450
