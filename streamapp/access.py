"""Asking a task's permission hooks, the same way for sockets and for HTTP."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async

from .models import StreamTask

logger = logging.getLogger("streamapp.access")

# Hooks known to read nothing but settings and the loaded user.
DEFAULT_HOOKS = frozenset({StreamTask.can_subscribe, StreamTask.can_cancel})


def permits(check: Callable[[Any], Any], user: Any) -> bool:
    """Run a permission hook here (it may query the database); a hook that raises denies."""
    try:
        return bool(check(user))
    except Exception:  # noqa: BLE001 - fail closed, loudly: a broken hook must not grant access
        logger.exception("permission hook raised; access denied hook=%s", check)
        return False


async def allowed(check: Callable[[Any], Any], user: Any) -> bool:
    """``permits`` in a thread, for async callers.

    StreamTask's own hooks read only settings and the user already loaded: they run inline,
    without a thread hop (a connect storm would queue on Django's one database thread).
    """
    if getattr(check, "__func__", None) in DEFAULT_HOOKS:
        return permits(check, user)
    return await sync_to_async(permits)(check, user)


def denial(message: str, token_problem: str | None) -> str:
    """An access-denied message that names a refused token, so the client learns why."""
    return f"{message} (token refused: {token_problem})" if token_problem else message
