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
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from streamapp import metrics, protocol
from streamapp.eventlog import store
from streamapp.models import FINAL_STATUSES, StreamTask
from streamapp.positions import Position, task_state

from .logpages import LogPages, log_pages

logger = logging.getLogger("streamapp.consumers")


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


class Subscription:
    def __init__(
        self, task: StreamTask, feed: Feed, outlet: Outlet, log: LogPages = log_pages
    ) -> None:
        self.task = task
        self.key = task.task_key
        self.feed = feed
        self.outlet = outlet
        self.log = log
        self.last_seq = 0  # the newest seq this socket has been sent
        self.known_seq = 0  # the newest seq known to exist, sent or not
        self.revision = -1  # the revision of the newest state frame sent
        self.status = task.status  # the status of the newest state frame sent
        self.pending: dict[str, Any] | None = None  # a newer state waiting for its place
        self.heard_at = time.monotonic()  # when live news last came
        self.closed = False
        self._lock = asyncio.Lock()  # live news and the socket's upkeep take turns

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
            and not self._lock.locked()
            and not self.outlet.congested()
        )

    @property
    def finished(self) -> bool:
        """The final state has gone out after the task's last event."""
        return self.ended and not self.behind

    # -- the socket's calls ----------------------------------------------------------------

    async def open(self, since: int | None) -> list[dict[str, Any]]:
        """Join, send ``state``, replay; returns error frames the caller should also send."""
        async with self._lock:
            metrics.SUBSCRIPTIONS.inc()
            await self.feed.join(self.key)
            state = await self._read_state()  # after joining: no change can slip between
            await self._send_state(state)
            if since is None:
                latest = await store.latest(self.key)
                self.last_seq = self.known_seq = max(state["seq"], latest[0] if latest else 0)
                if latest is not None:
                    await self._send(latest[1])
                    metrics.EVENTS_DELIVERED_FROM_LOG.inc()
                    if self.ended:  # the final state closes a stream: again after the event
                        await self._send(state["frame"])
                return []
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
            return notes

    async def on_events(self, events: list[tuple[int, str]]) -> None:
        """Live ``(seq, frame)`` news, oldest first."""
        async with self._lock:
            self.heard_at = time.monotonic()
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
        async with self._lock:
            self.heard_at = time.monotonic()
            if not self.closed:
                self._take_state(message)
                await self._catch_up()

    def missed(self, position: Position) -> bool:
        """Has the task got further than this subscription has heard?"""
        return position.seq > self.known_seq or position.revision > self._newest_revision()

    async def converge(self, position: Position) -> None:
        """Repair whatever the feed lost, from a fresh read of the task's position."""
        async with self._lock:
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
                self._take_state(await self._read_state())
            self.known_seq = max(self.known_seq, position.seq)
            await self._catch_up()

    async def resume(self) -> None:
        """Catch up from the log after the outlet was congested."""
        async with self._lock:
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

    async def _read_state(self) -> dict[str, Any]:
        """The task's state as a ``stream.state`` message, read from the database now."""
        await self.task.arefresh_from_db()
        state = await task_state(self.task)
        return {
            "revision": self.task.revision, "status": self.task.status, "seq": state["seq"],
            "frame": protocol.encode(state),
        }

    async def _send_state(self, message: dict[str, Any]) -> None:
        await self._send(message["frame"])
        self.revision, self.status = message["revision"], message["status"]
        if self.pending is not None and self.pending["revision"] <= self.revision:
            self.pending = None

    async def _send(self, text: str) -> None:
        if not self.closed:
            await self.outlet.send(text)
