"""``GET /tasks/``: the tasks a user may watch, newest first, filtered, paged by a cursor.

Costs one query per task model (its ``visible_to(user)`` narrowed by the filters and the cursor,
newest ``limit + 1`` rows) and one on the event log for the page's seqs, however many tasks
there are. Each row is still checked with ``can_subscribe``, the rule a subscription obeys.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Max, Q
from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import protocol
from .access import permits
from .eventlog.models import TaskEvent
from .exceptions import BadQuery, UnknownTask
from .keys import stream_task_model, stream_task_models
from .models import Status, StreamTask

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
PARAMETERS = ("status", "model", "created_after", "cursor", "limit")


@dataclass(frozen=True)
class Cursor:
    """The sort key of the last task of a page: the next page starts after it.

    Tasks are ordered by (created_at, model label, pk), newest first: a total order, so a page
    boundary never moves, whatever is created meanwhile (new tasks sort before every cursor).
    """

    created_at: datetime
    label: str
    pk: str

    @classmethod
    def after(cls, task: StreamTask) -> Cursor:
        return cls(task.created_at, task._meta.label_lower, str(task.pk))

    def encode(self) -> str:
        text = json.dumps([self.created_at.isoformat(), self.label, self.pk])
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            created, label, pk = json.loads(raw)
            when = parse_datetime(created)
        except (binascii.Error, ValueError, TypeError):
            raise BadQuery("cursor is not one this endpoint gave out: follow `next`") from None
        if when is None or not isinstance(label, str) or not isinstance(pk, str):
            raise BadQuery("cursor is not one this endpoint gave out: follow `next`")
        return cls(when, label, pk)

    def rows_after(self, model: type[StreamTask]) -> Q:
        """The rows of ``model`` that sort after this cursor."""
        label = model._meta.label_lower
        if label < self.label:
            return Q(created_at__lte=self.created_at)
        if label > self.label:
            return Q(created_at__lt=self.created_at)
        try:
            pk = model._meta.pk.to_python(self.pk)
        except ValidationError:
            raise BadQuery("cursor is not one this endpoint gave out: follow `next`") from None
        return Q(created_at__lt=self.created_at) | Q(created_at=self.created_at, pk__lt=pk)


@dataclass(frozen=True)
class TaskQuery:
    """What ``GET /tasks/`` was asked for, checked."""

    models: tuple[type[StreamTask], ...]
    statuses: tuple[str, ...] = ()
    created_after: datetime | None = None
    cursor: Cursor | None = None
    limit: int = DEFAULT_LIMIT


def _values(params: QueryDict, name: str) -> list[str]:
    """Every value of a repeatable parameter: ``?status=a&status=b`` or ``?status=a,b``."""
    return [part.strip() for value in params.getlist(name) for part in value.split(",")
            if part.strip()]


def _single(params: QueryDict, name: str) -> str | None:
    values = params.getlist(name)
    if len(values) > 1:
        raise BadQuery(f"{name} may be given once, got {len(values)} values")
    return values[0] if values else None


def parse_query(params: QueryDict) -> TaskQuery:
    """Check the query string; BadQuery says what was wrong and what was expected."""
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise BadQuery(f"unknown parameter {unknown[0][:40]!r}; expected {', '.join(PARAMETERS)}")
    statuses = _values(params, "status")
    for status in statuses:
        if status not in Status.values:
            raise BadQuery(f"unknown status {status[:40]!r}; expected {', '.join(Status.values)}")
    models = tuple(_model(label) for label in _values(params, "model"))
    created_after = _moment(_single(params, "created_after"))
    cursor = _single(params, "cursor")
    return TaskQuery(
        models=models or tuple(stream_task_models()),
        statuses=tuple(statuses),
        created_after=created_after,
        cursor=Cursor.decode(cursor) if cursor is not None else None,
        limit=_limit(_single(params, "limit")),
    )


def _model(label: str) -> type[StreamTask]:
    app_label, _, name = label.partition(".")
    try:
        return stream_task_model(app_label, name)
    except UnknownTask:
        known = ", ".join(sorted(m._meta.label_lower for m in stream_task_models()))
        raise BadQuery(f"no task model {label[:60]!r}; expected one of {known}") from None


def _moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = parse_datetime(text)
    except ValueError:
        when = None
    if when is None:
        raise BadQuery(
            f"created_after must be an ISO 8601 date and time like 2026-01-31T12:00:00Z, "
            f"got {text[:40]!r}"
        )
    return when if timezone.is_aware(when) else timezone.make_aware(when)


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isdigit() and 1 <= int(text) <= MAX_LIMIT):
        raise BadQuery(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {text[:20]!r}")
    return int(text)


def list_tasks(user: Any, query: TaskQuery) -> tuple[list[dict[str, Any]], Cursor | None]:
    """One page of the tasks ``user`` may watch, and the cursor of the next page (or None).

    Blocking: call it in a thread. A page holds fewer than ``limit`` tasks when a model's
    ``can_subscribe`` refuses rows its ``visible_to`` let through; ``next`` still goes on.
    """
    candidates: list[StreamTask] = []
    for model in query.models:
        rows = model.visible_to(user)
        if query.statuses:
            rows = rows.filter(status__in=query.statuses)
        if query.created_after is not None:
            rows = rows.filter(created_at__gt=query.created_after)
        if query.cursor is not None:
            rows = rows.filter(query.cursor.rows_after(model))
        candidates.extend(rows.order_by("-created_at", "-pk")[: query.limit + 1])
    candidates.sort(key=lambda task: (task.created_at, task._meta.label_lower, task.pk),
                    reverse=True)
    page = candidates[: query.limit]
    following = Cursor.after(page[-1]) if len(candidates) > query.limit else None
    watchable = [task for task in page if permits(task.can_subscribe, user)]
    return _listed(watchable), following


def _listed(tasks: list[StreamTask]) -> list[dict[str, Any]]:
    """Each task's ``state`` frame, with its model's verbose name and its creation time."""
    tops = dict(
        TaskEvent.objects.filter(task_key__in=[task.task_key for task in tasks])
        .order_by()
        .values_list("task_key")
        .annotate(top=Max("seq"))
    )
    listed = []
    for task in tasks:
        seq = max(task.last_seq, tops.get(task.task_key, 0))
        frame = protocol.state(task.task_key, task.status, seq, task.final_value, task.error)
        listed.append({**frame, "model": str(task._meta.verbose_name),
                       "created_at": task.created_at.isoformat()})
    return listed
