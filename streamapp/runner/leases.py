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
from collections.abc import Collection
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
    take one thread hop, grouped with the other runs' writes (eventlog/commits.py).
    """
    return await committer().call(lambda: _claim(task, owner, lease_seconds, statuses))


def _claim(
    task: StreamTask, owner: str, lease_seconds: float, statuses: Collection[str]
) -> Lease | None:
    model = type(task)
    connection = connections[router.db_for_write(model)]
    ops = connection.ops
    now = timezone.now()
    statuses = tuple(statuses)
    with connection.cursor() as cursor:
        cursor.execute(_claim_sql(model, connection.alias, len(statuses)), [
            Status.RUNNING, owner,
            ops.adapt_datetimefield_value(now + timedelta(seconds=lease_seconds)),
            ops.adapt_datetimefield_value(now), _pk(model, task.pk, connection), *statuses,
        ])
        won = cursor.rowcount
    if not won:
        return None
    _refresh(task, connection.alias)
    if task.status != Status.RUNNING or task.lease_owner != owner:
        return None  # already lost: swept and claimed again before we could read it
    return Lease(model, task.pk, owner, task.attempts, store.last_logged_seq(task.task_key))


# The run's own statements are written once per model rather than compiled by the ORM each time:
# the compiling, not the queries, was what most of a short task's database time went on.


def _q(connection_alias: str, name: str) -> str:
    return connections[connection_alias].ops.quote_name(name)


def _column(model: type[StreamTask], name: str) -> str:
    return model._meta.get_field(name).column


def _pk(model: type[StreamTask], pk: Any, connection: Any) -> Any:
    return model._meta.pk.get_db_prep_value(pk, connection)


@functools.cache
def _claim_sql(model: type[StreamTask], alias: str, statuses: int) -> str:
    q = functools.partial(_q, alias)
    col = functools.partial(_column, model)
    return (
        f"UPDATE {q(model._meta.db_table)} SET {q(col('status'))} = %s, "
        f"{q(col('lease_owner'))} = %s, {q(col('lease_expires_at'))} = %s, "
        f"{q(col('started_at'))} = %s, {q(col('completed_at'))} = NULL, "
        f"{q(col('final_value'))} = NULL, {q(col('error'))} = NULL, "
        f"{q(col('attempts'))} = {q(col('attempts'))} + 1, "
        f"{q(col('revision'))} = {q(col('revision'))} + 1 "
        f"WHERE {q(model._meta.pk.column)} = %s AND {q(col('status'))} IN "
        f"({', '.join(['%s'] * statuses)})"
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
