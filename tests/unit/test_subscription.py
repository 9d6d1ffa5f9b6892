"""The subscription rule on its own: a recording outlet that can be made congested at will."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from consumers.subscription import Subscription
from streamapp import protocol
from streamapp.eventlog import store
from streamapp.eventlog.store import LoggedEvent
from streamapp.positions import Position
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)


class RecordingOutlet:
    def __init__(self, room=None):
        self.sent = []
        self.room = room  # frames it takes before it is congested; None: unlimited

    async def send(self, text):
        self.sent.append(json.loads(text))

    def congested(self):
        return self.room is not None and len(self.sent) >= self.room

    async def has_room(self):
        return not self.congested()


class RecordingFeed:
    def __init__(self):
        self.joins = []

    async def join(self, key):
        self.joins.append(key)

    async def leave(self, key):
        pass


async def log_events(task, first, last):
    """Log events ``first..last`` as the runner would; returns their ``(seq, frame)``."""
    now = timezone.now()
    batch = [
        LoggedEvent(
            seq, "step", protocol.encode(protocol.event(task.task_key, seq, "step", {}, now)), now
        )
        for seq in range(first, last + 1)
    ]
    await store.append(task.task_key, batch)
    return [(e.seq, e.frame) for e in batch]


async def finish(task, status, seq):
    """Record a final status as the runner does; returns the ``stream.state`` message."""
    await StepTask.objects.filter(pk=task.pk).aupdate(status=status, last_seq=seq, revision=2)
    frame = protocol.encode(protocol.state(task.task_key, status, seq))
    return {"revision": 2, "status": status, "seq": seq, "frame": frame}


def shape(sent):
    return [(f["type"], f.get("seq"), f.get("status")) for f in sent]


@pytest.fixture
async def running_task():
    return await StepTask.objects.acreate(status="running", revision=1)


async def test_a_congested_socket_only_remembers_and_catches_up_from_the_log(running_task):
    outlet = RecordingOutlet(room=4)
    subscription = Subscription(running_task, RecordingFeed(), outlet)
    await subscription.open(since=None)
    await subscription.on_events(await log_events(running_task, 1, 2))
    assert shape(outlet.sent) == [("state", 0, "running"), ("event", 1, None), ("event", 2, None)]

    await subscription.on_events(await log_events(running_task, 3, 6))  # full after seq 3
    await subscription.on_events(await log_events(running_task, 7, 9))
    await subscription.on_state(await finish(running_task, "completed", 9))
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


async def test_a_state_goes_out_at_its_place_in_the_stream(running_task):
    outlet = RecordingOutlet(room=1)
    subscription = Subscription(running_task, RecordingFeed(), outlet)
    await subscription.open(since=0)
    logged = await log_events(running_task, 1, 4)
    await subscription.on_events(logged[:2])
    stale = {"revision": 1, "status": "running", "seq": 0, "frame": "{}"}
    await subscription.on_state(stale)  # older than what was sent: dropped
    cancelled = protocol.state(running_task.task_key, "cancelled", 2)
    await subscription.on_state({
        "revision": 2, "status": "cancelled", "seq": 2, "frame": protocol.encode(cancelled),
    })
    outlet.room = None
    await subscription.resume()
    assert shape(outlet.sent) == [
        ("state", 0, "running"), ("event", 1, None), ("event", 2, None),
        ("state", 2, "cancelled"),
    ]


async def test_converge_repairs_only_what_the_feed_missed(running_task):
    outlet, feed = RecordingOutlet(), RecordingFeed()
    subscription = Subscription(running_task, feed, outlet)
    await subscription.open(since=None)
    await subscription.on_events(await log_events(running_task, 1, 2))
    await subscription.converge(Position(revision=1, status="running", seq=2))
    assert len(outlet.sent) == 3 and feed.joins == [running_task.task_key]

    await log_events(running_task, 3, 5)
    await finish(running_task, "completed", 5)
    await subscription.converge(Position(revision=2, status="completed", seq=5))
    assert shape(outlet.sent[3:]) == [
        ("event", 3, None), ("event", 4, None), ("event", 5, None), ("state", 5, "completed"),
    ]
    assert feed.joins == [running_task.task_key] * 2  # joined again: the feed had gone quiet
    assert subscription.finished


async def test_a_closed_subscription_sends_nothing_more(running_task):
    outlet = RecordingOutlet()
    subscription = Subscription(running_task, RecordingFeed(), outlet)
    await subscription.open(since=None)
    await subscription.close()
    await subscription.on_events(await log_events(running_task, 1, 3))
    await subscription.converge(Position(revision=5, status="completed", seq=3))
    assert shape(outlet.sent) == [("state", 0, "running")]
