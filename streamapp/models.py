"""StreamTask, the abstract model users subclass (and TaskEvent, re-exported for Django).

Imports run one way: this module reaches the event stream and the signal mailbox of a running
task only through ``streamapp.context``, and never imports the runner.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.utils import timezone

from . import broadcast, context
from .conf import app_settings
from .eventlog.models import TaskEvent

__all__ = ["FINAL_STATUSES", "STARTABLE_STATUSES", "Status", "StreamTask", "TaskEvent"]


class Status(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})
# A task in one of these may be claimed by start_task: new, or finished without success.
STARTABLE_STATUSES = (Status.PENDING, Status.FAILED, Status.CANCELLED)

_SYNC_GENERATOR_DONE = object()


class StreamTaskQuerySet(models.QuerySet):
    def claimable(self) -> StreamTaskQuerySet:
        """Tasks waiting for a worker."""
        return self.filter(status=Status.PENDING)

    def expired(self, now: Any = None) -> StreamTaskQuerySet:
        """Running tasks whose owner stopped renewing the lease."""
        return self.filter(status=Status.RUNNING, lease_expires_at__lt=now or timezone.now())


class StreamTask(models.Model):
    """A long-running task whose ``process()`` streams events to WebSocket subscribers.

    Only ``process()`` must be overridden. The runner owns the lifecycle columns and writes them
    with conditional UPDATEs, never ``save()``, so a user's own field changes are never lost.
    """

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    final_value = models.JSONField(null=True, blank=True, encoder=DjangoJSONEncoder)
    error = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Seq of the last event when the task last reached a final status (the log may be trimmed).
    last_seq = models.PositiveBigIntegerField(default=0)
    # Bumped on every status change; subscribers use it to drop stale state news.
    revision = models.PositiveIntegerField(default=0)
    lease_owner = models.CharField(max_length=64, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    # Per-model knobs; a subclass may override them as class attributes or fields.
    timeout: float | None = None  # seconds; None falls back to STREAMAPP["DEFAULT_TIMEOUT"]
    max_attempts: int = 1  # >1 lets the sweeper retry a task whose worker died
    event_retention: int | None = None  # events kept; None falls back to the setting
    # Seconds the events stay after the task ends; None falls back to the setting.
    event_retention_seconds: float | None = None

    objects = StreamTaskQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    # -- identity ---------------------------------------------------------------------------

    @property
    def task_key(self) -> str:
        """``<app_label>.<model_name>.<pk>``: the task's name on the wire and in the log."""
        return f"{self._meta.app_label}.{self._meta.model_name}.{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    def get_timeout(self) -> float | None:
        return self.timeout if self.timeout is not None else app_settings.DEFAULT_TIMEOUT

    def get_event_retention(self) -> int:
        if self.event_retention is not None:
            return self.event_retention
        return app_settings.EVENT_RETENTION

    @classmethod
    def get_event_retention_seconds(cls) -> float | None:
        """Seconds a finished task's events are kept; None keeps them for ever."""
        if cls.event_retention_seconds is not None:
            return cls.event_retention_seconds
        return app_settings.EVENT_RETENTION_SECONDS

    # -- the work ---------------------------------------------------------------------------

    async def process(self) -> Any:
        """Do the work, calling ``send_event``; the return value becomes ``final_value``."""
        raise NotImplementedError(f"{type(self).__name__} must define async process()")

    async def send_event(self, name: str, data: Any = None) -> int:
        """Log an event under the task's next seq and publish it; returns the seq.

        Raises EventTooLarge or EventNotSerializable before anything is logged.
        """
        return await context.send_event(self.task_key, name, data)

    async def process_generator(self, agen: AsyncIterator[Any]) -> Any:
        """Send each item of an async generator as a ``progress`` event; return the last."""
        last = None
        async for item in agen:
            await self.send_event("progress", item)
            last = item
        return last

    async def process_sync_generator(self, gen: Iterator[Any]) -> Any:
        """Like ``process_generator`` for a blocking generator, advanced in a worker thread."""
        advance = sync_to_async(next, thread_sensitive=False)
        last = None
        while (item := await advance(gen, _SYNC_GENERATOR_DONE)) is not _SYNC_GENERATOR_DONE:
            await self.send_event("progress", item)
            last = item
        return last

    # -- signals ----------------------------------------------------------------------------

    async def send_signal(self, name: str, data: Any = None) -> None:
        """Deliver a signal to this task's running ``process()``, in whatever process runs it."""
        message = {"type": "task.signal", "name": name, "data": data}
        await broadcast.send_control(self.task_key, message)

    async def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Inside ``process()``: wait for the signal ``name`` and return its data.

        Raises TimeoutError when ``timeout`` seconds pass first.
        """
        return await context.wait_signal(self.task_key, name, timeout)

    # -- hooks ------------------------------------------------------------------------------

    def can_subscribe(self, user: Any) -> bool:
        """May ``user`` watch this task? Default: any authenticated user."""
        if app_settings.OPEN_ACCESS:
            return True
        return bool(getattr(user, "is_authenticated", False))

    @classmethod
    def visible_to(cls, user: Any) -> models.QuerySet:
        """The tasks ``GET /tasks/`` lists for ``user``: narrow it the way ``can_subscribe`` does.

        A filter, so a listing costs one query however many tasks there are; each listed row is
        still checked with ``can_subscribe``. Default: all of them, or none for anonymous users
        (``can_subscribe``'s default rule).
        """
        if app_settings.OPEN_ACCESS or getattr(user, "is_authenticated", False):
            return cls._default_manager.all()
        return cls._default_manager.none()

    def can_cancel(self, user: Any) -> bool:
        """May ``user`` cancel this task? Default: staff, or the task's ``owner`` if it has one."""
        if app_settings.OPEN_ACCESS:
            return True
        if not getattr(user, "is_authenticated", False):
            return False
        if getattr(user, "is_staff", False):
            return True
        owner_id = getattr(self, "owner_id", None)
        return owner_id is not None and owner_id == user.pk

    async def on_failure(self, error: dict[str, str]) -> None:
        """Called in the runner after the task failed; ``error`` is what was recorded."""


def is_stream_task_model(model: Any) -> bool:
    return (
        inspect.isclass(model)
        and issubclass(model, StreamTask)
        and not model._meta.abstract
    )
