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
from typing import Any, Protocol

from streamapp import broadcast

logger = logging.getLogger("streamapp.consumers")

# A join this soon after the group membership was (re)made trusts it; converging subscriptions
# and renewals join again later, so a membership lost with Redis is made again within seconds.
JOIN_REFRESH_SECONDS = 1.0
DEFAULT_GROUP_EXPIRY = 86400  # channels' own default


def rejoin_interval(layer: Any) -> float:
    """A quarter of the layer's group_expiry: a membership is renewed long before it lapses."""
    expiry = getattr(layer, "group_expiry", None) or DEFAULT_GROUP_EXPIRY
    return expiry / 4


class Listener(Protocol):
    """A socket, as the hub sees it."""

    def ready_for(self, message: dict[str, Any]) -> bool:
        """Would ``message`` go out at once, without waiting for anything?"""

    async def take_news(self, message: dict[str, Any]) -> None: ...


class FanOutHub:
    """This event loop's memberships of task groups, and the sockets behind each."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer  # None: no channel layer, so no live news (the upkeep converges)
        self.channel: str | None = None
        self.listeners: dict[str, dict[Listener, None]] = {}  # task key -> sockets, in join order
        # task key -> when news of it last came (or its first socket joined): the sockets'
        # upkeep (upkeep.py) checks the tasks that have been quiet too long
        self.heard_at: dict[str, float] = {}
        self.refresh_seconds = min(JOIN_REFRESH_SECONDS, rejoin_interval(layer) / 2)
        self._joined_at: dict[str, float] = {}
        self._membership = asyncio.Lock()  # group_add / group_discard of one hub take turns
        self._reader: asyncio.Task[None] | None = None
        self._deferred: set[asyncio.Task[None]] = set()

    async def join(self, key: str, listener: Listener) -> None:
        """Deliver ``key``'s news to ``listener``; make (or renew) the group membership if due."""
        listeners = self.listeners.get(key)
        if listeners is None:
            listeners = self.listeners[key] = {}
            self.heard_at[key] = time.monotonic()
        listeners[listener] = None
        if self.layer is None:
            return
        async with self._membership:
            if self.channel is None:
                self.channel = await self.layer.new_channel()
            if self._reader is None:
                self._reader = asyncio.create_task(self._read(), name="streamapp fan-out hub")
            due = time.monotonic() - self._joined_at.get(key, float("-inf")) >= self.refresh_seconds
            if due and key in self.listeners:
                await self._change("group_add", key)

    async def leave(self, key: str, listener: Listener) -> None:
        listeners = self.listeners.get(key, {})
        if listener not in listeners:
            return
        del listeners[listener]
        if listeners:
            return
        del self.listeners[key]
        self.heard_at.pop(key, None)
        if self.layer is None:
            return
        async with self._membership:
            if key not in self.listeners:  # nobody joined again meanwhile
                self._joined_at.pop(key, None)
                await self._change("group_discard", key)
            if not self.listeners and self._reader is not None:
                # Nothing to read for: no task outlives its sockets. A cancelled receive may
                # retire its channel (RedisPubSubChannelLayer forgets it, and would refuse a
                # group_add to it), so the next join makes a new one.
                self._reader.cancel()
                self._reader = None
                self.channel = None

    async def renew(self) -> None:
        """Renew every membership this hub holds (the sockets' upkeep calls it well inside the
        layer's group_expiry)."""
        if self.layer is None:
            return
        async with self._membership:
            if self.channel is None:
                return
            for key in list(self.listeners):
                await self._change("group_add", key)

    async def _change(self, operation: str, key: str) -> None:
        """A failed change (Redis away) is logged: subscriptions converge and join again."""
        try:
            await getattr(self.layer, operation)(broadcast.task_group(key), self.channel)
        except Exception:
            logger.warning("%s failed key=%s", operation, key, exc_info=True)
            return
        if operation == "group_add":
            self._joined_at[key] = time.monotonic()

    async def _read(self) -> None:
        await broadcast.receive_forever(self.layer, self.channel, self.deliver, "fan-out hub")

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
                task = asyncio.create_task(listener.take_news(message))
                self._deferred.add(task)
                task.add_done_callback(self._deferred_done)

    def _deferred_done(self, task: asyncio.Task[None]) -> None:
        self._deferred.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("delivering news failed", exc_info=task.exception())


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
