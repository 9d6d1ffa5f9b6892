"""The sweeper: ends or retries running tasks whose lease expired (their worker died).

After a database outage the background sweeper waits one HEARTBEAT_SECONDS before it expires
anything: leases ran out while nobody could renew them, and their owners, alive, renew as soon
as the database answers. An owner that does not is gone, and a later sweep ends its task.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from .. import broadcast, metrics, outages
from ..conf import app_settings
from ..dbretry import is_transient
from ..exceptions import WorkerLost
from ..keys import stream_task_tables
from . import leases

logger = logging.getLogger("streamapp.runner")

WORKER_LOST_ERROR = {"type": WorkerLost.__name__, "message": "the worker running the task stopped"}


def owners_had_time_to_renew() -> bool:
    """False during a database outage and for one heartbeat after it."""
    database = outages.database
    return not database.down and database.seconds_since_return() >= app_settings.HEARTBEAT_SECONDS


async def sweep(*, hold_off: bool = False) -> int:
    """End or retry every running task whose lease expired; returns how many.

    ``hold_off``: only look for them (the query tells whether the database answers).
    """
    count = 0
    for model in stream_task_tables():  # a row once, not once per proxy
        async for task in model.objects.expired():
            if hold_off:
                break
            key = task.task_key
            expired = await leases.expire(task, error=WORKER_LOST_ERROR)
            if expired is None:
                continue
            count += 1
            metrics.lease_expired(key, expired.retry)
            await task.arefresh_from_db()
            logger.warning("lease expired key=%s retry=%s", key, expired.retry,
                           extra={"task_key": key})
            await broadcast.publish_task_state(task, expired.last_seq)
            if expired.retry:
                await broadcast.wake_workers()
    return count


async def sweep_forever() -> None:
    """Every SWEEP_SECONDS; errors logged (an outage once) and retried."""
    while True:
        try:
            await sweep(hold_off=not owners_had_time_to_renew())
        except Exception as exc:
            if is_transient(exc):
                outages.database.failed("sweep", exc)
            else:
                logger.warning("sweep failed", exc_info=True)
            await sync_to_async(close_old_connections)()
        else:
            outages.database.answered()
        await asyncio.sleep(app_settings.SWEEP_SECONDS)
