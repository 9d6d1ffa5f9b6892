"""How the load generator drives each of the three servers under test."""

from __future__ import annotations

import itertools
from typing import Any

from .server import BenchServer

_run_numbers = itertools.count(1)


class Target:
    """One of floor, baseline, streamapp: where sockets connect and how a producer starts."""

    name = ""
    stateful = False  # sockets open with a state frame and end with a final one

    async def groups(self, server: BenchServer, count: int, events: int, rate: float) -> list[str]:
        """Fresh group names (a new run never meets an earlier run's sockets)."""
        run = next(_run_numbers)
        return [f"r{run}g{i}" for i in range(count)]

    def url(self, server: BenchServer, group: str) -> str:
        raise NotImplementedError

    async def produce(
        self, server: BenchServer, groups: list[str], events: int, rate: float
    ) -> dict[str, Any]:
        """Run the producers in the server; answers ``started``/``finished`` once they are done."""
        return await server.post(
            "produce", target=self.name, groups=groups, events=events, rate=rate
        )


class Floor(Target):
    name = "floor"

    def url(self, server: BenchServer, group: str) -> str:
        return server.ws_url(f"bench/floor/{group}/")


class Baseline(Target):
    name = "baseline"

    def url(self, server: BenchServer, group: str) -> str:
        return server.ws_url(f"bench/baseline/{group}/")


class StreamApp(Target):
    name = "streamapp"
    stateful = True

    async def groups(self, server: BenchServer, count: int, events: int, rate: float) -> list[str]:
        """New pending BenchTasks that emit ``events`` at ``rate`` once started."""
        return (await server.post("create", count=count, events=events, rate=rate))["groups"]

    def url(self, server: BenchServer, group: str) -> str:
        return server.ws_url(f"ws/tasks/{group}/")


FLOOR, BASELINE, STREAMAPP = Floor(), Baseline(), StreamApp()
TARGETS = (FLOOR, BASELINE, STREAMAPP)
TARGET_NAMES = tuple(target.name for target in TARGETS)
