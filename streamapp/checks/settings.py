"""The STREAMAPP dict itself: unknown keys (with the closest valid name), wrong types, bad ranges.

Types follow each default in ``streamapp.conf.DEFAULTS`` (a bool stays a bool, an int an int,
a float any number), so a setting added there is checked with no change here; ``OPTIONAL``
names the ones that also take None, ``ZERO_OK`` the numbers that may be 0. Rates and the
token authenticator are checked with the security settings (checks/security.py).
"""

from __future__ import annotations

import difflib
from typing import Any

from django.conf import settings
from django.core import checks

from ..conf import DEFAULTS

OPTIONAL = {
    "DEFAULT_TIMEOUT", "EVENT_RETENTION", "EVENT_RETENTION_SECONDS", "PURGE_SECONDS",
    "TOKEN_AUTHENTICATOR", "CONNECTION_RATE", "MESSAGE_RATE",
    "ADDRESS_CONNECTION_RATE", "USER_CONNECTION_RATE", "REFUSAL_RATE", "USER_SOCKETS",
    "ANONYMOUS_SOCKETS",
}
ZERO_OK = {"SHUTDOWN_TIMEOUT"}
# checks/security.py: rates as (count, seconds), socket caps, proxies, metrics access.
CHECKED_ELSEWHERE = {
    "CONNECTION_RATE", "MESSAGE_RATE", "ADDRESS_CONNECTION_RATE", "USER_CONNECTION_RATE",
    "REFUSAL_RATE", "USER_SOCKETS", "ANONYMOUS_SOCKETS", "REVALIDATE_SECONDS",
    "TRUSTED_PROXIES", "METRICS_ALLOWED_ADDRESSES", "METRICS_TOKEN",
}
NUMBER_TYPES = (int, float)
# Settings whose default is None say nothing of their type.
TYPES_OF_NONE_DEFAULTS = {"DEFAULT_TIMEOUT": NUMBER_TYPES}


def expected_type(name: str) -> tuple[type, ...] | None:
    """The types ``name`` takes, from its default (None: anything)."""
    default = DEFAULTS[name]
    if default is None:
        return TYPES_OF_NONE_DEFAULTS.get(name)
    if isinstance(default, bool):
        return (bool,)
    if isinstance(default, int):
        return (int,)
    if isinstance(default, float):
        return NUMBER_TYPES
    if isinstance(default, str):
        return (str,)
    return None


def describe(types: tuple[type, ...]) -> str:
    if types == NUMBER_TYPES:
        return "a number"
    return {bool: "True or False", int: "an integer", str: "a string"}[types[0]]


def problem_with(name: str, value: Any) -> str | None:
    """Why ``value`` cannot be STREAMAPP[name], or None."""
    if value is None:
        return None if name in OPTIONAL or DEFAULTS[name] is None else "must not be None"
    types = expected_type(name)
    if types is None or name in CHECKED_ELSEWHERE:
        return None
    if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
        return f"must be {describe(types)}{' or None' if name in OPTIONAL else ''}, " \
               f"not {type(value).__name__} {value!r}"
    if types != (bool,) and types != (str,):
        if value < 0 or (value == 0 and name not in ZERO_OK):
            return f"must be {'zero or more' if name in ZERO_OK else 'above zero'}, not {value!r}"
    return None


@checks.register()
def check_streamapp_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    user = getattr(settings, "STREAMAPP", None)
    if user is None:
        return []
    if not isinstance(user, dict):
        return [checks.Error(
            f"STREAMAPP must be a dict of settings, not {type(user).__name__}",
            hint="STREAMAPP = {\"LEASE_SECONDS\": 30} (every key is optional).",
            id="streamapp.E030",
        )]
    problems: list[checks.CheckMessage] = []
    for name, value in user.items():
        if name not in DEFAULTS:
            close = difflib.get_close_matches(str(name), DEFAULTS, n=1)
            problems.append(checks.Error(
                f"STREAMAPP has an unknown key {name!r}"
                + (f": did you mean {close[0]!r}?" if close else ""),
                hint="The valid keys and their defaults are in streamapp/conf.py (README).",
                id="streamapp.E031",
            ))
            continue
        why = problem_with(name, value)
        if why is not None:
            problems.append(checks.Error(
                f"STREAMAPP[{name!r}] {why} (default: {DEFAULTS[name]!r})",
                id="streamapp.E032",
            ))
    return problems
