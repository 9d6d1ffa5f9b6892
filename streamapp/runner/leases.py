"""Task leases: the only code that writes the lifecycle and lease columns of a task row.

Every write is one conditional UPDATE; the database decides ownership. An UPDATE that matches no
row means the caller lost: it stops and does not argue.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone

from ..models import STARTABLE_STATUSES, Status, StreamTask

RUNNER_FIELDS = (
    "status", "started_at", "completed_at", "final_value", "error", "attempts",
    "last_seq", "revision", "lease_owner", "lease_expires_at",
)


def _rows(task: StreamTask):
    return type(task)._default_manager.filter(pk=task.pk)


async def claim(
    task: StreamTask,
    owner: str,
    lease_seconds: float,
    statuses: Collection[str] = STARTABLE_STATUSES,
) -> bool:
    """Move ``task`` from one of ``statuses`` to ``running`` owned by ``owner``.

    Refreshes ``task`` when won. A worker passes ``(PENDING,)`` only: a candidate it picked that
    meanwhile ran and failed must not run again.
    """
    now = timezone.now()
    won = await _rows(task).filter(status__in=list(statuses)).aupdate(
        status=Status.RUNNING,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        started_at=now,
        completed_at=None,
        final_value=None,
        error=None,
        attempts=F("attempts") + 1,
        revision=F("revision") + 1,
    )
    if won:
        await task.arefresh_from_db()
    return bool(won)


async def renew(task: StreamTask, owner: str, lease_seconds: float) -> bool:
    """Extend the lease; False when ``owner`` no longer holds it."""
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    return bool(
        await _rows(task)
        .filter(status=Status.RUNNING, lease_owner=owner)
        .aupdate(lease_expires_at=expires)
    )


async def finish(
    task: StreamTask,
    owner: str,
    status: str,
    *,
    last_seq: int,
    final_value: Any = None,
    error: dict[str, str] | None = None,
) -> bool:
    """Record the outcome of a run this owner holds; False when the lease was lost."""
    fields: dict[str, Any] = dict(
        status=status,
        last_seq=last_seq,
        final_value=final_value,
        error=error,
        lease_owner="",
        lease_expires_at=None,
        revision=F("revision") + 1,
        completed_at=None if status == Status.PENDING else timezone.now(),
    )
    won = await _rows(task).filter(status=Status.RUNNING, lease_owner=owner).aupdate(**fields)
    return bool(won)


async def cancel_pending(task: StreamTask) -> bool:
    """Cancel a task nobody runs yet."""
    return bool(
        await _rows(task)
        .filter(status=Status.PENDING)
        .aupdate(status=Status.CANCELLED, completed_at=timezone.now(), revision=F("revision") + 1)
    )


async def requeue(task: StreamTask) -> bool:
    """Make a failed or cancelled task ``pending`` again, for a worker to claim."""
    return bool(
        await _rows(task)
        .filter(status__in=[Status.FAILED, Status.CANCELLED])
        .aupdate(
            status=Status.PENDING,
            completed_at=None,
            final_value=None,
            error=None,
            revision=F("revision") + 1,
        )
    )


async def expire(task: StreamTask, *, retry: bool, last_seq: int, error: dict[str, str]) -> bool:
    """End a running task whose lease ran out: ``pending`` again when ``retry``, else failed."""
    now = timezone.now()
    fields: dict[str, Any] = dict(
        status=Status.PENDING if retry else Status.FAILED,
        completed_at=None if retry else now,
        error=error,
        last_seq=last_seq,
        lease_owner="",
        lease_expires_at=None,
        revision=F("revision") + 1,
    )
    won = await _rows(task).filter(
        status=Status.RUNNING, lease_expires_at__lt=now
    ).aupdate(**fields)
    return bool(won)
