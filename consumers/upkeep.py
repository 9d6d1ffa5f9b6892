"""Each socket's one background task: what must happen when no news comes.

- every CONVERGE_SECONDS, subscriptions that heard nothing for that long re-read their task's
  position (one query per model and one on the log, whatever their number) and repair what a
  lost feed missed: a dropped final state, a Redis subscription that went away. On a saturated
  server news is often only waiting its turn, and needless checks and repairs would make it
  worse: no check runs while the event loop lags, and a repair waits one more round of it;
- group memberships are renewed well inside the layer's group_expiry;
- a congested socket is polled until it has room, then its subscriptions catch up from the
  log; one congested for SLOW_CLIENT_SECONDS is closed (4408).
Nothing here writes to the database.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from streamapp.conf import app_settings
from streamapp.positions import Position, positions

from .hub import rejoin_interval
from .outlet import SocketOutlet
from .subscription import Subscription

logger = logging.getLogger("streamapp.consumers")

CONGESTED_POLL_SECONDS = 0.1
CONFIRM_SECONDS = 0.2  # between seeing news missed and repairing it
BUSY_LAG_SECONDS = 0.5  # a wake-up this late means the event loop is saturated
ERROR_PAUSE_SECONDS = 1.0


class Host(Protocol):
    """The consumer an Upkeep works for."""

    subscriptions: dict[str, Subscription]
    outlet: SocketOutlet

    async def progressed(self, subscription: Subscription) -> None:
        """A subscription sent something outside the consumer's own handlers."""

    async def close_slow(self) -> None:
        """The socket is hopeless: close it."""


class Upkeep:
    def __init__(self, host: Host, layer: Any) -> None:
        self.host = host
        now = time.monotonic()
        converge = app_settings.CONVERGE_SECONDS
        # Sockets opened together should not all query together.
        self.converge_at = now + converge * random.uniform(0.5, 1.0)
        self.rejoin_every = rejoin_interval(layer) if layer is not None else None
        self.rejoin_at = now + self.rejoin_every if self.rejoin_every else float("inf")
        # Subscriptions found behind the database, with what was found and when.
        self.suspects: list[tuple[Subscription, Position, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="streamapp socket upkeep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            wait = self._wait()
            wake_at = time.monotonic() + wait
            await asyncio.sleep(wait)
            busy = time.monotonic() - wake_at > BUSY_LAG_SECONDS
            try:
                if not await self.tick(busy):
                    return
            except Exception:
                logger.warning("socket upkeep failed", exc_info=True)
                await sync_to_async(close_old_connections)()
                await asyncio.sleep(ERROR_PAUSE_SECONDS)

    def _wait(self) -> float:
        if self.suspects:
            return CONFIRM_SECONDS
        subscriptions = self.host.subscriptions.values()
        if self.host.outlet.congested() or any(s.behind for s in subscriptions):
            return CONGESTED_POLL_SECONDS
        return max(0.0, min(self.converge_at, self.rejoin_at) - time.monotonic())

    async def tick(self, busy: bool = False) -> bool:
        """One round of upkeep; False once the socket is being closed.

        ``busy``: the event loop lags, so silence proves nothing and checks wait.
        """
        if self.host.outlet.congested_for() > app_settings.SLOW_CLIENT_SECONDS:
            await self.host.close_slow()
            return False
        for subscription in list(self.host.subscriptions.values()):
            if subscription.behind and not self.host.outlet.congested():
                await subscription.resume()
                await self.host.progressed(subscription)
        await self.repair_suspects()
        now = time.monotonic()
        if now >= self.converge_at:
            self.converge_at = now + app_settings.CONVERGE_SECONDS
            if not busy:
                await self.find_suspects(now)
        if now >= self.rejoin_at:
            self.rejoin_at = now + self.rejoin_every
            for subscription in list(self.host.subscriptions.values()):
                await subscription.rejoin()
        return True

    async def find_suspects(self, now: float) -> None:
        """Check the subscriptions that heard nothing for CONVERGE_SECONDS against the DB."""
        quiet = [
            s for s in self.host.subscriptions.values()
            if now - s.heard_at >= app_settings.CONVERGE_SECONDS
        ]
        if not quiet:
            return
        found = await positions([s.task for s in quiet])
        self.suspects = [
            (s, found[s.key], time.monotonic())
            for s in quiet
            if s.key in found and s.missed(found[s.key])
        ]

    async def repair_suspects(self) -> None:
        """Repair the suspects that still heard nothing since they were found behind."""
        suspects, self.suspects = self.suspects, []
        for subscription, position, found_at in suspects:
            if subscription.heard_at < found_at:
                await subscription.converge(position)
                await self.host.progressed(subscription)
