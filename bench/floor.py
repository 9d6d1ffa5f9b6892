"""The transport floor: a bare ASGI app and a producer that encodes each event once and hands the
same text to every socket of its group. No channel layer, no consumer: what daphne alone pushes.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from .wire import event_frame, ticks

Send = Callable[[dict[str, Any]], Awaitable[None]]

# group name -> the ASGI send callables of its open sockets (this process only)
GROUPS: defaultdict[str, set[Send]] = defaultdict(set)


def group_of(path: str) -> str:
    """``/bench/floor/<group>/`` -> ``<group>``."""
    return path.strip("/").split("/")[-1]


async def application(scope: dict[str, Any], receive: Callable, send: Send) -> None:
    group = group_of(scope["path"])
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            GROUPS[group].add(send)
            await send({"type": "websocket.accept"})
        elif message["type"] == "websocket.disconnect":
            GROUPS[group].discard(send)
            if not GROUPS[group]:
                del GROUPS[group]
            return


async def produce(group: str, events: int, rate: float) -> None:
    async for seq in ticks(events, rate):
        text = json.dumps(event_frame(group, seq), separators=(",", ":"))
        message = {"type": "websocket.send", "text": text}
        for send in list(GROUPS.get(group, ())):
            await send(message)
