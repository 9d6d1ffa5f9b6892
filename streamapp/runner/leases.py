"""Task leases: the only code that writes the lifecycle and lease columns of a task row (with
outcomes.py, which writes a run's last one).

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
from . import lease_sql as statements

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
        sql = statements.fence_sql(self.model, connection.alias)
        return sql, [statements.db_pk(self.model, self.pk, connection), self.owner, self.attempt]


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
    by_pk = {statements.db_pk(model, task.pk, connection): task for task in tasks}
    returning = statements.returns_rows(connection) and not model._meta.parents
    won: list[StreamTask] = []
    if returning:
        pk_at = [column.attname for column in model._meta.concrete_fields].index(
            model._meta.pk.attname)
        with connection.cursor() as cursor:
            cursor.execute(statements.claim_sql(model, connection.alias, len(statuses), len(by_pk)),
                           [*fields, *by_pk, *statuses])
            rows = cursor.fetchall()
        for row in rows:
            task = by_pk[statements.db_pk(model, row[pk_at], connection)]
            statements.load_row(task, row, connection)  # the row as the claim left it, read back
            won.append(task)
    else:
        for pk, task in by_pk.items():
            with connection.cursor() as cursor:
                cursor.execute(statements.claim_sql(model, connection.alias, len(statuses), None),
                               [*fields, pk, *statuses])
                claimed = cursor.rowcount
            if claimed:
                statements.refresh(task, connection.alias)
                won.append(task)
    won = [t for t in won if t.status == Status.RUNNING and t.lease_owner == owner]
    tops = store.last_logged_seqs([task.task_key for task in won])
    return {
        id(task): Lease(model, task.pk, owner, task.attempts, tops.get(task.task_key, 0))
        for task in won
    }


async def renew(lease: Lease, lease_seconds: float) -> None:
    """Extend the lease; ``LeaseLost`` when it is gone."""
    expires = timezone.now() + timedelta(seconds=lease_seconds)
    if not await committer().call(lambda: _renew(lease, expires)):
        raise LeaseLost(f"{lease}: the lease is gone; not renewed")


def _renew(lease: Lease, expires: Any) -> int:
    connection = connections[router.db_for_write(lease.model)]
    sql = statements.renew_sql(lease.model, connection.alias)
    return statements.write_held(lease, sql, [connection.ops.adapt_datetimefield_value(expires)],
                       connection)


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
