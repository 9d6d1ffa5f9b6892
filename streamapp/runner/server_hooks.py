"""Tie the coordinator to a daphne process's life: start with the server, drain on SIGTERM.

Daphne speaks no ASGI lifespan. It runs Twisted's asyncio reactor, whose own SIGTERM/SIGINT
handlers stop the reactor, and the reactor waits for every "before shutdown" trigger's Deferred
before it stops the event loop (daphne closes its sockets through the same trigger). So
streamapp adds one: shut the coordinator down, within SHUTDOWN_TIMEOUT, while the loop still
runs. Another server: call ``coordinator.ensure_started()`` on start-up and
``await coordinator.shutdown()`` on exit from its lifespan handlers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

from twisted.internet.defer import Deferred

from ..conf import app_settings
from .coordinator import coordinator

logger = logging.getLogger("streamapp.runner")

_startup: set[asyncio.Task[None]] = set()


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
    """Start the sweeper and the control listener with the server, not at its first task."""
    if app_settings.RUN_TASKS:
        task = asyncio.ensure_future(coordinator.ensure_started())
        _startup.add(task)
        task.add_done_callback(_startup.discard)


def on_server_stop() -> Deferred | None:
    """Before the reactor stops: end every task running here (SHUTDOWN_TIMEOUT, then cancel)."""
    if not app_settings.RUN_TASKS:
        return None
    logger.info("server stopping: shutting the coordinator down")
    return Deferred.fromFuture(asyncio.ensure_future(coordinator.shutdown()))
