"""Deleting finished tasks and their event logs once they are old enough."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from ..eventlog import store
from ..keys import canonical_key, stream_task_tables
from ..models import FINAL_STATUSES

AGE = re.compile(r"(\d+)\s*([smhdw])")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
BATCH = 500


def parse_age(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"``, ``"2w"`` (or several: ``"1d12h"``)."""
    compact = text.strip().lower()
    parts = AGE.findall(compact)
    if not parts or "".join(f"{n}{unit}" for n, unit in parts) != compact.replace(" ", ""):
        raise ValueError(f"expected an age like 7d, 12h, 30m, 45s or 2w, got {text!r}")
    return timedelta(seconds=sum(int(n) * UNIT_SECONDS[unit] for n, unit in parts))


@dataclass
class CleanupReport:
    cutoff: datetime
    dry_run: bool
    tasks: dict[str, int] = field(default_factory=dict)  # "app_label.model" -> tasks
    events: int = 0

    @property
    def task_count(self) -> int:
        return sum(self.tasks.values())


async def cleanup_finished(older_than: timedelta, *, dry_run: bool = False) -> CleanupReport:
    """Delete tasks that reached a final status more than ``older_than`` ago, with their events.

    Events go first: a run cut short leaves tasks without events, which the next run deletes,
    never events without their task.
    """
    report = CleanupReport(cutoff=timezone.now() - older_than, dry_run=dry_run)
    for model, readers in stream_task_tables().items():
        finished = model.objects.filter(status__in=FINAL_STATUSES, completed_at__lt=report.cutoff)
        pks = [pk async for pk in finished.values_list("pk", flat=True)]
        for start in range(0, len(pks), BATCH):
            chunk = pks[start:start + BATCH]
            # A task run through a proxy logged under the proxy's key.
            keys = [canonical_key(reader, pk) for reader in readers for pk in chunk]
            if dry_run:
                report.events += await store.count(keys)
            else:
                report.events += await store.delete(keys)
                await model.objects.filter(pk__in=chunk).adelete()
        if pks:
            report.tasks[model._meta.label_lower] = len(pks)
    return report
