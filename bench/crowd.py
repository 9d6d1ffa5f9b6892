"""Many sockets from several load-generator processes, so the client side is not the limit.

``Crowd`` runs ``python -m bench.crowd`` workers, each with a share of the sockets, and talks to
them in JSON lines over their stdin and stdout. Each socket checks its event seqs (1, 2, 3 …
once each, in order) and times every event from its creation (``data.t``) to its arrival. A
socket may also subscribe to many tasks over ``ws/tasks/``, and, in a reconnect storm, reconnect
at once when the server closes it (with ``since`` = the last seq it has), as streamapp.js does:
each records when it was back (its ``state`` frame) and when it was streaming again (its first
event after that).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from .clients import all_in

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled"})
MAX_FAILURES = 20  # seq errors described, per load-generator process
RETRY_SECONDS = 0.05  # between refused reconnects (a server coming back up)


@dataclass
class Job:
    urls: list[str]
    events: int  # events expected per socket (per task, for ``subscribe``)
    stateful: bool = True
    subscribe: list[str] = field(default_factory=list)  # keys, over ws/tasks/
    reconnect: bool = False
    at_once: int = 50  # handshakes under way at once in this process


class Watcher:
    """One socket."""

    def __init__(self, crowd: Worker, url: str) -> None:
        self.crowd = crowd
        self.url = url
        self.ws: ClientConnection | None = None
        self.last: dict[str, int] = {}
        self.received = 0
        self.errors = 0
        self.final: set[str] = set()
        self.done = False
        self.back_at: float | None = None
        self.streaming_at: float | None = None
        self.reconnects = 0

    async def open(self) -> None:
        self.ws = await connect(self.url, compression=None, ping_interval=None, max_size=None,
                                open_timeout=120, close_timeout=10)
        job = self.crowd.job
        if job.stateful and not job.subscribe:
            await self._expect_state()
        for key in job.subscribe:
            await self.ws.send(json.dumps({"action": "subscribe", "task": key}))
        states = 0
        while states < len(job.subscribe):  # each subscription's state, maybe its latest event
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 120))
            if frame.get("type") == "error":
                raise RuntimeError(f"subscribe refused: {str(frame)[:200]}")
            states += frame.get("type") == "state"
            self.crowd.take(self, frame, time.time())

    async def _expect_state(self) -> None:
        assert self.ws is not None
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), 120))
        if frame.get("type") != "state":
            raise RuntimeError(f"expected a state frame, got {str(frame)[:200]}")
        self.crowd.take(self, frame, time.time())

    async def read(self) -> None:
        while True:
            try:
                assert self.ws is not None
                async for text in self.ws:
                    self.crowd.take(self, json.loads(text), time.time())
                return
            except ConnectionClosed as exc:
                if not (self.crowd.job.reconnect and not self.crowd.closing):
                    if self.crowd.job.stateful and len(self.final) < self.tasks:
                        self.crowd.failures.append(f"closed before the final state: {exc}")
                    return
            await self._reconnect()

    @property
    def tasks(self) -> int:
        return max(1, len(self.crowd.job.subscribe))

    async def _reconnect(self) -> None:
        """At once, with ``since``, until the server takes it (one-task endpoint)."""
        self.reconnects += 1
        self.back_at = self.streaming_at = None
        since = next(iter(self.last.values()), 0)
        url = f"{self.url.partition('?')[0]}?since={since}"
        while not self.crowd.closing:
            try:
                self.ws = await connect(url, compression=None, ping_interval=None,
                                        max_size=None, open_timeout=120, close_timeout=10)
                break
            except (OSError, InvalidHandshake, TimeoutError):
                await asyncio.sleep(RETRY_SECONDS)


class Worker:
    """The sockets of one load-generator process."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.watchers = [Watcher(self, url) for url in job.urls]
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.last_event_at = 0.0
        self.last_frame_at = 0.0
        self.closing = False
        self.finished = 0
        self.all_done = asyncio.Event()
        self.readers: list[asyncio.Task[None]] = []

    def take(self, watcher: Watcher, frame: dict[str, Any], now: float) -> None:
        self.last_frame_at = now
        kind = frame.get("type")
        if kind == "event":
            key = frame.get("task", "")
            seq = frame["seq"]
            last = watcher.last.get(key, 0)
            if seq != last + 1:
                watcher.errors += 1
                if len(self.failures) < MAX_FAILURES:
                    self.failures.append(f"{key}: seq {seq} after {last} "
                                         f"({'again' if seq <= last else 'a gap'})")
                if seq <= last:
                    return
            watcher.last[key] = seq
            watcher.received += 1
            self.latencies.append(now - frame["data"]["t"])
            self.last_event_at = now
            back = watcher.back_at
            if back is not None and watcher.streaming_at is None and frame["data"]["t"] >= back:
                watcher.streaming_at = now  # live again: an event made since it was back
        elif kind == "state":
            if watcher.reconnects and watcher.back_at is None:
                watcher.back_at = now
            if frame["status"] in FINAL_STATUSES:
                watcher.final.add(frame["task"])
                if frame["status"] != "completed":
                    self.failures.append(f"task ended {frame['status']}: {frame['error']}")
        elif kind == "error" and frame.get("code") != "history_truncated":
            self.failures.append(f"error frame: {str(frame)[:200]}")
        if not watcher.done and watcher.received >= self.job.events * watcher.tasks and (
            not self.job.stateful or len(watcher.final) >= watcher.tasks
        ):
            watcher.done = True
            self.finished += 1
            if self.finished == len(self.watchers):
                self.all_done.set()

    async def open(self) -> dict[str, Any]:
        gate = asyncio.Semaphore(self.job.at_once)

        async def one(watcher: Watcher) -> None:
            async with gate:
                await watcher.open()

        began = time.time()
        outcomes = await asyncio.gather(*(one(w) for w in self.watchers), return_exceptions=True)
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        self.last_frame_at = time.time()
        self.readers = [asyncio.create_task(w.read()) for w in self.watchers if w.ws is not None]
        return {"opened": len(self.watchers) - len(errors), "errors": errors[:3],
                "seconds": time.time() - began}

    async def wait(self, quiet: float, limit: float) -> dict[str, Any]:
        cpu, wall = time.process_time(), time.time()
        complete = await all_in(self, quiet, limit)
        return self.report(complete, time.process_time() - cpu, time.time() - wall)

    def report(self, complete: bool, cpu: float, wall: float) -> dict[str, Any]:
        latencies, self.latencies = self.latencies, []
        return {
            "complete": complete,
            "received": sum(w.received for w in self.watchers),
            "seq_errors": sum(w.errors for w in self.watchers),
            "failures": self.failures[:5], "failure_count": len(self.failures),
            "latencies": [round(x, 5) for x in latencies],
            "last_event_at": self.last_event_at, "client_cpu": cpu, "wall": wall,
            "back_at": [w.back_at for w in self.watchers],
            "streaming_at": [w.streaming_at for w in self.watchers],
            "reconnects": sum(w.reconnects for w in self.watchers),
        }

    async def close(self) -> None:
        self.closing = True
        await asyncio.gather(*(w.ws.close() for w in self.watchers if w.ws is not None),
                             return_exceptions=True)
        await asyncio.gather(*self.readers, return_exceptions=True)


async def serve() -> None:
    """A worker process: a job on the first line, then ``wait``, ``report`` and ``close``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=256 * 1024 * 1024)  # the job names every URL
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker(Job(**json.loads(await reader.readline())))
    say(await worker.open())
    while line := (await reader.readline()).decode().split():
        if line[0] == "wait":
            say(await worker.wait(float(line[1]), float(line[2])))
        elif line[0] == "report":
            say(worker.report(False, 0.0, 0.0))
        elif line[0] == "close":
            await worker.close()
            say({"closed": True})
            return


def say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class Crowd:
    """``sockets`` spread over ``processes`` workers; the figures of all of them together."""

    def __init__(self, urls: list[str], events: int, processes: int, **job: Any) -> None:
        self.urls = urls
        self.events = events
        self.processes = max(1, min(processes, len(urls)))
        self.job = job
        self.workers: list[asyncio.subprocess.Process] = []
        self.results: list[dict[str, Any]] = []

    async def open(self) -> float:
        """Start the workers and open every socket; returns the seconds it took."""
        shares = [self.urls[i::self.processes] for i in range(self.processes)]
        at_once = max(1, self.job.pop("at_once", 50) // self.processes)
        began = time.time()
        for share in shares:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.crowd", stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, limit=256 * 1024 * 1024,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            self.workers.append(process)
            job = {"urls": share, "events": self.events, "at_once": at_once, **self.job}
            process.stdin.write((json.dumps(job) + "\n").encode())
        opened = await self._answers()
        seconds = time.time() - began
        errors = [e for answer in opened for e in answer["errors"]]
        if errors:
            await self.close()
            raise RuntimeError(f"{len(errors)}+ sockets did not open: {errors[0]}")
        return seconds

    async def wait(self, quiet: float, limit: float) -> bool:
        self.results = await self._ask(f"wait {quiet} {limit}")
        return all(result["complete"] for result in self.results)

    async def report(self) -> list[dict[str, Any]]:
        return await self._ask("report")

    async def close(self) -> None:
        if self.workers:
            await self._ask("close")
            for process in self.workers:
                await process.wait()
            self.workers = []

    async def _ask(self, command: str) -> list[dict[str, Any]]:
        for process in self.workers:
            process.stdin.write((command + "\n").encode())
        return await self._answers()

    async def _answers(self) -> list[dict[str, Any]]:
        lines = await asyncio.gather(*(p.stdout.readline() for p in self.workers))
        if not all(lines):
            raise RuntimeError("a load-generator process ended early")
        return [json.loads(line) for line in lines]

    # -- the figures of the last wait ------------------------------------------------------

    @property
    def expected(self) -> int:
        return self.events * len(self.urls) * max(1, len(self.job.get("subscribe") or ()))

    @property
    def received(self) -> int:
        return sum(r["received"] for r in self.results)

    @property
    def seq_errors(self) -> int:
        return sum(r["seq_errors"] for r in self.results)

    @property
    def failures(self) -> list[str]:
        return [f for r in self.results for f in r["failures"]]

    @property
    def latencies(self) -> list[float]:
        return [x for r in self.results for x in r["latencies"]]

    @property
    def last_event_at(self) -> float:
        return max((r["last_event_at"] for r in self.results), default=0.0)

    @property
    def client_busy(self) -> float:
        """The busiest load generator's CPU share over the wait."""
        return max((r["client_cpu"] / r["wall"] for r in self.results if r["wall"]), default=0.0)


if __name__ == "__main__":
    asyncio.run(serve())
