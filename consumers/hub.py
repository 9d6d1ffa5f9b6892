"""The fast path: one channel-layer membership per process and task, fanned out to local sockets.

The textbook Channels pattern gives every socket a channel and joins it to the task's group, so
each event costs the layer one message per socket and the server a task switch and a dispatch
per socket. Here the process joins each watched task's group once, with the hub's one channel:
a layer message (a batch of encoded frames) is received and decoded once, then handed to every
local socket that watches the task by a plain call, and each frame goes to daphne as it was
encoded when the event was logged. Events still cross processes through the layer's groups.

A socket whose subscription is in step (no gap, nothing held back, its outlet not congested) is
called inline: handing a frame to daphne never waits. Any other delivery (a gap to fill from the
log, a congested socket, a state change that may end the socket) runs as a task of its own, so
one slow socket never holds up the rest. The subscription's seq rule makes either way safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterator
from typing import Any, Protocol

from streamapp import broadcast, outages
from streamapp.positions import Position, positions_by_key

logger = logging.getLogger("streamapp.consumers")

# A join this soon after the group membership was (re)made trusts it; converging subscriptions
# and renewals join again later, so a membership lost with Redis is made again within seconds.
JOIN_REFRESH_SECONDS = 1.0
DEFAULT_GROUP_EXPIRY = 86400  # channels' own default
# Retries of a failed membership change, and of memberships lost with the layer: the first
# soon, then every REPAIR_MAX_SECONDS, so sockets hear news again within a second of its return.
REPAIR_FIRST_SECONDS = 0.05
REPAIR_MAX_SECONDS = 0.5


def rejoin_interval(layer: Any) -> float:
    """A quarter of the layer's group_expiry: a membership is renewed long before it lapses."""
    expiry = getattr(layer, "group_expiry", None) or DEFAULT_GROUP_EXPIRY
    return expiry / 4


class Listener(Protocol):
    """A socket, as the hub sees it."""

    def ready_for(self, message: dict[str, Any]) -> bool:
        """Would ``message`` go out at once, without waiting for anything?"""

    async def take_news(self, message: dict[str, Any]) -> None: ...

    async def recheck(self, key: str, position: Position) -> None:
        """The layer was away: news of ``key`` may be lost; repair from ``position``."""


class FanOutHub:
    """This event loop's memberships of task groups, and the sockets behind each.

    Joins and leaves take turns (one lock) for everything that decides or changes a membership,
    so whatever order sockets come and go in, the group holds the hub's channel exactly while
    a local socket watches the task. Each membership remembers the channel it was made with: a
    retired channel's memberships are still discarded with it. A discard that fails (Redis
    away) is kept and retried until it succeeds. When the reader finds the layer away, the
    memberships are made again as soon as it answers, and every socket re-checks its tasks.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer  # None: no channel layer, so no live news (the upkeep converges)
        self.channel: str | None = None
        self.listeners: dict[str, dict[Listener, None]] = {}  # task key -> sockets, in join order
        # task key -> when news of it last came (or its first socket joined): the sockets'
        # upkeep (upkeep.py) reads again the tasks that have been quiet too long
        self.heard_at: dict[str, float] = {}
        self.refresh_seconds = min(JOIN_REFRESH_SECONDS, rejoin_interval(layer) / 2)
        self._joined_at: dict[str, float] = {}
        self._joined_with: dict[str, str] = {}  # task key -> the channel its membership holds
        self._stale: dict[str, set[str]] = {}  # task key -> channels whose discard failed
        self._membership = asyncio.Lock()  # joins and leaves of one hub take turns
        self._reader: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None  # retries failed discards
        self._restore: asyncio.Task[None] | None = None  # remakes memberships after an outage
        self._deferred: set[asyncio.Task[None]] = set()

    async def join(self, key: str, listener: Listener) -> None:
        """Deliver ``key``'s news to ``listener``; make (or renew) the group membership if due."""
        listeners = self.listeners.get(key)
        if listeners is None:
            listeners = self.listeners[key] = {}
            self.heard_at[key] = time.monotonic()
        listeners[listener] = None  # news flows to it from now on
        if self.layer is None:
            return
        async with self._membership:
            if key not in self.listeners:
                return  # it left again while this join waited its turn
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="streamapp fan-out hub")
            joined_at = self._joined_at.get(key, float("-inf"))
            if time.monotonic() - joined_at >= self.refresh_seconds:
                await self._add(key)

    async def leave(self, key: str, listener: Listener) -> None:
        if self.layer is None:
            self._forget(key, listener)
            return
        async with self._membership:
            if not self._forget(key, listener):
                return
            await self._discard(key)
            if not self.listeners and self._reader is not None:
                # Nothing to read for: no task outlives its sockets. A cancelled receive may
                # retire its channel (RedisPubSubChannelLayer forgets it, and would refuse a
                # group_add to it), so the next join makes a new one.
                self._reader.cancel()
                self._reader = None
                self.channel = None

    def _forget(self, key: str, listener: Listener) -> bool:
        """Stop handing ``key``'s news to ``listener``; True when it was the last one."""
        listeners = self.listeners.get(key, {})
        if listener not in listeners:
            return False
        del listeners[listener]
        if listeners:
            return False
        del self.listeners[key]
        self.heard_at.pop(key, None)
        return True

    async def renew(self) -> None:
        """Renew every membership (the sockets' upkeep calls it well inside group_expiry)."""
        if self.layer is None:
            return
        async with self._membership:
            if self.channel is not None:
                await self._add_all(list(self.listeners))

    async def _add(self, key: str) -> bool:
        """Under the lock: put the hub's channel in ``key``'s group. A failure is reported to
        the layer's outage; subscriptions converge and join again."""
        channel = self.channel
        self._joined_with[key] = channel  # even if the add fails half done, a leave discards it
        self._stale.get(key, set()).discard(channel)
        try:
            await self.layer.group_add(broadcast.task_group(key), channel)
        except Exception as exc:
            broadcast.layer_trouble("group_add", exc, key=key)
            return False
        outages.channel_layer.answered()
        self._joined_at[key] = time.monotonic()
        return True

    async def _discard(self, key: str) -> None:
        """Under the lock: take the channel that joined ``key`` out of its group, or keep it
        for the repair to try again."""
        self._joined_at.pop(key, None)
        channel = self._joined_with.pop(key, None)
        if channel is None:
            return  # never joined (the layer was away): nothing to take out
        if not await self._discard_channel(key, channel):
            self._stale.setdefault(key, set()).add(channel)
            if self._repair is None or self._repair.done():
                self._repair = asyncio.create_task(self._repair_stale(), name="hub discards")

    async def _discard_channel(self, key: str, channel: str) -> bool:
        try:
            await self.layer.group_discard(broadcast.task_group(key), channel)
        except Exception as exc:
            broadcast.layer_trouble("group_discard", exc, key=key)
            return False
        outages.channel_layer.answered()
        return True

    async def _repair_stale(self) -> None:
        """Retry the discards that failed until every one went through."""
        for delay in backoff():
            await asyncio.sleep(delay)
            async with self._membership:
                for key, channels in list(self._stale.items()):
                    for channel in list(channels):
                        if self._joined_with.get(key) == channel:
                            channels.discard(channel)  # joined again meanwhile: keep it
                        elif await self._discard_channel(key, channel):
                            channels.discard(channel)
                    if not channels:
                        del self._stale[key]
                if not self._stale:
                    return

    async def _read(self) -> None:
        await broadcast.receive_forever(
            self.layer, self.channel, self.deliver, "fan-out hub", on_failure=self._layer_away
        )

    def _layer_away(self) -> None:
        """The reader could not receive: once the layer answers, remake the memberships."""
        if self._restore is None or self._restore.done():
            self._restore = asyncio.create_task(self._remake(), name="hub memberships")

    async def _remake(self) -> None:
        """Make every membership again (a restarted Redis forgot them), then have every socket
        re-check its tasks: what was published meanwhile is lost."""
        for delay in backoff():
            await asyncio.sleep(delay)
            async with self._membership:
                if self.channel is None:
                    return  # every socket left
                keys = list(self.listeners)
                if await self._add_all(keys):
                    break
        logger.info("fan-out hub memberships made again tasks=%d", len(keys))
        try:
            found = await positions_by_key(keys)
        except Exception:  # the database is away too: convergence repairs them later
            logger.warning("re-checking tasks after the layer came back failed", exc_info=True)
            return
        for key, position in found.items():
            for listener in tuple(self.listeners.get(key, ())):
                self._defer(listener.recheck(key, position))

    async def _add_all(self, keys: list[str]) -> bool:
        """Under the lock: add every membership; False at the first that fails."""
        for key in keys:
            if not await self._add(key):
                return False
        return True

    async def deliver(self, message: dict[str, Any]) -> None:
        """Hand one layer message to every local socket that watches its task."""
        key = message.get("task")
        listeners = self.listeners.get(key)
        if not listeners:
            return
        self.heard_at[key] = time.monotonic()
        for listener in tuple(listeners):
            if listener.ready_for(message):
                try:
                    await listener.take_news(message)
                except Exception:
                    logger.exception("delivering news failed key=%s", message.get("task"))
            else:
                self._defer(listener.take_news(message))

    def _defer(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._deferred.add(task)
        task.add_done_callback(self._deferred_done)

    def _deferred_done(self, task: asyncio.Task[None]) -> None:
        self._deferred.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivering news failed", exc_info=task.exception())


def backoff() -> Iterator[float]:
    """Pauses between tries of a layer operation: soon at first, then twice a second."""
    delay = REPAIR_FIRST_SECONDS
    while True:
        yield delay
        delay = min(delay * 2, REPAIR_MAX_SECONDS)


_hubs: weakref.WeakKeyDictionary[Any, weakref.WeakKeyDictionary[Any, FanOutHub]] = (
    weakref.WeakKeyDictionary()
)


_layerless: weakref.WeakKeyDictionary[Any, FanOutHub] = weakref.WeakKeyDictionary()


def hub_for(layer: Any) -> FanOutHub:
    """The running event loop's hub on ``layer``; without a layer, one that only keeps count."""
    loop = asyncio.get_running_loop()
    if layer is None:
        hub = _layerless.get(loop)
        if hub is None:
            hub = _layerless[loop] = FanOutHub(None)
        return hub
    by_layer = _hubs.setdefault(loop, weakref.WeakKeyDictionary())
    hub = by_layer.get(layer)
    if hub is None:
        hub = by_layer[layer] = FanOutHub(layer)
    return hub
