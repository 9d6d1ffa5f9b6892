"""Task listings for operators: the newest tasks across models, as a plain-text table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.utils import timezone

from ..models import Status, StreamTask

COLUMNS = ("KEY", "STATUS", "CREATED", "DURATION", "ATTEMPTS", "ERROR")


def recent_tasks(
    models: Iterable[type[StreamTask]], statuses: Sequence[str] = (), limit: int = 50
) -> list[StreamTask]:
    """The newest ``limit`` tasks of ``models``, optionally only those in ``statuses``."""
    tasks: list[StreamTask] = []
    for model in models:
        rows = model.objects.all()
        if statuses:
            rows = rows.filter(status__in=statuses)
        tasks.extend(rows.order_by("-created_at")[:limit])
    tasks.sort(key=lambda task: task.created_at, reverse=True)
    return tasks[:limit]


def duration_text(task: StreamTask) -> str:
    """Run time so far (running) or of the last run (ended); "-" when it never started."""
    if task.started_at is None:
        return "-"
    if task.status == Status.RUNNING:
        end = timezone.now()
    elif task.completed_at is not None:
        end = task.completed_at
    else:
        return "-"
    return f"{(end - task.started_at).total_seconds():.1f}s"


def task_row(task: StreamTask) -> tuple[str, ...]:
    created = timezone.localtime(task.created_at).strftime("%Y-%m-%d %H:%M:%S")
    error = (task.error or {}).get("type", "")
    return (task.task_key, task.status, created, duration_text(task), str(task.attempts), error)


def table(rows: Sequence[Sequence[str]], headers: Sequence[str] = COLUMNS) -> list[str]:
    """Left-aligned columns two spaces apart."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (headers, *rows)
    ]
