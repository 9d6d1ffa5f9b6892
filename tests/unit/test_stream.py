"""EventStream (streamapp/eventlog/stream.py) on the real log and the in-memory channel layer.

Numbering, batching by size, announcing only what is logged, back-pressure, trimming, a
failed write surfacing, and a database outage ridden out for up to a lease (scripts/mutation
runs these).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.layers import get_channel_layer
from django.db import OperationalError
from django.utils import timezone

from streamapp import broadcast, outages, protocol
from streamapp.eventlog import store, stream
from streamapp.eventlog.stream import EventStream, emit_once
from streamapp.exceptions import EventTooLarge, LeaseLost
from streamapp.runner import leases
from tests.testapp.models import StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp"]
)

KEY = "app.model.1"


@pytest.fixture
async def announced():
    """The ``stream.events`` messages published for KEY, as a list filled by ``collect()``."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(broadcast.task_group(KEY), channel)
    messages = []

    async def collect(count):
        for _ in range(count):
            messages.append(await asyncio.wait_for(layer.receive(channel), timeout=5))
        return messages

    yield collect
    await layer.group_discard(broadcast.task_group(KEY), channel)


def frame_size(data):
    """Characters of one event frame of KEY carrying ``data``."""
    return len(protocol.encode(protocol.event(KEY, 1, "step", data, timezone.now())))


def seqs(message):
    return [seq for seq, _ in message["events"]]


async def test_events_are_numbered_on_from_the_last_seq_logged_and_announced(announced):
    events = EventStream(KEY, last_seq=4)
    assert [await events.emit("step", {"n": n}) for n in range(3)] == [5, 6, 7]
    assert events.seq == 7
    await events.drain()
    assert events.logged_seq == 7
    logged = await store.since(KEY, 0)
    assert [seq for seq, _ in logged] == [5, 6, 7]
    frame = json.loads(logged[0][1])
    assert (frame["type"], frame["task"], frame["seq"], frame["event"], frame["data"]) == (
        "event", KEY, 5, "step", {"n": 0},
    )
    (message,) = await announced(1)
    assert message["type"] == "stream.events" and message["task"] == KEY
    assert [tuple(e) for e in message["events"]] == logged  # the very text that was logged


async def test_an_event_needs_a_name():
    events = EventStream(KEY, 0)
    for name in ("", None, 3):
        with pytest.raises(ValueError, match="^an event name is a non-empty string$"):
            await events.emit(name, {})
    assert events.seq == 0


async def test_an_event_over_the_size_limit_is_refused_and_takes_no_seq(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_EVENT_BYTES": 200}
    events = EventStream(KEY, 0)
    with pytest.raises(EventTooLarge, match=r"encodes to \d+ bytes; the limit is 200"):
        await events.emit("big", "é" * 60)  # under 200 characters, over 200 bytes
    assert await events.emit("small", "x") == 1
    await events.drain()
    assert await store.current_seq(KEY) == 1


async def test_a_writer_batches_what_queued_up_within_the_batch_size(announced, monkeypatch):
    monkeypatch.setattr(stream, "BATCH_BYTES", frame_size("x" * 50) * 2)  # exactly two fit
    events = EventStream(KEY, 0)
    for _ in range(5):
        await events.emit("step", "x" * 50)
    await events.drain()
    messages = await announced(3)
    assert [seqs(m) for m in messages] == [[1, 2], [3, 4], [5]]


async def test_an_event_bigger_than_a_batch_goes_alone(announced, monkeypatch):
    monkeypatch.setattr(stream, "BATCH_BYTES", 100)
    events = EventStream(KEY, 0)
    await events.emit("big", "x" * 200)
    await events.emit("big", "x" * 200)
    await events.drain()
    assert [seqs(m) for m in await announced(2)] == [[1], [2]]


async def test_emit_waits_for_the_writer_once_the_buffer_is_full(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_BUFFER": 3}
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    await events.emit("step", 2)
    assert events.logged_seq == 0  # queued: emit returned without waiting
    await events.emit("step", 3)
    assert events.logged_seq == 3 and await store.current_seq(KEY) == 3


@pytest.mark.parametrize("frames_held", [2, 3])
async def test_emit_waits_for_the_writer_once_the_buffer_holds_its_bytes(monkeypatch, frames_held):
    """BUFFER_BYTES of queued frame text, to the character, makes emit wait."""
    size = frame_size("x" * 100)
    monkeypatch.setattr(stream, "BUFFER_BYTES", size * frames_held)
    events = EventStream(KEY, 0)
    for _ in range(frames_held - 1):
        await events.emit("step", "x" * 100)
    assert events.logged_seq == 0
    await events.emit("step", "x" * 100)
    assert events.logged_seq == frames_held


async def test_the_buffer_counts_only_what_is_still_queued(monkeypatch):
    size = frame_size("x" * 100)
    monkeypatch.setattr(stream, "BUFFER_BYTES", size * 2 + 1)
    events = EventStream(KEY, 0)
    await events.emit("step", "x" * 100)
    await events.emit("step", "x" * 100)
    assert events.logged_seq == 0  # 2 frames: one character short of the buffer
    await events.drain()
    await events.emit("step", "x" * 100)
    await events.emit("step", "x" * 100)
    assert events.logged_seq == 2  # the written ones no longer count
    await events.emit("step", "x" * 100)
    assert events.logged_seq == 5


async def test_an_event_at_the_size_limit_is_taken(settings):
    size = len(protocol.encode(protocol.event(KEY, 1, "big", "é" * 60, timezone.now())).encode())
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_EVENT_BYTES": size}
    events = EventStream(KEY, 0)
    assert await events.emit("big", "é" * 60) == 1
    with pytest.raises(EventTooLarge):
        await events.emit("big", "é" * 61)


async def test_a_failed_write_fails_drain_and_every_later_emit(monkeypatch, caplog):
    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "append", broken)
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    with pytest.raises(RuntimeError, match="disk on fire"):
        await events.drain()
    with pytest.raises(RuntimeError, match="disk on fire"):
        await events.emit("step", 2)
    assert events.logged_seq == 0 and events._queue == [] and events._queued_chars == 0
    assert f"event log write failed key={KEY}" in caplog.text


async def test_drain_waits_for_events_emitted_while_it_waits():
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    draining = asyncio.create_task(events.drain())
    await asyncio.sleep(0)
    await events.emit("step", 2)
    await asyncio.wait_for(draining, timeout=5)
    await events.drain()
    assert events.logged_seq == 2 and await store.current_seq(KEY) == 2


async def test_cancelling_the_emitter_does_not_cancel_the_write(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_BUFFER": 1}
    events = EventStream(KEY, 0)
    emitting = asyncio.create_task(events.emit("step", 1))
    await asyncio.sleep(0)
    emitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await emitting
    await events.drain()
    assert await store.current_seq(KEY) == 1


async def test_the_log_is_trimmed_to_the_retention_in_steps_of_a_tenth():
    events = EventStream(KEY, 0, retention=100)
    for n in range(109):
        await events.emit("step", n)
    await events.drain()
    assert await store.oldest_seq(KEY) == 1  # 9 over: not yet worth a DELETE
    await events.emit("step", 109)
    await events.drain()
    assert await store.oldest_seq(KEY) == 11 and await store.count([KEY]) == 100
    for n in range(9):
        await events.emit("step", n)
    await events.drain()
    assert await store.oldest_seq(KEY) == 11
    await events.emit("step", 0)
    await events.drain()
    assert await store.oldest_seq(KEY) == 21


async def test_the_trim_step_is_a_whole_tenth_of_the_retention():
    events = EventStream(KEY, 0, retention=105)  # a step of 10 events, not 10.5
    for n in range(114):
        await events.emit("step", n)
    await events.drain()
    assert await store.oldest_seq(KEY) == 1
    await events.emit("step", 114)
    await events.drain()
    assert await store.oldest_seq(KEY) == 11


async def test_a_small_retention_trims_every_batch():
    events = EventStream(KEY, 0, retention=3)
    for n in range(4):
        await events.emit("step", n)
        await events.drain()
    assert [s for s, _ in await store.since(KEY, 0)] == [2, 3, 4]


async def test_retention_defaults_to_the_setting(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_RETENTION": 2}
    events = EventStream(KEY, 0)
    for n in range(3):
        await events.emit("step", n)
    await events.drain()
    assert [s for s, _ in await store.since(KEY, 0)] == [2, 3]


async def test_emit_once_goes_on_from_the_log_and_is_logged_when_it_returns(announced):
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    await events.drain()
    assert await emit_once(KEY, "note", {"by": "admin"}) == 2
    (seq, frame), = await store.since(KEY, 1)
    assert seq == 2 and json.loads(frame)["event"] == "note"
    assert json.loads(frame)["data"] == {"by": "admin"}
    assert [seqs(m) for m in await announced(2)] == [[1], [2]]


async def test_a_stream_whose_lease_is_gone_logs_nothing_more_and_says_so():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, "host:1:me", 30.0)
    lost = []
    events = EventStream(task.task_key, 0, fence=lease.rows(), on_lease_lost=lambda: lost.append(1))
    await events.emit("step", 1)
    await events.drain()
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="host:2:other")
    await events.emit("step", 2)
    with pytest.raises(LeaseLost, match="lease is gone"):
        await events.drain()
    with pytest.raises(LeaseLost):
        await events.emit("step", 3)
    assert lost == [1] and await store.current_seq(task.task_key) == 1
    assert events.logged_seq == 1


async def test_a_lost_lease_without_a_listener_still_fails_the_stream():
    task = await StepTask.objects.acreate()
    lease = await leases.claim(task, "host:1:me", 30.0)
    events = EventStream(task.task_key, 0, fence=lease.rows())
    await StepTask.objects.filter(pk=task.pk).aupdate(status="failed")
    await events.emit("step", 1)
    with pytest.raises(LeaseLost):
        await events.drain()


# -- the database away -----------------------------------------------------------------------


def failing_for(monkeypatch, name, times, error=None):
    """``store.<name>`` raises ``error`` (an OperationalError: the database went away) its
    first ``times`` calls (None: every call)."""
    real = getattr(store, name)
    error = error or OperationalError("server closed the connection")
    calls = []

    async def flaky(*args, **kwargs):
        calls.append(args)
        if times is None or len(calls) <= times:
            raise error
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, name, flaky)
    return calls


async def test_a_write_the_database_missed_is_tried_again_and_lands_once(announced, monkeypatch):
    calls = failing_for(monkeypatch, "append", times=2)
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    await events.emit("step", 2)
    await asyncio.wait_for(events.drain(), timeout=5)
    assert len(calls) == 3 and [[e.seq for e in batch] for _, batch, _ in calls] == [[1, 2]] * 3
    assert [s for s, _ in await store.since(KEY, 0)] == [1, 2] and events.logged_seq == 2
    assert [seqs(m) for m in await announced(1)] == [[1, 2]]
    assert not outages.database.down  # the write that landed ended the outage


async def test_a_database_away_longer_than_a_lease_fails_the_stream_and_says_so(
    settings, monkeypatch
):
    settings.STREAMAPP = {**settings.STREAMAPP, "LEASE_SECONDS": 0.05}
    calls = failing_for(monkeypatch, "append", times=None)
    events = EventStream(KEY, 0)
    await events.emit("step", 1)
    with pytest.raises(OperationalError, match=(
        rf"^the database did not answer for \d+ s \(event log of {KEY}\); gave up: "
        "server closed the connection$"
    )):
        await asyncio.wait_for(events.drain(), timeout=5)  # a lease, not the default patience
    assert len(calls) >= 2  # it tried again meanwhile
    with pytest.raises(OperationalError):
        await events.emit("step", 2)
    assert await store.current_seq(KEY) == 0


async def test_a_trim_the_database_missed_waits_for_the_next_batch(monkeypatch, caplog):
    calls = failing_for(monkeypatch, "trim", times=1)
    events = EventStream(KEY, 0, retention=2)
    for n in range(3):
        await events.emit("step", n)
    await events.drain()  # 3 logged, one over: the trim fails, the events stay written
    assert len(calls) == 1 and events.logged_seq == 3
    assert [s for s, _ in await store.since(KEY, 0)] == [1, 2, 3]
    assert outages.database.down and outages.database.failed_by_kind == {"event log trim": 1}
    assert "database unavailable, riding it out what=event log trim error=OperationalError" in (
        caplog.text
    )
    await events.emit("step", 3)
    await events.drain()
    assert [s for s, _ in await store.since(KEY, 0)] == [3, 4]


async def test_a_trim_that_fails_for_another_reason_fails_the_stream(monkeypatch):
    failing_for(monkeypatch, "trim", times=None, error=RuntimeError("no such table"))
    events = EventStream(KEY, 0, retention=1)
    await events.emit("step", 1)
    await events.emit("step", 2)
    with pytest.raises(RuntimeError, match="no such table"):
        await events.drain()
    with pytest.raises(RuntimeError):
        await events.emit("step", 3)
