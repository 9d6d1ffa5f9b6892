"""Tie the process's coordinator and sockets to the server's life: start with it, hand over and
drain when it stops.

Two ways in. uvicorn and hypercorn speak the ASGI lifespan protocol: ``streamapp.asgi.lifespan``
calls ``server_started`` and ``server_stopping``. Daphne speaks none: it runs Twisted's asyncio
reactor, whose own SIGTERM/SIGINT handlers stop the reactor, and the reactor waits for every
"before shutdown" trigger's Deferred before it stops the event loop. So streamapp adds one, at
import time of the app, ahead of daphne's own trigger (which cancels every application at
once): it writes each socket's close frame (4012) before that, then drains the coordinator
within SHUTDOWN_TIMEOUT while the loop still runs.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from twisted.internet.defer import Deferred

from ..conf import app_settings
from ..handover import CLOSE_WAIT_SECONDS, open_sockets
from .coordinator import coordinator

logger = logging.getLogger("streamapp.runner")

_startup: set[asyncio.Task[None]] = set()


async def server_started() -> None:
    """Start the sweeper and the control listener with the server, not at its first task."""
    if app_settings.RUN_TASKS:
        await coordinator.ensure_started()


async def server_stopping(closing: list[asyncio.Future[None]] | None = None) -> None:
    """Close every socket with 1012, then end every task running here (SHUTDOWN_TIMEOUT, then
    cancel). ``closing``: closes already under way."""
    if closing is None:
        await open_sockets.aclose_all()
    elif closing:
        await asyncio.wait(closing, timeout=CLOSE_WAIT_SECONDS)
    if app_settings.RUN_TASKS:
        logger.info("server stopping: shutting the coordinator down")
        await coordinator.shutdown()


def install_daphne_hooks() -> bool:
    """Register start and shutdown triggers on the Twisted reactor, if one is installed.

    Harmless when the reactor never runs (manage.py commands, tests). Returns whether it did.
    """
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    reactor.callWhenRunning(on_server_start)
    reactor.addSystemEventTrigger("before", "shutdown", on_server_stop)
    return True


def on_server_start() -> None:
    """daphne is serving: start what ``server_started`` starts."""
    task = asyncio.ensure_future(server_started())
    _startup.add(task)
    task.add_done_callback(_startup.discard)


def on_server_stop() -> Deferred | None:
    """Before the reactor stops: every socket's close frame now, then the coordinator's drain."""
    open_sockets.stop_taking()
    closing = open_sockets.close_all()  # synchronous: daphne's trigger cancels the sockets next
    if not app_settings.RUN_TASKS and not closing:
        return None
    return Deferred.fromFuture(asyncio.ensure_future(server_stopping(closing)))
