"""Task keys (``app_label.model.pk``): formatting, parsing, and resolving to StreamTask rows.

Only concrete StreamTask subclasses resolve: a key never reaches any other model's table.
"""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError

from .exceptions import UnknownTask
from .models import StreamTask, is_stream_task_model

# Short and plain on purpose: group names must be ASCII and under 100 characters. re.ASCII keeps
# every class to ASCII whatever a later edit adds (\w would take "é" and "١").
APP_LABEL = r"[A-Za-z][A-Za-z0-9_]{0,19}"
MODEL_NAME = r"[A-Za-z][A-Za-z0-9_]{0,29}"
PK_TEXT = r"[A-Za-z0-9_-]{1,40}"
KEY_PATTERN = re.compile(rf"({APP_LABEL})\.({MODEL_NAME})\.({PK_TEXT})", re.ASCII)
PARTS = {
    "app label": re.compile(APP_LABEL, re.ASCII),
    "model": re.compile(MODEL_NAME, re.ASCII),
    "pk": re.compile(PK_TEXT, re.ASCII),
}
SHOWN_CHARS = 100


def shown(value: str) -> str:
    """Client text quoted in a message: at most SHOWN_CHARS, always sendable as UTF-8."""
    return repr(value[:SHOWN_CHARS]).encode("utf-8", "backslashreplace").decode("utf-8")


def task_key(task: StreamTask) -> str:
    return task.task_key


def stream_task_model(app_label: str, model_name: str) -> type[StreamTask]:
    """The StreamTask model named ``app_label.model_name`` (case-insensitive), else UnknownTask."""
    try:
        model = apps.get_app_config(app_label.lower()).get_model(model_name.lower())
    except LookupError:
        raise UnknownTask(f"no task model {app_label}.{model_name}") from None
    if not is_stream_task_model(model):
        raise UnknownTask(f"no task model {app_label}.{model_name}")
    return model


def split_key(key: Any) -> tuple[type[StreamTask], Any]:
    """Parse a key into its model and a validated primary key value, without touching the DB."""
    if not isinstance(key, str):
        raise UnknownTask("a task key is a string like 'app_label.model.pk'")
    match = KEY_PATTERN.fullmatch(key)
    if match is None:
        raise UnknownTask(f"malformed task key {shown(key)}")
    app_label, model_name, raw_pk = match.groups()
    model = stream_task_model(app_label.lower(), model_name.lower())
    try:
        pk = model._meta.pk.to_python(raw_pk)
    except (ValidationError, TypeError, ValueError):
        raise UnknownTask(f"no task {key}") from None
    return model, pk


def route_key(app_label: Any, model_name: Any, pk: Any) -> str:
    """The key of ``ws/tasks/<app_label>/<model>/<pk>/`` (or its HTTP twin), checked like any key.

    The URL's parts come percent-decoded, so they may hold anything: each must fit its part of
    KEY_PATTERN before a model is looked up.
    """
    for (part, pattern), value in zip(PARTS.items(), (app_label, model_name, pk), strict=True):
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            raise UnknownTask(f"malformed {part} {shown(str(value))} in the task's path")
    model, pk_value = split_key(f"{app_label}.{model_name}.{pk}")
    return canonical_key(model, pk_value)


def canonical_key(model: type[StreamTask], pk: Any) -> str:
    return f"{model._meta.app_label}.{model._meta.model_name}.{pk}"


async def aget_task(key: str) -> StreamTask:
    """The task row named by ``key``; UnknownTask when the model or the row does not exist."""
    model, pk = split_key(key)
    try:
        return await model.objects.aget(pk=pk)
    except model.DoesNotExist:
        raise UnknownTask(f"no task {canonical_key(model, pk)}") from None


def get_task(key: str) -> StreamTask:
    model, pk = split_key(key)
    try:
        return model.objects.get(pk=pk)
    except model.DoesNotExist:
        raise UnknownTask(f"no task {canonical_key(model, pk)}") from None


def stream_task_models() -> list[type[StreamTask]]:
    return [m for m in apps.get_models() if is_stream_task_model(m)]


def stream_task_tables() -> dict[type[StreamTask], list[type[StreamTask]]]:
    """Each task table's concrete model, with every model that reads its rows (it, its proxies).

    A row is one task whichever model reads it, so what walks the rows (workers, the sweeper,
    cleanup) walks each table once, through its concrete model.
    """
    tables: dict[type[StreamTask], list[type[StreamTask]]] = {}
    for model in stream_task_models():
        tables.setdefault(model._meta.concrete_model, []).append(model)
    return tables
