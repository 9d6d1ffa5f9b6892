"""A run's outcome, written under its lease (leases.py holds the rule): the last write of a run.

Short tasks end many at a time, and an outcome's cost is mostly its commit and its statement's
round trip, not the UPDATE: the outcomes recorded at the same moment share one transaction (on
PostgreSQL one UPDATE per model), each row still under its own lease's condition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from django.db import connections, router, transaction
from django.utils import timezone

from ..eventlog.commits import committer
from ..exceptions import LeaseLost
from ..models import Status, StreamTask
from . import lease_sql as statements
from .leases import Lease


async def finish(
    lease: Lease,
    status: str,
    *,
    last_seq: int,
    final_value: Any = None,
    error: dict[str, str] | None = None,
) -> None:
    """Record the outcome of a run under its lease; ``LeaseLost`` when the lease is gone.

    Outcomes recorded at the same moment share one transaction, one commit (``_finish_all``).
    """
    completed_at = None if status == Status.PENDING else timezone.now()
    outcome = FinalWrite(lease, status, last_seq, final_value, error, completed_at)
    if not await committer().together(_finish_all, outcome):
        raise LeaseLost(f"{lease}: the lease is gone; outcome {status!r} not recorded")


class FinalWrite(NamedTuple):
    """One run's outcome, as ``finish`` writes it."""

    lease: Lease
    status: str
    last_seq: int
    final_value: Any
    error: dict[str, str] | None
    completed_at: Any


def _finish_all(outcomes: Sequence[FinalWrite]) -> list[int | BaseException]:
    """In the database thread: each outcome's rows written (1, or 0 when its lease is gone).

    The outcomes for one database are written together, each under its own lease: on
    PostgreSQL one UPDATE for those of a model, elsewhere one UPDATE each in one transaction.
    Either way one commit for all (a commit, and each statement's round trip, not the UPDATE,
    is most of what an outcome costs). Should that fail, nothing of it was written, and each
    outcome is written again on its own, so an outcome's error is its own.
    """
    groups: dict[tuple[str, type[StreamTask]], list[int]] = {}
    for index, outcome in enumerate(outcomes):
        model = outcome.lease.model
        groups.setdefault((router.db_for_write(model), model), []).append(index)
    by_alias: dict[str, list[list[int]]] = {}
    for (alias, _), indexes in groups.items():
        by_alias.setdefault(alias, []).append(indexes)
    answers: list[int | BaseException] = [0] * len(outcomes)
    for alias, models in by_alias.items():
        indexes = [index for group in models for index in group]
        if len(indexes) > 1:
            try:
                with transaction.atomic(using=alias):
                    for group in models:
                        written = _finish_together([outcomes[i] for i in group], alias)
                        for index, rows in zip(group, written, strict=True):
                            answers[index] = rows
            except Exception:  # noqa: BLE001 - each on its own below says whose it is
                pass
            else:
                continue
        for index in indexes:
            try:
                answers[index] = _finish_one(outcomes[index], alias)
            except Exception as exc:  # noqa: BLE001 - its caller gets it, the others go on
                answers[index] = exc
    return answers


def _finish_together(outcomes: Sequence[FinalWrite], alias: str) -> list[int]:
    """Outcomes of one model: one UPDATE where the database takes a VALUES list and answers
    with the rows changed (PostgreSQL), else one each."""
    model = outcomes[0].lease.model
    connection = connections[alias]
    if len(outcomes) == 1 or connection.vendor != "postgresql" or model._meta.parents:
        return [_finish_one(outcome, alias) for outcome in outcomes]
    params = [value for i, outcome in enumerate(outcomes)
              for value in (i, *_finish_values(outcome, connection))]
    with connection.cursor() as cursor:
        cursor.execute(statements.finish_many_sql(model, alias, len(outcomes)), params)
        written = {i for (i,) in cursor.fetchall()}
    return [int(i in written) for i in range(len(outcomes))]


def _finish_values(outcome: FinalWrite, connection: Any) -> list[Any]:
    """(pk, owner, attempt, status, last_seq, final_value, error, completed_at), prepared."""
    lease = outcome.lease
    meta = lease.model._meta
    return [
        statements.db_pk(lease.model, lease.pk, connection), lease.owner, lease.attempt,
        outcome.status, outcome.last_seq,
        meta.get_field("final_value").get_db_prep_save(outcome.final_value, connection),
        meta.get_field("error").get_db_prep_save(outcome.error, connection),
        connection.ops.adapt_datetimefield_value(outcome.completed_at),
    ]


def _finish_one(outcome: FinalWrite, alias: str) -> int:
    model = outcome.lease.model
    connection = connections[alias]
    _, _, _, *values = _finish_values(outcome, connection)
    return statements.write_held(outcome.lease, statements.finish_sql(model, alias), values,
                                 connection)
