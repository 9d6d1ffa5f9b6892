"""Security checks: a misconfigured security setting is found at start-up, not by a client."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from ..addresses import parse_networks, parse_trust
from ..conf import app_settings

RATES = ("CONNECTION_RATE", "ADDRESS_CONNECTION_RATE", "USER_CONNECTION_RATE", "MESSAGE_RATE",
         "REFUSAL_RATE")
SOCKET_CAPS = ("USER_SOCKETS", "ANONYMOUS_SOCKETS")
# Caches whose counts every process shares, without being Redis: the limits cannot use them.
SHARED_CACHES = ("memcached", "db.DatabaseCache", "filebased")

# daphne's --websocket-max-message-size default: autobahn drops the TCP connection of a larger
# message, so the client would never see our too_large frame.
DAPHNE_MAX_MESSAGE_BYTES = 1024 * 1024


def _is_rate(value: Any) -> bool:
    if value is None:
        return True
    return (
        isinstance(value, (tuple, list)) and len(value) == 2
        and isinstance(value[0], int) and not isinstance(value[0], bool) and value[0] > 0
        and isinstance(value[1], (int, float)) and value[1] > 0
    )


@checks.register(checks.Tags.security)
def check_security_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    path = app_settings.TOKEN_AUTHENTICATOR
    if path and isinstance(path, str):
        try:
            if not callable(import_string(path)):
                raise ImportError(f"{path} is not callable")
        except ImportError as exc:
            problems.append(checks.Error(
                f"STREAMAPP['TOKEN_AUTHENTICATOR'] cannot be used: {exc}",
                hint="Name a function f(token) -> user, or None to turn token auth off.",
                id="streamapp.E101",
            ))
    for name in RATES:
        if not _is_rate(getattr(app_settings, name)):
            problems.append(checks.Error(
                f"STREAMAPP[{name!r}] must be (count, seconds) with both above zero, or None",
                id="streamapp.E102",
            ))
    problems += _check_limits()
    frame_bytes = app_settings.MAX_CLIENT_FRAME_BYTES
    if isinstance(frame_bytes, int) and frame_bytes >= DAPHNE_MAX_MESSAGE_BYTES:
        problems.append(checks.Warning(
            "STREAMAPP['MAX_CLIENT_FRAME_BYTES'] is not below daphne's default message limit "
            f"({DAPHNE_MAX_MESSAGE_BYTES}): larger frames are dropped without a too_large frame",
            hint="Run daphne with a larger --websocket-max-message-size, or lower the setting.",
            id="streamapp.W102",
        ))
    if not isinstance(app_settings.RATE_LIMIT_CACHE, str) or (
        app_settings.RATE_LIMIT_CACHE not in settings.CACHES
    ):
        problems.append(checks.Error(
            f"STREAMAPP['RATE_LIMIT_CACHE'] names no cache: {app_settings.RATE_LIMIT_CACHE!r}",
            id="streamapp.E103",
        ))
    return problems


def _check_limits() -> list[checks.CheckMessage]:
    problems: list[checks.CheckMessage] = []
    for name in SOCKET_CAPS:
        value = getattr(app_settings, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            problems.append(checks.Error(
                f"STREAMAPP[{name!r}] must be a whole number above zero, or None (no cap)",
                id="streamapp.E104",
            ))
    revalidate = app_settings.REVALIDATE_SECONDS
    if isinstance(revalidate, bool) or not isinstance(revalidate, (int, float)) or revalidate <= 0:
        problems.append(checks.Error(
            f"STREAMAPP['REVALIDATE_SECONDS'] must be a number of seconds above zero, "
            f"got {revalidate!r}",
            id="streamapp.E105",
        ))
    try:
        parse_trust(app_settings.TRUSTED_PROXIES)
    except ValueError as exc:
        problems.append(checks.Error(
            f"STREAMAPP['TRUSTED_PROXIES'] cannot be used: {exc}",
            hint="None, the number of proxies in front, or a list of their addresses/networks.",
            id="streamapp.E106",
        ))
    addresses, token = app_settings.METRICS_ALLOWED_ADDRESSES, app_settings.METRICS_TOKEN
    if addresses is not None:
        try:
            parse_networks(addresses)
        except ValueError as exc:
            problems.append(checks.Error(
                f"STREAMAPP['METRICS_ALLOWED_ADDRESSES'] cannot be used: {exc}",
                id="streamapp.E107",
            ))
    if token is not None and (not isinstance(token, str) or len(token) < 16):
        problems.append(checks.Error(
            "STREAMAPP['METRICS_TOKEN'] must be a secret string of 16 characters or more",
            id="streamapp.E107",
        ))
    backend = settings.CACHES.get(app_settings.RATE_LIMIT_CACHE, {}).get("BACKEND", "")
    if any(name in backend for name in SHARED_CACHES):
        problems.append(checks.Warning(
            f"STREAMAPP['RATE_LIMIT_CACHE'] is {backend}: the handshake limits need Redis to "
            "share their counts, so each process counts on its own",
            hint="Point RATE_LIMIT_CACHE at a django.core.cache.backends.redis.RedisCache.",
            id="streamapp.W103",
        ))
    return problems


@checks.register(checks.Tags.security, deploy=True)
def check_metrics_access(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if app_settings.METRICS_ALLOWED_ADDRESSES is not None or app_settings.METRICS_TOKEN:
        return []
    return [checks.Warning(
        "/metrics is public: STREAMAPP['METRICS_ALLOWED_ADDRESSES'] and ['METRICS_TOKEN'] are "
        "both unset",
        hint="Set one of them, or make sure the reverse proxy does not serve /metrics.",
        id="streamapp.W104",
    )]


@checks.register(checks.Tags.security, deploy=True)
def check_open_access(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not app_settings.OPEN_ACCESS:
        return []
    return [checks.Warning(
        "STREAMAPP['OPEN_ACCESS'] lets anyone, signed in or not, watch and cancel every task",
        hint="Remove it in production; can_subscribe/can_cancel then decide.",
        id="streamapp.W101",
    )]
