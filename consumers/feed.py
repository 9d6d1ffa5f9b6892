"""Live news for one socket: its channel's membership of each task's layer group.

A failed join or leave (Redis away) is logged, not raised: the subscription's periodic check
notices the silence, repairs from the log and joins again.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp import broadcast

logger = logging.getLogger("streamapp.consumers")


class GroupFeed:
    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel

    async def join(self, key: str) -> None:
        await self._membership("group_add", key)

    async def leave(self, key: str) -> None:
        await self._membership("group_discard", key)

    async def _membership(self, operation: str, key: str) -> None:
        if self.layer is None:
            return
        try:
            await getattr(self.layer, operation)(broadcast.task_group(key), self.channel)
        except Exception:
            logger.warning("%s failed key=%s channel=%s", operation, key, self.channel,
                           exc_info=True)
