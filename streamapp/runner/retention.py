"""Time-based retention: the events of a task go some time after the task ends.

Count-based trimming happens as a task runs (events.py); this deletes whole logs of finished
tasks, and logs whose task row is gone. ``purge_expired_events`` is the library call for a
cleanup command or a cron job; a running coordinator also calls it every PURGE_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import close_old_connections
from django.utils import timezone

from ..conf import app_settings
from ..eventlog import store
from ..keys import stream_task_models
from ..models import FINAL_STATUSES, StreamTask

logger = logging.getLogger("streamapp.retention")

DELETE_CHUNK = 500  # keys per DELETE statement


async def purge_expired_events(now: datetime | None = None) -> int:
    """Delete the events of every task that ended longer ago than its retention; returns rows."""
    now = now or timezone.now()
    deleted = 0
    for model in stream_task_models():
        seconds = model.get_event_retention_seconds()
        if seconds is None:
            continue
        expired = await _expired_keys(model, now - timedelta(seconds=seconds))
        for start in range(0, len(expired), DELETE_CHUNK):
            deleted += await store.delete(expired[start:start + DELETE_CHUNK])
    if deleted:
        logger.info("purged expired events rows=%d", deleted)
    return deleted


async def _expired_keys(model: type[StreamTask], cutoff: datetime) -> list[str]:
    """Keys of ``model`` whose task ended before ``cutoff``, or no longer exists.

    Only a task with an event older than the cutoff can qualify, so the log names candidates
    and the purge never rescans tasks whose events are already gone.
    """
    prefix = f"{model._meta.app_label}.{model._meta.model_name}."
    candidates: dict[object, str] = {}
    for key in await store.keys_logged_before(prefix, cutoff):
        try:
            candidates[model._meta.pk.to_python(key[len(prefix):])] = key
        except ValidationError:
            continue  # not a key this model could have written
    alive = model.objects.filter(pk__in=list(candidates)).exclude(
        status__in=FINAL_STATUSES, completed_at__lt=cutoff
    )
    keep = {pk async for pk in alive.values_list("pk", flat=True)}
    return [key for pk, key in candidates.items() if pk not in keep]


async def purge_forever() -> None:
    """The coordinator's background purge: every PURGE_SECONDS, errors logged and retried."""
    while True:
        await asyncio.sleep(app_settings.PURGE_SECONDS)
        try:
            await purge_expired_events()
        except Exception:
            logger.warning("purging expired events failed", exc_info=True)
            await sync_to_async(close_old_connections)()
