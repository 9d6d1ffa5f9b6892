"""The event log: the only code that writes or reads TaskEvent rows.

Events are stored as the exact frame text sent live, so a replay is byte-identical to the live
stream and costs no re-encoding.

A run's appends are fenced: ``append`` takes the run's lease as a queryset that matches the task
row only while that lease holds (runner/leases.py builds it) and inserts only if it matches, in
the same statement, which locks the row while it runs; otherwise it raises ``LeaseLost`` and
inserts nothing. The sweeper locks the row before it reads the log's top and ends the task, so
an append is either wholly before an expiry (and counted in the task's ``last_seq``) or refused.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any, NamedTuple

from django.db import IntegrityError, connections, router, transaction
from django.db.models import Max, Min
from django.db.models.functions import Length

from ..exceptions import LeaseLost
from .commits import committer
from .models import TaskEvent

_COLUMNS = ("task_key", "seq", "name", "frame", "created_at")


class LoggedEvent(NamedTuple):
    seq: int
    name: str
    frame: str
    created_at: datetime


# A queryset of the task row that matches only while a run's lease holds, or a run's lease
# itself, which writes that queryset's SQL (``fence_sql``, runner/leases.py).
Fence = Any

_MAX_PARAMS = 65535  # where the backend names no limit: PostgreSQL's protocol


async def append(key: str, events: Sequence[LoggedEvent], fence: Fence | None = None) -> None:
    """Store a batch of one task's events: all of them or none.

    ``fence``: the run's lease. The batch is written only if the fence still matches the task
    row, checked in the INSERT itself (locking the row, where the database has row locks, for
    the statement's length); otherwise nothing is written and ``LeaseLost`` is raised.

    This is on the hot path of every event, so it skips the model layer: one multi-row
    INSERT … SELECT per batch, not ``bulk_create`` (bench/eventlog_cost.py). It goes through the
    process's group commit (commits.py): the batches of all the tasks that append at the same
    moment share one INSERT, each task's rows behind its own fence.
    """
    await committer().together(insert_many, (key, events, fence))


def lease_lost(key: str, count: int) -> LeaseLost:
    return LeaseLost(f"{key}: the run's lease is gone; {count} events not logged")


Batch = tuple[str, Sequence[LoggedEvent], Fence | None]


def insert_many(batches: Sequence[Batch]) -> list[BaseException | None]:
    """Several tasks' batches (in the database thread): for each, None once written or the
    exception that is its answer (``LeaseLost`` when its fence refused it).

    As few statements as the parameter limit allows: each batch all or none behind its own
    fence, as ``append`` writes it alone, and each statement commits on its own (no
    transaction across statements). A batch too big to share a statement, a lone batch, two
    of one task, or a database that cannot say which rows went in: each on its own. A shared
    statement that fails is tried again batch by batch, so each failure is its own batch's.
    """
    connection = connections[router.db_for_write(TaskEvent)]
    keys = [key for key, _, _ in batches]
    if len(batches) == 1 or len(set(keys)) < len(keys) or (
        not connection.features.can_return_rows_from_bulk_insert
    ):
        return [_insert_alone(*batch) for batch in batches]
    limit = connection.features.max_query_params or _MAX_PARAMS
    outcomes: dict[int, BaseException | None] = {}
    shared: list[tuple[int, str, str, list[Any], int]] = []
    used = 0
    for index, (key, events, fence) in enumerate(batches):
        sql, params = _fenced_select(connection, key, events, fence)
        if len(params) > limit:
            outcomes[index] = _insert_alone(key, events, fence)
            continue
        if shared and used + len(params) > limit:
            outcomes.update(_insert_shared(connection, shared, batches))
            shared, used = [], 0
        shared.append((index, key, sql, params, len(events)))
        used += len(params)
    if shared:
        outcomes.update(_insert_shared(connection, shared, batches))
    return [outcomes[index] for index in range(len(batches))]


def _insert_alone(
    key: str, events: Sequence[LoggedEvent], fence: Fence | None
) -> BaseException | None:
    try:
        _insert(key, events, fence)
    except Exception as exc:  # noqa: BLE001 - the batch's answer
        return exc
    return None


def _insert_shared(
    connection: Any, shared: list[tuple[int, str, str, list[Any], int]],
    batches: Sequence[Batch],
) -> dict[int, BaseException | None]:
    if len(shared) == 1:
        return {shared[0][0]: _insert_alone(*batches[shared[0][0]])}
    try:
        written = _insert_selects(connection, [(sql, params) for _, _, sql, params, _ in shared])
    except Exception:  # noqa: BLE001 - whose was it? Each batch again on its own
        return {index: _insert_alone(*batches[index]) for index, *_ in shared}
    # Each batch stands or falls with its one fence: all of its rows went in, or none.
    return {
        index: None if written.get(key) else lease_lost(key, count)
        for index, key, _, _, count in shared
    }


def _fenced_select(
    connection: Any, key: str, events: Sequence[LoggedEvent], fence: Fence | None
) -> tuple[str, list[Any]]:
    """``SELECT * FROM (VALUES …) AS batch [WHERE EXISTS (the lease's row, locked)]``."""
    ops = connection.ops
    fence_sql, fence_params = _fence_sql(fence, connection) if fence is not None else ("", [])
    row = "({})".format(", ".join(["%s"] * len(_COLUMNS)))
    params = [
        value for e in events
        for value in (key, e.seq, e.name, e.frame, ops.adapt_datetimefield_value(e.created_at))
    ]
    sql = "SELECT * FROM (VALUES " + ", ".join([row] * len(events)) + ") AS batch" + fence_sql
    return sql, params + fence_params


def _insert_selects(connection: Any, selects: list[tuple[str, list[Any]]]) -> dict[str, int]:
    """One INSERT of the UNION ALL of ``selects``; how many rows went in, by task key."""
    ops = connection.ops
    head = "INSERT INTO {} ({}) ".format(
        ops.quote_name(TaskEvent._meta.db_table),
        ", ".join(ops.quote_name(TaskEvent._meta.get_field(name).column) for name in _COLUMNS),
    )
    sql = head + " UNION ALL ".join(select for select, _ in selects)
    sql += " RETURNING " + ops.quote_name(TaskEvent._meta.get_field("task_key").column)
    params = [value for _, values in selects for value in values]
    written: dict[str, int] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for (key,) in cursor.fetchall():
            written[key] = written.get(key, 0) + 1
    return written


def _insert(key: str, events: Sequence[LoggedEvent], fence: Fence | None = None) -> None:
    connection = connections[router.db_for_write(TaskEvent)]
    ops = connection.ops
    fence_sql, fence_params = _fence_sql(fence, connection) if fence is not None else ("", [])
    width = len(_COLUMNS)
    limit = connection.features.max_query_params or _MAX_PARAMS
    per_statement = max((limit - len(fence_params)) // width, 1)
    statements = []
    for start in range(0, len(events), per_statement):
        chunk = events[start:start + per_statement]
        values = ", ".join(["({})".format(", ".join(["%s"] * width))] * len(chunk))
        params = [
            value for e in chunk
            for value in (key, e.seq, e.name, e.frame, ops.adapt_datetimefield_value(e.created_at))
        ]
        statements.append((len(chunk), _insert_sql(ops) + values + ") AS batch" + fence_sql,
                           params + fence_params))
    # One statement commits on its own: a writer frozen between statements holds no lock.
    atomic = transaction.atomic(using=connection.alias) if len(statements) > 1 else nullcontext()
    try:
        with atomic, connection.cursor() as cursor:
            for count, sql, params in statements:
                cursor.execute(sql, params)
                if cursor.rowcount != count:
                    raise lease_lost(key, len(events))
    except IntegrityError:
        if not _already_logged(key, events):
            raise


def _already_logged(key: str, events: Sequence[LoggedEvent]) -> bool:
    """Did an earlier try write exactly these events? A statement that commits while the
    connection drops has an answer that never arrives; tried again, its seqs are taken. Under
    the fence only this run writes the task's log, so the rows are that try's: the batch is in.
    """
    stored = dict(
        TaskEvent.objects.filter(task_key=key, seq__in=[e.seq for e in events])
        .values_list("seq", "frame")
    )
    return all(stored.get(e.seq) == e.frame for e in events)


def _insert_sql(ops: Any) -> str:
    return "INSERT INTO {} ({}) SELECT * FROM (VALUES ".format(
        ops.quote_name(TaskEvent._meta.db_table),
        ", ".join(ops.quote_name(TaskEvent._meta.get_field(name).column) for name in _COLUMNS),
    )


def _fence_sql(fence: Fence, connection: Any) -> tuple[str, list[Any]]:
    """`` WHERE EXISTS (the lease's row, locked)`` and its parameters (compiled once per fence:
    a run appends under the same one every time)."""
    compiled = _fences.setdefault(fence, {})
    found = compiled.get(connection.alias)
    if found is None:
        if hasattr(fence, "fence_sql"):  # a run's lease, which writes its own
            sql, params = fence.fence_sql(connection)
        else:
            rows = fence.using(connection.alias).order_by().values("pk")
            sql, params = rows.query.get_compiler(connection=connection).as_sql()
        features = connection.features
        if features.has_select_for_update:
            sql += " " + connection.ops.for_update_sql(
                no_key=features.has_select_for_no_key_update
            )
        found = compiled[connection.alias] = (f" WHERE EXISTS ({sql})", list(params))
    return found[0], list(found[1])


_fences: weakref.WeakKeyDictionary[Fence, dict[str, tuple[str, list[Any]]]] = (
    weakref.WeakKeyDictionary()
)


async def since(
    key: str, after: int, upto: int | None = None, limit: int | None = None
) -> list[tuple[int, str]]:
    """``(seq, frame)`` of the logged events with ``after < seq <= upto``, in order.

    ``limit`` pages through a long stretch without holding all of it in memory.
    """
    rows = TaskEvent.objects.filter(task_key=key, seq__gt=after)
    if upto is not None:
        rows = rows.filter(seq__lte=upto)
    rows = rows.order_by("seq").values_list("seq", "frame")
    if limit is not None:
        rows = rows[:limit]
    return [row async for row in rows]


async def sizes(key: str, after: int, upto: int, limit: int) -> list[tuple[int, int]]:
    """``(seq, frame length)`` of up to ``limit`` events with ``after < seq <= upto``, in order.

    Lets a reader take big events a few at a time before it loads any of them.
    """
    rows = (
        TaskEvent.objects.filter(task_key=key, seq__gt=after, seq__lte=upto)
        .order_by("seq")
        .values_list("seq", Length("frame"))[:limit]
    )
    return [row async for row in rows]


async def latest(key: str) -> tuple[int, str] | None:
    """The newest logged event, if any."""
    rows = TaskEvent.objects.filter(task_key=key).order_by("-seq").values_list("seq", "frame")
    return await rows.afirst()


async def current_seq(key: str) -> int:
    result = await TaskEvent.objects.filter(task_key=key).aaggregate(top=Max("seq"))
    return result["top"] or 0


def last_logged_seq(key: str) -> int:
    """``current_seq`` for code already in the database thread (the sweeper, under its row
    lock)."""
    return last_logged_seqs([key]).get(key, 0)


def last_logged_seqs(keys: Sequence[str]) -> dict[str, int]:
    """``current_seqs`` in the database thread: the newest logged seq of each of ``keys`` that
    has events, in one statement written once (not compiled each time)."""
    if not keys:
        return {}
    connection = connections[router.db_for_read(TaskEvent)]
    ops = connection.ops
    key_column = ops.quote_name(TaskEvent._meta.get_field("task_key").column)
    sql = "SELECT {0}, MAX({1}) FROM {2} WHERE {0} IN ({3}) GROUP BY {0}".format(
        key_column, ops.quote_name(TaskEvent._meta.get_field("seq").column),
        ops.quote_name(TaskEvent._meta.db_table), ", ".join(["%s"] * len(keys)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, list(keys))
        return dict(cursor.fetchall())


async def current_seqs(keys: Sequence[str]) -> dict[str, int]:
    """The newest logged seq of each of ``keys`` that has events, in one query."""
    rows = (
        TaskEvent.objects.filter(task_key__in=list(keys))
        .order_by()
        .values_list("task_key")
        .annotate(top=Max("seq"))
    )
    return {key: top async for key, top in rows}


async def oldest_seq(key: str) -> int:
    result = await TaskEvent.objects.filter(task_key=key).aaggregate(low=Min("seq"))
    return result["low"] or 0


async def trim(key: str, keep: int) -> int:
    """Delete all but the newest ``keep`` events of a task; returns how many were deleted."""
    top = await current_seq(key)
    deleted, _ = await TaskEvent.objects.filter(task_key=key, seq__lte=top - keep).adelete()
    return deleted


async def delete(keys: Sequence[str]) -> int:
    deleted, _ = await TaskEvent.objects.filter(task_key__in=list(keys)).adelete()
    return deleted


async def count(keys: Sequence[str]) -> int:
    """How many events the log holds for these tasks."""
    return await TaskEvent.objects.filter(task_key__in=list(keys)).acount()


def recent(key: str, limit: int) -> list[LoggedEvent]:
    """The newest ``limit`` events of a task, newest first (sync: the admin pages read it)."""
    rows = TaskEvent.objects.filter(task_key=key).order_by("-seq")[:limit]
    return [LoggedEvent(row.seq, row.name, row.frame, row.created_at) for row in rows]


async def keys_logged_before(prefix: str, before: datetime) -> list[str]:
    """Keys starting with ``prefix`` that have an event logged before ``before``."""
    rows = (
        TaskEvent.objects.filter(task_key__startswith=prefix, created_at__lt=before)
        .order_by()
        .values_list("task_key", flat=True)
        .distinct()
    )
    return [key async for key in rows]
