"""Run a coroutine at once, up to its first real wait: a task only if it has to wait.

``asyncio.create_task`` schedules even a coroutine that would end without waiting, and on a hot
path (one frame to each of a thousand sockets) making and running that task costs more than the
work. Python 3.12's eager tasks do what ``start`` does; this works the same on 3.11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start(coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
    """Run ``coroutine`` until it waits; None if it ended, else the task that goes on with it.

    An exception it raises before waiting propagates here, to the caller.
    """
    try:
        waiting = coroutine.send(None)
    except StopIteration:
        return None
    task = asyncio.create_task(_go_on(coroutine, waiting), name=name)
    # A task cancelled before its first step never runs: the coroutine is closed (its finally
    # clauses run) rather than left suspended.
    task.add_done_callback(lambda _: coroutine.close())
    return task


async def _go_on(coroutine: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive ``coroutine`` from where it stopped, ``waiting`` on what it yielded (a future, or
    None: a bare yield to the loop), as the task that would have run it from the start."""
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                # Taken over as a task takes what its coroutine yields (asyncio's protocol):
                # still marked, the future refuses to be awaited a second time.
                waiting._asyncio_future_blocking = False
                await waiting
        except BaseException as exc:  # noqa: BLE001 - it is the coroutine's to see
            if not _is_outcome_of(waiting, exc):
                # This task was cancelled, not the future: the coroutine gets the cancellation.
                try:
                    waiting = coroutine.throw(exc)
                except StopIteration:
                    return
                continue
        # The future is done: resumed, the coroutine reads its result or its exception itself.
        try:
            waiting = coroutine.send(None)
        except StopIteration:
            return


def _is_outcome_of(future: Any, exc: BaseException) -> bool:
    """Did awaiting ``future`` raise ``exc`` because that is how the future ended?"""
    if future is None or not future.done():
        return False
    return future.cancelled() or future.exception() is exc
