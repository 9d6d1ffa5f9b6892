"""Every event of a task, in order, exactly once, then the final state (DESIGN §3, §4).

In-process sockets on the run's layer (in-memory, or RedisChannelLayer with REDIS_URL); the
tests marked with the ``layer`` fixture run on RedisPubSubChannelLayer too. Layer losses are
made on purpose by dropping chosen messages at the publisher, as a full channel would.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from streamapp import broadcast
from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from tests.support.helpers import (
    events_of,
    receive_until,
    receive_until_closed,
    started_step_task,
    step,
)
from tests.testapp.models import BurstTask, OversizeTask

pytestmark = pytest.mark.django_db(transaction=True)

MIB = 1024 * 1024


@pytest.fixture
def fast_convergence(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "CONVERGE_SECONDS": 0.3}


@pytest.fixture
def dropped(monkeypatch):
    """Rules ``rule(message) -> bool``: matching layer messages are silently dropped."""
    rules = []
    send = broadcast._group_send

    async def lossy_group_send(group, message):
        if any(rule(message) for rule in rules):
            return True  # as the layer does: the sender never learns
        return await send(group, message)

    monkeypatch.setattr(broadcast, "_group_send", lossy_group_send)
    return rules


@pytest.mark.usefixtures("fast_convergence")
async def test_lost_news_converges_without_live_traffic(layer, communicator_for, dropped):
    """The feed goes silent (a lost Redis subscription, a dropped final state): the quiet
    subscription re-reads the task's position and repairs itself from the log."""
    task, ws = await started_step_task(communicator_for)
    await step(task, 2)
    frames = await receive_until(ws, lambda f: f.get("seq") == 2)
    assert [f["seq"] for f in events_of(frames)] == [1, 2]

    dropped.append(lambda message: message["type"].startswith("stream."))
    await step(task, 3)
    await task.send_signal("step", "stop")
    frames, code = await receive_until_closed(ws, timeout=10)
    assert [(f["seq"], f["data"]["n"]) for f in events_of(frames)] == [(3, 3), (4, 4), (5, 5)]
    assert frames[-1] == {
        "type": "state", "task": task.task_key, "status": "completed", "seq": 5,
        "final_value": 5, "error": None,
    }
    assert len(frames) == 4 and code == 1000


async def test_a_gap_is_filled_from_the_log_and_a_repeat_is_dropped(layer, communicator_for,
                                                                    dropped):
    task, ws = await started_step_task(communicator_for)
    await step(task, 2)
    frames = await receive_until(ws, lambda f: f.get("seq") == 2)
    second = frames[-1]

    dropped.append(lambda m: m["type"] == "stream.events" and m["events"][-1][0] in (3, 4))
    await step(task, 2)
    await logged(task, 4)  # so event 5 comes alone, after the gap
    await broadcast.publish_events(task.task_key, [(2, await frame_of(task, 2))])  # a repeat
    await step(task)
    frames = await receive_until(ws, lambda f: f.get("seq") == 5)
    assert [f["seq"] for f in events_of(frames)] == [3, 4, 5]
    assert all(f != second for f in frames)
    assert await ws.receive_nothing(timeout=0.2)


async def logged(task, seq):
    deadline = asyncio.get_running_loop().time() + 5
    while await store.current_seq(task.task_key) < seq:  # no event tells the test
        assert asyncio.get_running_loop().time() < deadline, f"seq {seq} never logged"
        await asyncio.sleep(0.02)


async def frame_of(task, seq):
    [(_, frame)] = await store.since(task.task_key, seq - 1, seq)
    return frame


async def test_reconnect_with_since_gets_the_rest_exactly_once(communicator_for):
    """A client leaves after event k while the task goes on; with since=k it gets k+1..end."""
    task = await BurstTask.objects.acreate(count=600)
    first = await communicator_for(task)
    frames = await receive_until(first, lambda f: f.get("seq") == 137, timeout=10)
    assert [f["seq"] for f in events_of(frames)][-1] == 137
    await first.disconnect()

    again = await communicator_for(task, since=137)
    frames, code = await receive_until_closed(again, timeout=10)
    assert frames[0]["type"] == "state"
    assert [f["data"]["i"] for f in events_of(frames)] == list(range(138, 601))
    assert frames[-1]["status"] == "completed" and frames[-1]["seq"] == 600 and code == 1000


@pytest.mark.parametrize("configured_by", ["model", "setting"])
async def test_since_older_than_the_log_answers_history_truncated_first(
    configured_by, communicator_for, monkeypatch, settings
):
    if configured_by == "model":
        monkeypatch.setattr(BurstTask, "event_retention", 50)
    else:
        settings.STREAMAPP = {**settings.STREAMAPP, "EVENT_RETENTION": 50}
    task = await BurstTask.objects.acreate(count=300)
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=10)
    oldest = (await store.since(task.task_key, 0, limit=1))[0][0]
    assert 240 <= oldest <= 251  # 50 kept, trimmed in steps of a tenth

    ws = await communicator_for(task, since=10)
    frames, code = await receive_until_closed(ws, timeout=10)
    assert frames[0]["type"] == "state" and frames[0]["seq"] == 300
    assert frames[1] == {
        "type": "error", "code": "history_truncated", "task": task.task_key,
        "oldest_seq": oldest, "message": frames[1]["message"],
    }
    assert [f["seq"] for f in events_of(frames)] == list(range(oldest, 301))
    assert frames[-1]["status"] == "completed" and code == 1000


async def test_a_hundred_tasks_at_once_each_to_its_own_subscribers(communicator_for):
    tasks = [await BurstTask.objects.acreate(count=30) for _ in range(100)]
    watchers = [(task, await communicator_for(task, since=0)) for task in tasks for _ in (1, 2)]
    for task, ws in watchers:
        frames, code = await receive_until_closed(ws, timeout=30)
        assert {f["task"] for f in frames} == {task.task_key}
        assert [f["data"]["i"] for f in events_of(frames)] == list(range(1, 31))
        assert frames[-1]["status"] == "completed" and code == 1000


async def test_a_ten_mib_event_arrives_whole(layer, communicator_for):
    task = await BurstTask.objects.acreate(count=2, payload_bytes=10 * MIB)
    live = await communicator_for(task)
    frames, code = await receive_until_closed(live, timeout=60)
    assert [len(f["data"]["pad"]) for f in events_of(frames)] == [10 * MIB, 10 * MIB]
    assert frames[-1]["status"] == "completed" and code == 1000

    replay = await communicator_for(task, since=0)  # from the log, a few big events at a time
    frames, _ = await receive_until_closed(replay, timeout=60)
    assert [(f["seq"], f["data"]) for f in events_of(frames)] == [
        (i, {"i": i, "pad": "x" * 10 * MIB}) for i in (1, 2)
    ]


async def test_an_oversize_event_raises_in_the_task_which_goes_on(communicator_for, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_EVENT_BYTES": MIB}
    task = await OversizeTask.objects.acreate(size=2 * MIB)
    ws = await communicator_for(task)
    frames, code = await receive_until_closed(ws, timeout=10)
    events = events_of(frames)
    assert [(e["seq"], e["event"]) for e in events] == [(1, "before"), (2, "refused")]
    assert "the limit is 1048576" in events[1]["data"]["error"]
    assert frames[-1]["status"] == "completed" and frames[-1]["final_value"] == "caught"
    assert code == 1000
    await task.arefresh_from_db()
    assert task.status == "completed" and task.last_seq == 2


async def test_a_failing_layer_receive_does_not_close_the_socket(communicator_for, monkeypatch):
    """Redis restarting makes the layer's receive raise: the socket waits and reads again."""
    layer = get_channel_layer()
    if layer is None:
        pytest.skip("no channel layer")
    receive, failures = layer.receive, []

    async def flaky_receive(channel):
        if len(failures) < 2:
            failures.append(channel)
            raise ConnectionError("Redis went away")
        return await receive(channel)

    monkeypatch.setattr(layer, "receive", flaky_receive)
    task, ws = await started_step_task(communicator_for)
    await step(task, 2)
    frames = await receive_until(ws, lambda f: f.get("seq") == 2)
    assert [f["seq"] for f in events_of(frames)] == [1, 2] and len(failures) == 2
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}


async def test_group_membership_is_renewed_well_inside_group_expiry(communicator_for, settings):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"group_expiry": 2},
    }}
    layer = get_channel_layer()
    task, ws = await started_step_task(communicator_for)
    group = layer.groups[broadcast.task_group(task.task_key)]
    [(channel, joined)] = group.items()
    deadline = asyncio.get_running_loop().time() + 5
    while group.get(channel) == joined:  # renewed every group_expiry / 4: nothing to await
        assert asyncio.get_running_loop().time() < deadline, "membership never renewed"
        await asyncio.sleep(0.05)
    assert group[channel] > joined
    await step(task)
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1
