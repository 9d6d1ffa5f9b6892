"""The runner's own statements on a task row, written once per model and database.

The ORM compiled every claim, heartbeat and outcome afresh, and the compiling, not the queries,
was what most of a short task's database time went on. Each statement here ends in the fencing
condition of runner/leases.py where it writes for a run.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from django.db import connections

from ..models import Status, StreamTask


def quote(connection_alias: str, name: str) -> str:
    return connections[connection_alias].ops.quote_name(name)


def column_of(model: type[StreamTask], name: str) -> str:
    return model._meta.get_field(name).column


def db_pk(model: type[StreamTask], pk: Any, connection: Any) -> Any:
    return model._meta.pk.get_db_prep_value(pk, connection)


def returns_rows(connection: Any) -> bool:
    """Can an UPDATE answer with the rows it changed (``RETURNING``)?"""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        return connection.Database.sqlite_version_info >= (3, 35)
    return False


def load_row(task: StreamTask, row: Sequence[Any], connection: Any) -> None:
    """Set ``task``'s fields from ``row`` (every concrete column, in order), as the ORM would
    convert them."""
    for column, converters, value in zip(
        task._meta.concrete_fields, converters_of(type(task), connection.alias), row, strict=True
    ):
        for convert, expression in converters:
            value = convert(value, expression, connection)
        setattr(task, column.attname, value)
        if column.is_relation and column.is_cached(task):
            column.delete_cached_value(task)
    task._state.db = connection.alias
    task._state.adding = False


@functools.cache
def converters_of(model: type[StreamTask], alias: str) -> list[list[tuple[Any, Any]]]:
    connection = connections[alias]
    found = []
    for column in model._meta.concrete_fields:
        expression = column.get_col(model._meta.db_table)
        converters = (connection.ops.get_db_converters(expression)
                      + expression.get_db_converters(connection))
        found.append([(convert, expression) for convert in converters])
    return found


@functools.cache
def claim_sql(
    model: type[StreamTask], alias: str, statuses: int, returning: int | None
) -> str:
    """The claim of one row, or with ``returning`` rows, of that many, each read back."""
    q = functools.partial(quote, alias)
    col = functools.partial(column_of, model)
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
def held_condition(model: type[StreamTask], alias: str) -> str:
    """The fencing condition of a run's writes to its task row."""
    q = functools.partial(quote, alias)
    col = functools.partial(column_of, model)
    return (
        f"{q(model._meta.pk.column)} = %s AND {q(col('status'))} = '{Status.RUNNING}' "
        f"AND {q(col('lease_owner'))} = %s AND {q(col('attempts'))} = %s"
    )


@functools.cache
def fence_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(quote, alias)
    table = q(model._meta.db_table)
    condition = held_condition(model, alias)
    return f"SELECT {table}.{q(model._meta.pk.column)} FROM {table} WHERE {condition}"


@functools.cache
def renew_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(quote, alias)
    return (f"UPDATE {q(model._meta.db_table)} SET {q(column_of(model, 'lease_expires_at'))} = %s "
            f"WHERE {held_condition(model, alias)}")


@functools.cache
def finish_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(quote, alias)
    col = functools.partial(column_of, model)
    return (
        f"UPDATE {q(model._meta.db_table)} SET {q(col('status'))} = %s, "
        f"{q(col('last_seq'))} = %s, {q(col('final_value'))} = %s, {q(col('error'))} = %s, "
        f"{q(col('lease_owner'))} = '', {q(col('lease_expires_at'))} = NULL, "
        f"{q(col('revision'))} = {q(col('revision'))} + 1, {q(col('completed_at'))} = %s "
        f"WHERE {held_condition(model, alias)}"
    )


# The columns of the VALUES list an outcome batch writes from (``finish_many_sql``).
FINISH_VALUES = ("i", "pk", "owner", "attempt", "status", "last_seq", "final_value", "error",
                 "completed_at")


@functools.cache
def finish_many_sql(model: type[StreamTask], alias: str, count: int) -> str:
    """PostgreSQL: ``count`` outcomes in one UPDATE, from a VALUES list of FINISH_VALUES; each
    row changed only under its own lease (``held_condition``, with that outcome's token); the
    ``i`` of the outcomes written comes back. The first VALUES row carries the column types."""
    connection = connections[alias]
    q = functools.partial(quote, alias)
    col = functools.partial(column_of, model)
    meta = model._meta
    types = ["integer", meta.pk.rel_db_type(connection),
             meta.get_field("lease_owner").db_type(connection),
             meta.get_field("attempts").db_type(connection),
             meta.get_field("status").db_type(connection),
             meta.get_field("last_seq").db_type(connection),
             meta.get_field("final_value").db_type(connection),
             meta.get_field("error").db_type(connection),
             meta.get_field("completed_at").db_type(connection)]
    first = "(" + ", ".join(f"CAST(%s AS {kind})" for kind in types) + ")"
    rows = ", ".join([first] + ["(" + ", ".join(["%s"] * len(types)) + ")"] * (count - 1))
    table = q(meta.db_table)
    return (
        f"UPDATE {table} SET {q(col('status'))} = v.status, {q(col('last_seq'))} = v.last_seq, "
        f"{q(col('final_value'))} = v.final_value, {q(col('error'))} = v.error, "
        f"{q(col('lease_owner'))} = '', {q(col('lease_expires_at'))} = NULL, "
        f"{q(col('revision'))} = {table}.{q(col('revision'))} + 1, "
        f"{q(col('completed_at'))} = v.completed_at "
        f"FROM (VALUES {rows}) AS v ({', '.join(FINISH_VALUES)}) "
        f"WHERE {table}.{q(meta.pk.column)} = v.pk "
        f"AND {table}.{q(col('status'))} = '{Status.RUNNING}' "
        f"AND {table}.{q(col('lease_owner'))} = v.owner "
        f"AND {table}.{q(col('attempts'))} = v.attempt "
        f"RETURNING v.i"
    )


def write_held(lease: Any, sql: str, params: list[Any], connection: Any) -> int:
    """``sql`` (ending in the fencing condition) for ``lease``; the rows it changed."""
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, db_pk(lease.model, lease.pk, connection), lease.owner,
                             lease.attempt])
        return cursor.rowcount


def refresh(task: StreamTask, alias: str) -> None:
    """``task.refresh_from_db()``, read with a statement written once per model."""
    model = type(task)
    if model._meta.parents:  # columns in more than one table: let the ORM join them
        task.refresh_from_db(using=alias)
        return
    fresh = list(model._default_manager.using(alias).raw(select_sql(model, alias), [task.pk]))
    if not fresh:
        raise model.DoesNotExist(f"{model.__name__} {task.pk} no longer exists")
    for column in model._meta.concrete_fields:
        setattr(task, column.attname, getattr(fresh[0], column.attname))
        if column.is_relation and column.is_cached(task):
            column.delete_cached_value(task)
    task._state.db = alias
    task._state.adding = False


@functools.cache
def select_sql(model: type[StreamTask], alias: str) -> str:
    q = functools.partial(quote, alias)
    return f"SELECT * FROM {q(model._meta.db_table)} WHERE {q(model._meta.pk.column)} = %s"
