"""The ASGI lifespan application: what daphne's hooks do, for servers that speak lifespan.

uvicorn and hypercorn send ``lifespan.startup`` before serving and ``lifespan.shutdown`` when
they stop (SIGTERM, SIGINT): the process's coordinator starts with the server, and on shutdown
the process's sockets are closed with 1012 and its running tasks drain or are cancelled within
SHUTDOWN_TIMEOUT, each ending in a final status. Route it with ``"lifespan": lifespan`` in the
project's ``ProtocolTypeRouter``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from ..adapters import signals
from ..handover import open_sockets
from ..runner.server_hooks import server_started, server_stopping
from . import servers

logger = logging.getLogger("streamapp.lifespan")

_closing: set[asyncio.Future[None]] = set()


def close_sockets_now() -> None:
    """At the server's SIGTERM, before it waits out its own grace period (hypercorn)."""
    for closing in open_sockets.close_all():
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)


async def lifespan(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer the server's startup and shutdown; a failed startup is reported, not raised."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            servers.note_lifespan_server()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signals.chain_before(signum, close_sockets_now)
            try:
                await server_started()
            except Exception as exc:
                logger.exception("lifespan startup failed")
                await send({"type": "lifespan.startup.failed", "message": f"streamapp: {exc}"})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            try:
                await server_stopping()
            except Exception as exc:
                logger.exception("lifespan shutdown failed")
                await send({"type": "lifespan.shutdown.failed", "message": f"streamapp: {exc}"})
                return
            await send({"type": "lifespan.shutdown.complete"})
            return
