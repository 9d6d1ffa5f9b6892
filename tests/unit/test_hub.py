"""The fan-out hub: one group membership per process and task, news handed to local sockets.

Runs on the run's layer: in-memory, or RedisChannelLayer with REDIS_URL.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer

from consumers.hub import FanOutHub, hub_for
from streamapp import broadcast
from tests.support.helpers import events_of, group_members, receive_until, receive_until_closed
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)


async def test_sockets_of_one_process_share_one_group_membership(communicator_for):
    """Twenty sockets on one task: the task's group holds one channel (the hub's), every socket
    gets every event in order, and the membership ends with the last socket."""
    task = await StepTask.objects.acreate()
    sockets = [await communicator_for(task) for _ in range(20)]
    for ws in sockets:
        await receive_until(ws, lambda f: f.get("status") == "running")
    group = broadcast.task_group(task.task_key)
    hub = hub_for(get_channel_layer())
    assert await group_members(group) == {hub.channel}
    assert len(hub.listeners[task.task_key]) == 20

    for _ in range(3):
        await task.send_signal("step", "go")
    await task.send_signal("step", "stop")
    for ws in sockets:
        frames, code = await receive_until_closed(ws)
        assert [f["seq"] for f in events_of(frames)] == [1, 2, 3]
        assert frames[-1]["status"] == "completed" and code == 1000
    assert await group_members(group) == set()
    assert task.task_key not in hub.listeners


class Listener:
    """A socket as the hub sees it: ready or not, and what it was handed."""

    def __init__(self, ready: bool, release: asyncio.Event | None = None) -> None:
        self.ready = ready
        self.release = release
        self.taken: list[dict] = []

    def ready_for(self, message):
        return self.ready

    async def take_news(self, message):
        if self.release is not None:
            await self.release.wait()
        self.taken.append(message)


async def test_a_socket_that_must_wait_does_not_hold_up_the_others():
    """A socket that cannot take news at once (a gap to fill, a congested client) is served by a
    task of its own: the hub has handed the message to everyone else before it is done."""
    hub = FanOutHub(get_channel_layer())
    release = asyncio.Event()
    waiting, ready = Listener(ready=False, release=release), Listener(ready=True)
    hub.listeners["app.model.1"] = {waiting: None, ready: None}
    message = {"type": "stream.events", "task": "app.model.1", "events": [(1, "{}")]}

    await asyncio.wait_for(hub.deliver(message), timeout=5)
    assert ready.taken == [message] and waiting.taken == []
    release.set()
    await asyncio.wait_for(asyncio.gather(*hub._deferred), timeout=5)
    assert waiting.taken == [message]


async def test_a_failing_socket_does_not_stop_delivery_to_the_others(caplog):
    """One socket raising while it takes news is logged; the sockets after it still get it."""

    class Broken(Listener):
        async def take_news(self, message):
            raise RuntimeError("socket went wrong")

    hub = FanOutHub(get_channel_layer())
    healthy = Listener(ready=True)
    hub.listeners["app.model.2"] = {Broken(ready=True): None, healthy: None}
    message = {"type": "stream.state", "task": "app.model.2"}
    await hub.deliver(message)
    assert healthy.taken == [message]
    assert "delivering news failed key=app.model.2" in caplog.text


async def test_a_membership_lost_with_the_layer_is_made_again(communicator_for):
    """The group forgot the hub (Redis restarted, group expiry): a join after the refresh time
    adds it again, and the socket hears live events once more."""
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    layer, group = get_channel_layer(), broadcast.task_group(task.task_key)
    hub = hub_for(layer)
    await layer.group_discard(group, hub.channel)
    assert await group_members(group) == set()

    hub._joined_at[task.task_key] -= hub.refresh_seconds  # as if the last join were that old
    await hub.join(task.task_key, next(iter(hub.listeners[task.task_key])))
    assert await group_members(group) == {hub.channel}
    await task.send_signal("step", "go")
    frames = await receive_until(ws, lambda f: f.get("seq") == 1)
    assert events_of(frames)[-1]["seq"] == 1
    await task.send_signal("step", "stop")
    await receive_until_closed(ws)


async def test_when_every_socket_has_left_the_next_one_still_hears_live_news(
    layer, communicator_for, settings
):
    """The process's last socket leaves: the hub stops reading (RedisPubSubChannelLayer then
    retires its channel). A socket on another task afterwards still hears live news, and not
    through convergence, which this test puts a minute away."""
    settings.STREAMAPP = {**settings.STREAMAPP, "CONVERGE_SECONDS": 60.0}
    running = lambda f: f.get("status") == "running"  # noqa: E731
    first = await StepTask.objects.acreate()
    ws = await communicator_for(first)
    await receive_until(ws, running)
    await first.send_signal("step", "stop")
    await receive_until_closed(ws)
    hub = hub_for(layer)
    assert hub.listeners == {} and hub.channel is None

    second = await StepTask.objects.acreate()
    ws = await communicator_for(second)
    await receive_until(ws, running)
    await second.send_signal("step", "go")
    frames = await receive_until(ws, lambda f: f.get("seq") == 1, timeout=10)
    assert [f["seq"] for f in events_of(frames)] == [1]
    await second.send_signal("step", "stop")
    await receive_until_closed(ws)
