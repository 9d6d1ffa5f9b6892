"""Server → client frames of the wire protocol (DESIGN §3), built as dicts and encoded once."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import EventNotSerializable

PONG = '{"type":"pong"}'


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
