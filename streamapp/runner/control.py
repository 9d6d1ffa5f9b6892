"""Cancel and signal messages for the tasks this process runs, from any process.

The coordinator owns one control channel per event loop. A run joins its task's control group
before it claims the task (a cancel sent the moment another process sees it running must find
it) and leaves when it ends; the heartbeat re-joins so the membership outlives group_expiry.
When the listener finds the layer away, every membership is made again as soon as it answers
(a restarted Redis forgot them), not only at the next heartbeat.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from .. import broadcast, outages

Handler = Callable[[dict[str, Any]], None]


REJOIN_SECONDS = (0.05, 0.1, 0.2, 0.5)  # between tries to make the memberships again


class ControlChannel:
    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self._channel: str | None = None
        self._keys: set[str] = set()  # the tasks whose control group this channel is in
        self._rejoin: asyncio.Task[None] | None = None

    async def open(self) -> asyncio.Task[None] | None:
        """Make the channel and start listening; returns the listener task (None: no layer)."""
        layer = get_channel_layer()
        if layer is None:
            return None
        # The default prefix matters: channels_redis serves every process-local channel from one
        # Redis list per prefix, and a second prefix would make receivers of the two lists take
        # turns holding its receive lock (seconds of delay).
        self._channel = await layer.new_channel()
        listen = broadcast.receive_forever(
            layer, self._channel, self._handle, "control channel", on_failure=self._layer_away
        )
        return asyncio.create_task(listen, name="control")

    def close(self) -> None:
        self._channel = None
        if self._rejoin is not None:
            self._rejoin.cancel()
            self._rejoin = None

    async def join(self, key: str) -> None:
        self._keys.add(key)
        await self._membership("group_add", key)

    async def leave(self, key: str) -> None:
        self._keys.discard(key)
        await self._membership("group_discard", key)

    async def _membership(self, operation: str, key: str) -> bool:
        layer = get_channel_layer()
        if layer is None or self._channel is None:
            return True
        try:
            await getattr(layer, operation)(broadcast.control_group(key), self._channel)
        except Exception as exc:  # cancel/signal news may be missed; the task itself goes on
            broadcast.layer_trouble(f"control {operation}", exc, key=key)
            return False
        outages.channel_layer.answered()
        return True

    def _layer_away(self) -> None:
        if self._keys and (self._rejoin is None or self._rejoin.done()):
            self._rejoin = asyncio.create_task(self._join_again(), name="control memberships")

    async def _join_again(self) -> None:
        """Join every running task's control group again, once the layer answers."""
        for attempt in itertools.count():
            await asyncio.sleep(REJOIN_SECONDS[min(attempt, len(REJOIN_SECONDS) - 1)])
            for key in list(self._keys):
                if key in self._keys and not await self._membership("group_add", key):
                    break  # still away: try them all again later
            else:
                return
