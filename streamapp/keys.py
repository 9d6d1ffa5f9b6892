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

# Short and plain on purpose: group names must be ASCII and under 100 characters.
KEY_PATTERN = re.compile(
    r"([A-Za-z][A-Za-z0-9_]{0,19})\.([A-Za-z][A-Za-z0-9_]{0,29})\.([A-Za-z0-9_-]{1,40})"
)


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
        raise UnknownTask(f"malformed task key {key[:100]!r}")
    app_label, model_name, raw_pk = match.groups()
    model = stream_task_model(app_label.lower(), model_name.lower())
    try:
        pk = model._meta.pk.to_python(raw_pk)
    except ValidationError:
        raise UnknownTask(f"no task {key}") from None
    return model, pk


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
