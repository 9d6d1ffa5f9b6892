"""Client → server frames of the wire protocol (DESIGN §3): parsed and checked, nothing else."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamapp.exceptions import ProtocolError

__all__ = ["ACTIONS", "Action", "ProtocolError", "parse", "parse_since"]

ACTIONS = ("subscribe", "unsubscribe", "cancel", "ping")
MAX_SINCE = 2**53 - 1  # the largest integer a JavaScript client can hold exactly




@dataclass(frozen=True)
class Action:
    name: str
    task: str | None = None
    since: int | None = None


def is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_since(value: Any) -> int | None:
    """A ``since`` value: absent, or a whole number from 0 up."""
    if value is None:
        return None
    if isinstance(value, str) and value.isdigit() and len(value) < 20:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("bad_request", f"since must be a whole number >= 0, got {value!r:.40}")
    if not 0 <= value <= MAX_SINCE:
        raise ProtocolError("bad_request", f"since must be between 0 and {MAX_SINCE}, got {value}")
    return value


def parse(text: str | None, data: bytes | None, max_bytes: int) -> Action:
    """Turn one client frame into an Action, or raise ProtocolError saying what was wrong."""
    if text is None:
        raise ProtocolError("bad_request", "binary frames are not supported: send JSON text")
    if len(text) > max_bytes or len(text.encode("utf-8")) > max_bytes:
        raise ProtocolError("too_large", f"frames are limited to {max_bytes} bytes")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_request", "a frame must be JSON text") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_request", f"a frame is a JSON object, got {type(frame).__name__}")
    name = frame.get("action")
    if name not in ACTIONS:
        raise ProtocolError(
            "bad_request", f"unknown action {name!r:.40}; expected one of {', '.join(ACTIONS)}"
        )
    task = frame.get("task")
    if task is not None and not isinstance(task, str):
        raise ProtocolError("bad_request", f"task must be a string key, got {type(task).__name__}")
    if task is not None and not is_utf8(task):
        # Error frames echo the key: a lone surrogate ("\\ud800") could not be sent as UTF-8.
        raise ProtocolError("bad_request", "task must be valid Unicode text")
    if name in ("subscribe", "unsubscribe") and task is None:
        raise ProtocolError("bad_request", f"{name} needs a task key")
    since = parse_since(frame.get("since")) if name == "subscribe" else None
    return Action(name=name, task=task, since=since)
