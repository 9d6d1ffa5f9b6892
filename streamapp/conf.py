"""The ``STREAMAPP`` settings dict, with defaults, read lazily and reset on ``setting_changed``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings as django_settings
from django.core.signals import setting_changed

from .exceptions import StreamAppConfigurationError

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
    # How long shutdown waits for running tasks before it cancels them (keep it below the
    # grace period of whatever sends SIGTERM: docker and Kubernetes wait 10 s and 30 s).
    "SHUTDOWN_TIMEOUT": 10.0,
    # runtasks workers: tasks run at once per worker, and how often a worker looks for pending
    # tasks when no wake-up arrives through the channel layer (the fallback, not the path).
    "WORKER_CONCURRENCY": 10,
    "WORKER_POLL_SECONDS": 5.0,
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
    # Register every StreamTask model the project did not register itself in the Django admin.
    "ADMIN_AUTO_REGISTER": True,
    # -- security (docs/security.md) --
    # Dotted path of ``f(token) -> user`` for ``Authorization: Bearer`` / ``?token=``; it raises
    # InvalidToken (or returns None) to refuse. None turns token authentication off.
    "TOKEN_AUTHENTICATOR": "streamapp.tokens.authenticate_token",
    # Lifetime in seconds of tokens from streamapp.tokens.mint_token (the default authenticator).
    "TOKEN_MAX_AGE": 3600,
    # Open sockets re-check their user this often (seconds): one whose user was deactivated or
    # whose token expired is closed with 4403 within it. Subscribes and cancels check at once.
    "REVALIDATE_SECONDS": 30.0,
    # Reverse proxies in front that append to X-Forwarded-For: None (none: the peer is the
    # client), their number, or a list of their addresses/networks. The client is the address
    # the last trusted proxy saw. Replaces daphne's --proxy-headers (which takes the first entry).
    "TRUSTED_PROXIES": None,
    # Rates are (count, seconds): a bucket of ``count`` refilled at count/seconds per second;
    # None for no limit. Counted in the RATE_LIMIT_CACHE (Redis: shared by every process).
    # WebSocket handshakes per client before authentication (its address plus the credential it
    # presents; clients that present none share their address's), then per address for all.
    "CONNECTION_RATE": (60, 60.0),
    "ADDRESS_CONNECTION_RATE": (1000, 60.0),
    # Handshakes per signed-in user (any address, any credential), after authentication.
    "USER_CONNECTION_RATE": (30, 60.0),
    # Open sockets per signed-in user, and anonymous open sockets per address (None: no cap).
    "USER_SOCKETS": 30,
    "ANONYMOUS_SOCKETS": 200,
    # Frames per socket: a burst of ``count``, refilled at count/seconds per second, in-process.
    "MESSAGE_RATE": (100, 10.0),
    # Frames in a row refused for rate before the socket is closed with 4429.
    "MAX_REFUSED_FRAMES": 50,
    # Refused subscribes and cancels (forbidden, not_found, rate_limited) per socket, as a rate
    # (each granted one pays one back); over it the socket is closed with 4429.
    "REFUSAL_RATE": (10, 60.0),
    # Malformed frames (bad_request) one socket may send before it is closed with 4400.
    "MAX_BAD_FRAMES": 20,
    # The Django cache alias holding connection counts (make it Redis for many processes).
    "RATE_LIMIT_CACHE": "default",
    # Who may read /metrics and /ready's reasons: addresses/networks, and/or a bearer token.
    # Both None: anyone may read /metrics, and /ready tells no one its reasons.
    "METRICS_ALLOWED_ADDRESSES": None,
    "METRICS_TOKEN": None,
}


class StreamAppSettings:
    """Attribute access to STREAMAPP settings; values are read on first use and cached."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"unknown STREAMAPP setting {name!r}")
        if name not in self._cache:
            user = getattr(django_settings, "STREAMAPP", None)
            if not isinstance(user, dict):
                user = {}  # anything else is streamapp.E030 (checks/settings.py)
            self._cache[name] = user.get(name, DEFAULTS[name])
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


app_settings = StreamAppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == "STREAMAPP":
        app_settings.reload()


setting_changed.connect(_reload)

ENV_PREFIX = "STREAMAPP_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


# Settings whose environment form is a comma-separated list (or, for TRUSTED_PROXIES, a count).
LIST_SETTINGS = {"TRUSTED_PROXIES", "METRICS_ALLOWED_ADDRESSES"}
TEXT_SETTINGS = {"METRICS_TOKEN"}
NULLABLE_COUNTS = {"USER_SOCKETS", "ANONYMOUS_SOCKETS"}


def _parse(name: str, raw: str) -> Any:
    default = DEFAULTS[name]
    text = raw.strip().lower()
    if name in TEXT_SETTINGS:
        return raw.strip() or None
    if name in NULLABLE_COUNTS and text in {"", "none"}:
        return None
    if name in LIST_SETTINGS or isinstance(default, tuple):
        if text in {"", "none"}:
            return None
        if isinstance(default, tuple):  # a rate: "count/seconds" (or "(count, seconds)")
            count, _, seconds = text.strip("()").replace(",", "/").partition("/")
            return (int(count), float(seconds))
        if text.isascii() and text.isdigit():
            return int(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(default, bool):
        if text in _TRUE | _FALSE:
            return text in _TRUE
        raise ValueError("expected 1/0, true/false, yes/no or on/off")
    if isinstance(default, int):
        return int(text)
    if default is None and text in {"", "none"}:
        return None
    return float(text)


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """STREAMAPP values given as ``STREAMAPP_<NAME>`` environment variables, parsed.

    For settings modules: one settings file can then serve web processes and workers, and
    tests can hand short leases to their subprocesses.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name in DEFAULTS:
        raw = environ.get(ENV_PREFIX + name)
        if raw is None:
            continue
        try:
            values[name] = _parse(name, raw)
        except ValueError as exc:
            raise StreamAppConfigurationError(f"{ENV_PREFIX}{name}={raw!r}: {exc}") from exc
    return values
