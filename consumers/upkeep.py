"""The sockets' upkeep: one loop per fan-out hub (so one per process and layer), not one per socket.

What must happen when no news comes:

- every CONVERGE_SECONDS, the tasks whose news has been quiet that long are read again, all of
  them in one query (streamapp/positions.py), and each subscription that missed something is
  repaired from the log: a dropped final state, a Redis subscription that went away. A task
  found completed with every subscription up to date is never read again: finished tasks cost
  nothing. On a saturated server news is often only waiting its turn, and needless repairs
  would make it worse: no check runs while the event loop lags, and a repair waits one more
  round of it (CONFIRM_SECONDS) for the news to come after all;
- the hub's group memberships are renewed well inside the layer's group_expiry;
- a socket that is congested or has subscriptions behind is polled until it has room, then its
  subscriptions catch up from the log; one congested for SLOW_CLIENT_SECONDS is closed (4408).

Sockets cost the loop nothing while they are in step. Work for one socket (a repair, a catch
up, a close) runs in a task of its own, so a slow socket never holds up the loop; at most one
such task per socket at a time. Nothing here writes to the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from streamapp.conf import app_settings
from streamapp.models import Status
from streamapp.positions import Position, positions_by_key

from .hub import FanOutHub, rejoin_interval
from .outlet import SocketOutlet
from .subscription import Subscription

logger = logging.getLogger("streamapp.consumers")

CONGESTED_POLL_SECONDS = 0.1
CONFIRM_SECONDS = 0.2  # between seeing news missed and repairing it
BUSY_LAG_SECONDS = 0.5  # a wake-up this late means the event loop is saturated
ERROR_PAUSE_SECONDS = 1.0


class Host(Protocol):
    """A socket, as its upkeep sees it."""

    subscriptions: dict[str, Subscription]
    outlet: SocketOutlet
    closing: bool

    async def progressed(self, subscription: Subscription) -> None:
        """A subscription sent something outside the consumer's own handlers."""

    async def close_slow(self) -> None:
        """The socket is hopeless: close it."""


class SocketUpkeep:
    """Convergence, renewals and slow clients for every socket of one hub."""

    def __init__(self, hub: FanOutHub) -> None:
        self.hub = hub
        self.attention: dict[Host, None] = {}  # sockets congested or behind
        self.settled: set[str] = set()  # completed tasks every subscription has whole
        self.suspects: list[tuple[str, Position, float]] = []  # found behind, and when
        self.busy: dict[Host, asyncio.Task[None]] = {}  # work under way, per socket
        self.converge_at = 0.0
        self.renew_at = 0.0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    # -- the sockets' calls ---------------------------------------------------------------

    def ensure_running(self) -> None:
        """Start the loop (a socket subscribed); it ends by itself once no socket needs it."""
        if self._task is None:
            now = time.monotonic()
            self.converge_at = now + app_settings.CONVERGE_SECONDS
            self.renew_at = now + rejoin_interval(self.hub.layer)
            self._task = asyncio.create_task(self._run(), name="streamapp socket upkeep")

    def attend(self, socket: Host) -> None:
        """``socket`` is congested or behind: poll it until it is neither."""
        if socket not in self.attention:
            self.attention[socket] = None
            self.ensure_running()
            self._poke()

    def forget(self, socket: Host) -> None:
        """``socket`` is closing: no more work for it (work under way runs to its end)."""
        self.attention.pop(socket, None)
        if not (self.hub.listeners or self.attention or self.busy):
            self._poke()  # the loop ends at once rather than at its next round

    async def stop(self) -> None:
        """Cancel the loop and the work under way (tests; a closing event loop)."""
        tasks = [task for task in (self._task, *self.busy.values()) if task is not None]
        self._task = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the loop ---------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self.hub.listeners or self.attention or self.busy:
                wait = self._wait()
                wake_at = time.monotonic() + wait
                await self._sleep(wait)
                busy = time.monotonic() - wake_at > BUSY_LAG_SECONDS
                try:
                    await self.tick(busy)
                except Exception:
                    logger.warning("socket upkeep failed", exc_info=True)
                    await sync_to_async(close_old_connections)()
                    await asyncio.sleep(ERROR_PAUSE_SECONDS)
        finally:
            if self._task is asyncio.current_task():
                self._task = None

    def _wait(self) -> float:
        if self.attention or self.busy:
            return CONGESTED_POLL_SECONDS
        if self.suspects:
            return CONFIRM_SECONDS
        return max(0.0, min(self.converge_at, self.renew_at) - time.monotonic())

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until ``_poke``."""
        loop = asyncio.get_running_loop()
        self._wake = loop.create_future()
        timer = loop.call_later(seconds, self._poke)
        try:
            await self._wake
        finally:
            timer.cancel()
            self._wake = None

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    async def tick(self, busy: bool = False) -> None:
        """One round: slow and lagging sockets, confirmed repairs, checks and renewals due.

        ``busy``: the event loop lags, so silence proves nothing and checks wait.
        """
        self._attend_all()
        self._repair_suspects()
        now = time.monotonic()
        if now >= self.converge_at:
            self.converge_at = now + app_settings.CONVERGE_SECONDS
            self._notice_congested()
            if not busy:
                await self.find_suspects(now)
        if now >= self.renew_at:
            self.renew_at = now + rejoin_interval(self.hub.layer)
            await self.hub.renew()

    # -- slow and lagging sockets -------------------------------------------------------

    def _attend_all(self) -> None:
        slow = app_settings.SLOW_CLIENT_SECONDS
        for socket in list(self.attention):
            if socket in self.busy:
                continue
            outlet = socket.outlet
            if socket.closing:
                del self.attention[socket]
            elif outlet.congested_for() > slow:
                del self.attention[socket]
                self._work(socket, socket.close_slow())
            elif outlet.congested():
                continue
            elif any(s.behind for s in socket.subscriptions.values()):
                self._work(socket, self._resume(socket))
            else:
                del self.attention[socket]

    async def _resume(self, socket: Host) -> None:
        for subscription in list(socket.subscriptions.values()):
            if subscription.behind and not socket.outlet.congested():
                await subscription.resume()
                await socket.progressed(subscription)

    def _notice_congested(self) -> None:
        """A socket can fill up with nothing behind (a big frame): look at each now and then."""
        for listeners in self.hub.listeners.values():
            for socket in listeners:
                if socket not in self.attention and socket.outlet.congested():
                    self.attend(socket)

    # -- convergence ------------------------------------------------------------------------

    async def find_suspects(self, now: float) -> None:
        """Read the tasks quiet for CONVERGE_SECONDS, in one query, and note who missed news."""
        quiet_for = app_settings.CONVERGE_SECONDS
        heard_at = self.hub.heard_at
        self.settled &= self.hub.listeners.keys()
        quiet = [
            key for key in self.hub.listeners
            if key not in self.settled and now - heard_at.get(key, now) >= quiet_for
        ]
        if not quiet:
            await sync_to_async(close_old_connections)()  # what reading would have done
            return
        found = await positions_by_key(quiet)
        found_at = time.monotonic()
        for key, position in found.items():
            if any(subscription.missed(position) for subscription in self._subscriptions(key)):
                self.suspects.append((key, position, found_at))
            elif position.status == Status.COMPLETED:
                self.settled.add(key)  # nothing can change any more

    def _repair_suspects(self) -> None:
        """Repair the suspects still quiet since they were found behind."""
        suspects, self.suspects = self.suspects, []
        for key, position, found_at in suspects:
            if self.hub.heard_at.get(key, found_at) >= found_at:
                continue  # news came meanwhile: the feed is alive
            for socket in tuple(self.hub.listeners.get(key, ())):
                subscription = socket.subscriptions.get(key)
                if subscription is not None and subscription.missed(position):
                    self._work(socket, self._converge(socket, subscription, position))

    async def _converge(self, socket: Host, subscription: Subscription, position: Position) -> None:
        await subscription.converge(position)
        await socket.progressed(subscription)

    def _subscriptions(self, key: str) -> Any:
        for socket in self.hub.listeners.get(key, ()):
            subscription = socket.subscriptions.get(key)
            if subscription is not None:
                yield subscription

    # -- work per socket --------------------------------------------------------------------

    def _work(self, socket: Host, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``socket`` in a task of its own, one at a time per socket."""
        if socket in self.busy:
            work.close()  # the next round sees what is still to do
            return
        task = asyncio.create_task(work, name="streamapp socket work")
        self.busy[socket] = task
        task.add_done_callback(lambda done: self._worked(socket, done))

    def _worked(self, socket: Host, task: asyncio.Task[None]) -> None:
        if self.busy.get(socket) is task:
            del self.busy[socket]
        if not task.cancelled() and task.exception() is not None:
            logger.error("socket upkeep work failed", exc_info=task.exception())
        if not socket.closing and (socket.outlet.congested()
                                   or any(s.behind for s in socket.subscriptions.values())):
            self.attend(socket)


_upkeeps: weakref.WeakKeyDictionary[FanOutHub, SocketUpkeep] = weakref.WeakKeyDictionary()


def upkeep_for(hub: FanOutHub) -> SocketUpkeep:
    """The upkeep of ``hub``'s sockets."""
    upkeep = _upkeeps.get(hub)
    if upkeep is None:
        upkeep = _upkeeps[hub] = SocketUpkeep(hub)
    return upkeep
