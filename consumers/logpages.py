"""The event log as this process's subscriptions read it: windows read once, shared, bounded.

When the layer drops a message, every socket of the process in that group lost it, and each
repairs from the log: without sharing, one identical query per socket (hundreds at a time, all
through Django's single database thread). Instead the log is read in windows of WINDOW seqs;
concurrent readers of a window wait for the same query, and the result is kept for a short
while (least recently used first out, CACHE_CHARS in all). A kept window serves only the seqs
it already had, so a growing tail is read again. Big events are never loaded many at a time:
frame sizes are read first, and a window over WINDOW_CHARS is read a few events at a time
instead, without being kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass

from streamapp.eventlog import store

WINDOW = 200  # seqs per window
WINDOW_CHARS = 4 * 1024 * 1024  # frame text one read may load
CACHE_CHARS = 64 * 1024 * 1024  # frame text kept
KEEP_SECONDS = 30.0  # a repair storm is over long before; a reused key never sees old events

Rows = list[tuple[int, str]]


@dataclass
class Window:
    rows: Rows | None  # None: too big to load at once
    top: int  # every seq of the window up to here was read
    chars: int
    read_at: float


class LogPages:
    def __init__(self) -> None:
        self._windows: OrderedDict[tuple[str, int], Window] = OrderedDict()
        self._reading: dict[tuple[str, int], asyncio.Task[Window]] = {}
        self._chars = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    async def read(self, key: str, after: int, upto: int) -> Rows:
        """The first logged events with ``after < seq <= upto``, in order; [] when none."""
        window = await self._window(key, after // WINDOW, upto)
        rows = [row for row in window.rows or () if after < row[0] <= upto]
        if rows:
            return rows
        return await self._read_few(key, after, upto)  # oversized, or trimmed past the window

    def clear(self) -> None:
        self._windows.clear()
        self._chars = 0

    async def _window(self, key: str, index: int, upto: int) -> Window:
        self._forget_other_loops()
        slot = (key, index)
        wanted = min(upto, (index + 1) * WINDOW)
        window = self._windows.get(slot)
        fresh = window is not None and time.monotonic() - window.read_at < KEEP_SECONDS
        if fresh and (window.top >= wanted or window.rows is None):
            self._windows.move_to_end(slot)
            return window
        reading = self._reading.get(slot)
        if reading is None:
            reading = asyncio.create_task(self._load(key, index), name=f"log window {slot}")
            self._reading[slot] = reading
            reading.add_done_callback(lambda _: self._reading.pop(slot, None))
        # shield: a reader that goes away must not cancel the query the others wait for
        window = await asyncio.shield(reading)
        if window.top < wanted and window.rows is not None:
            return await self._load(key, index)  # it started before ``upto`` was logged
        return window

    async def _load(self, key: str, index: int) -> Window:
        low, high = index * WINDOW, (index + 1) * WINDOW
        sizes = await store.sizes(key, low, high, WINDOW)
        chars = sum(size for _, size in sizes)
        if chars > WINDOW_CHARS:
            return Window(None, sizes[-1][0], 0, time.monotonic())
        rows = await store.since(key, low, sizes[-1][0]) if sizes else []
        window = Window(rows, rows[-1][0] if rows else low, chars, time.monotonic())
        self._keep((key, index), window)
        return window

    async def _read_few(self, key: str, after: int, upto: int) -> Rows:
        """Events straight from the log, as many as fit in WINDOW_CHARS (at least one)."""
        sizes = await store.sizes(key, after, upto, WINDOW)
        last, chars = after, 0
        for seq, size in sizes:
            if chars and chars + size > WINDOW_CHARS:
                break
            last, chars = seq, chars + size
        return await store.since(key, after, last) if last > after else []

    def _keep(self, slot: tuple[str, int], window: Window) -> None:
        old = self._windows.pop(slot, None)
        if old is not None:
            self._chars -= old.chars
        self._windows[slot] = window
        self._chars += window.chars
        while self._chars > CACHE_CHARS and len(self._windows) > 1:
            _, dropped = self._windows.popitem(last=False)
            self._chars -= dropped.chars

    def _forget_other_loops(self) -> None:
        """Reads under way belong to one event loop (tests, or async_to_sync, run others)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._reading = {}


log_pages = LogPages()  # one per process: sharing is its purpose
