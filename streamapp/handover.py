"""The WebSockets this process serves, so that shutdown can close them all at once with 1012.

A process that begins shutting down (daphne's SIGTERM, an ASGI lifespan shutdown,
``coordinator.shutdown()``) closes every socket with 1012, service restart (4012 where the
server refuses 1012: DESIGN §3), before its tasks drain: clients reconnect at once, with
``since``, to another process. Sockets register here; streamapp never imports them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Protocol

from .protocol import CLOSE_SERVICE_RESTART

logger = logging.getLogger("streamapp.handover")

# How long shutdown waits for the closes it could not make at once.
CLOSE_WAIT_SECONDS = 1.0


class Closable(Protocol):
    """A socket, as the handover sees it."""

    def close_for_restart(self, code: int) -> Awaitable[None] | None:
        """Start closing with ``code`` now: None when the close frame is already written,
        else an awaitable that finishes it."""


class OpenSockets:
    """This process's open sockets, in the order they opened."""

    def __init__(self) -> None:
        self._sockets: dict[Closable, None] = {}

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
        pending = []
        for socket in sockets:
            try:
                closing = socket.close_for_restart(code)
            except Exception:  # noqa: BLE001 - one broken socket must not keep the rest open
                logger.warning("closing a socket for a restart failed", exc_info=True)
                continue
            if closing is not None:
                pending.append(asyncio.ensure_future(closing))
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


open_sockets = OpenSockets()
