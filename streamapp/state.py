"""A task's current ``state`` frame, as subscribers and the HTTP view see it."""

from __future__ import annotations

from typing import Any

from . import eventlog, frames
from .models import StreamTask


async def task_state(task: StreamTask) -> dict[str, Any]:
    """The state frame of ``task`` as loaded; its seq is the newest the log or the row knows."""
    seq = max(task.last_seq, await eventlog.current_seq(task.task_key))
    return frames.state(task.task_key, task.status, seq, task.final_value, task.error)
