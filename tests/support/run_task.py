"""``python -m tests.support.run_task KEY``: run one existing task in this process until it ends.

A stand-in worker for subprocess tests: the task runs in a process of its own, so its events
reach daphne's subscribers only through the channel layer, as in a split deployment.
"""

from __future__ import annotations

import asyncio
import os
import sys

import django


async def run(key: str) -> str:
    from streamapp.coordinator import coordinator
    from streamapp.keys import aget_task

    task = await aget_task(key)
    if not await coordinator.start_task(task):
        raise SystemExit(f"{key} could not be started")
    await coordinator.wait_task(task)
    await coordinator.shutdown(timeout=0)
    await task.arefresh_from_db(fields=["status"])
    return task.status


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    django.setup()
    print(asyncio.run(run(sys.argv[1])))
