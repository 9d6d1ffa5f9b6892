"""The server's side of the wire protocol (DESIGN §3): every frame it sends, error and close code.

Frames are built as dicts and encoded once; the client's side (actions it may send) is
``consumers/protocol.py``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import EventNotSerializable

PONG = '{"type":"pong"}'

# Error frame codes.
NOT_FOUND = "not_found"
FORBIDDEN = "forbidden"
BAD_REQUEST = "bad_request"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
HISTORY_TRUNCATED = "history_truncated"
SERVER_ERROR = "server_error"  # the server failed handling this socket: reconnect with since

# Close codes. The server accepts, sends the error frame that says why, then closes.
CLOSE_NORMAL = 1000  # the one-task endpoint, after the task's final state
CLOSE_TOO_LARGE = 1009
CLOSE_SERVER_ERROR = 1011  # after a server_error frame (4011 under daphne)
CLOSE_SERVICE_RESTART = 1012  # this server is going away: reconnect at once, elsewhere
CLOSE_BAD_REQUEST = 4400  # a socket that kept sending malformed frames
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_TOO_SLOW = 4408  # the client did not read for SLOW_CLIENT_SECONDS: reconnect with since
CLOSE_RATE_LIMITED = 4429
CLOSE_CODES = {
    FORBIDDEN: CLOSE_FORBIDDEN,
    NOT_FOUND: CLOSE_NOT_FOUND,
    TOO_LARGE: CLOSE_TOO_LARGE,
    RATE_LIMITED: CLOSE_RATE_LIMITED,
    BAD_REQUEST: CLOSE_BAD_REQUEST,
    SERVER_ERROR: CLOSE_SERVER_ERROR,
}


def server_close_code(code: int) -> int:
    """The code a server that allows only 1000 and 3000–4999 (daphne) sends for ``code``.

    1009 becomes 4009 and 1012 becomes 4012: the private-use twin, as DESIGN §3 says.
    """
    if code == CLOSE_NORMAL or 3000 <= code <= 4999:
        return code
    return 4000 + code % 1000


def encode(frame: dict[str, Any]) -> str:
    """Compact JSON text; Django's encoder so dates, decimals and UUIDs serialize."""
    try:
        return json.dumps(frame, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise EventNotSerializable(f"event data is not JSON-serializable: {exc}") from exc


def event(key: str, seq: int, name: str, data: Any, ts: datetime) -> dict[str, Any]:
    return {
        "type": "event",
        "task": key,
        "seq": seq,
        "event": name,
        "data": data,
        "ts": ts.isoformat(),
    }


def state(
    key: str, status: str, seq: int, final_value: Any = None, error: Any = None
) -> dict[str, Any]:
    return {
        "type": "state",
        "task": key,
        "status": status,
        "seq": seq,
        "final_value": final_value,
        "error": error,
    }


def error(code: str, message: str, task: str | None = None, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if task is not None:
        frame["task"] = task
    frame.update(extra)
    return frame
