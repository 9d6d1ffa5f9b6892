"""Real subscribers over WebSockets (the websockets library) for tests against daphne."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import dataclass, field

import websockets

from tests.support.processes import ROOT

# No client keepalive: its pong would wait behind every frame still unread, and a lagging
# client would close itself. Servers for tests where clients lag a lot get LAGGING_CLIENTS.
OPTIONS = {"max_size": None, "open_timeout": 60, "ping_interval": None}

# daphne drops a socket that sent nothing for --ping-interval and then does not answer a ping
# within --ping-timeout (30 s): a client far behind in reading cannot, its pong waits behind the
# frames it has not read. These daphne options let such a client lag for ten minutes.
LAGGING_CLIENTS = ("--ping-interval", "600", "--ping-timeout", "600")


def task_url(server, key: str, since: int | None = None) -> str:
    url = f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"
    return url if since is None else f"{url}?since={since}"


async def connect_many(url: str, count: int, batch: int = 50) -> list:
    """``count`` sockets, ``batch`` handshakes at a time (a listen backlog is not infinite)."""
    sockets = []
    while len(sockets) < count:
        size = min(batch, count - len(sockets))
        sockets += await asyncio.gather(
            *(websockets.connect(url, **OPTIONS) for _ in range(size))
        )
    return sockets


@dataclass
class Followed:
    """What one subscriber saw of one task: event seqs in arrival order, the last state."""

    seqs: list[int] = field(default_factory=list)
    final: dict | None = None
    reconnects: int = 0
    close_codes: list[int | None] = field(default_factory=list)
    _waiters: list[tuple[int, asyncio.Future]] = field(default_factory=list)

    def reached(self, seq: int) -> asyncio.Future:
        """Done once event ``seq`` (or a later one) has come."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((seq, waiter))
        self._add(None)
        return waiter

    def _add(self, seq: int | None) -> None:
        if seq is not None:
            self.seqs.append(seq)
        for wanted, waiter in self._waiters:
            if self.seqs and self.seqs[-1] >= wanted and not waiter.done():
                waiter.set_result(None)

    @property
    def ended(self) -> bool:
        """A final state, and every event up to its seq (a resumed socket starts with one)."""
        final = self.final
        return (
            final is not None and final["status"] in ("completed", "failed", "cancelled")
            and final["seq"] == (self.seqs[-1] if self.seqs else 0)
        )


async def follow(ws, server, key: str, *, start: asyncio.Event | None = None,
                 seen: Followed | None = None) -> Followed:
    """Read a one-task socket to its end, as a well-behaved client does.

    ``start``: read nothing until it is set (a client that stopped reading for a while). If the
    socket ends before the final state, the client reconnects with ``since`` and goes on.
    ``seen``: where to record it, for a caller that watches progress.
    """
    seen = seen or Followed()
    if start is not None:
        await start.wait()
    while True:
        try:
            async for text in ws:
                frame = json.loads(text)
                if frame["type"] == "event":
                    seen._add(frame["seq"])
                elif frame["type"] == "state":
                    seen.final = frame
        except websockets.ConnectionClosedError:
            pass
        seen.close_codes.append(ws.close_code)
        if seen.ended:
            return seen
        seen.reconnects += 1
        since = seen.seqs[-1] if seen.seqs else 0
        ws = await websockets.connect(task_url(server, key, since), **OPTIONS)


async def run_task_elsewhere(env: dict[str, str], key: str) -> str:
    """Run task ``key`` to its end in a process of its own; returns its final status."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.run_task", key, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await worker.communicate()
    except asyncio.CancelledError:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
        raise
    text = output.decode(errors="replace")
    assert worker.returncode == 0, text
    return text.strip().splitlines()[-1]


def setting_text(value: object) -> str:
    """A STREAMAPP value as ``streamapp.conf.from_environment`` reads it back."""
    if isinstance(value, bool):
        return "1" if value else "0"
    return "none" if value is None else str(value)


def layer_env(env: dict[str, str], layer: str | None, redis_url: str | None = None,
              **settings: object) -> dict[str, str]:
    """``env`` with STREAMAPP overrides and a channel layer kind with its own key prefix.

    ``layer`` None keeps the run's layer (in-memory, or RedisChannelLayer with REDIS_URL).
    """
    extra = {f"STREAMAPP_{name}": setting_text(value) for name, value in settings.items()}
    if layer is not None:
        prefix = f"{os.environ.get('STREAMAPP_LAYER_PREFIX', 'asgi')}_{layer}"
        extra.update(STREAMAPP_LAYER=layer, STREAMAPP_LAYER_PREFIX=prefix)
    if redis_url is not None:
        extra["REDIS_URL"] = redis_url
    return {**env, **extra}
