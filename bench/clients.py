"""The load generator's sockets: real ``websockets`` clients that count and time every event.

Each socket checks its event seqs (1, 2, 3 … once each, in order) and records, per event, the
time from the event's creation (``data.t``, the server's ``time.time()``) to its arrival here.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
CONNECTING_AT_ONCE = 50  # below daphne's listen backlog (50): no handshake waits for a SYN retry



async def all_in(sockets: Any, quiet: float, limit: float) -> bool:
    """Until ``sockets.all_done`` is set (True), or no frame came for ``quiet`` s, or ``limit``
    s passed (False). ``sockets.last_frame_at``: when the last frame of any socket came."""
    give_up = time.time() + limit
    while not sockets.all_done.is_set():
        try:
            async with asyncio.timeout(quiet):
                await sockets.all_done.wait()
        except TimeoutError:
            now = time.time()
            if now - sockets.last_frame_at >= quiet or now > give_up:
                return False
    return True

class Audience:
    """Sockets on the given URLs, each expecting ``events`` events of its group.

    ``stateful``: streamapp's endpoint, which opens with a ``state`` frame (the socket counts as
    subscribed once it arrived) and ends each stream with a final ``state`` frame.
    """

    def __init__(
        self, urls: list[str], events: int, stateful: bool, at_once: int = CONNECTING_AT_ONCE
    ) -> None:
        self.urls = urls
        self.at_once = at_once
        self.events = events
        self.stateful = stateful
        self.sockets: list[ClientConnection] = []
        self.received = 0  # distinct event frames, over all sockets
        self.seq_errors = 0  # a seq repeated, out of order, or skipped
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.last_event_at = 0.0
        self.last_frame_at = 0.0
        self.all_done = asyncio.Event()
        self._unfinished = len(urls)
        self._readers: list[asyncio.Task[None]] = []

    @property
    def expected(self) -> int:
        return self.events * len(self.urls)

    async def open(self, tolerate: bool = False) -> int:
        """Connect every socket, a few at a time; return once each is subscribed.

        Raises if any did not open, unless ``tolerate``: then answers how many did not.
        """
        gate = asyncio.Semaphore(self.at_once)

        async def one(url: str) -> ClientConnection:
            async with gate:
                ws = await connect(url, compression=None, ping_interval=None, max_size=None,
                                   open_timeout=60, close_timeout=10)
                if self.stateful:
                    first = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if first.get("type") != "state":
                        await ws.close()
                        raise RuntimeError(f"expected a state frame first, got {first}")
                return ws

        opened = await asyncio.gather(*(one(url) for url in self.urls), return_exceptions=True)
        self.sockets = [ws for ws in opened if isinstance(ws, ClientConnection)]
        errors = [error for error in opened if isinstance(error, BaseException)]
        if errors and not tolerate:
            await self.close()
            raise RuntimeError(f"{len(errors)} of {len(self.urls)} sockets did not open: "
                               f"{errors[0]!r}") from errors[0]
        self.last_frame_at = time.time()
        self._readers = [asyncio.create_task(self._read(ws)) for ws in self.sockets]
        return len(errors)

    async def wait(self, quiet: float, limit: float) -> bool:
        """Until every socket has all its frames (True), or none came for ``quiet`` s (False).

        ``limit``: seconds after which to give up even while frames still trickle in.
        """
        return await all_in(self, quiet, limit)

    async def close(self) -> None:
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        await asyncio.gather(*self._readers, return_exceptions=True)

    def _finish_one(self) -> None:
        self._unfinished -= 1
        if self._unfinished == 0:
            self.all_done.set()

    async def _read(self, ws: ClientConnection) -> None:
        last = received = errors = 0
        final = not self.stateful
        done = False
        try:
            async for text in ws:
                now = self.last_frame_at = time.time()
                frame: dict[str, Any] = json.loads(text)
                kind = frame.get("type")
                if kind == "event":
                    seq = frame["seq"]
                    if seq <= last:
                        errors += 1
                        continue
                    if seq != last + 1:
                        errors += 1
                    last = seq
                    received += 1
                    self.latencies.append(now - frame["data"]["t"])
                    self.last_event_at = now
                elif kind == "state" and frame["status"] in FINAL_STATUSES:
                    final = True
                    if frame["status"] != "completed":
                        self.failures.append(f"task ended {frame['status']}: {frame['error']}")
                elif kind == "error":
                    self.failures.append(f"error frame: {text[:200]}")
                if not done and final and received >= self.events:
                    done = True
                    self._finish_one()
        except ConnectionClosed as exc:
            if self.stateful and not final:
                self.failures.append(f"socket closed before the final state: {exc}")
        finally:
            self.received += received
            self.seq_errors += errors
            if not done:
                self._finish_one()
