"""Cancelling a task from a process that does not run it, and waiting until it has ended.

Waiting listens to the task's group on the channel layer (joined before reading the row, as a
subscriber does), so the answer comes as soon as the runner records the outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

from .. import broadcast
from ..coordinator import coordinator
from ..exceptions import NothingToCancel, Unreachable
from ..keys import aget_task
from ..models import FINAL_STATUSES, Status


async def cancel_and_wait(key: str, timeout: float, reason: str | None = None) -> str:
    """Cancel the task ``key`` wherever it runs; return its final status.

    Raises UnknownTask, NothingToCancel, Unreachable, or TimeoutError when it has not ended
    after ``timeout`` seconds.
    """
    task = await aget_task(key)
    layer = get_channel_layer()
    if task.status == Status.RUNNING and (
        layer is None or isinstance(layer, InMemoryChannelLayer)
    ) and not coordinator.is_task_running(task):
        raise Unreachable(
            f"{key} runs in another process, which the in-memory channel layer cannot reach: "
            "configure channels_redis (REDIS_URL) for every process"
        )
    channel = await layer.new_channel() if layer is not None else None
    group = broadcast.task_group(task.task_key)
    if channel is not None:
        await layer.group_add(group, channel)
    try:
        if not await coordinator.cancel_task(task, reason=reason):
            await task.arefresh_from_db(fields=["status"])
            raise NothingToCancel(f"{key} had already ended: {task.status}")
        await task.arefresh_from_db(fields=["status"])
        if task.status not in FINAL_STATUSES and channel is not None:
            await _final_state_news(layer, channel, timeout)
            await task.arefresh_from_db(fields=["status"])
        if task.status not in FINAL_STATUSES:
            raise TimeoutError(f"{key} is still {task.status} after {timeout} s")
        return task.status
    finally:
        if channel is not None:
            await layer.group_discard(group, channel)


async def _final_state_news(layer: Any, channel: str, timeout: float) -> None:
    """Return when a final ``state`` message arrives, or quietly after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await layer.receive(channel)
                if message.get("type") == "stream.state" and message["status"] in FINAL_STATUSES:
                    return
    except TimeoutError:
        return
