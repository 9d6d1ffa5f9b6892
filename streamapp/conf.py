"""The ``STREAMAPP`` settings dict, with defaults, read lazily and reset on ``setting_changed``."""

from __future__ import annotations

from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # A subscriber to a pending task starts it (the SSE design did this).
    "AUTO_START": True,
    # This process executes tasks. Web processes of a split deployment set it False.
    "RUN_TASKS": True,
    # Lease: a running task's owner renews it every HEARTBEAT seconds; a lease not renewed
    # for LEASE seconds means its worker died.
    "LEASE_SECONDS": 30.0,
    "HEARTBEAT_SECONDS": 10.0,
    "SWEEP_SECONDS": 5.0,
    # Default per-task timeout in seconds (None: no limit); a model's ``timeout`` wins.
    "DEFAULT_TIMEOUT": None,
    # How long shutdown waits for running tasks before it cancels them.
    "SHUTDOWN_TIMEOUT": 10.0,
    # Largest encoded event frame send_event accepts.
    "MAX_EVENT_BYTES": 16 * 1024 * 1024,
    # Event log retention: events kept per task, and seconds kept after the task ends (None:
    # forever). A model's ``event_retention`` / ``event_retention_seconds`` win.
    "EVENT_RETENTION": 10_000,
    "EVENT_RETENTION_SECONDS": 7 * 24 * 3600,
    # How often a running coordinator deletes the events of tasks past their retention time
    # (None: never; call streamapp.retention.purge_expired_events yourself).
    "PURGE_SECONDS": 3600.0,
    # Events buffered by a running task before send_event waits for the log writer.
    "EVENT_BUFFER": 1000,
    # Largest client frame the consumer reads, in bytes.
    "MAX_CLIENT_FRAME_BYTES": 64 * 1024,
    # Subscriptions one multiplexed socket may hold.
    "MAX_SUBSCRIPTIONS": 100,
    # A quiet subscription re-reads its task's position this often (seconds).
    "CONVERGE_SECONDS": 5.0,
    # Bytes the server may hold in memory for one socket before new events wait in the log
    # for it; a socket held over this for SLOW_CLIENT_SECONDS is closed with 4408.
    "SEND_BUFFER_BYTES": 512 * 1024,
    "SLOW_CLIENT_SECONDS": 30.0,
    # Anyone, signed in or not, may watch and cancel every task (the demo settings turn it on).
    "OPEN_ACCESS": False,
}


class StreamAppSettings:
    """Attribute access to STREAMAPP settings; values are read on first use and cached."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown STREAMAPP setting {name!r}")
        if name not in self._cache:
            user = getattr(django_settings, "STREAMAPP", {}) or {}
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


app_settings = StreamAppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "STREAMAPP":
        app_settings.reload()


setting_changed.connect(_reload)
