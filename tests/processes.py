"""Real server processes for end-to-end tests: daphne (and later workers) as subprocesses.

A process is ready when its port accepts connections, never after a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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


class Daphne:
    """``with Daphne(env) as server:`` serves ``asgi:application`` on ``server.port``."""

    def __init__(self, env: dict[str, str], port: int | None = None, *args: str) -> None:
        self.env = env
        self.port = port or free_port()
        self.args = args  # more daphne options
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> "Daphne":
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full one would
        # block the server on its next log line.
        fd, self.output_path = tempfile.mkstemp(prefix="daphne-", suffix=".log")
        with os.fdopen(fd, "a") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 *self.args, "asgi:application"],
                cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT,
            )
        wait_for_port(self.port, self.process)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> str:
        """Stop the server; returns what it printed."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        output = self.printed()
        os.unlink(self.output_path)
        return output

    def printed(self) -> str:
        """What the server has printed so far."""
        with open(self.output_path, errors="replace") as output:
            return output.read()

    def __enter__(self) -> "Daphne":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


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

    def create(self) -> "ProcessDatabase":
        if self.postgres:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin(f'CREATE DATABASE "{self.name}"')
        manage(self.env, "migrate", "--noinput", "-v", "0")
        return self

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

    def start(self) -> "RedisServer":
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

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()
