"""One socket's way out: send frames, and say when the server holds too much for it.

A congested socket is not sent new events: they wait in the event log, and its subscriptions
catch up from there once the client has read what it was given. So a client that does not read
costs the server at most SEND_BUFFER_BYTES (plus the frame that crossed it), never the task's
time nor anyone else's; one that stays congested for SLOW_CLIENT_SECONDS is hopeless.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

from streamapp.adapters.daphne import TransportBacklog
from streamapp.asgi.transport import SCOPE_KEY


class Owner(Protocol):
    """The consumer an outlet belongs to: its own way of sending, without daphne's transport."""

    async def send_text_fallback(self, text: str) -> None: ...

DRAIN_POLL_SECONDS = 0.05
# Twisted writes to the kernel only when the event loop comes round: frames sent in one go all
# count as held until then. A pause this long lets it write what the kernel will take.
FLUSH_SECONDS = 0.001


class SocketOutlet:
    """Frames out of one socket: straight to daphne's transport when it is there."""

    __slots__ = ("_backlog", "_owner", "_limit", "_congested_since")

    @classmethod
    def for_socket(cls, scope: dict[str, Any], owner: Owner, limit: int) -> SocketOutlet:
        """The outlet of the socket with ``scope``, whose consumer is ``owner``."""
        return cls(owner, scope.get(SCOPE_KEY), limit)

    def __init__(self, owner: Owner, backlog: TransportBacklog | None, limit: int) -> None:
        self._owner = owner  # without daphne's transport: the consumer sends the ASGI way
        self._backlog = backlog
        self._limit = limit
        self._congested_since: float | None = None

    async def send(self, text: str) -> None:
        """Called once per frame and socket: no wrapper, no closure."""
        backlog = self._backlog
        if backlog is None:
            await self._owner.send_text_fallback(text)
        elif backlog.open():  # a client that has just left: nothing to send to, and no error
            await backlog.send({"type": "websocket.send", "text": text})

    def congested(self) -> bool:
        """Does the server hold more than the limit for this socket right now?"""
        if self._backlog is None:
            return False
        if self._backlog.held() <= self._limit:
            self._congested_since = None
            return False
        if self._congested_since is None:
            self._congested_since = time.monotonic()
        return True

    async def has_room(self) -> bool:
        """Not congested, once the server has written what the kernel takes right now."""
        if not self.congested():
            return True
        await asyncio.sleep(FLUSH_SECONDS)
        return not self.congested()

    def congested_for(self) -> float:
        """Seconds this socket has been congested without a break (0 when it is not)."""
        if not self.congested():
            return 0.0
        return time.monotonic() - self._congested_since

    def close_at_once(self, code: int) -> bool:
        """Write a close frame now, without awaiting (daphne's transport); False elsewhere."""
        return self._backlog is not None and self._backlog.close_now(code)

    def sent(self) -> bool:
        """Has this process handed the kernel everything written (or is the socket gone)?"""
        backlog = self._backlog
        return backlog is None or backlog.closed or backlog.held() == 0

    async def drained(self, timeout: float) -> bool:
        """Wait until the client has everything sent so far (or the socket is gone)."""
        if self._backlog is None:
            return True
        deadline = time.monotonic() + timeout
        while not self._backlog.closed and self._backlog.unsent() > 0:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(DRAIN_POLL_SECONDS)  # no event tells us the kernel sent it
        return True
