"""Retry database writes through outages: a run's event log and bookkeeping, the sweeper's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections

from . import outages
from .exceptions import LeaseLost

T = TypeVar("T")

TRANSIENT_ERRORS = (OperationalError, InterfaceError)
# What a caller that names no patience waits for: a database restart.
DEFAULT_PATIENCE = 9.0
# The longest pause between two tries: how soon after the database returns the work goes on.
MAX_DELAY = 1.0


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    key: str | None = None,
    patience: float = DEFAULT_PATIENCE,
    first_delay: float = 0.05,
    max_delay: float = MAX_DELAY,
) -> T:
    """Run ``operation``; on a transient DB error drop the broken connection, back off, retry.

    Retries for up to ``patience`` seconds after the first failure, then raises
    ``OperationalError`` saying how long the database was away (chained from the last error).
    The outage is reported to ``streamapp.outages``, which logs its start and its end once for
    the whole process, not once per attempt. ``key`` names the task the write is for.
    """
    delay = first_delay
    failing_since: float | None = None
    while True:
        try:
            result = await operation()
        except TRANSIENT_ERRORS as exc:
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            outages.database.failed(what, exc)
            waited = now - failing_since
            if waited >= patience:
                raise OperationalError(
                    f"the database did not answer for {waited:.0f} s ({what}"
                    f"{f' of {key}' if key else ''}); gave up: {exc}"
                ) from exc
            await sync_to_async(close_old_connections)()
            await asyncio.sleep(min(delay, patience - waited))
            delay = min(delay * 2, max_delay)
            continue
        except LeaseLost:
            outages.database.answered()  # it answered: no
            raise
        outages.database.answered()
        return result
