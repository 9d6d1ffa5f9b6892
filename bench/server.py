"""The server under test, seen from the load generator: a daphne (or uvicorn) subprocess, its
/proc figures and its HTTP remote control.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# Variables of the caller's shell that would point the server at another database or layer.
FOREIGN_VARIABLES = ("DATABASE_URL", "REDIS_URL", "STREAMAPP_LAYER", "STREAMAPP_LAYER_PREFIX",
                     "STREAMAPP_SQLITE", "DJANGO_SETTINGS_MODULE")


def raise_fd_limit(wanted: int = 65536) -> int:
    """Lift the soft limit on open files (1,000 sockets need it); children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces: skip past it
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


async def wait_until_idle(pid: int, timeout: float = 10) -> bool:
    """Until the server used at most one clock tick in 0.2 s (earlier sockets' cleanup done).

    False when ``timeout`` passed first. Polling: a busy process sends no event when it calms.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        await asyncio.sleep(0.2)
        if cpu_seconds(pid) - before <= 1.5 / CLOCK_TICKS:
            return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class CpuSampler:
    """Samples a process's CPU time every few ms, so any window can be read afterwards.

    A window's end (the last frame received) is only known once it has passed; samples taken
    all along let ``between`` interpolate the CPU used inside it.
    """

    def __init__(self, pid: int, every: float = 0.02) -> None:
        self.pid = pid
        self.every = every
        self.times: list[float] = []
        self.values: list[float] = []
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        self.times.append(time.time())
        self.values.append(cpu_seconds(self.pid))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> CpuSampler:
        self._task = asyncio.create_task(self._run(), name="cpu-sampler")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self.sample()

    def at(self, moment: float) -> float:
        i = bisect.bisect_left(self.times, moment)
        if i == 0:
            return self.values[0]
        if i == len(self.times):
            return self.values[-1]
        t0, t1 = self.times[i - 1], self.times[i]
        v0, v1 = self.values[i - 1], self.values[i]
        return v0 + (v1 - v0) * (moment - t0) / (t1 - t0) if t1 > t0 else v1

    def between(self, start: float, end: float) -> float:
        return self.at(end) - self.at(start)


SERVERS = ("daphne", "uvicorn")


@dataclass(frozen=True)
class ServerConfig:
    """What every benchmark server of one run shares."""

    redis_url: str
    layer_prefix: str
    database_url: str | None
    sqlite_path: Path
    log_dir: Path
    server: str = "daphne"  # or "uvicorn" (SERVERS)

    def env(self, layer: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_VARIABLES}
        env.update(
            DJANGO_SETTINGS_MODULE="bench.settings",
            BENCH_LAYER=layer,
            BENCH_REDIS_URL=self.redis_url,
            BENCH_LAYER_PREFIX=self.layer_prefix,
            PYTHONUNBUFFERED="1",
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        else:
            env["STREAMAPP_SQLITE"] = str(self.sqlite_path)
        return env

    def migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=self.env("memory"), check=True, timeout=300,
        )


class BenchServer:
    """``async with BenchServer(layer, config) as server``: daphne (or uvicorn) on ``bench.asgi``.

    The server runs with its defaults (ping every 20 s, 86,400 s socket lifetime …); its output
    goes to a log file in the results directory.
    """

    def __init__(
        self, layer: str, config: ServerConfig, label: str = "", *, port: int | None = None,
        env: dict[str, str] | None = None, backlog: int | None = None,
    ) -> None:
        self.layer = layer
        self.config = config
        self.port = port or free_port()
        self.env = env or {}  # more variables for the server (STREAMAPP_<NAME> settings …)
        self.backlog = backlog  # the listen backlog; None: the server's (daphne: 50, uvicorn: 2048)
        self.log_path = config.log_dir / f"{config.server}-{layer}{label}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def ws_url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}/{path.lstrip('/')}"

    async def __aenter__(self) -> BenchServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", *self._command()],
                cwd=ROOT, env={**self.config.env(self.layer), **self.env}, stdout=log,
                stderr=subprocess.STDOUT,
            )
        await self._wait_until_serving()

    def _command(self) -> list[str]:
        """The server's module and arguments: each with its defaults but address and backlog."""
        if self.config.server == "uvicorn":
            backlog = [] if self.backlog is None else ["--backlog", str(self.backlog)]
            return ["uvicorn", "--host", "127.0.0.1", "--port", str(self.port), *backlog,
                    "--lifespan", "on", "--no-access-log", "bench.asgi:application"]
        if self.backlog is None:
            where = ["-b", "127.0.0.1", "-p", str(self.port)]
        else:
            where = ["-e", f"tcp:port={self.port}:interface=127.0.0.1:backlog={self.backlog}"]
        return ["daphne", *where, "bench.asgi:application"]

    def terminate(self) -> None:
        """SIGTERM: the server closes its sockets (1012/4012) and stops."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def stop(self) -> None:
        assert self.process is not None
        self.terminate()
        try:
            await asyncio.to_thread(self.process.wait, 20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)

    async def _wait_until_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.config.server} exited with "
                                   f"{self.process.returncode}; see {self.log_path}")
            try:
                await self.post("gc")
                return
            except (ConnectionError, urllib.error.URLError) as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{self.config.server} not serving after {timeout} s; see {self.log_path}"
                    ) from exc
                await asyncio.sleep(0.1)  # a process coming up: there is no event to wait on

    async def post(self, endpoint: str, **arguments: Any) -> dict[str, Any]:
        """Call ``/bench/<endpoint>`` with keyword arguments; raises with the server's reason."""
        return await asyncio.to_thread(self._post, endpoint, arguments)

    def _post(self, endpoint: str, arguments: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/bench/{endpoint}", data=json.dumps(arguments).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=900) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"/bench/{endpoint} failed: {exc.read().decode()[:500]}") from exc
