"""The baseline: the textbook Channels fan-out, as the Channels tutorial writes it.

Each socket's consumer joins a group; the producer calls ``group_send`` once per event; each
consumer ``send_json``-s the event to its socket. Nothing tuned, nothing bypassed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from channels.layers import get_channel_layer

from .wire import SHORT_EVENTS, event_frame, ticks

GROUP_PREFIX = "bench.b."


def group_name(group: str) -> str:
    return GROUP_PREFIX + group


class BaselineConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.group = group_name(self.scope["url_route"]["kwargs"]["group"])
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def bench_event(self, message: dict[str, Any]) -> None:
        await self.send_json(message["frame"])


async def produce(group: str, events: int, rate: float) -> None:
    layer = get_channel_layer()
    async for seq in ticks(events, rate):
        await layer.group_send(
            group_name(group), {"type": "bench.event", "frame": event_frame(group, seq)}
        )


async def short_task(number: int) -> bool:
    """A short job done the plain way: an asyncio task announcing its start, SHORT_EVENTS events
    and its end."""
    layer = get_channel_layer()
    group = group_name(f"short{number}")

    async def work() -> None:
        await layer.group_send(group, {"type": "bench.event", "frame": {"status": "running"}})
        async for seq in ticks(SHORT_EVENTS, 0):
            await layer.group_send(group, {"type": "bench.event", "frame": event_frame(group, seq)})
        await layer.group_send(group, {"type": "bench.event", "frame": {"status": "completed"}})

    await asyncio.create_task(work())
    return True
