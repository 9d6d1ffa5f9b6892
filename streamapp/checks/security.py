"""Security checks: a misconfigured security setting is found at start-up, not by a client."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from ..conf import app_settings

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
    for name in ("CONNECTION_RATE", "MESSAGE_RATE"):
        if not _is_rate(getattr(app_settings, name)):
            problems.append(checks.Error(
                f"STREAMAPP[{name!r}] must be (count, seconds) with both above zero, or None",
                id="streamapp.E102",
            ))
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


@checks.register(checks.Tags.security, deploy=True)
def check_open_access(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    if not app_settings.OPEN_ACCESS:
        return []
    return [checks.Warning(
        "STREAMAPP['OPEN_ACCESS'] lets anyone, signed in or not, watch and cancel every task",
        hint="Remove it in production; can_subscribe/can_cancel then decide.",
        id="streamapp.W101",
    )]
