"""A bare ASGI app for daphne that reports what ``streamapp.adapters.daphne`` reads from it.

Each WebSocket is accepted and told, as one JSON frame, whether the adapter found daphne's
transport behind ``send`` and what it reads there; a text frame from the client asks again.
"""

from __future__ import annotations

import json
from typing import Any

from streamapp.adapters.daphne import backlog_of, probe


def report(send: Any) -> str:
    backlog = backlog_of(send)
    if backlog is None:
        return json.dumps({"backlog": False, "missing": probe()})
    return json.dumps({
        "backlog": True, "open": backlog.open(), "closed": backlog.closed,
        "held": backlog.held(), "unsent": backlog.unsent(), "missing": probe(),
    })


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "websocket":
        return
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": report(send)})
        elif message["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": report(send)})
        else:
            return
