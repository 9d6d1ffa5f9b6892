"""A task's current ``state`` frame and position, as subscribers and the HTTP view see them.

Subscribing and the sockets' upkeep read a task's row and its log's top in one query: the row
with the newest logged seq (and, for a subscriber that gives no ``since``, the newest event's
frame) as subqueries of the same SELECT.
"""

from __future__ import annotations

import copy
import functools
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections
from django.db.models import CharField, IntegerField, Max, OuterRef, Subquery, Value
from django.db.models.functions import Cast, Concat

from . import protocol
from .eventlog import store
from .eventlog.commits import committer
from .eventlog.models import TaskEvent
from .exceptions import UnknownTask
from .keys import split_key
from .models import StreamTask

TOP_SEQ = "streamapp_log_top"  # annotation names: nothing a task model would call a field
TOP_FRAME = "streamapp_log_frame"


async def task_state(task: StreamTask) -> dict[str, Any]:
    """The state frame of ``task`` as loaded; its seq is the newest the log or the row knows."""
    seq = max(task.last_seq, await store.current_seq(task.task_key))
    return protocol.state(task.task_key, task.status, seq, task.final_value, task.error)


@dataclass(frozen=True, slots=True)
class Position:
    """How far a task has got: what a subscriber compares with what it has sent.

    ``final_value`` and ``error`` complete the task's ``state`` frame, so a subscriber that
    missed a state change repairs it without reading the row again.
    """

    revision: int
    status: str
    seq: int
    final_value: Any = None
    error: Any = None

    def state(self, key: str) -> dict[str, Any]:
        """The ``stream.state`` message of this position."""
        frame = protocol.state(key, self.status, self.seq, self.final_value, self.error)
        return {"revision": self.revision, "status": self.status, "seq": self.seq,
                "frame": protocol.encode(frame)}


def _log(key: Any) -> Any:
    return TaskEvent.objects.filter(task_key=key).order_by("-seq")


async def read_for_subscriber(
    model: type[StreamTask], pk: Any, key: str, latest: bool
) -> StreamTask | None:
    """The task row, with its log's top seq (``TOP_SEQ``) and, when ``latest``, the newest
    event's frame (``TOP_FRAME``). None when the row does not exist.

    Every subscribe runs it, a reconnect storm thousands at once, mostly of a few tasks. The
    reads that wait at the same moment share one thread hop (the process's group commit,
    eventlog/commits.py), and those of one task one query: a group's query starts after every
    one of its callers asked, so each gets a row read after it joined the task's group, which
    is all a subscriber needs (see Subscription.open). The SQL is written once per model, not
    compiled by the ORM each time (that took a third of a connect's CPU).
    """
    return await committer().together(_read_for_subscribers, (model, pk, key, latest))


def _read_for_subscribers(reads: Sequence[tuple[type[StreamTask], Any, str, bool]]) -> list[Any]:
    """In the database thread: one query per distinct read; each caller its own instance."""
    found: dict[tuple[type[StreamTask], Any, bool], StreamTask | None] = {}
    answers: list[Any] = []
    for model, pk, key, latest in reads:
        try:
            if (model, pk, latest) in found:
                task = found[model, pk, latest]
                answers.append(copy.copy(task) if task is not None else None)
                continue
            answers.append(found.setdefault((model, pk, latest),
                                            _read_for_subscriber(model, pk, key, latest)))
        except Exception as exc:  # noqa: BLE001 - this caller's answer; the others go on
            answers.append(exc)
    return answers


def _read_for_subscriber(
    model: type[StreamTask], pk: Any, key: str, latest: bool
) -> StreamTask | None:
    manager = model._default_manager
    if model._meta.parents:  # columns in more than one table: let the ORM join them
        rows = manager.annotate(**{TOP_SEQ: Subquery(_log(key).values("seq")[:1]),
                                   TOP_FRAME: Subquery(_log(key).values("frame")[:1])})
        return rows.filter(pk=pk).first()
    if not _storable(model, manager.db, pk):
        return None  # no row can have it (as the ORM's lookups say for out-of-range integers)
    sql = _subscriber_sql(model, manager.db, latest)
    params = [key, key, pk] if latest else [key, pk]
    found = list(manager.raw(sql, params))
    if not found:
        return None
    task = found[0]
    if not latest:
        setattr(task, TOP_FRAME, None)
    return task


def _storable(model: type[StreamTask], alias: str, pk: Any) -> bool:
    field = model._meta.pk
    if not isinstance(field, IntegerField):
        return True
    low, high = connections[alias].ops.integer_field_range(field.get_internal_type())
    return (low is None or pk >= low) and (high is None or pk <= high)


@functools.cache
def _subscriber_sql(model: type[StreamTask], alias: str, latest: bool) -> str:
    quote = connections[alias].ops.quote_name
    log = quote(TaskEvent._meta.db_table)
    key, seq = quote("task_key"), quote("seq")

    def newest(column: str, name: str) -> str:
        return (f"(SELECT {quote(column)} FROM {log} WHERE {key} = %s "
                f"ORDER BY {seq} DESC LIMIT 1) AS {quote(name)}")

    columns = [newest("seq", TOP_SEQ)] + ([newest("frame", TOP_FRAME)] if latest else [])
    table = quote(model._meta.db_table)
    return (f"SELECT {table}.*, {', '.join(columns)} FROM {table} "
            f"WHERE {table}.{quote(model._meta.pk.column)} = %s")


def subscriber_state(task: StreamTask) -> dict[str, Any]:
    """The ``stream.state`` message of a row read by ``read_for_subscriber``."""
    seq = max(task.last_seq, getattr(task, TOP_SEQ) or 0)
    return Position(task.revision, task.status, seq, task.final_value, task.error).state(
        task.task_key
    )


async def positions_by_key(keys: Iterable[str]) -> dict[str, Position]:
    """The position of each task named by ``keys`` that is still in the database.

    One thread hop and one query per model, however many tasks: the sockets' upkeep reads the
    tasks of the whole process this way every CONVERGE_SECONDS. The database connection this
    process's async ORM uses is checked first (closed if broken or past CONN_MAX_AGE), as
    Channels does before each message a consumer handles.
    """
    by_model: dict[type[StreamTask], dict[Any, str]] = defaultdict(dict)
    for key in keys:
        try:
            model, pk = split_key(key)
        except UnknownTask:
            continue
        by_model[model][pk] = key
    return await sync_to_async(_read_positions)(by_model) if by_model else {}


async def positions(tasks: Sequence[StreamTask]) -> dict[str, Position]:
    """``positions_by_key`` of loaded tasks."""
    by_model: dict[type[StreamTask], dict[Any, str]] = defaultdict(dict)
    for task in tasks:
        by_model[type(task)][task.pk] = task.task_key
    return await sync_to_async(_read_positions)(by_model) if by_model else {}


def _read_positions(by_model: dict[type[StreamTask], dict[Any, str]]) -> dict[str, Position]:
    close_old_connections()
    found: dict[str, Position] = {}
    for model, keys in by_model.items():
        columns = ("pk", "revision", "status", "last_seq", "final_value", "error")
        rows = model._default_manager.filter(pk__in=list(keys))
        key_of_row = _key_expression(model)
        if key_of_row is not None:
            rows = rows.annotate(streamapp_key=key_of_row).annotate(
                **{TOP_SEQ: Subquery(_log(OuterRef("streamapp_key")).values("seq")[:1])}
            )
            tops = None
        else:  # a key the database cannot spell from the pk: the log's tops apart
            tops = dict(
                TaskEvent.objects.filter(task_key__in=list(keys.values())).order_by()
                .values_list("task_key").annotate(top=Max("seq"))
            )
        for row in rows.values_list(*columns, *((TOP_SEQ,) if tops is None else ())):
            pk, revision, status, last_seq, final_value, error = row[:6]
            key = keys[pk]
            top = row[6] if tops is None else tops.get(key)
            found[key] = Position(revision, status, max(last_seq, top or 0), final_value, error)
    return found


def _key_expression(model: type[StreamTask]) -> Any:
    """SQL for a row's task key (``app_label.model.pk``) where the pk is an integer, else None."""
    if not isinstance(model._meta.pk, IntegerField):
        return None
    prefix = f"{model._meta.app_label}.{model._meta.model_name}."
    return Concat(Value(prefix), Cast("pk", CharField()), output_field=CharField())
