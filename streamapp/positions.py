"""A task's current ``state`` frame and position, as subscribers and the HTTP view see them."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import protocol
from .eventlog import store
from .exceptions import UnknownTask
from .keys import split_key
from .models import StreamTask


async def task_state(task: StreamTask) -> dict[str, Any]:
    """The state frame of ``task`` as loaded; its seq is the newest the log or the row knows."""
    seq = max(task.last_seq, await store.current_seq(task.task_key))
    return protocol.state(task.task_key, task.status, seq, task.final_value, task.error)


@dataclass(frozen=True)
class Position:
    """How far a task has got: what a subscriber compares with what it has sent."""

    revision: int
    status: str
    seq: int


async def positions(tasks: Sequence[StreamTask]) -> dict[str, Position]:
    """The current position of each task still in the database, keyed by task key.

    One query per model plus one on the log, however many tasks: cheap enough to run often.
    """
    tops = await store.current_seqs([task.task_key for task in tasks])
    keys_by_model: dict[type[StreamTask], dict[Any, str]] = defaultdict(dict)
    for task in tasks:
        keys_by_model[type(task)][task.pk] = task.task_key
    found: dict[str, Position] = {}
    for model, keys in keys_by_model.items():
        rows = model.objects.filter(pk__in=list(keys)).values_list(
            "pk", "revision", "status", "last_seq"
        )
        async for pk, revision, status, last_seq in rows:
            key = keys[pk]
            found[key] = Position(revision, status, max(last_seq, tops.get(key, 0)))
    return found


async def positions_by_key(keys: Sequence[str]) -> dict[str, Position]:
    """``positions`` of the tasks named by ``keys``; keys of no task are left out."""
    tasks = []
    for key in keys:
        try:
            model, pk = split_key(key)
        except UnknownTask:
            continue
        tasks.append(model(pk=pk))  # the key's model and pk are all positions reads
    return await positions(tasks) if tasks else {}
