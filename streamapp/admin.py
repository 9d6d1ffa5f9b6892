"""Django admin for StreamTask models: status filters, search by key, the event log, actions.

Every StreamTask model the project did not register itself is registered with
``StreamTaskAdmin`` (STREAMAPP["ADMIN_AUTO_REGISTER"]); a project's own ModelAdmin gets the same
features from ``StreamTaskAdminMixin``. The actions go through the coordinator, never by writing
the task's state; they need an ASGI server (daphne), whose event loop keeps a started task
running after the request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.apps import AdminConfig
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from .conf import app_settings
from .coordinator import coordinator
from .eventlog import store
from .exceptions import UnknownTask
from .keys import split_key, stream_task_models
from .models import StreamTask
from .ops.listing import duration_text
from .runner.leases import RUNNER_FIELDS

DATA_PREVIEW_CHARS = 300


def _preview(frame: str) -> str:
    text = json.dumps(json.loads(frame).get("data"), ensure_ascii=False)
    return text if len(text) <= DATA_PREVIEW_CHARS else text[:DATA_PREVIEW_CHARS] + "…"


async def _each(
    tasks: list[StreamTask], operation: Callable[[StreamTask], Awaitable[bool]]
) -> tuple[list[str], list[str]]:
    """Keys of the tasks ``operation`` said yes to, and of the rest."""
    done, skipped = [], []
    for task in tasks:
        (done if await operation(task) else skipped).append(task.task_key)
    return done, skipped


class StreamTaskAdminMixin:
    """Mix into a ModelAdmin of a StreamTask model; attributes the subclass sets win."""

    event_log_limit = 50
    list_display = ("task_key", "status", "created_at", "started_at", "duration", "attempts",
                    "error_type")
    list_filter = ("status", "created_at")
    actions = ("cancel_tasks", "run_tasks_again")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """The runner owns the lifecycle columns: shown, never edited here."""
        own = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*own, "created_at", *RUNNER_FIELDS, "event_log"]

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        """The model's own text fields, the error and the worker; and (below) the task key."""
        declared = list(super().get_search_fields(request))  # type: ignore[misc]
        if declared:
            return declared
        text_fields = [
            field.name for field in self.model._meta.get_fields()  # type: ignore[attr-defined]
            if isinstance(field, (models.CharField, models.TextField))
            and field.name not in RUNNER_FIELDS
        ]
        return ["lease_owner", "error", *text_fields]

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str):
        results, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        pk = self._pk_named_by(search_term.strip())
        if pk is not None:
            results = results | queryset.filter(pk=pk)
        return results, may_have_duplicates

    def _pk_named_by(self, term: str) -> Any:
        """The pk a search term names: a task key of this model, or a bare pk."""
        model = self.model  # type: ignore[attr-defined]
        try:
            if "." in term:
                key_model, pk = split_key(term)
                return pk if key_model is model else None
            return model._meta.pk.to_python(term) if term else None
        except (UnknownTask, ValidationError):
            return None

    # -- columns ----------------------------------------------------------------------------

    @admin.display(description="key")
    def task_key(self, obj: StreamTask) -> str:
        return obj.task_key

    @admin.display(description="duration")
    def duration(self, obj: StreamTask) -> str:
        return duration_text(obj)

    @admin.display(description="error")
    def error_type(self, obj: StreamTask) -> str:
        return (obj.error or {}).get("type", "")

    @admin.display(description="event log")
    def event_log(self, obj: StreamTask) -> str:
        """The latest events, newest first: TaskEvent is keyed by task key, not a foreign key."""
        if obj is None or obj.pk is None:
            return "–"
        events = store.recent(obj.task_key, self.event_log_limit)
        if not events:
            return "no events logged"
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            ((e.seq, e.created_at.isoformat(timespec="milliseconds"), e.name, _preview(e.frame))
             for e in events),
        )
        return format_html(
            '<p>The latest {} events, newest first.</p><table class="streamapp-event-log">'
            "<thead><tr><th>seq</th><th>time</th><th>event</th><th>data</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            len(events), rows,
        )

    # -- actions ----------------------------------------------------------------------------

    @admin.action(description="Cancel selected tasks", permissions=["change"])
    def cancel_tasks(self, request: HttpRequest, queryset: QuerySet) -> None:
        selected = list(queryset)
        tasks = [task for task in selected if task.can_cancel(request.user)]
        denied = len(selected) - len(tasks)
        reason = f"cancelled by {request.user.get_username()} in the admin"
        done, skipped = async_to_sync(_each)(
            tasks, lambda task: coordinator.cancel_task(task, reason=reason)
        )
        self._report(request, "Cancelled", done, "had already ended", skipped)
        if denied:
            self.message_user(  # type: ignore[attr-defined]
                request, f"You may not cancel {denied} of the selected tasks.", messages.ERROR
            )

    @admin.action(description="Run selected tasks again", permissions=["change"])
    def run_tasks_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        done, skipped = async_to_sync(_each)(list(queryset), coordinator.start_task)
        self._report(request, "Started", done, "are running or completed", skipped)

    def _report(self, request: HttpRequest, verb: str, done: list[str], why: str,
                skipped: list[str]) -> None:
        if done:
            self.message_user(request, f"{verb}: {', '.join(done)}.")  # type: ignore[attr-defined]
        if skipped:
            self.message_user(  # type: ignore[attr-defined]
                request, f"Not {verb.lower()} ({why}): {', '.join(skipped)}.", messages.WARNING
            )


class StreamTaskAdmin(StreamTaskAdminMixin, admin.ModelAdmin):
    """What auto-registered StreamTask models get."""


def register_stream_task_models(site: admin.AdminSite | None = None) -> list[type[StreamTask]]:
    """Register every StreamTask model not registered yet; returns those it registered.

    Runs the admin's autodiscovery first so a project's own registrations win whatever the
    order of INSTALLED_APPS. Projects on SimpleAdminConfig register explicitly: left alone.
    """
    if not app_settings.ADMIN_AUTO_REGISTER:
        return []
    if not isinstance(apps.get_app_config("admin"), AdminConfig):
        return []
    admin.autodiscover()
    site = site or admin.site
    registered = []
    for model in stream_task_models():
        if not site.is_registered(model):
            site.register(model, StreamTaskAdmin)
            registered.append(model)
    return registered
