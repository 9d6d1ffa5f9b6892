"""The hub's group memberships: never one left behind, whatever order sockets come and go in.

Real sockets on the run's layer (RedisChannelLayer with REDIS_URL, where a group change is a
round trip and leaves really interleave; in-memory otherwise), then the hub alone on a layer
that yields inside every group change and fails some of them.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer

from consumers.hub import FanOutHub, hub_for
from streamapp import broadcast
from tests.support.helpers import group_members, receive_until
from tests.testapp.models import StepTask

PAIRS = 50


@pytest.fixture
def no_auto_start(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "AUTO_START": False}


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_auto_start")
async def test_two_sockets_on_different_tasks_leaving_together_leave_no_membership(
    application, communicator_for
):
    """The race of the issue: the first leave retired the hub's channel while the second was
    about to discard with it. 50 pairs; then every group key is read back from the layer."""
    hub = hub_for(get_channel_layer())
    groups = []
    for _ in range(PAIRS):
        tasks = [await StepTask.objects.acreate() for _ in range(2)]
        sockets = [await communicator_for(task) for task in tasks]
        for ws in sockets:
            await receive_until(ws, lambda f: f.get("status") == "pending")
        pair = [broadcast.task_group(task.task_key) for task in tasks]
        for group in pair:
            assert await group_members(group) == {hub.channel}
        await asyncio.gather(*(ws.disconnect(timeout=5) for ws in sockets))
        groups += pair

    left = {group: members for group in groups if (members := await group_members(group))}
    assert left == {}
    assert hub.listeners == {} and hub._joined_with == {} and hub._stale == {}


class ShakyLayer(InMemoryChannelLayer):
    """Yields inside every group change (as a network round trip does) and fails the next
    ``failures`` discards, as a layer that went away does; the next ``restarts`` receives fail
    as a restarted Redis's do, and the layer forgets every group."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0
        self.restarts = 0

    async def receive(self, channel):
        if self.restarts:
            self.restarts -= 1
            self.groups.clear()
            raise ConnectionError("Connection closed by server.")
        return await super().receive(channel)

    async def group_add(self, group, channel):
        await asyncio.sleep(0)
        await super().group_add(group, channel)

    async def group_discard(self, group, channel):
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("layer away")
        await super().group_discard(group, channel)


class Socket:
    def __init__(self) -> None:
        self.rechecked: asyncio.Queue = asyncio.Queue()

    def ready_for(self, message):
        return True

    async def take_news(self, message):
        pass

    async def recheck(self, key, position):
        self.rechecked.put_nowait((key, position))


async def settled(hub: FanOutHub) -> None:
    """Wait until the hub's repair of failed discards (if any) is done."""
    if hub._repair is not None:
        await asyncio.wait_for(hub._repair, timeout=5)
    assert hub._stale == {}


def members(layer: ShakyLayer) -> dict[str, set[str]]:
    return {group: set(channels) for group, channels in layer.groups.items() if channels}


@pytest.mark.parametrize("seed", range(20))
async def test_any_interleaving_of_joins_and_leaves_ends_with_exactly_the_watched_groups(seed):
    """Random sockets join and leave random tasks concurrently, some discards fail: once the
    hub has repaired them, the layer holds the hub's channel in the groups of the tasks that
    still have a socket, and in no other group."""
    rng = random.Random(seed)
    layer = ShakyLayer()
    hub = FanOutHub(layer)
    hub.refresh_seconds = 3600  # a join renews nothing: only the first one adds
    keys = [f"app.model.{i}" for i in range(4)]
    sockets = [Socket() for _ in range(8)]
    watching: set[tuple[str, Socket]] = set()
    for _ in range(6):
        moves = []
        for socket in sockets:
            key = rng.choice(keys)
            if (key, socket) in watching:
                watching.discard((key, socket))
                moves.append(hub.leave(key, socket))
            else:
                watching.add((key, socket))
                moves.append(hub.join(key, socket))
        layer.failures = rng.randrange(3)
        rng.shuffle(moves)
        await asyncio.gather(*moves)
        await settled(hub)

        watched = {key for key, _ in watching}
        assert set(hub.listeners) == watched
        expected = {broadcast.task_group(key): {hub.channel} for key in watched}
        assert members(layer) == expected

    for key, socket in list(watching):
        await hub.leave(key, socket)
    await settled(hub)
    assert members(layer) == {} and hub.channel is None


@pytest.mark.django_db(transaction=True)
async def test_after_the_layer_was_away_memberships_are_made_again_and_sockets_recheck():
    """The reader's receive fails (Redis restarted and forgot the groups): the hub adds its
    memberships again as soon as the layer answers, then hands each socket its task's position
    read afresh, without waiting for convergence."""
    layer = ShakyLayer()
    hub = FanOutHub(layer)
    task = await StepTask.objects.acreate(status="running", last_seq=7, revision=3)
    socket = Socket()
    await hub.join(task.task_key, socket)
    group = broadcast.task_group(task.task_key)
    assert members(layer) == {group: {hub.channel}}

    layer.restarts = 1
    await layer.send(hub.channel, {"type": "wake the reader"})
    key, position = await asyncio.wait_for(socket.rechecked.get(), timeout=5)
    assert (key, position.status, position.seq, position.revision) == (
        task.task_key, "running", 7, 3
    )
    assert members(layer) == {group: {hub.channel}}
    await hub.leave(task.task_key, socket)
    assert members(layer) == {}
