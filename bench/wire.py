"""What every producer shares: the pacing of events and the event frame floor and baseline send.

The floor and baseline frames have the shape of a streamapp event frame, so the load generator
reads all three alike: ``seq`` for loss and order, ``data.t`` (``time.time()`` when the event was
created) for latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

EVENT_NAME = "tick"
SHORT_EVENTS = 5  # a short task's events, from its start to its end


def event_data() -> dict[str, float]:
    """An event's payload: its creation time, for the client's latency."""
    return {"t": time.time()}


def event_frame(group: str, seq: int) -> dict[str, Any]:
    data = event_data()
    return {
        "type": "event",
        "task": group,
        "seq": seq,
        "event": EVENT_NAME,
        "data": data,
        "ts": datetime.fromtimestamp(data["t"], UTC).isoformat(),
    }


async def ticks(count: int, rate: float) -> AsyncIterator[int]:
    """Seq numbers 1..count: ``rate`` per second on a fixed schedule, or as fast as possible.

    At full speed a producer still yields to the event loop once per event, as any producer
    doing real work would; every target gets exactly the same pacing.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    for seq in range(1, count + 1):
        if rate > 0:
            await asyncio.sleep(max(start + (seq - 1) / rate - loop.time(), 0))
        else:
            await asyncio.sleep(0)
        yield seq
