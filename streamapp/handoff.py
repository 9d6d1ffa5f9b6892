"""Starting a task in a process that runs none (``RUN_TASKS`` off): hand it to the workers."""

from __future__ import annotations

import logging

from . import broadcast, frames, leases
from .models import Status, StreamTask
from .state import task_state

logger = logging.getLogger("streamapp.runner")


async def hand_to_workers(task: StreamTask) -> bool:
    """Leave ``task`` pending for a ``runtasks`` worker and wake the workers.

    A failed or cancelled task is made pending again first. True while the task waits for a
    worker; False when it is running or completed.
    """
    if await leases.requeue(task):
        await task.arefresh_from_db()
        state = await task_state(task)
        await broadcast.publish_state(
            task.task_key, task.revision, task.status, state["seq"], frames.encode(state)
        )
    else:
        await task.arefresh_from_db(fields=["status"])
    if task.status != Status.PENDING:
        return False
    await broadcast.wake_workers()
    logger.info("task handed to the workers key=%s", task.task_key,
                extra={"task_key": task.task_key})
    return True
