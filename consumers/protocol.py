"""Client → server frames of the wire protocol (DESIGN §3): parsed and checked, nothing else.

Every value a client controls is read by an explicit rule: a number is JSON's integer or a string
of ASCII digits (``str.isdigit`` also accepts "²" and "١", and ``int`` then fails or reads Arabic
digits), a key is a string that can be sent back as UTF-8. Anything else is a ProtocolError with a
message that says what was expected and what came; never another exception.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from streamapp.exceptions import ProtocolError

__all__ = ["ACTIONS", "Action", "ProtocolError", "parse", "parse_since", "since_from_query"]

ACTIONS = ("subscribe", "unsubscribe", "cancel", "ping")
MAX_SINCE = 2**53 - 1  # the largest integer a JavaScript client can hold exactly
SINCE_TEXT = re.compile(r"[0-9]{1,16}", re.ASCII)
MAX_KEY_CHARS = 200  # far above any real key (keys.KEY_PATTERN); longer ones are not echoed whole
SHOWN_CHARS = 40


@dataclass(frozen=True)
class Action:
    name: str
    task: str | None = None
    since: int | None = None


def is_utf8(text: str) -> bool:
    """Can ``text`` go out in a text frame? A lone surrogate ("\\ud800") cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``value`` quoted for an error message: short, and always sendable as UTF-8."""
    text = repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def kind(value: Any) -> str:
    """A JSON value's kind, as a client would name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def parse_since(value: Any) -> int | None:
    """A ``since`` value: absent, or a whole number from 0 up (JSON number or ASCII digits)."""
    if value is None:
        return None
    if isinstance(value, str):
        if SINCE_TEXT.fullmatch(value) is None:
            raise ProtocolError(
                "bad_request",
                f"since must be a whole number >= 0 in ASCII digits, got {shown(value)}",
            )
        value = int(value)
    elif isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            "bad_request", f"since must be a whole number >= 0, got {kind(value)}: {shown(value)}"
        )
    if not 0 <= value <= MAX_SINCE:
        raise ProtocolError(
            "bad_request", f"since must be between 0 and {MAX_SINCE}, got {shown(value)}"
        )
    return value


def parse_task(value: Any) -> str | None:
    """A ``task`` field: absent, or a key string (checked against the key rules later)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProtocolError("bad_request", f"task must be a string key, got {kind(value)}")
    if not is_utf8(value):
        # Error frames echo the key: a lone surrogate could not be sent back.
        raise ProtocolError("bad_request", "task must be valid Unicode text")
    return value


def frame_size(text: str) -> int:
    """Bytes ``text`` takes as UTF-8 (a lone surrogate counted as three, as surrogatepass does)."""
    return len(text.encode("utf-8", "surrogatepass"))


def parse(text: str | None, data: bytes | None, max_bytes: int) -> Action:
    """Turn one client frame into an Action, or raise ProtocolError saying what was wrong."""
    if text is None:
        raise ProtocolError("bad_request", "binary frames are not supported: send JSON text")
    if len(text) > max_bytes or frame_size(text) > max_bytes:
        raise ProtocolError("too_large", f"frames are limited to {max_bytes} bytes")
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError and integers over Python's digit limit.
        raise ProtocolError("bad_request", "a frame must be JSON text") from None
    if not isinstance(frame, dict):
        raise ProtocolError("bad_request", f"a frame is a JSON object, got {kind(frame)}")
    name = frame.get("action")
    if not isinstance(name, str) or name not in ACTIONS:
        raise ProtocolError(
            "bad_request", f"unknown action {shown(name)}; expected one of {', '.join(ACTIONS)}"
        )
    task = parse_task(frame.get("task"))
    if name in ("subscribe", "unsubscribe") and task is None:
        raise ProtocolError("bad_request", f"{name} needs a task key")
    since = parse_since(frame.get("since")) if name == "subscribe" else None
    return Action(name=name, task=task, since=since)


def since_from_query(query_string: Any) -> int | None:
    """``?since=N`` from a WebSocket URL's raw query string (the last one wins)."""
    if not isinstance(query_string, (bytes, bytearray)):
        return None
    values = [
        part[6:] for part in bytes(query_string).split(b"&") if part.startswith(b"since=")
    ]
    if not values:
        return None
    return parse_since(values[-1].decode("latin-1"))
