"""Task leases: the only code that writes the lifecycle and lease columns of a task row.

Every write is conditional; the database decides ownership. A write that matches no row means
the caller lost: it stops and does not argue.

The fencing rule: a run's lease is the pair (``lease_owner``, ``attempts``) its claim wrote, on
a ``running`` row. Every write the run makes (its event log appends, heartbeats and outcome)
carries that pair as its condition, checked by the database in the same statement or
transaction as the write, so a run whose lease was taken away (expired by a sweeper, retried by
another worker, even by this same process) writes nothing more. The claim bumps ``attempts``:
two runs of one task never hold the same token, and no column is added to users' tables.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NamedTuple

from asgiref.sync import sync_to_async
from django.db import connections, router, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from ..eventlog import store
from ..eventlog.commits import committer
from ..exceptions import LeaseLost
from ..models import STARTABLE_STATUSES, Status, StreamTask

RUNNER_FIELDS = (
    "status", "started_at", "completed_at", "final_value", "error", "attempts",
    "last_seq", "revision", "lease_owner", "lease_expires_at",
)


@dataclass(frozen=True)
class Lease:
    """One run's hold on its task row; ``owner`` and ``attempt`` are its fencing token.

    ``logged_seq``: the top of the task's event log when the lease was taken, read with it.
    """

    model: type[StreamTask]
    pk: Any
    owner: str
    attempt: int
    logged_seq: int = field(default=0, compare=False)

    def __str__(self) -> str:
        meta = self.model._meta
        key = f"{meta.app_label}.{meta.model_name}.{self.pk}"
        return f"{key} owner={self.owner} attempt={self.attempt}"

    def rows(self) -> QuerySet:
        """The task row while this lease holds it; no row once it is gone."""
        return self.model._default_manager.filter(
            pk=self.pk, status=Status.RUNNING, lease_owner=self.owner, attempts=self.attempt
        )

    def fence_sql(self, connection: Any) -> tuple[str, list[Any]]:
        """``rows()`` as the event log's fence takes it (store.py): the SELECT of its pk, and
        its parameters; written once per model, not compiled for every run."""
        sql = _fence_sql(self.model, connection.alias)
        return sql, [_pk(self.model, self.pk, connection), self.owner, self.attempt]


class Expired(NamedTuple):
    """What the sweeper made of an expired lease."""

    retry: bool
    last_seq: int


async def create(task: StreamTask) -> None:
    """Save a new task (``pending``), with the other new tasks saved at the same moment: one
    INSERT per model for all of them (``bulk_create``: no ``save()`` call, no signals)."""
    await committer().together(_create_all, task)


def _create_all(tasks: Sequence[StreamTask]) -> list[BaseException | None]:
    by_model: dict[tuple[type[StreamTask], str], list[StreamTask]] = {}
    for task in tasks:
        model = type(task)
        by_model.setdefault((model, router.db_for_write(model, instance=task)), []).append(task)
    outcomes: dict[int, BaseException | None] = {}
    for (model, alias), group in by_model.items():
        shared = len(group) > 1 and connections[alias].features.can_return_rows_from_bulk_insert
        try:
            if shared:  # the pks come back with the rows
                model._default_manager.using(alias).bulk_create(group)
            else:
                for task in group:
                    task.save(using=alias, force_insert=True)
        except Exception as exc:  # noqa: BLE001 - every task of the statement hears it
            outcomes.update({id(task): exc for task in group})
        else:
            outcomes.update({id(task): None for task in group})
    return [outcomes[id(task)] for task in tasks]


def _rows(task: StreamTask) -> QuerySet:
    return type(task)._default_manager.filter(pk=task.pk)


async def claim(
    task: StreamTask,
    owner: str,
    lease_seconds: float,
    statuses: Collection[str] = STARTABLE_STATUSES,
) -> Lease | None:
    """Move ``task`` from one of ``statuses`` to ``running`` owned by ``owner``; the lease won.

    Refreshes ``task`` when won. A worker passes ``(PENDING,)`` only: a candidate it picked that
    meanwhile ran and failed must not run again. The claim, the row read back and the log's top
    take one thread hop, grouped with the other runs' writes (eventlog/commits.py); claims that
    wait together are one conditional UPDATE, the same condition for each row.
    """
    return await committer().together(_claim_all, (task, owner, lease_seconds, tuple(statuses)))


Claim = tuple[StreamTask, str, float, tuple[str, ...]]


def _claim_all(claims: Sequence[Claim]) -> list[Lease | None | BaseException]:
    """In the database thread: each claim's lease, None when it lost, or its error."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for index, (task, owner, lease_seconds, statuses) in enumerate(claims):
        model = type(task)
        key = (model, router.db_for_write(model), owner, lease_seconds, statuses)
        groups.setdefault(key, []).append(index)
    outcomes: list[Lease | None | BaseException] = [None] * len(claims)
    for (model, alias, owner, lease_seconds, statuses), indexes in groups.items():
        tasks = [claims[index][0] for index in indexes]
        try:
            won = _claim_group(model, connections[alias], tasks, owner, lease_seconds, statuses)
        except Exception as exc:  # noqa: BLE001 - every claim of the statement hears it
            for index in indexes:
                outcomes[index] = exc
            continue
        for index, task in zip(indexes, tasks, strict=True):
            outcomes[index] = won.get(id(task))
    return outcomes


def _claim_group(
    model: type[StreamTask], connection: Any, tasks: list[StreamTask], owner: str,
    lease_seconds: float, statuses: tuple[str, ...],
) -> dict[int, Lease]:
    """One conditional UPDATE for ``tasks``: the leases won, by ``id(task)``."""
    ops = connection.ops
    now = timezone.now()
    fields = [Status.RUNNING, owner,
              ops.adapt_datetimefield_value(now + timedelta(seconds=lease_seconds)),
              ops.adapt_datetimefield_value(now)]
    by_pk = {_pk(model, task.pk, connection): task for task in tasks}
    returning = _returns_rows(connection) and not model._meta.parents
    won: list[StreamTask] = []
    if returning:
        pk_at = [column.attname for column in model._meta.concrete_fields].index(
            model._meta.pk.attname)
        with connection.cursor() as cursor:
            cursor.execute(_claim_sql(model, connection.alias, len(statuses), len(by_pk)),
                           [*fields, *by_pk, *statuses])
            rows = cursor.fetchall()
        for row in rows:
            task = by_pk[_pk(model, row[pk_at], connection)]
            _load(task, row, connection)  # the row as the claim left it, read back
            won.append(task)
    else:
        for pk, task in by_pk.items():
            with connection.cursor() as cursor:
                cursor.execute(_claim_sql(model, connection.alias, len(statuses), None),
                               [*fields, pk, *statuses])
                claimed = cursor.rowcount
            if claimed:
                _refresh(task, connection.alias)
                won.append(task)
    won = [t for t in won if t.status == Status.RUNNING and t.lease_owner == owner]
    tops = store.last_logged_seqs([task.task_key for task in won])
    return {
        id(task): Lease(model, task.pk, owner, task.attempts, tops.get(task.task_key, 0))
        for task in won
    }


# The run's own statements are written once per model rather than compiled by the ORM each time:
# the compiling, not the queries, was what most of a short task's database time went on.


def _q(connection_alias: str, name: str) -> str:
    return connections[connection_alias].ops.quote_name(name)


def _column(model: type[StreamTask], name: str) -> str:
    return model._meta.get_field(name).column


def _pk(model: type[StreamTask], pk: Any, connection: Any) -> Any:
    return model._meta.pk.get_db_prep_value(pk, connection)


def _returns_rows(connection: Any) -> bool:
    """Can an UPDATE answer with the rows it changed (``RETURNING``)?"""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return connection.Database.sqlite_version_info >= (3, 35)
    return False


def _load(task: StreamTask, row: Sequence[Any], connection: Any) -> None:
    """Set ``task``'s fields from ``row`` (every concrete column, in order), as the ORM would
    convert them."""
    for column, converters, value in zip(
        task._meta.concrete_fields, _converters(type(task), connection.alias), row, strict=True
    ):
        for convert, expression in converters:
            value = convert(value, expression, connection)
        setattr(task, column.attname, value)
        if column.is_relation and column.is_cached(task):
            column.delete_cached_value(task)
    task._state.db = connection.alias
    task._state.adding = False


@functools.cache
def _converters(model: type[StreamTask], alias: str) -> list[list[tuple[Any, Any]]]:
    connection = connections[alias]
    found = []
    for column in model._meta.concrete_fields:
        expression = column.get_col(model._meta.db_table)
        converters = (connection.ops.get_db_converters(expression)
                      + expression.get_db_converters(connection))
        found.append([(convert, expression) for convert in converters])
    return found


@functools.cache
def _claim_sql(
    model: type[StreamTask], alias: str, statuses: int, returning: int | None
) -> str:
    """The claim of one row, or with ``returning`` rows, of that many, each read back."""
    q = functools.partial(_q, alias)
    col = functools.partial(_column, model)
    columns = ", ".join(q(column.column) for column in model._meta.concrete_fields)
    pks = "= %s" if returning is None else f"IN ({', '.join(['%s'] * returning)})"
    return (
        f"UPDATE {q(model._meta.db_table)} SET {q(col('status'))} = %s, "
        f"{q(col('lease_owner'))} = %s, {q(col('lease_expires_at'))} = %s, "
        f"{q(col('started_at'))} = %s, {q(col('completed_at'))} = NULL, "
        f"{q(col('final_value'))} = NULL, {q(col('error'))} = NULL, "
        f"{q(col('attempts'))} = {q(col('attempts'))} + 1, "
        f"{q(col('revision'))} = {q(col('revision'))} + 1 "
        f"WHERE {q(model._meta.pk.column)} {pks} AND {q(col('status'))} IN "
        f"({', '.join(['%s'] * statuses)})"
        + ("" if returning is None else f" RETURNING {columns}")
    )


@functools.cache
def _held(model: type[StreamTask], alias: str) -> str:
    """The fencing condition of a run's writes to its task row."""
    q = functools.partial(_q, alias)
    col = functools.partial(_column, model)
    return (
        f"{q(model._meta.pk.column)} = %s AND {q(col('status'))} = '{Status.RUNNING}' "
        f"AND {q(col('lease_owner'))} = %s AND {q(col('attempts'))} = %s"
    )


@functools.cache
def _fence_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(_q, alias)
    table = q(model._meta.db_table)
    return f"SELECT {table}.{q(model._meta.pk.column)} FROM {table} WHERE {_held(model, alias)}"


@functools.cache
def _renew_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(_q, alias)
    return (f"UPDATE {q(model._meta.db_table)} SET {q(_column(model, 'lease_expires_at'))} = %s "
            f"WHERE {_held(model, alias)}")


@functools.cache
def _finish_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(_q, alias)
    col = functools.partial(_column, model)
    return (
        f"UPDATE {q(model._meta.db_table)} SET {q(col('status'))} = %s, "
        f"{q(col('last_seq'))} = %s, {q(col('final_value'))} = %s, {q(col('error'))} = %s, "
        f"{q(col('lease_owner'))} = '', {q(col('lease_expires_at'))} = NULL, "
        f"{q(col('revision'))} = {q(col('revision'))} + 1, {q(col('completed_at'))} = %s "
        f"WHERE {_held(model, alias)}"
    )


def _write_held(lease: Lease, sql: str, params: list[Any], connection: Any) -> int:
    """``sql`` (ending in the fencing condition) for ``lease``; the rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, _pk(lease.model, lease.pk, connection), lease.owner,
                             lease.attempt])
        return cursor.rowcount


def _refresh(task: StreamTask, alias: str) -> None:
    """``task.refresh_from_db()``, read with a statement written once per model."""
    model = type(task)
    if model._meta.parents:  # columns in more than one table: let the ORM join them
        task.refresh_from_db(using=alias)
        return
    fresh = list(model._default_manager.using(alias).raw(_select_sql(model, alias), [task.pk]))
    if not fresh:
        raise model.DoesNotExist(f"{model.__name__} {task.pk} no longer exists")
    for column in model._meta.concrete_fields:
        setattr(task, column.attname, getattr(fresh[0], column.attname))
        if column.is_relation and column.is_cached(task):
            column.delete_cached_value(task)
    task._state.db = alias
    task._state.adding = False


@functools.cache
def _select_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(_q, alias)
    return f"SELECT * FROM {q(model._meta.db_table)} WHERE {q(model._meta.pk.column)} = %s"


async def renew(lease: Lease, lease_seconds: float) -> None:
    """Extend the lease; ``LeaseLost`` when it is gone."""
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    if not await committer().call(lambda: _renew(lease, expires)):
        raise LeaseLost(f"{lease}: the lease is gone; not renewed")


def _renew(lease: Lease, expires: Any) -> int:
    connection = connections[router.db_for_write(lease.model)]
    sql = _renew_sql(lease.model, connection.alias)
    return _write_held(lease, sql, [connection.ops.adapt_datetimefield_value(expires)],
                       connection)


async def finish(
    lease: Lease,
    status: str,
    *,
    last_seq: int,
    final_value: Any = None,
    error: dict[str, str] | None = None,
) -> None:
    """Record the outcome of a run under its lease; ``LeaseLost`` when the lease is gone."""
    completed_at = None if status == Status.PENDING else timezone.now()

    def write() -> int:
        model = lease.model
        connection = connections[router.db_for_write(model)]
        meta = model._meta
        return _write_held(lease, _finish_sql(model, connection.alias), [
            status, last_seq,
            meta.get_field("final_value").get_db_prep_save(final_value, connection),
            meta.get_field("error").get_db_prep_save(error, connection),
            connection.ops.adapt_datetimefield_value(completed_at),
        ], connection)

    if not await committer().call(write):
        raise LeaseLost(f"{lease}: the lease is gone; outcome {status!r} not recorded")


async def cancel_pending(task: StreamTask, error: dict[str, str] | None = None) -> bool:
    """Cancel a task nobody runs yet; ``error`` says who or what cancelled it."""
    return bool(
        await _rows(task)
        .filter(status=Status.PENDING)
        .aupdate(
            status=Status.CANCELLED, completed_at=timezone.now(), error=error,
            revision=F("revision") + 1,
        )
    )


async def requeue(task: StreamTask) -> bool:
    """Make a failed or cancelled task ``pending`` again, for a worker to claim."""
    return bool(
        await _rows(task)
        .filter(status__in=[Status.FAILED, Status.CANCELLED])
        .aupdate(
            status=Status.PENDING,
            completed_at=None,
            final_value=None,
            error=None,
            revision=F("revision") + 1,
        )
    )


async def expire(task: StreamTask, *, error: dict[str, str]) -> Expired | None:
    """End a running task whose lease ran out: ``pending`` again while attempts remain, else
    failed. None when it is not expired (any more), or its row is locked by a write under way.

    One transaction: lock the row (as a fenced append does), read the log's top, write. An
    append either committed before (its events count in ``last_seq``) or is refused after.
    """
    return await sync_to_async(_expire)(task, error)


def _expire(task: StreamTask, error: dict[str, str]) -> Expired | None:
    model = type(task)
    using = router.db_for_write(model)
    features = connections[using].features
    now = timezone.now()
    rows = model._default_manager.using(using).filter(
        pk=task.pk, status=Status.RUNNING, lease_expires_at__lt=now
    )
    with transaction.atomic(using=using):
        if features.has_select_for_update:
            # SKIP LOCKED: a row locked by an append under way (its owner may be frozen
            # mid-transaction) is left for a later sweep instead of holding the sweeper up.
            rows = rows.select_for_update(
                skip_locked=features.has_select_for_update_skip_locked,
                no_key=features.has_select_for_no_key_update,
            )
        found = rows.values_list("attempts", "last_seq").first()
        if found is None:
            return None
        attempts, last_seq = found
        retry = attempts < task.max_attempts
        last_seq = max(last_seq, store.last_logged_seq(task.task_key))
        model._default_manager.using(using).filter(pk=task.pk).update(
            status=Status.PENDING if retry else Status.FAILED,
            completed_at=None if retry else now,
            error=error,
            last_seq=last_seq,
            lease_owner="",
            lease_expires_at=None,
            revision=F("revision") + 1,
        )
    return Expired(retry, last_seq)
