"""Real server processes for end-to-end tests: daphne and runtasks workers as subprocesses.

A process is ready when its port accepts connections or it prints that it is, never after a
fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is coming up: no event to wait on
    raise TimeoutError(f"nothing listening on {port} after {timeout} s")


def server_env(database_name: str | None = None, **extra: str) -> dict[str, str]:
    """The environment a subprocess needs to share this test run's database and layer.

    ``database_name``: the test database (SQLite file path or PostgreSQL database name).
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    env.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    if database_name is not None:
        if os.environ.get("DATABASE_URL"):
            base = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
            env["DATABASE_URL"] = f"{base}/{database_name}"
        else:
            env["STREAMAPP_SQLITE"] = database_name
    return env


class ServerProcess:
    """A subprocess whose output is read line by line as it comes, so a test can wait for a line.

    Subclasses say which command to run and when the process counts as ready.
    """

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.process: subprocess.Popen | None = None
        self._lines: list[str] = []
        self._output = threading.Condition()
        self._reader: threading.Thread | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_until_ready(self) -> None:
        """Block until the process serves; the default is as soon as it runs."""

    def launch(self):
        """Start the process without waiting for it (see ``start_all``)."""
        self.process = subprocess.Popen(
            self.command(), cwd=getattr(self, "cwd", ROOT), env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def start(self):
        self.launch().wait_until_ready()
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            with self._output:
                self._lines.append(line)
                self._output.notify_all()
        with self._output:
            self._output.notify_all()  # end of output: waiters stop waiting

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def output(self) -> str:
        with self._output:
            return "".join(self._lines)

    def wait_for_line(self, text: str, timeout: float = 15) -> str:
        """The first output line containing ``text``; raises when the process ends first."""
        deadline = time.monotonic() + timeout
        with self._output:
            while True:
                for line in self._lines:
                    if text in line:
                        return line
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise RuntimeError(f"exited {self.process.returncode} before printing "
                                       f"{text!r}:\n{''.join(self._lines)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no line with {text!r} after {timeout} s:\n"
                                       f"{''.join(self._lines)}")
                self._output.wait(remaining)

    async def line(self, text: str, timeout: float = 15) -> str:
        """``wait_for_line`` without blocking the test's event loop."""
        return await asyncio.to_thread(self.wait_for_line, text, timeout)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 15) -> str:
        """Send ``sig`` (None: none, it was sent) and wait for the exit, SIGKILL after
        ``timeout``; returns the output."""
        assert self.process is not None
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return self.output

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class Daphne(ServerProcess):
    """``with Daphne(env) as server:`` serves ``asgi:application`` on ``server.port``."""

    application = "asgi:application"

    def __init__(self, env: dict[str, str], port: int | None = None, *args: str) -> None:
        super().__init__(env)
        self.port = port or free_port()
        self.args = args  # more daphne options

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                *self.args, self.application]

    def wait_until_ready(self) -> None:
        wait_for_port(self.port, self.process)


class Worker(ServerProcess):
    """``with Worker(env) as worker:`` runs ``manage.py runtasks``; ready once it listens."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        super().__init__(env)
        self.args = args

    def command(self) -> list[str]:
        return [sys.executable, "manage.py", "runtasks", *self.args]

    def wait_until_ready(self) -> None:
        self.wait_for_line("worker ready", timeout=30)


def start_all(*processes: ServerProcess) -> None:
    """Start several processes side by side: their start-ups overlap."""
    for process in processes:
        process.launch()
    for process in processes:
        process.wait_until_ready()


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """Run ``manage.py`` with ``env``; returns stdout, raises with its output when it fails."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


class ProcessDatabase:
    """A database of its own for tests whose servers run in subprocesses.

    SQLite: a file in ``tmp_path``. PostgreSQL (``DATABASE_URL`` set): a fresh database, dropped
    afterwards. Either way migrated, and ``env`` points subprocesses at it.
    """

    def __init__(self, tmp_path: Path, name: str) -> None:
        self.postgres = bool(os.environ.get("DATABASE_URL"))
        self.name = name if self.postgres else str(tmp_path / f"{name}.sqlite3")
        self.env = server_env(self.name)

    def _admin(self, sql: str) -> None:
        import psycopg

        base = os.environ["DATABASE_URL"]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql)

    def create(self) -> ProcessDatabase:
        if self.postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin(f'CREATE DATABASE "{self.name}"')
        manage(self.env, "migrate", "--noinput", "-v", "0")
        return self

    def fetchone(self, sql: str, *params: object) -> tuple | None:
        """One row from this database, read outside Django (``%s`` placeholders)."""
        if self.postgres:
            import psycopg

            with psycopg.connect(self.env["DATABASE_URL"], autocommit=True) as conn:
                return conn.execute(sql, params).fetchone()
        with closing(sqlite3.connect(self.name)) as conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchone()

    def drop(self) -> None:
        if self.postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class RedisServer:
    """A private redis-server on a free port, for tests that stop or restart Redis.

    Never the shared server: other test runs use that one.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process)
        return self

    def kill(self) -> None:
        """Stop it the hard way, as a crash would: whatever it held is gone."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
