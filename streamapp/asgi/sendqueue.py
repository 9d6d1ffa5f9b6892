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
    """The ASGI ``send`` of one WebSocket, queued in front of the server's own.

    Lean, as there is one per socket: no queue until a frame has to wait behind another, no
    task while nothing waits.
    """

    def __init__(self, send: Any) -> None:
        self._server_send = send
        self._waiting: deque[tuple[dict[str, Any], int]] | None = None  # behind the writer's
        self._bytes = 0  # of the frame the writer hands over and of those waiting
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    async def send(self, message: dict[str, Any]) -> None:
        """Queue ``message``; a close goes after what is queued, or alone if that is stuck."""
        if self._closed:
            return  # the socket is gone or closing: nothing may follow
        if message["type"] == "websocket.close":
            self._closed = True
            if self._writer is not None:
                flushed, _ = await asyncio.wait([self._writer], timeout=CLOSE_FLUSH_SECONDS)
                if not flushed:
                    await self.stop()
            await self._server_send(message)
            return
        size = len(message.get("text") or message.get("bytes") or b"")
        self._bytes += size
        if self._writer is None:
            # Most sends do not wait: they go out now, and only one that waits leaves a task.
            self._writer = eager.start(self._write(message, size), name="streamapp send queue")
            return
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append((message, size))

    async def _write(self, message: dict[str, Any], size: int) -> None:
        """Hand ``message``, then each frame that queued behind it, to the server in order."""
        try:
            while True:
                try:
                    await self._server_send(message)
                except Exception as exc:  # noqa: BLE001 - the client left: drop the rest
                    logger.debug("send failed, dropping the queue: %s", exc)
                    self._closed = True
                    self._drop()
                    return
                self._bytes -= size
                if not self._waiting:
                    return
                message, size = self._waiting.popleft()
        finally:
            if self._writer is asyncio.current_task():  # not a writer started after a stop
                self._writer = None

    async def stop(self) -> None:
        """Drop what is queued and stop the writer (the socket closes or its app ended)."""
        writer, self._writer = self._writer, None
        self._drop()
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    def _drop(self) -> None:
        self._waiting = None
        self._bytes = 0

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
