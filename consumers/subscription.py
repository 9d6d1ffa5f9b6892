"""One socket's view of one task: every seq once, in order, then the final state.

The whole no-loss/no-duplicate rule lives here, whatever brings the news (the process's
fan-out hub, hub.py, calls in when the news can go straight out, or from a task of its own):

- join the feed first, then read the task and replay from the log, then take live news;
- drop a seq at or below the last one sent; fill a gap from the log before going on;
- a quiet feed may have lost news: ``converge`` compares a fresh read of the task's position and
  repairs from the log (and joins the feed again);
- never buffer for a slow socket: while its outlet is congested, only remember how far the task
  has got, and catch up from the log once the client has read what it was given;
- a state frame goes out at its place in the stream (after the event with its seq); a newer
  state replaces one not yet sent.

A process may hold tens of thousands of subscriptions, most of them idle: one holds its numbers
and three references (no task row, no lock until two callers want it at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Protocol

from streamapp import metrics, protocol
from streamapp.exceptions import UnknownTask
from streamapp.models import FINAL_STATUSES, Status, StreamTask
from streamapp.positions import (
    TOP_FRAME,
    Position,
    read_for_subscriber,
    subscriber_state,
)

from .logpages import LogPages, log_pages

logger = logging.getLogger("streamapp.consumers")

Check = Callable[[StreamTask], Awaitable[None]]


class Outlet(Protocol):
    """Where a socket's frames go."""

    async def send(self, text: str) -> None: ...

    def congested(self) -> bool:
        """Does the server hold more for this client than it should, right now?"""

    async def has_room(self) -> bool:
        """False while the client has not taken enough of what it was sent."""


class Feed(Protocol):
    """What brings a task's live news (``stream.events`` / ``stream.state``) to the socket."""

    async def join(self, key: str) -> None: ...

    async def leave(self, key: str) -> None: ...


class Turn:
    """An asyncio lock that allocates nothing until a second caller has to wait."""

    __slots__ = ("held", "waiters")

    def __init__(self) -> None:
        self.held = False
        self.waiters: deque[asyncio.Future[None]] | None = None

    def locked(self) -> bool:
        return self.held

    async def __aenter__(self) -> None:
        if not self.held and not self.waiters:
            self.held = True
            return
        if self.waiters is None:
            self.waiters = deque()
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter  # handed the turn: ``held`` stays True
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._hand_on()  # the turn came as we were cancelled: pass it on
            raise
        finally:
            if self.waiters and waiter in self.waiters:
                self.waiters.remove(waiter)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._hand_on()

    def _hand_on(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.waiters = None
        self.held = False


class Subscription:
    __slots__ = (
        "model", "pk", "key", "feed", "outlet", "log", "last_seq", "known_seq", "revision",
        "status", "pending", "closed", "_turn",
    )

    def __init__(
        self, task: StreamTask, feed: Feed, outlet: Outlet, log: LogPages = log_pages
    ) -> None:
        self._setup(type(task), task.pk, task.task_key, task.status, feed, outlet, log)

    @classmethod
    def of(
        cls, model: type[StreamTask], pk: Any, key: str, feed: Feed, outlet: Outlet
    ) -> Subscription:
        """A subscription to the task ``key`` (``model`` / ``pk``), before anything is read."""
        subscription = cls.__new__(cls)
        subscription._setup(model, pk, key, Status.PENDING, feed, outlet, log_pages)
        return subscription

    def _setup(
        self, model: type[StreamTask], pk: Any, key: str, status: str, feed: Feed,
        outlet: Outlet, log: LogPages,
    ) -> None:
        self.model, self.pk, self.key = model, pk, key
        self.feed = feed
        self.outlet = outlet
        self.log = log
        self.last_seq = 0  # the newest seq this socket has been sent
        self.known_seq = 0  # the newest seq known to exist, sent or not
        self.revision = -1  # the revision of the newest state frame sent
        self.status = status  # the status of the newest state frame sent
        self.pending: dict[str, Any] | None = None  # a newer state waiting for its place
        self.closed = False
        self._turn = Turn()  # live news and the upkeep take turns

    @property
    def behind(self) -> bool:
        """Something known is not sent yet (a congested outlet, or a repair under way)."""
        return self.known_seq > self.last_seq or self.pending is not None

    @property
    def ended(self) -> bool:
        """The newest state sent is final."""
        return self.status in FINAL_STATUSES

    def in_step(self, first_seq: int) -> bool:
        """Would live events from ``first_seq`` on go straight out, with nothing to wait for?"""
        return (
            first_seq <= self.last_seq + 1
            and not self.behind
            and not self._turn.held
            and not self.outlet.congested()
        )

    @property
    def finished(self) -> bool:
        """The final state has gone out after the task's last event."""
        return self.ended and not self.behind

    # -- the socket's calls ----------------------------------------------------------------

    async def open(
        self, since: int | None, check: Check | None = None
    ) -> tuple[StreamTask, list[dict[str, Any]]]:
        """Join, read the task, send ``state``, replay.

        Returns the task as read and the error frames the caller should also send. ``check``
        sees the task before anything is sent (a permission check raises); UnknownTask when the
        row is gone.
        """
        async with self._turn:
            metrics.SUBSCRIPTIONS.inc()
            await self.feed.join(self.key)
            # After joining: no change can slip between. One query: the row and the log's top.
            task = await read_for_subscriber(self.model, self.pk, self.key, latest=since is None)
            if task is None:
                raise UnknownTask(f"no task {self.key}")
            if check is not None:
                await check(task)
            state = subscriber_state(task)
            await self._send_state(state)
            if since is None:
                latest = getattr(task, TOP_FRAME)
                self.last_seq = self.known_seq = state["seq"]
                if latest is not None:
                    await self._send(latest)
                    metrics.EVENTS_DELIVERED_FROM_LOG.inc()
                    if self.ended:  # the final state closes a stream: again after the event
                        await self._send(state["frame"])
                return task, []
            notes = []
            if since > state["seq"]:
                notes.append(protocol.error(
                    "bad_request",
                    f"since {since} is ahead of the task's last seq {state['seq']}",
                    task=self.key,
                ))
                since = state["seq"]
            self.last_seq, self.known_seq = since, state["seq"]
            if since < state["seq"] and self.ended:
                self.pending = state  # the final state closes a stream: again after the replay
            await self._catch_up()
            return task, notes

    async def on_events(self, events: list[tuple[int, str]]) -> None:
        """Live ``(seq, frame)`` news, oldest first."""
        async with self._turn:
            if self.closed or events[-1][0] <= self.last_seq:
                return
            self.known_seq = max(self.known_seq, events[-1][0])
            for seq, frame in events:
                if seq <= self.last_seq:
                    continue
                if seq > self.last_seq + 1:
                    metrics.GAP_REPAIRS.inc()
                    break  # a gap: the log has it
                if not await self.outlet.has_room():
                    break  # no room: the log has it
                await self._emit(seq, frame)
                metrics.EVENTS_DELIVERED_LIVE.inc()
            await self._catch_up()

    async def on_state(self, message: dict[str, Any]) -> None:
        """Live state news: ``revision``, ``status``, ``seq`` and the encoded ``frame``."""
        async with self._turn:
            if not self.closed:
                self._take_state(message)
                await self._catch_up()

    def missed(self, position: Position) -> bool:
        """Has the task got further than this subscription has heard?"""
        return position.seq > self.known_seq or position.revision > self._newest_revision()

    async def converge(self, position: Position) -> None:
        """Repair whatever the feed lost, from a fresh read of the task's position."""
        async with self._turn:
            if self.closed or not self.missed(position):
                return
            logger.info(
                "subscription repairs lost news key=%s known=%d now=%d revision=%d now=%d",
                self.key, self.known_seq, position.seq, self._newest_revision(),
                position.revision,
            )
            metrics.GAP_REPAIRS.inc()
            await self.feed.join(self.key)  # the membership itself may be gone (Redis restarted)
            if position.revision > self._newest_revision():
                self._take_state(position.state(self.key))
            self.known_seq = max(self.known_seq, position.seq)
            await self._catch_up()

    async def resume(self) -> None:
        """Catch up from the log after the outlet was congested."""
        async with self._turn:
            if not self.closed and self.behind:
                await self._catch_up()

    async def rejoin(self) -> None:
        """Renew the feed membership before the layer's group_expiry ends it."""
        if not self.closed:
            await self.feed.join(self.key)

    async def close(self) -> None:
        if not self.closed:
            metrics.SUBSCRIPTIONS.dec()
        self.closed = True  # whatever is under way stops sending at once
        await self.feed.leave(self.key)

    # -- the rule ---------------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Send logged events up to ``known_seq`` while the outlet has room, then a due state."""
        while self.last_seq < self.known_seq and await self.outlet.has_room():
            rows = await self.log.read(self.key, self.last_seq, self.known_seq)
            oldest = rows[0][0] if rows else self.known_seq + 1
            if oldest > self.last_seq + 1:
                await self._send(protocol.encode(protocol.error(
                    "history_truncated",
                    f"events after seq {self.last_seq} are no longer kept; resuming at {oldest}",
                    task=self.key, oldest_seq=oldest,
                )))
                self.last_seq = oldest - 1
            for seq, frame in rows:
                await self._emit(seq, frame)
                metrics.EVENTS_DELIVERED_FROM_LOG.inc()
                if not await self.outlet.has_room():
                    break
            if self.closed:
                return
        if self.pending is not None and self.pending["seq"] <= self.last_seq:
            await self._send_state(self.pending)

    async def _emit(self, seq: int, frame: str) -> None:
        """Send event ``seq`` (the next one), after a pending state that belongs before it."""
        if self.pending is not None and self.pending["seq"] < seq:
            await self._send_state(self.pending)
        if not self.closed:  # _send inlined: this runs once per event per socket
            await self.outlet.send(frame)
        self.last_seq = seq

    def _take_state(self, message: dict[str, Any]) -> None:
        """Keep ``message`` to send at its place, unless a newer state is sent or kept."""
        if message["revision"] > self._newest_revision():
            self.pending = message
        self.known_seq = max(self.known_seq, message["seq"])

    def _newest_revision(self) -> int:
        return self.pending["revision"] if self.pending else self.revision

    async def _send_state(self, message: dict[str, Any]) -> None:
        await self._send(message["frame"])
        self.revision, self.status = message["revision"], message["status"]
        if self.pending is not None and self.pending["revision"] <= self.revision:
            self.pending = None

    async def _send(self, text: str) -> None:
        if not self.closed:
            await self.outlet.send(text)
