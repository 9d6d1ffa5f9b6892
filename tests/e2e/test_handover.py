"""Handover at shutdown (DESIGN §3, 1012): SIGTERM to one of two daphnes under 50 streaming
clients. Each client gets 4012 (daphne's 1012) within a second, reconnects at once with
``since`` to the other daphne, and ends with its stream whole. Real processes: two web daphnes
that only serve sockets, a runtasks worker that runs the tasks, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import pytest
import redis
import websockets

from streamapp.testing import assert_stream_whole
from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.support.processes import Daphne, ProcessDatabase, Worker, manage, start_all

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(not (USING_REDIS and USING_POSTGRES),
                       reason="two daphnes and a worker share tasks only through channels_redis "
                       "and PostgreSQL: set REDIS_URL and DATABASE_URL"),
]

CLIENTS, TASKS = 50, 5


class Client:
    """One WebSocket client: watches a task on ``first``, resumes on ``second`` after 4012."""

    def __init__(self, key: str) -> None:
        self.path = f"/ws/tasks/{key.replace('.', '/')}/"
        self.frames: list[dict] = []
        self.streaming = asyncio.Event()
        self.closes: list[tuple[int, float]] = []

    @property
    def last_seq(self) -> int:
        return max([f["seq"] for f in self.frames if f["type"] == "event"], default=0)

    async def read(self, url: str) -> int:
        async with websockets.connect(url, open_timeout=10, max_size=None) as ws:
            try:
                async for message in ws:
                    frame = json.loads(message)
                    self.frames.append(frame)
                    if frame["type"] == "event":
                        self.streaming.set()
            except websockets.ConnectionClosed:
                pass
        self.closes.append((ws.close_code, time.monotonic()))
        return ws.close_code

    async def run(self, first: Daphne, second: Daphne) -> None:
        if await self.read(first.ws_url + self.path) == 4012:
            await self.read(f"{second.ws_url}{self.path}?since={self.last_seq}")


# On a machine loaded past its cores, a socket was seen reset (1006) instead of closed 4012 as
# daphne exited: its close frame was still in Twisted's buffer when daphne dropped the
# connections. Shutdown now waits until the close frames have left (streamapp/handover.py,
# tests/unit/test_handover.py); the second try stays for a machine loaded past its cores.
@pytest.mark.flaky(reruns=1)
async def test_sigterm_hands_every_client_over_to_the_other_daphne(tmp_path):
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_handover").create()
    prefix = "ho_" + os.environ.get("STREAMAPP_LAYER_PREFIX", "sa")
    env = {**database.env, "STREAMAPP_LAYER_PREFIX": prefix}
    web_env = {**env, "STREAMAPP_RUN_TASKS": "0"}
    a, b, worker = Daphne(web_env), Daphne(web_env), Worker(env, "--concurrency", "10")
    try:
        start_all(a, b, worker)
        # Pending, in one command; the first subscriber on A hands each to the worker.
        create = "print(SlowTask.objects.create(seconds=20).task_key)"
        keys = manage(env, "shell", "-c", "from demo.models import SlowTask\n"
                      f"for _ in range({TASKS}): {create}").split()[-TASKS:]
        clients = [Client(keys[i % TASKS]) for i in range(CLIENTS)]
        runs = [asyncio.create_task(client.run(a, b)) for client in clients]
        async with asyncio.timeout(30):
            await asyncio.gather(*(client.streaming.wait() for client in clients))
        assert not [c for c in clients if c.closes], "a stream ended before the SIGTERM"
        a.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        async with asyncio.timeout(60):
            await asyncio.gather(*runs)
        a.stop(None)
    finally:
        for process in (a, b, worker):
            process.stop()
        database.drop()
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for name in client.scan_iter(match=f"{prefix}*"):
            client.delete(name)
    for client in clients:
        (first_code, first_at), (last_code, _) = client.closes[0], client.closes[-1]
        assert first_code == 4012, client.closes
        assert first_at - signalled < 1.0, f"closed {first_at - signalled:.2f} s after SIGTERM"
        assert last_code == 1000 and len(client.closes) == 2
        assert_stream_whole(client.frames)
        assert client.frames[-1]["status"] == "completed"
