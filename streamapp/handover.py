"""The WebSockets this process serves, so that shutdown can close them all at once with 1012.

A process that begins shutting down (daphne's SIGTERM, an ASGI lifespan shutdown,
``coordinator.shutdown()``) closes every socket with 1012, service restart (4012 where the
server refuses 1012: DESIGN §3), before its tasks drain: clients reconnect at once, with
``since``, to another process. Sockets register here; streamapp never imports them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Protocol

from .protocol import CLOSE_SERVICE_RESTART

logger = logging.getLogger("streamapp.handover")

# How long shutdown waits for the closes it could not make at once.
CLOSE_WAIT_SECONDS = 1.0


# How often shutdown looks whether the close frames written at once have left the process.
WRITTEN_POLL_SECONDS = 0.01


class Closable(Protocol):
    """A socket, as the handover sees it."""

    def close_for_restart(self, code: int) -> Awaitable[None] | None:
        """Start closing with ``code`` now: None when the close frame is already written,
        else an awaitable that finishes it."""

    def close_sent(self) -> bool:
        """Has everything written to this socket, its close frame too, left this process?"""


class OpenSockets:
    """This process's open sockets, in the order they opened."""

    def __init__(self) -> None:
        self._sockets: dict[Closable, None] = {}
        self.refusing = False  # the server is stopping: new sockets are refused (stop_taking)

    def stop_taking(self) -> None:
        """The server is going away but still listens for a while (daphne waits for its
        consumers to end): a socket that connects from now on is refused before it is accepted,
        so its client tries again and reaches another server or this one's successor, instead
        of being accepted here and dropped without a close frame when the process exits."""
        self.refusing = True

    def add(self, socket: Closable) -> None:
        self._sockets[socket] = None

    def discard(self, socket: Closable) -> None:
        self._sockets.pop(socket, None)

    def __len__(self) -> int:
        return len(self._sockets)

    def close_all(self, code: int = CLOSE_SERVICE_RESTART) -> list[asyncio.Future[None]]:
        """Start closing every socket with ``code``, without waiting; returns the closes under way.

        Synchronous on purpose: daphne cancels its applications right after its shutdown
        triggers return, so whatever can be written must be written before then.
        """
        sockets, self._sockets = list(self._sockets), {}
        if sockets:
            logger.info("closing sockets for a restart count=%d code=%d", len(sockets), code)
        pending, written = [], []
        for socket in sockets:
            try:
                closing = socket.close_for_restart(code)
            except Exception:  # noqa: BLE001 - one broken socket must not keep the rest open
                logger.warning("closing a socket for a restart failed", exc_info=True)
                continue
            if closing is not None:
                pending.append(asyncio.ensure_future(closing))
            else:
                written.append(socket)
        if written:
            pending.append(asyncio.ensure_future(_sent(written)))
        return pending

    async def aclose_all(
        self, code: int = CLOSE_SERVICE_RESTART, timeout: float = CLOSE_WAIT_SECONDS
    ) -> None:
        """Close every socket with ``code`` and wait (at most ``timeout``) until each is closed."""
        pending = self.close_all(code)
        if pending:
            await asyncio.wait(pending, timeout=timeout)
            for closing in pending:
                if closing.done() and not closing.cancelled() and closing.exception():
                    logger.warning("closing a socket for a restart failed",
                                   exc_info=closing.exception())


async def _sent(sockets: list[Closable]) -> None:
    """Until the close frames written at once have left this process.

    daphne writes a frame into Twisted's buffer; the reactor hands it to the kernel on a later
    turn of the loop, and not at all once the socket's kernel buffer is full (a client behind
    on its stream). When daphne stops, Twisted drops its connections with whatever they still
    hold: the client would see the connection reset (1006), not 1012/4012, and not know to
    come back at once. So shutdown waits for them, at most CLOSE_WAIT_SECONDS.
    """
    deadline = time.monotonic() + CLOSE_WAIT_SECONDS
    while sockets and time.monotonic() < deadline:
        sockets = [socket for socket in sockets if not socket.close_sent()]
        if sockets:
            await asyncio.sleep(WRITTEN_POLL_SECONDS)


open_sockets = OpenSockets()
