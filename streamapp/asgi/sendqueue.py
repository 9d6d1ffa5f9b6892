"""One socket's frames on their way to a server that makes ``send`` wait (uvicorn, hypercorn).

Those servers apply backpressure: ``send`` waits while the client does not read. Awaited
inline, one such socket would hold up the hub's delivery to every other socket of its task.
So frames queue here and one writer per socket hands them over in order, started eagerly (a task
only while the server makes it wait); the queue's bytes are the socket's backlog, which the
outlet reads exactly as it reads daphne's transport (SEND_BUFFER_BYTES, SLOW_CLIENT_SECONDS,
4408). What a server buffers itself comes on top
(uvicorn's and hypercorn's write buffers: 64 KiB).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from .. import eager

logger = logging.getLogger("streamapp.transport")

# A close waits this long for queued frames to go out first; a client that reads nothing
# loses them (they are in the event log: it reconnects with since).
CLOSE_FLUSH_SECONDS = 1.0


class SendQueue:
    """The ASGI ``send`` of one WebSocket, queued in front of the server's own."""

    def __init__(self, send: Any) -> None:
        self._server_send = send
        self._queue: deque[tuple[dict[str, Any], int]] = deque()
        self._bytes = 0
        self._empty = asyncio.Event()
        self._empty.set()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def send(self, message: dict[str, Any]) -> None:
        """Queue ``message``; a close goes after what is queued, or alone if that is stuck."""
        if self._closed:
            return  # the socket is gone or closing: nothing may follow
        if message["type"] == "websocket.close":
            self._closed = True
            try:
                await asyncio.wait_for(self._empty.wait(), CLOSE_FLUSH_SECONDS)
            except TimeoutError:
                await self.stop()
            await self._server_send(message)
            return
        size = len(message.get("text") or message.get("bytes") or b"")
        self._queue.append((message, size))
        self._bytes += size
        self._empty.clear()
        if self._writer is None:
            # Most sends do not wait: they go out now, and only one that waits leaves a task.
            self._writer = eager.start(self._write(), name="streamapp send queue")

    async def _write(self) -> None:
        try:
            while self._queue:
                message, size = self._queue[0]
                try:
                    await self._server_send(message)
                except Exception as exc:  # noqa: BLE001 - the client left: drop the rest
                    logger.debug("send failed, dropping the queue: %s", exc)
                    self._closed = True
                    self._queue.clear()
                    self._bytes = 0
                    return
                self._queue.popleft()
                self._bytes -= size
        finally:
            self._writer = None
            if not self._queue:
                self._empty.set()

    async def stop(self) -> None:
        """Drop what is queued and stop the writer (the socket closes or its app ended)."""
        writer, self._writer = self._writer, None
        self._queue.clear()
        self._bytes = 0
        self._empty.set()
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    # -- the backlog interface the outlet reads (as adapters.daphne.TransportBacklog) --------

    def open(self) -> bool:
        return not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    def held(self) -> int:
        """Bytes queued here that the server has not taken yet."""
        return self._bytes

    def unsent(self) -> int:
        return self._bytes

    def close_now(self, code: int) -> bool:
        return False  # a close goes through ``send``, awaited
