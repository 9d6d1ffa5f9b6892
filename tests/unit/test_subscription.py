"""The seq rule of consumers/subscription.py, case by case (scripts/mutation runs these).

Every socket gets each seq once, in order, with no gap, and the final state after the last event.
The event log is the real one (SQLite); the outlet and the feed are fakes with the interfaces
consumers/subscription.py names, so every case is driven step by step.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from consumers.logpages import LogPages
from consumers.subscription import Subscription
from streamapp import metrics, protocol
from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.positions import Position
from tests.testapp.models import StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp"]
)


class Outlet:
    """Records what it is sent; congested once it holds ``room`` frames (None: never)."""

    def __init__(self, room: int | None = None) -> None:
        self.sent: list[dict] = []
        self.room = room
        self.after_send = None  # called (awaited) after each frame, to act in the middle

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))
        if self.after_send is not None:
            await self.after_send()

    def congested(self) -> bool:
        return self.room is not None and len(self.sent) >= self.room

    async def has_room(self) -> bool:
        return not self.congested()


class Feed:
    def __init__(self) -> None:
        self.joins: list[str] = []
        self.leaves: list[str] = []

    async def join(self, key: str) -> None:
        self.joins.append(key)

    async def leave(self, key: str) -> None:
        self.leaves.append(key)


class PagedLog(LogPages):
    """The real log reader, handing out at most ``page`` rows a read, and counting reads.

    A subscription that reads over and over without getting further is a bug (it would hammer
    the database): past MAX_READS the read fails the test at once instead of spinning.
    """

    MAX_READS = 50

    def __init__(self, page: int | None = None) -> None:
        super().__init__()
        self.page = page
        self.reads = 0

    async def read(self, key, after, upto):
        self.reads += 1
        assert self.reads <= self.MAX_READS, "the log was read over and over"
        rows = await super().read(key, after, upto)
        return rows[: self.page] if self.page else rows


async def log_events(task, first, last):
    """Log events ``first..last`` as the runner does; returns their ``(seq, frame)``."""
    now = timezone.now()
    batch = [
        LoggedEvent(seq, "step", protocol.encode(protocol.event(task.task_key, seq, "step", {},
                                                                 now)), now)
        for seq in range(first, last + 1)
    ]
    await store.append(task.task_key, batch)
    return [(event.seq, event.frame) for event in batch]


async def set_state(task, status, seq, revision):
    """Record a status as the runner does; returns its ``stream.state`` message."""
    await StepTask.objects.filter(pk=task.pk).aupdate(
        status=status, last_seq=seq, revision=revision
    )
    frame = protocol.encode(protocol.state(task.task_key, status, seq))
    return {"revision": revision, "status": status, "seq": seq, "frame": frame}


def shape(sent):
    """Each frame as (type, seq, status or error code)."""
    return [(f["type"], f.get("seq"), f.get("status") or f.get("code")) for f in sent]


def event_seqs(sent):
    return [f["seq"] for f in sent if f["type"] == "event"]


@pytest.fixture
async def task():
    return await StepTask.objects.acreate(status="running", revision=1)


async def subscribe(task, since=None, room=None, page=None):
    outlet, feed, log = Outlet(room), Feed(), PagedLog(page)
    subscription = Subscription(task, feed, outlet, log)
    _, notes = await subscription.open(since)
    return subscription, outlet, feed, log, notes


# -- live news ----------------------------------------------------------------------------------


async def test_overlapping_live_news_is_sent_once_and_straight_from_the_batch(task):
    """Replay 1..3, then a live batch 2..5: 4 and 5 go out once, from the batch, no log read."""
    logged = await log_events(task, 1, 3)
    subscription, outlet, _, log, _ = await subscribe(task, since=0)
    reads = log.reads
    logged += await log_events(task, 4, 5)
    await subscription.on_events(logged[1:])
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5]
    assert log.reads == reads and subscription.last_seq == 5 and not subscription.behind


async def test_a_batch_wholly_sent_already_changes_nothing(task):
    logged = await log_events(task, 1, 3)
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    await subscription.on_events(logged[:3])
    await subscription.on_events(logged[2:3])
    assert event_seqs(outlet.sent) == [1, 2, 3]
    assert subscription.known_seq == 3 and not subscription.behind


async def test_old_news_does_no_work_even_while_behind(task):
    """A batch already sent is dropped at once: no log read, even with a catch-up waiting."""
    logged = await log_events(task, 1, 4)
    subscription, outlet, _, log, _ = await subscribe(task, since=0, room=3)
    assert event_seqs(outlet.sent) == [1, 2] and subscription.behind
    outlet.room = None
    reads = log.reads
    await subscription.on_events(logged[1:2])  # seq 2 again: the resume is the upkeep's job
    assert log.reads == reads and event_seqs(outlet.sent) == [1, 2]


async def test_a_gap_at_the_batch_first_event_is_filled_from_the_log_first(task):
    subscription, outlet, _, log, _ = await subscribe(task, since=0)
    logged = await log_events(task, 1, 5)
    await subscription.on_events(logged[:2])
    await subscription.on_events(logged[3:])  # 4, 5: seq 3 was lost on the way
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5]
    assert log.reads == 1 and subscription.last_seq == 5


async def test_a_gap_inside_a_batch_is_filled_from_the_log(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    logged = await log_events(task, 1, 6)
    await subscription.on_events([logged[0], logged[1], logged[4], logged[5]])
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5, 6]


async def test_in_step_live_news_goes_out_without_reading_the_log(task):
    subscription, outlet, _, log, _ = await subscribe(task, since=0)
    logged = await log_events(task, 1, 4)
    await subscription.on_events(logged[:1])
    await subscription.on_events(logged[1:])
    assert event_seqs(outlet.sent) == [1, 2, 3, 4] and log.reads == 0


async def test_a_congested_outlet_stops_live_news_and_the_log_has_it_later(task):
    subscription, outlet, _, log, _ = await subscribe(task, since=0, room=3)
    logged = await log_events(task, 1, 5)
    await subscription.on_events(logged)
    assert event_seqs(outlet.sent) == [1, 2]  # the state frame, 1, 2: full
    assert subscription.behind and subscription.known_seq == 5 and subscription.last_seq == 2
    outlet.room = None
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5] and not subscription.behind


# -- in step or not: the hub's inline path ----------------------------------------------------


async def test_in_step_only_for_the_next_seq_with_nothing_held_back(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    logged = await log_events(task, 1, 2)
    await subscription.on_events(logged)
    assert subscription.in_step(3) and subscription.in_step(2)
    assert not subscription.in_step(4)
    outlet.room = len(outlet.sent)
    assert not subscription.in_step(3)  # congested


async def test_not_in_step_while_behind(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=2)
    logged = await log_events(task, 1, 3)
    await subscription.on_events(logged)
    outlet.room = None  # room again, but 2 and 3 are still to send
    assert subscription.behind and not subscription.in_step(2)


async def test_not_in_step_while_a_delivery_is_under_way(task):
    """Opening holds the subscription: news arriving meanwhile must wait its turn."""
    outlet, seen = Outlet(), []
    subscription = Subscription(task, Feed(), outlet, PagedLog())

    async def look():
        seen.append(subscription.in_step(1))

    outlet.after_send = look
    await subscription.open(since=0)
    assert shape(outlet.sent) == [("state", 0, "running")] and seen == [False]
    assert subscription.in_step(1)


# -- opening --------------------------------------------------------------------------------------


async def test_open_without_since_sends_the_state_then_the_latest_event(task):
    await log_events(task, 1, 3)
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=3)
    subscription, outlet, feed, _, notes = await subscribe(task)
    assert notes == [] and feed.joins == [task.task_key]
    assert shape(outlet.sent) == [("state", 3, "running"), ("event", 3, None)]
    assert subscription.last_seq == subscription.known_seq == 3 and not subscription.behind
    logged = await log_events(task, 4, 4)
    await subscription.on_events(logged)
    assert event_seqs(outlet.sent) == [3, 4]


async def test_an_event_logged_while_the_state_goes_out_is_the_latest_sent_once(task):
    """Opening reads the state and the latest event in one query: one logged while the state
    goes out comes after it, once, whether the live news or the log brings it."""
    await log_events(task, 1, 2)
    outlet, logged = Outlet(), []

    async def log_one_more():
        if len(outlet.sent) == 1:
            logged.extend(await log_events(task, 3, 3))

    outlet.after_send = log_one_more
    subscription = Subscription(task, Feed(), outlet, PagedLog())
    await subscription.open(since=None)
    assert shape(outlet.sent) == [("state", 2, "running"), ("event", 2, None)]
    await subscription.on_events(logged)
    await subscription.on_events(logged)  # the same news twice: sent once
    assert event_seqs(outlet.sent) == [2, 3] and subscription.last_seq == 3


async def test_open_without_since_on_a_task_with_no_events_sends_the_state_only(task):
    subscription, outlet, _, _, notes = await subscribe(task)
    assert notes == [] and shape(outlet.sent) == [("state", 0, "running")]
    assert subscription.last_seq == 0
    await subscription.on_events(await log_events(task, 1, 1))
    assert event_seqs(outlet.sent) == [1]


async def test_open_without_since_on_a_finished_task_ends_with_the_state_again(task):
    await log_events(task, 1, 2)
    await set_state(task, "completed", 2, 2)
    subscription, outlet, _, _, _ = await subscribe(task)
    assert shape(outlet.sent) == [
        ("state", 2, "completed"), ("event", 2, None), ("state", 2, "completed"),
    ]
    assert subscription.finished


async def test_open_without_since_on_a_finished_task_with_no_events_sends_one_state(task):
    await set_state(task, "completed", 0, 2)
    subscription, outlet, _, _, _ = await subscribe(task)
    assert shape(outlet.sent) == [("state", 0, "completed")] and subscription.finished


async def test_open_without_since_trusts_the_row_when_the_log_was_purged(task):
    """The row says 5, the log has nothing: the next live event is 6, not a replay from 1."""
    await set_state(task, "running", 5, 1)
    subscription, outlet, _, _, _ = await subscribe(task)
    assert shape(outlet.sent) == [("state", 5, "running")] and subscription.last_seq == 5
    await subscription.on_events(await log_events(task, 6, 6))
    assert shape(outlet.sent[1:]) == [("event", 6, None)]


async def test_open_with_since_replays_what_was_missed(task):
    await log_events(task, 1, 4)
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=4)
    subscription, outlet, _, log, notes = await subscribe(task, since=1)
    assert notes == []
    assert shape(outlet.sent) == [
        ("state", 4, "running"), ("event", 2, None), ("event", 3, None), ("event", 4, None),
    ]
    assert log.reads == 1 and not subscription.behind and not subscription.finished


async def test_open_with_since_at_the_last_seq_sends_the_state_only(task):
    await log_events(task, 1, 2)
    subscription, outlet, _, log, notes = await subscribe(task, since=2)
    assert notes == [] and shape(outlet.sent) == [("state", 2, "running")] and log.reads == 0


async def test_open_with_since_ahead_of_the_task_says_so_and_goes_on_from_its_last_seq(task):
    await log_events(task, 1, 2)
    subscription, outlet, _, _, notes = await subscribe(task, since=7)
    assert [(n["code"], n["task"]) for n in notes] == [("bad_request", task.task_key)]
    assert "since 7 is ahead of the task's last seq 2" in notes[0]["message"]
    assert shape(outlet.sent) == [("state", 2, "running")]
    await subscription.on_events(await log_events(task, 3, 3))
    assert event_seqs(outlet.sent) == [3]


async def test_open_with_since_on_a_finished_task_ends_with_the_final_state(task):
    await log_events(task, 1, 3)
    await set_state(task, "failed", 3, 2)
    subscription, outlet, _, _, _ = await subscribe(task, since=1)
    assert shape(outlet.sent) == [
        ("state", 3, "failed"), ("event", 2, None), ("event", 3, None), ("state", 3, "failed"),
    ]
    assert subscription.finished


async def test_open_with_since_at_the_end_of_a_finished_task_sends_one_state(task):
    await log_events(task, 1, 3)
    await set_state(task, "completed", 3, 2)
    subscription, outlet, _, _, _ = await subscribe(task, since=3)
    assert shape(outlet.sent) == [("state", 3, "completed")] and subscription.finished


async def test_a_replay_of_a_running_task_does_not_repeat_its_state(task):
    await log_events(task, 1, 2)
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    assert shape(outlet.sent) == [("state", 2, "running"), ("event", 1, None), ("event", 2, None)]


# -- history the log no longer keeps ----------------------------------------------------------


async def test_a_replay_older_than_the_log_says_history_truncated_and_goes_on(task):
    await log_events(task, 4, 6)  # 1..3 trimmed
    subscription, outlet, _, _, _ = await subscribe(task, since=1)
    assert shape(outlet.sent) == [
        ("state", 6, "running"), ("error", None, "history_truncated"),
        ("event", 4, None), ("event", 5, None), ("event", 6, None),
    ]
    error = outlet.sent[1]
    assert error["oldest_seq"] == 4 and error["task"] == task.task_key
    assert "events after seq 1 are no longer kept; resuming at 4" in error["message"]


async def test_even_one_trimmed_event_is_reported(task):
    await log_events(task, 3, 4)  # 1 and 2 trimmed; the client has 1
    subscription, outlet, _, _, _ = await subscribe(task, since=1)
    assert shape(outlet.sent) == [
        ("state", 4, "running"), ("error", None, "history_truncated"),
        ("event", 3, None), ("event", 4, None),
    ]
    assert outlet.sent[1]["oldest_seq"] == 3


async def test_a_replay_of_a_purged_log_resumes_after_the_task_last_seq(task):
    """Nothing logged is left: the client learns it, and the next live event follows on."""
    await set_state(task, "running", 5, 1)
    subscription, outlet, _, _, _ = await subscribe(task, since=2)
    assert shape(outlet.sent) == [("state", 5, "running"), ("error", None, "history_truncated")]
    assert outlet.sent[1]["oldest_seq"] == 6 and not subscription.behind
    await subscription.on_events(await log_events(task, 6, 6))
    assert event_seqs(outlet.sent) == [6]


async def test_a_purged_log_of_a_finished_task_still_ends_with_its_state(task):
    await set_state(task, "completed", 5, 2)
    subscription, outlet, _, _, _ = await subscribe(task, since=2)
    assert shape(outlet.sent) == [
        ("state", 5, "completed"), ("error", None, "history_truncated"), ("state", 5, "completed"),
    ]
    assert subscription.finished


# -- reading the log page by page ----------------------------------------------------------------


async def test_a_long_replay_reads_page_after_page_in_order(task):
    await log_events(task, 1, 7)
    subscription, outlet, _, log, _ = await subscribe(task, since=0, page=3)
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5, 6, 7] and log.reads == 3


async def test_a_replay_stops_where_the_outlet_fills_and_resumes_there(task):
    await log_events(task, 1, 6)
    subscription, outlet, _, log, _ = await subscribe(task, since=0, room=3)
    assert event_seqs(outlet.sent) == [1, 2] and log.reads == 1
    outlet.room = 5
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1, 2, 3, 4]
    outlet.room = None
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5, 6] and not subscription.behind


async def test_a_socket_closed_during_a_replay_reads_no_further(task):
    await log_events(task, 1, 9)
    await set_state(task, "completed", 9, 2)
    outlet, log = Outlet(), PagedLog(page=2)
    subscription = Subscription(task, Feed(), outlet, log)

    async def leave_after_two_events():
        if len(outlet.sent) == 3:
            await subscription.close()

    outlet.after_send = leave_after_two_events
    await subscription.open(since=0)
    assert shape(outlet.sent) == [("state", 9, "completed"), ("event", 1, None), ("event", 2, None)]
    assert log.reads == 1


async def test_resume_does_nothing_when_nothing_is_behind(task):
    logged = await log_events(task, 1, 2)
    subscription, outlet, _, log, _ = await subscribe(task, since=0)
    await subscription.on_events(logged)
    reads = log.reads
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1, 2] and log.reads == reads


async def test_resume_after_close_sends_and_reads_nothing(task):
    subscription, outlet, _, log, _ = await subscribe(task, since=0, room=2)
    await subscription.on_events(await log_events(task, 1, 3))
    await subscription.close()
    outlet.room = None
    reads = log.reads
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1] and log.reads == reads


async def test_news_with_a_gap_after_close_reads_nothing(task):
    subscription, outlet, _, log, _ = await subscribe(task, since=0)
    logged = await log_events(task, 1, 3)
    await subscription.close()
    await subscription.on_events(logged[2:])
    assert log.reads == 0 and shape(outlet.sent) == [("state", 0, "running")]


# -- state frames -------------------------------------------------------------------------------


async def test_a_final_state_that_arrives_before_the_last_event_waits_for_it(task):
    """State news overtakes the event it follows: it goes out after event 3, not before."""
    logged = await log_events(task, 1, 3)
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    outlet.sent.clear()
    await log_events(task, 4, 5)
    final = await set_state(task, "completed", 5, 2)
    await subscription.on_state(final)
    assert shape(outlet.sent) == [
        ("event", 4, None), ("event", 5, None), ("state", 5, "completed"),
    ]
    assert subscription.finished
    await subscription.on_events(logged)
    assert len(outlet.sent) == 3


async def test_a_state_kept_for_later_goes_out_between_the_events_it_sits_between(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=2)
    logged = await log_events(task, 1, 4)
    await subscription.on_events(logged[:1])
    await subscription.on_state(await set_state(task, "running", 2, 2))  # a state at seq 2
    await subscription.on_events(logged[1:])
    assert shape(outlet.sent) == [("state", 0, "running"), ("event", 1, None)]
    outlet.room = None
    await subscription.resume()
    assert shape(outlet.sent[2:]) == [
        ("event", 2, None), ("state", 2, "running"), ("event", 3, None), ("event", 4, None),
    ]
    assert not subscription.behind


async def test_a_state_goes_out_after_its_event_even_when_the_outlet_just_filled(task):
    """State frames are small and may end the socket: one due goes out, room or not."""
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=2)
    logged = await log_events(task, 1, 3)
    await subscription.on_events(logged[:1])  # full
    await subscription.on_state(await set_state(task, "running", 2, 2))  # kept: 2 is not sent
    outlet.room = 3  # room for one more frame
    await subscription.on_events(logged[1:])
    assert shape(outlet.sent) == [
        ("state", 0, "running"), ("event", 1, None), ("event", 2, None), ("state", 2, "running"),
    ]
    assert subscription.behind and subscription.last_seq == 2


async def test_a_replay_that_fills_the_outlet_with_the_last_event_still_ends_with_the_state(task):
    await log_events(task, 1, 3)
    await set_state(task, "completed", 3, 2)
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=4)
    assert shape(outlet.sent) == [
        ("state", 3, "completed"), ("event", 1, None), ("event", 2, None), ("event", 3, None),
        ("state", 3, "completed"),
    ]
    assert subscription.finished


async def test_a_state_at_the_seq_already_sent_goes_out_at_once(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    await subscription.on_events(await log_events(task, 1, 2))
    await subscription.on_state(await set_state(task, "cancelled", 2, 2))
    assert shape(outlet.sent[-1:]) == [("state", 2, "cancelled")]
    assert subscription.finished and subscription.ended


async def test_a_state_no_newer_than_the_one_sent_is_dropped(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    await subscription.on_state(await set_state(task, "running", 0, 1))  # the revision sent
    await subscription.on_state({"revision": 0, "status": "pending", "seq": 0, "frame": "{}"})
    assert shape(outlet.sent) == [("state", 0, "running")] and not subscription.behind


async def test_a_newer_state_replaces_one_not_yet_sent(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=1)
    await log_events(task, 1, 3)
    await subscription.on_state(await set_state(task, "running", 1, 2))
    await subscription.on_state(await set_state(task, "completed", 3, 3))
    await subscription.on_state({"revision": 2, "status": "running", "seq": 1, "frame": "{}"})
    assert subscription.known_seq == 3 and subscription.behind
    outlet.room = None
    await subscription.resume()
    assert shape(outlet.sent) == [
        ("state", 0, "running"), ("event", 1, None), ("event", 2, None), ("event", 3, None),
        ("state", 3, "completed"),
    ]
    assert subscription.finished


async def test_state_news_tells_how_far_the_task_has_got(task):
    """A state at seq 3 heard before any event: the events are fetched from the log."""
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    await log_events(task, 1, 3)
    await subscription.on_state(await set_state(task, "running", 3, 2))
    assert shape(outlet.sent[1:]) == [
        ("event", 1, None), ("event", 2, None), ("event", 3, None), ("state", 3, "running"),
    ]


async def test_news_after_close_is_ignored(task):
    subscription, outlet, feed, _, _ = await subscribe(task, since=0)
    await subscription.close()
    await subscription.on_events(await log_events(task, 1, 2))
    await subscription.on_state(await set_state(task, "completed", 2, 2))
    await subscription.converge(Position(revision=2, status="completed", seq=2))
    assert shape(outlet.sent) == [("state", 0, "running")]
    assert feed.leaves == [task.task_key] and feed.joins == [task.task_key]


# -- convergence --------------------------------------------------------------------------------


async def test_missed_compares_both_the_seq_and_the_revision(task):
    subscription, _, _, _, _ = await subscribe(task, since=0)
    await subscription.on_events(await log_events(task, 1, 2))
    assert not subscription.missed(Position(revision=1, status="running", seq=2))
    assert subscription.missed(Position(revision=1, status="running", seq=3))
    assert subscription.missed(Position(revision=2, status="running", seq=2))
    assert not subscription.missed(Position(revision=0, status="running", seq=1))


async def test_converge_with_nothing_missed_does_nothing(task):
    subscription, outlet, feed, log, _ = await subscribe(task, since=0)
    await subscription.on_events(await log_events(task, 1, 2))
    await subscription.converge(Position(revision=1, status="running", seq=2))
    assert feed.joins == [task.task_key] and event_seqs(outlet.sent) == [1, 2] and log.reads == 0


async def test_converge_fetches_lost_events_and_joins_the_feed_again(task):
    subscription, outlet, feed, _, _ = await subscribe(task, since=0)
    await subscription.on_events(await log_events(task, 1, 2))
    await log_events(task, 3, 4)
    await subscription.converge(Position(revision=1, status="running", seq=4))
    assert event_seqs(outlet.sent) == [1, 2, 3, 4]
    assert feed.joins == [task.task_key] * 2 and not subscription.behind


async def test_converge_sends_a_lost_final_state(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0)
    await subscription.on_events(await log_events(task, 1, 2))
    await set_state(task, "completed", 2, 2)  # its state news was lost
    await subscription.converge(Position(revision=2, status="completed", seq=2))
    assert shape(outlet.sent[-1:]) == [("state", 2, "completed")] and subscription.finished


async def test_converge_never_moves_back_what_is_known(task):
    """A position read before the latest news arrived must not lower the seq still to send."""
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=2)
    await subscription.on_events(await log_events(task, 1, 5))
    await set_state(task, "completed", 5, 2)
    await subscription.converge(Position(revision=2, status="completed", seq=3))
    assert subscription.known_seq == 5
    outlet.room = None
    await subscription.resume()
    assert event_seqs(outlet.sent) == [1, 2, 3, 4, 5] and subscription.finished


# -- the subscription's own bookkeeping ------------------------------------------------------


async def test_rejoin_renews_the_feed_until_closed(task):
    subscription, _, feed, _, _ = await subscribe(task, since=0)
    await subscription.rejoin()
    assert feed.joins == [task.task_key] * 2
    await subscription.close()
    await subscription.rejoin()
    assert feed.joins == [task.task_key] * 2


async def test_close_counts_the_subscription_out_once(task):
    gauge = metrics.SUBSCRIPTIONS._value
    before = gauge.get()
    subscription, _, feed, _, _ = await subscribe(task, since=0)
    assert gauge.get() == before + 1
    await subscription.close()
    assert gauge.get() == before
    await subscription.close()
    assert gauge.get() == before and feed.leaves == [task.task_key] * 2


async def test_behind_means_known_but_unsent_events_or_a_state_waiting(task):
    subscription, outlet, _, _, _ = await subscribe(task, since=0, room=1)
    assert not subscription.behind and not subscription.ended
    await log_events(task, 1, 1)
    await subscription.on_state(await set_state(task, "running", 0, 2))
    assert not subscription.behind  # a state at seq 0 went out at once, room or not
    await subscription.on_state(await set_state(task, "completed", 1, 3))
    assert subscription.behind and not subscription.finished
    assert not subscription.ended  # the final state is known, not sent
    outlet.room = None
    await subscription.resume()
    assert subscription.finished


# -- the first cases written for the rule -----------------------------------------------------


async def test_a_congested_socket_only_remembers_and_catches_up_from_the_log(task):
    outlet = Outlet(room=4)
    subscription = Subscription(task, Feed(), outlet)
    await subscription.open(since=None)
    await subscription.on_events(await log_events(task, 1, 2))
    assert shape(outlet.sent) == [("state", 0, "running"), ("event", 1, None), ("event", 2, None)]

    await subscription.on_events(await log_events(task, 3, 6))  # full after seq 3
    await subscription.on_events(await log_events(task, 7, 9))
    await subscription.on_state(await set_state(task, "completed", 9, 2))
    assert [f.get("seq") for f in outlet.sent] == [0, 1, 2, 3]
    assert subscription.behind and subscription.known_seq == 9 and not subscription.finished

    outlet.room = 7  # the client read some: room for three more
    await subscription.resume()
    assert [f.get("seq") for f in outlet.sent] == [0, 1, 2, 3, 4, 5, 6]
    outlet.room = None
    await subscription.resume()
    assert shape(outlet.sent[7:]) == [
        ("event", 7, None), ("event", 8, None), ("event", 9, None), ("state", 9, "completed"),
    ]
    assert subscription.finished


async def test_a_state_goes_out_at_its_place_in_the_stream(task):
    outlet = Outlet(room=1)
    subscription = Subscription(task, Feed(), outlet)
    await subscription.open(since=0)
    logged = await log_events(task, 1, 4)
    await subscription.on_events(logged[:2])
    stale = {"revision": 1, "status": "running", "seq": 0, "frame": "{}"}
    await subscription.on_state(stale)  # older than what was sent: dropped
    cancelled = protocol.state(task.task_key, "cancelled", 2)
    await subscription.on_state({
        "revision": 2, "status": "cancelled", "seq": 2, "frame": protocol.encode(cancelled),
    })
    outlet.room = None
    await subscription.resume()
    assert shape(outlet.sent) == [
        ("state", 0, "running"), ("event", 1, None), ("event", 2, None),
        ("state", 2, "cancelled"),
    ]


async def test_converge_repairs_only_what_the_feed_missed(task):
    outlet, feed = Outlet(), Feed()
    subscription = Subscription(task, feed, outlet)
    await subscription.open(since=None)
    await subscription.on_events(await log_events(task, 1, 2))
    await subscription.converge(Position(revision=1, status="running", seq=2))
    assert len(outlet.sent) == 3 and feed.joins == [task.task_key]

    await log_events(task, 3, 5)
    await set_state(task, "completed", 5, 2)
    await subscription.converge(Position(revision=2, status="completed", seq=5))
    assert shape(outlet.sent[3:]) == [
        ("event", 3, None), ("event", 4, None), ("event", 5, None), ("state", 5, "completed"),
    ]
    assert feed.joins == [task.task_key] * 2  # joined again: the feed had gone quiet
    assert subscription.finished


async def test_a_closed_subscription_sends_nothing_more(task):
    outlet = Outlet()
    subscription = Subscription(task, Feed(), outlet)
    await subscription.open(since=None)
    await subscription.close()
    await subscription.on_events(await log_events(task, 1, 3))
    await subscription.converge(Position(revision=5, status="completed", seq=3))
    assert shape(outlet.sent) == [("state", 0, "running")]
