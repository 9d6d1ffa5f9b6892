"""ASGI servers other than daphne, as subprocesses: uvicorn and hypercorn serving asgi.py."""

from __future__ import annotations

import sys

from tests.support.processes import Daphne, ServerProcess, free_port, wait_for_port


class Uvicorn(ServerProcess):
    """``with Uvicorn(env) as server:`` serves ``asgi:application`` with lifespan on."""

    def __init__(self, env: dict[str, str], app: str = "asgi:application") -> None:
        super().__init__(env)
        self.port = free_port()
        self.app = app

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(self.port),
                "--lifespan", "on", self.app]

    def wait_until_ready(self) -> None:
        wait_for_port(self.port, self.process)


class Hypercorn(Uvicorn):
    """One process (``--workers 0``): hypercorn then handles SIGTERM on its own event loop,
    where streamapp's lifespan can close the sockets first (docs/operations.md)."""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "hypercorn", "--workers", "0", "--bind",
                f"127.0.0.1:{self.port}", self.app]


SERVERS = {"daphne": Daphne, "uvicorn": Uvicorn, "hypercorn": Hypercorn}
