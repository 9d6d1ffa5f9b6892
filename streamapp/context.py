"""RunContext: what a running ``process()`` reaches through ``send_event`` and ``wait_signal``.

The runner makes one per run and hands it to ``process()`` explicitly, through a context
variable set only in the asyncio task that runs ``process()`` (and in the tasks that one
spawns): nothing is stored on the user's model instance, and code outside the run never sees it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import defaultdict, deque
from collections.abc import Coroutine
from typing import Any, Protocol

from .eventlog.stream import emit_once


class EventSink(Protocol):
    async def emit(self, name: str, data: Any) -> int: ...


class RunContext:
    """One run's event stream and signal mailbox."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.stream: EventSink | None = None  # set once the run has read the log's position
        self._signals: defaultdict[str, deque[Any]] = defaultdict(deque)
        self._waiters: defaultdict[str, list[asyncio.Future[Any]]] = defaultdict(list)

    def start(self, coroutine: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coroutine`` (the task's ``process()``) as a task that sees this context."""
        context = contextvars.copy_context()
        context.run(_current.set, self)
        return asyncio.create_task(coroutine, name=name, context=context)

    async def emit(self, name: str, data: Any) -> int:
        if self.stream is None:
            raise RuntimeError(f"{self.key}: send_event() before the run opened its stream")
        return await self.stream.emit(name, data)

    def deliver_signal(self, name: str, data: Any) -> None:
        """A signal arrived: wake its oldest waiter, or keep it for the next ``wait_signal``."""
        waiters = self._waiters[name]
        while waiters:
            future = waiters.pop(0)
            if not future.done():
                future.set_result(data)
                return
        self._signals[name].append(data)

    async def wait_signal(self, name: str, timeout: float | None) -> Any:
        if self._signals[name]:
            return self._signals[name].popleft()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters[name].append(future)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            if future in self._waiters[name]:
                self._waiters[name].remove(future)


_current: contextvars.ContextVar[RunContext | None] = contextvars.ContextVar(
    "streamapp_run", default=None
)


def current_run(key: str) -> RunContext | None:
    """The context of the run of task ``key`` that the calling code is part of, if any."""
    context = _current.get()
    return context if context is not None and context.key == key else None


async def send_event(key: str, name: str, data: Any) -> int:
    """Into the run's stream from inside ``process()``; outside a run, one event on its own."""
    context = current_run(key)
    if context is not None:
        return await context.emit(name, data)
    return await emit_once(key, name, data)


async def wait_signal(key: str, name: str, timeout: float | None) -> Any:
    context = current_run(key)
    if context is None:
        raise RuntimeError("wait_signal() works only inside a running task's process()")
    return await context.wait_signal(name, timeout)
