"""The sweeper: ends or retries running tasks whose lease expired (their worker died)."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from .. import broadcast, metrics
from ..conf import app_settings
from ..eventlog import store
from ..exceptions import WorkerLost
from ..keys import stream_task_models
from . import leases

logger = logging.getLogger("streamapp.runner")

WORKER_LOST_ERROR = {"type": WorkerLost.__name__, "message": "the worker running the task stopped"}


async def sweep() -> int:
    """End or retry every running task whose lease expired; returns how many."""
    count = 0
    for model in stream_task_models():
        async for task in model.objects.expired():
            key = task.task_key
            retry = task.attempts < task.max_attempts
            last_seq = max(task.last_seq, await store.current_seq(key))
            if not await leases.expire(task, retry=retry, last_seq=last_seq,
                                       error=WORKER_LOST_ERROR):
                continue
            count += 1
            metrics.lease_expired(key, retry)
            await task.arefresh_from_db()
            logger.warning("lease expired key=%s retry=%s", key, retry, extra={"task_key": key})
            await broadcast.publish_task_state(task, last_seq)
            if retry:
                await broadcast.wake_workers()
    return count


async def sweep_forever() -> None:
    """Every SWEEP_SECONDS, errors logged and retried."""
    while True:
        try:
            await sweep()
        except Exception:
            logger.warning("sweep failed", exc_info=True)
            await sync_to_async(close_old_connections)()
        await asyncio.sleep(app_settings.SWEEP_SECONDS)
