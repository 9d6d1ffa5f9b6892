"""Following one task from a terminal: its logged events in order, then its final state.

It reads the event log and the task row every ``interval`` seconds, so it works from any process
in every deployment (the in-memory channel layer never leaves the process that runs the task).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from .. import protocol
from ..eventlog import store
from ..keys import aget_task

BAR_WIDTH = 30


async def follow(key: str, *, since: int = 0, interval: float = 0.2) -> AsyncIterator[dict]:
    """Yield protocol frames: ``state`` on each status change, every event after ``since``.

    The final ``state`` comes after the task's last event, then the iterator ends. The status is
    read before the events: the runner logs every event before it records the final status.
    """
    task = await aget_task(key)
    key, last, shown_status = task.task_key, since, None
    while True:
        await task.arefresh_from_db()
        rows = await store.since(key, last)
        state = protocol.state(key, task.status, max(task.last_seq, rows[-1][0] if rows else last),
                             task.final_value, task.error)
        if task.status != shown_status and not task.is_final:
            yield state
        if rows and rows[0][0] > last + 1:
            yield protocol.error("history_truncated", f"events {last + 1}-{rows[0][0] - 1} are no "
                               "longer kept", task=key, oldest_seq=rows[0][0])
        for seq, frame in rows:
            yield json.loads(frame)
            last = seq
        if task.is_final:
            yield state
            return
        shown_status = task.status
        await asyncio.sleep(interval)


def progress_of(data: Any) -> tuple[int, int] | None:
    """``(step, total)`` of a progress event's data (``total`` or ``total_steps``)."""
    if not isinstance(data, dict):
        return None
    step, total = data.get("step"), data.get("total", data.get("total_steps"))
    if isinstance(step, int) and isinstance(total, int) and total > 0:
        return step, total
    return None


def progress_bar(step: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[############------------------]  12/30  40%``"""
    done = max(0, min(width, round(width * step / total)))
    bar = f"[{'#' * done}{'-' * (width - done)}]"
    return f"{bar} {step:>{len(str(total))}}/{total} {step * 100 // total:>3}%"


def describe(frame: dict[str, Any]) -> str:
    """One line for a frame."""
    if frame["type"] == "event":
        data = json.dumps(frame["data"], ensure_ascii=False)
        return f"#{frame['seq']} {frame['event']} {data}"
    if frame["type"] == "error":
        return f"! {frame['code']}: {frame['message']}"
    line = f"== {frame['status']} (seq {frame['seq']})"
    if frame.get("error"):
        line += f" {frame['error'].get('type')}: {frame['error'].get('message')}"
    elif frame["status"] == "completed":
        line += f" final_value={json.dumps(frame['final_value'], ensure_ascii=False)}"
    return line
