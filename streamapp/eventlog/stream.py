"""EventStream: numbers one task's events, writes them to the log, then announces them.

An event is announced on the channel layer only after its log row is written, so any event a
client has received can be replayed. Writes are batched: ``emit`` queues the event and one
writer task per stream flushes what has queued up in one INSERT and one layer message, at most
BATCH_BYTES at a time (a bigger event goes alone), so big events never make a giant message.
The INSERT goes through the process's group commit (commits.py): the batches of every task
that wait at the same moment share one statement and one thread hop.

A run's stream writes under the run's lease (``fence``, see store.append): a refused write ends
the stream at once (nothing more is written or announced) and tells the run
(``on_lease_lost``). While the database is away the writer retries for up to LEASE_SECONDS;
events queue meanwhile, up to EVENT_BUFFER events or BUFFER_BYTES, beyond which ``emit`` waits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from django.utils import timezone

from .. import broadcast, metrics, outages, protocol
from ..conf import app_settings
from ..dbretry import is_transient, with_retries
from ..exceptions import EventTooLarge, LeaseLost
from . import store
from .store import LoggedEvent

logger = logging.getLogger("streamapp.events")

BATCH_BYTES = 1024 * 1024  # frame text written and announced at once
BUFFER_BYTES = 16 * 1024 * 1024  # frame text queued before send_event waits for the writer


class EventStream:
    """The event pipe of one task in the process that runs it."""

    def __init__(
        self,
        key: str,
        last_seq: int,
        retention: int | None = None,
        *,
        fence: store.Fence | None = None,
        on_lease_lost: Callable[[], None] | None = None,
    ) -> None:
        self.key = key
        self.fence = fence
        self._on_lease_lost = on_lease_lost
        self.seq = last_seq  # last seq handed out
        self.logged_seq = last_seq  # last seq written to the log and announced
        self._retention = retention if retention is not None else app_settings.EVENT_RETENTION
        self._trimmed_below = 0
        self._queue: list[LoggedEvent] = []
        self._queued_chars = 0
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def emit(self, name: str, data: Any) -> int:
        """Queue one event; wait when the writer is EVENT_BUFFER events or BUFFER_BYTES behind."""
        if self._error is not None:
            raise self._error
        if not isinstance(name, str) or not name:
            raise ValueError("an event name is a non-empty string")
        created_at = timezone.now()
        seq = self.seq + 1
        frame = protocol.encode(protocol.event(self.key, seq, name, data, created_at))
        size = len(frame.encode("utf-8"))
        if size > app_settings.MAX_EVENT_BYTES:
            raise EventTooLarge(
                f"event {name!r} encodes to {size} bytes; the limit is "
                f"{app_settings.MAX_EVENT_BYTES} (STREAMAPP['MAX_EVENT_BYTES'])"
            )
        self.seq = seq
        self._queue.append(LoggedEvent(seq, name, frame, created_at))
        self._queued_chars += len(frame)
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_queued(), name=f"events:{self.key}")
        if len(self._queue) >= app_settings.EVENT_BUFFER or self._queued_chars >= BUFFER_BYTES:
            await self.drain()
        return seq

    async def drain(self) -> None:
        """Wait until every emitted event is logged and announced; raise the writer's error."""
        while self._writer is not None:
            # shield: cancelling the task must not cancel the write of events already emitted
            await asyncio.shield(self._writer)
        if self._error is not None:
            raise self._error

    async def _write_queued(self) -> None:
        try:
            while self._queue:
                batch = self._next_batch()
                await with_retries(
                    functools.partial(store.append, self.key, batch, self.fence),
                    what="event log", key=self.key, patience=app_settings.LEASE_SECONDS,
                )
                self.logged_seq = batch[-1].seq
                await broadcast.publish_events(self.key, [(e.seq, e.frame) for e in batch])
                metrics.events_sent(self.key, len(batch))
                await self._trim_if_due()
        except LeaseLost as exc:
            logger.warning("event log write refused, the lease is gone key=%s", self.key,
                           extra={"task_key": self.key})
            self._fail(exc)
            if self._on_lease_lost is not None:
                self._on_lease_lost()
        except Exception as exc:
            logger.error("event log write failed key=%s", self.key, exc_info=True,
                         extra={"task_key": self.key})
            self._fail(exc)
        finally:
            self._writer = None

    def _fail(self, exc: BaseException) -> None:
        """Nothing queued will be written: ``emit`` and ``drain`` raise ``exc`` from now on."""
        self._error = exc
        self._queue.clear()
        self._queued_chars = 0

    def _next_batch(self) -> list[LoggedEvent]:
        """The oldest queued events up to BATCH_BYTES of frame text (at least one)."""
        size, count = 0, 0
        for event in self._queue:
            if count and size + len(event.frame) > BATCH_BYTES:
                break
            size += len(event.frame)
            count += 1
        batch, self._queue = self._queue[:count], self._queue[count:]
        self._queued_chars -= size
        return batch

    async def _trim_if_due(self) -> None:
        # Trim in steps of a tenth of the retention so the DELETE is rare, not per event.
        slack = max(self._retention // 10, 1)
        if self.logged_seq - self._retention >= self._trimmed_below + slack:
            try:
                await store.trim(self.key, self._retention)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                outages.database.failed("event log trim", exc)  # the next batch trims
                return
            self._trimmed_below = self.logged_seq - self._retention


async def emit_once(key: str, name: str, data: Any) -> int:
    """``send_event`` on a task this process is not running: log and announce one event."""
    stream = EventStream(key, await store.current_seq(key))
    seq = await stream.emit(name, data)
    await stream.drain()
    return seq
