"""Real subscribers that record every frame as it comes, for tests of faults (frozen workers,
database and Redis outages); a split deployment's environment; reads of the process database."""

from __future__ import annotations

import asyncio
import json
import os
import time

import websockets

from tests.support.processes import ProcessDatabase, manage
from tests.support.wsclients import OPTIONS

FINAL = {"completed", "failed", "cancelled"}


class Subscriber:
    """A WebSocket client reading every frame as it comes; tests wait on what it has seen."""

    def __init__(self, ws, name: str) -> None:
        self.ws = ws
        self.name = name
        self.frames: list[dict] = []
        self.arrivals: list[float] = []  # time.monotonic() of each frame
        self.close_code: int | None = None
        self.closed = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(), name=f"subscriber {name}")

    @classmethod
    async def one_task(cls, server, key: str, since: int | None = 0) -> Subscriber:
        url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
        url += "" if since is None else f"?since={since}"
        return cls(await websockets.connect(url, **OPTIONS), f"{server.port} {key}")

    @classmethod
    async def many_tasks(cls, server, key: str, since: int = 0) -> Subscriber:
        ws = await websockets.connect(f"{server.ws_url}/ws/tasks/", **OPTIONS)
        await ws.send(json.dumps({"action": "subscribe", "task": key, "since": since}))
        return cls(ws, f"{server.port} ws/tasks/ {key}")

    async def _read(self) -> None:
        try:
            async for text in self.ws:
                async with self._changed:
                    self.frames.append(json.loads(text))
                    self.arrivals.append(time.monotonic())
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self.closed, self.close_code = True, self.ws.close_code
                self._changed.notify_all()

    async def seen(self, predicate, timeout: float = 10) -> dict:
        """The first frame ``predicate`` accepts, once it has come."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(
                lambda: self.closed or any(predicate(f) for f in self.frames)
            ), timeout)
        found = [f for f in self.frames if predicate(f)]
        assert found, f"{self.name} closed ({self.close_code}) without it: {self.frames[-3:]}"
        return found[0]

    async def ended(self, timeout: float = 10) -> dict:
        """The final state frame (the one-task endpoint then closes with 1000)."""
        return await self.seen(is_final, timeout)

    def arrival(self, frame: dict) -> float:
        return self.arrivals[self.frames.index(frame)]

    async def closed_with(self, timeout: float = 10) -> int | None:
        """The close code, once the server has closed the socket."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.closed), timeout)
        return self.close_code

    async def nothing_after(self, frame: dict, timeout: float) -> None:
        """No frame follows ``frame`` for ``timeout`` seconds."""
        count = self.frames.index(frame) + 1
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.frames) > count), timeout
                )
            except TimeoutError:
                return
        raise AssertionError(f"{self.name}: frames after {frame}: {self.frames[count:]}")

    @property
    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] == "event"]

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)


def event_after(seq: int):
    """Accepts event frames with a seq above ``seq``."""
    return lambda frame: frame["type"] == "event" and frame["seq"] > seq


def is_final(frame: dict) -> bool:
    return frame["type"] == "state" and frame["status"] in FINAL


def is_state(status: str):
    return lambda frame: frame["type"] == "state" and frame["status"] == status


def settings_env(env: dict[str, str], **settings: object) -> dict[str, str]:
    return {**env, **{f"STREAMAPP_{name}": str(value) for name, value in settings.items()}}


def layer_prefix(purpose: str) -> str:
    """A channel-layer prefix of this test run's own, apart from the in-process tests' (whose
    flush after each test deletes ``<prefix>*``)."""
    return f"{purpose}_{os.environ.get('STREAMAPP_LAYER_PREFIX', 'sa')}"


def create_task(env: dict[str, str], model: str, *fields: str) -> str:
    """Create a task with ``env`` (a web process's: RUN_TASKS off hands it to the workers)."""
    return manage(env, "starttask", model, *fields).strip().splitlines()[-1]


def task_row(database: ProcessDatabase, key: str, *columns: str) -> tuple:
    app_label, model, pk = key.split(".")
    return database.fetchone(
        f"SELECT {', '.join(columns)} FROM {app_label}_{model} WHERE id = %s", int(pk)
    )


def logged(database: ProcessDatabase, key: str) -> tuple[int, int]:
    """How many events the log holds for ``key``, and its highest seq."""
    count, top = database.fetchone(
        "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM streamapp_taskevent WHERE task_key = %s",
        key,
    )
    return count, top
