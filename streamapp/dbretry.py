"""Retry the runner's own bookkeeping writes through short database outages."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import InterfaceError, OperationalError, close_old_connections

logger = logging.getLogger("streamapp.runner")

T = TypeVar("T")

TRANSIENT_ERRORS = (OperationalError, InterfaceError)


async def with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    what: str,
    key: str | None = None,
    attempts: int = 10,
    first_delay: float = 0.05,
    max_delay: float = 2.0,
) -> T:
    """Run ``operation``; on a transient DB error drop the broken connection, back off, retry.

    ``key`` names the task the write is for, in the log records (``extra``). The last error
    propagates: after the default ten attempts (about 9 s of waiting, a database restart or
    failover) the outage is not brief any more and the caller must decide.
    """
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await operation()
        except TRANSIENT_ERRORS as exc:
            if attempt == attempts:
                raise
            logger.warning(
                "database error, retrying what=%s key=%s attempt=%d error=%s",
                what, key, attempt, exc, extra={"task_key": key},
            )
            await sync_to_async(close_old_connections)()
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
