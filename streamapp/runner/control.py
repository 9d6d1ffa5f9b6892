"""Cancel and signal messages for the tasks this process runs, from any process.

The coordinator owns one control channel per event loop. A run joins its task's control group
before it claims the task (a cancel sent the moment another process sees it running must find
it) and leaves when it ends; the heartbeat re-joins so the membership outlives group_expiry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from .. import broadcast

logger = logging.getLogger("streamapp.runner")

Handler = Callable[[dict[str, Any]], None]


class ControlChannel:
    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self._channel: str | None = None

    async def open(self) -> asyncio.Task[None] | None:
        """Make the channel and start listening; returns the listener task (None: no layer)."""
        layer = get_channel_layer()
        if layer is None:
            return None
        # The default prefix matters: channels_redis serves every process-local channel from one
        # Redis list per prefix, and a second prefix would make receivers of the two lists take
        # turns holding its receive lock (seconds of delay).
        self._channel = await layer.new_channel()
        listen = broadcast.receive_forever(layer, self._channel, self._handle, "control channel")
        return asyncio.create_task(listen, name="control")

    def close(self) -> None:
        self._channel = None

    async def join(self, key: str) -> None:
        await self._membership("group_add", key)

    async def leave(self, key: str) -> None:
        await self._membership("group_discard", key)

    async def _membership(self, operation: str, key: str) -> None:
        layer = get_channel_layer()
        if layer is None or self._channel is None:
            return
        try:
            await getattr(layer, operation)(broadcast.control_group(key), self._channel)
        except Exception:  # cancel/signal news may be missed; the task itself goes on
            logger.warning("control %s failed key=%s", operation, key, exc_info=True,
                           extra={"task_key": key})
