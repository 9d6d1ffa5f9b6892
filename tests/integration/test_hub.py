"""The fan-out hub with real sockets and tasks: one group membership per process and task.

Runs on the run's layer: in-memory, or RedisChannelLayer with REDIS_URL.
"""

from __future__ import annotations

import pytest
from channels.layers import get_channel_layer

from consumers.hub import hub_for
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
