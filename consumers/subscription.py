"""One socket's view of one task: every seq once, in order, then the final state.

The whole no-loss/no-duplicate rule lives here: join the group first, then read the task and
replay from the log, then take live news, dropping what was already sent and filling any gap
from the log before going on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from channels.layers import BaseChannelLayer

from streamapp import broadcast, eventlog, frames, metrics
from streamapp.models import FINAL_STATUSES, StreamTask
from streamapp.state import task_state

SendText = Callable[[str], Awaitable[None]]


class Subscription:
    def __init__(
        self, task: StreamTask, layer: BaseChannelLayer | None, channel: str, send: SendText
    ) -> None:
        self.task = task
        self.key = task.task_key
        self.layer = layer
        self.channel = channel
        self.send = send
        self.last_seq = 0  # the newest seq this socket has been sent
        self.revision = -1  # the newest state revision this socket has been sent
        self.status = task.status

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    async def open(self, since: int | None) -> list[dict[str, Any]]:
        """Join, send ``state``, replay; returns error frames the caller should also send."""
        notes: list[dict[str, Any]] = []
        metrics.SUBSCRIPTIONS.inc()
        if self.layer is not None:
            await self.layer.group_add(broadcast.task_group(self.key), self.channel)
        await self.task.arefresh_from_db()  # after joining: no state change can slip between
        state = await task_state(self.task)
        self.revision, self.status = self.task.revision, self.task.status
        await self.send(frames.encode(state))
        if since is None:
            latest = await eventlog.latest(self.key)
            if latest is not None:
                await self.send(latest[1])
                metrics.EVENTS_DELIVERED_FROM_LOG.inc()
            self.last_seq = state["seq"]
            return notes
        if since > state["seq"]:
            notes.append(frames.error(
                "bad_request", f"since {since} is ahead of the task's last seq {state['seq']}",
                task=self.key,
            ))
            since = state["seq"]
        self.last_seq = since
        if await self._fill(state["seq"]) and self.ended:
            # The final state closes a stream: repeat it after the replayed events.
            await self.send(frames.encode(state))
        return notes

    async def close(self) -> None:
        metrics.SUBSCRIPTIONS.dec()
        if self.layer is not None:
            await self.layer.group_discard(broadcast.task_group(self.key), self.channel)

    async def on_events(self, events: list[tuple[int, str]]) -> None:
        for seq, frame in events:
            if seq <= self.last_seq:
                continue
            if seq > self.last_seq + 1:
                metrics.GAP_REPAIRS.inc()
                await self._fill(seq - 1)
            await self.send(frame)
            metrics.EVENTS_DELIVERED_LIVE.inc()
            self.last_seq = seq

    async def on_state(self, message: dict[str, Any]) -> bool:
        """Forward a state change unless stale; True when it was sent."""
        if message["revision"] <= self.revision:
            return False
        if message["seq"] > self.last_seq:
            metrics.GAP_REPAIRS.inc()
            await self._fill(message["seq"])  # the final state comes after the last event
        self.revision, self.status = message["revision"], message["status"]
        await self.send(message["frame"])
        return True

    async def _fill(self, upto: int) -> int:
        """Send logged events after ``last_seq`` up to ``upto`` (a replay or a gap repair).

        Returns how many were sent.
        """
        if upto <= self.last_seq:
            return 0
        rows = await eventlog.since(self.key, self.last_seq, upto)
        oldest = rows[0][0] if rows else upto + 1
        if oldest > self.last_seq + 1:
            await self.send(frames.encode(frames.error(
                "history_truncated",
                f"events after seq {self.last_seq} are no longer kept; resuming at {oldest}",
                task=self.key, oldest_seq=oldest,
            )))
        for _, frame in rows:
            await self.send(frame)
        metrics.EVENTS_DELIVERED_FROM_LOG.inc(len(rows))
        self.last_seq = upto
        return len(rows)
