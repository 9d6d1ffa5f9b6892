"""Group commits: the writes of every run in this process that wait at the same moment go to
the database together, in one thread hop; the event log appends of many tasks in one statement.

Django's async ORM runs each query through one thread, one hop at a time; a short task's claim,
event batches and outcome were as many hops each, and the hops, not the queries, set how many
tasks a second a process could run. Here a run hands its write to the process's committer and
waits for its answer; the committer takes whatever has queued up, runs it all in one hop and
answers each. While one hop is under way the next writes queue up, so the busier the process,
the bigger the groups; an idle one writes at once.

Each write keeps its own rules. A write that can share a statement with others of its kind
(``together``: the event log's appends, store.py) is handed to its kind's function with the
others, which answers each; any other write (``call``: a claim, an outcome) runs on its own,
one after another in the same hop. No transaction spans two writes. Nothing is announced here:
a run announces what it wrote once its write has answered.
"""

from __future__ import annotations

import asyncio
import contextvars
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

# Runs several writes of one kind together; returns, for each, its result or the exception
# that is its answer.
Together = Callable[[Sequence[Any]], Sequence[Any]]


def _future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


@dataclass
class Write:
    """One caller's write and, once the hop is back, its answer."""

    run: Callable[[], Any] | None = None  # a write on its own
    kind: Together | None = None  # or one of a kind, with its item
    item: Any = None
    done: asyncio.Future[Any] = field(default_factory=_future)
    ran: bool = False  # the database thread has been through it
    result: Any = None
    error: BaseException | None = None


class Committer:
    """This event loop's group commits."""

    def __init__(self) -> None:
        self._waiting: list[Write] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, run: Callable[[], Any]) -> Any:
        """Run the synchronous database write ``run`` in the next group; its result."""
        return await self._submit(Write(run=run))

    async def together(self, kind: Together, item: Any) -> Any:
        """Have ``kind`` write ``item`` with the other items of its kind in the next group."""
        return await self._submit(Write(kind=kind, item=item))

    async def _submit(self, write: Write) -> Any:
        self._waiting.append(write)
        if self._task is None:
            # A context of its own: the committer outlives whichever caller started it.
            self._task = asyncio.create_task(
                self._commit(), name="streamapp group commit", context=contextvars.Context()
            )
        # A caller cancelled meanwhile leaves its write to go in with the group all the same.
        return await write.done

    async def _commit(self) -> None:
        try:
            while self._waiting:
                group, self._waiting = self._waiting, []
                try:
                    await sync_to_async(execute)(group)
                except BaseException as exc:  # the hop itself failed: the writes it did
                    for write in group:  # not reach hear it
                        if not write.ran:
                            write.error = exc
                    raise
                finally:
                    for write in group:
                        answer(write)
        finally:
            self._task = None
            for write in self._waiting:  # cancelled with writes still waiting (loop closing)
                write.error = asyncio.CancelledError()
                answer(write)
            self._waiting = []


def answer(write: Write) -> None:
    if write.done.done():
        return
    if write.error is not None:
        write.done.set_exception(write.error)
    else:
        write.done.set_result(write.result)


def execute(group: list[Write]) -> None:
    """In the database thread: every write of ``group``, each answered in place."""
    kinds: dict[Together, list[Write]] = {}
    for write in group:
        if write.kind is not None:
            kinds.setdefault(write.kind, []).append(write)
    for kind, writes in kinds.items():
        try:
            outcomes = kind([write.item for write in writes])
        except Exception as exc:  # noqa: BLE001 - the callers get it
            outcomes = [exc] * len(writes)
        for write, outcome in zip(writes, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                write.error = outcome
            else:
                write.result = outcome
            write.ran = True
    for write in group:
        if write.run is not None:
            try:
                write.result = write.run()
            except Exception as exc:  # noqa: BLE001 - the caller gets it, the others go on
                write.error = exc
            write.ran = True


_committers: weakref.WeakKeyDictionary[Any, Committer] = weakref.WeakKeyDictionary()


def committer() -> Committer:
    """The running event loop's committer."""
    loop = asyncio.get_running_loop()
    found = _committers.get(loop)
    if found is None:
        found = _committers[loop] = Committer()
    return found
