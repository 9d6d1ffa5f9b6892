"""The event log: the only code that writes or reads TaskEvent rows.

Events are stored as the exact frame text sent live, so a replay is byte-identical to the live
stream and costs no re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from django.db.models import Max, Min

from .models import TaskEvent


class LoggedEvent(NamedTuple):
    seq: int
    name: str
    frame: str
    created_at: datetime


async def append(key: str, events: Sequence[LoggedEvent]) -> None:
    """Store a batch of one task's events in one INSERT."""
    await TaskEvent.objects.abulk_create(
        [
            TaskEvent(task_key=key, seq=e.seq, name=e.name, frame=e.frame, created_at=e.created_at)
            for e in events
        ]
    )


async def since(key: str, after: int, upto: int | None = None) -> list[tuple[int, str]]:
    """``(seq, frame)`` of every logged event with ``after < seq <= upto``, in order."""
    rows = TaskEvent.objects.filter(task_key=key, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    return [row async for row in rows.order_by("seq").values_list("seq", "frame")]


async def latest(key: str) -> tuple[int, str] | None:
    """The newest logged event, if any."""
    rows = TaskEvent.objects.filter(task_key=key).order_by("-seq").values_list("seq", "frame")
    return await rows.afirst()


async def current_seq(key: str) -> int:
    result = await TaskEvent.objects.filter(task_key=key).aaggregate(top=Max("seq"))
    return result["top"] or 0


async def oldest_seq(key: str) -> int:
    result = await TaskEvent.objects.filter(task_key=key).aaggregate(low=Min("seq"))
    return result["low"] or 0


async def trim(key: str, keep: int) -> int:
    """Delete all but the newest ``keep`` events of a task; returns how many were deleted."""
    top = await current_seq(key)
    deleted, _ = await TaskEvent.objects.filter(task_key=key, seq__lte=top - keep).adelete()
    return deleted


async def delete(keys: Sequence[str]) -> int:
    deleted, _ = await TaskEvent.objects.filter(task_key__in=list(keys)).adelete()
    return deleted


async def count(keys: Sequence[str]) -> int:
    """How many events the log holds for these tasks."""
    return await TaskEvent.objects.filter(task_key__in=list(keys)).acount()


def recent(key: str, limit: int) -> list[LoggedEvent]:
    """The newest ``limit`` events of a task, newest first (sync: the admin pages read it)."""
    rows = TaskEvent.objects.filter(task_key=key).order_by("-seq")[:limit]
    return [LoggedEvent(row.seq, row.name, row.frame, row.created_at) for row in rows]
