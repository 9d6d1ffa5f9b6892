"""TaskEvent: the table of the event log (``streamapp.models`` re-exports it for Django)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class TaskEvent(models.Model):
    """One logged event: the frame exactly as sent live, kept for replay.

    Fields: ``task_key`` (``app_label.model.pk``), ``seq`` (1, 2, 3 … per task), ``name`` (the
    event's name, as given to ``send_event``), ``frame`` (the JSON text of the ``event`` frame,
    byte for byte as clients receive it), ``created_at`` (when it was emitted).
    """

    task_key = models.CharField(max_length=100)
    seq = models.PositiveBigIntegerField()
    name = models.CharField(max_length=100)
    frame = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        app_label = "streamapp"
        constraints = [
            models.UniqueConstraint(fields=["task_key", "seq"], name="streamapp_event_key_seq")
        ]
        ordering = ["task_key", "seq"]

    def __str__(self) -> str:
        return f"{self.task_key}#{self.seq} {self.name}"
