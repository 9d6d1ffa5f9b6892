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
    # Event log retention: events kept per task, and seconds kept after the task ends.
    "EVENT_RETENTION": 10_000,
    "EVENT_RETENTION_SECONDS": 7 * 24 * 3600,
    # Events buffered by a running task before send_event waits for the log writer.
    "EVENT_BUFFER": 1000,
    # Largest client frame the consumer reads, in bytes.
    "MAX_CLIENT_FRAME_BYTES": 64 * 1024,
    # Subscriptions one multiplexed socket may hold.
    "MAX_SUBSCRIPTIONS": 100,
    # A quiet subscription re-reads its task's position this often (seconds).
    "CONVERGE_SECONDS": 5.0,
    # Anyone, signed in or not, may watch and cancel every task (the demo settings turn it on).
    "OPEN_ACCESS": False,
    # -- security (README "Security") --
    # Dotted path of ``f(token) -> user`` for ``Authorization: Bearer`` / ``?token=``; it raises
    # InvalidToken (or returns None) to refuse. None turns token authentication off.
    "TOKEN_AUTHENTICATOR": "streamapp.tokens.authenticate_token",
    # Lifetime in seconds of tokens from streamapp.tokens.mint_token (the default authenticator).
    "TOKEN_MAX_AGE": 3600,
    # Rates are (count, seconds) or None for no limit. WebSocket handshakes per client address,
    # counted in the RATE_LIMIT_CACHE so that every process sharing it shares the count.
    "CONNECTION_RATE": (60, 60.0),
    # Frames per socket: a burst of ``count``, refilled at count/seconds per second, in-process.
    "MESSAGE_RATE": (100, 10.0),
    # Frames in a row refused for rate before the socket is closed with 4429.
    "MAX_REFUSED_FRAMES": 50,
    # Malformed frames (bad_request) one socket may send before it is closed with 4400.
    "MAX_BAD_FRAMES": 20,
    # The Django cache alias holding connection counts (make it Redis for many processes).
    "RATE_LIMIT_CACHE": "default",
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
