"""How big a benchmark run is: smoke (CI, under a minute), medium, full."""

from __future__ import annotations

from dataclasses import dataclass

LAYERS = ("memory", "redis", "pubsub")
# What a run measures, per layer (``--parts``): fan-out (max and fixed rate), fixed rate at
# scale (many subscribers, several load-generator processes), idle subscriptions (server CPU
# while nothing happens), short tasks, connect time, idle memory.
PARTS = ("fanout", "scale", "idle", "short", "connect", "memory")


@dataclass(frozen=True)
class FanOut:
    """``tasks`` producers at once, each watched by ``subscribers`` sockets of its own."""

    tasks: int
    subscribers: int

    @property
    def sockets(self) -> int:
        return self.tasks * self.subscribers

    @property
    def label(self) -> str:
        return f"{self.tasks} task{'s' if self.tasks > 1 else ''} × {self.subscribers}"


@dataclass(frozen=True)
class Sizes:
    name: str
    fanouts: tuple[FanOut, ...]
    layers: tuple[str, ...]
    frames_per_run: int  # a max-rate run aims at about this many delivered frames …
    min_events: int  # … with at least this many events per task …
    max_events: int  # … and at most this many
    latency_frames_per_s: int  # a fixed-rate run offers about this many frames per second …
    latency_seconds: float  # … for about this long
    max_latency_rate: float  # events per second per task, at most
    idle_sockets: int  # for the memory figure
    connect_sockets: int  # connected and subscribed at once, for the connect time
    short_tasks: int
    short_concurrency: int
    # A run ends when all its frames are in, or none came for ``quiet`` s; streamapp's streams
    # end themselves (final state, close) and may repair a gap late, so they get longer.
    quiet: float
    stream_quiet: float
    # fixed rate at scale: subscribers of one task, events per second, seconds, client processes
    scale: tuple[int, float, float, int] = (1_000, 20, 10, 4)
    # idle subscriptions: sockets, subscriptions each (half to quiet running tasks, half to
    # finished ones), seconds the server's CPU is read
    idle: tuple[int, int, float] = (500, 100, 20)
    parts: tuple[str, ...] = PARTS

    def max_rate_events(self, fanout: FanOut) -> int:
        per_socket = self.frames_per_run // fanout.sockets
        return max(self.min_events, min(self.max_events, per_socket))

    def fixed_rate(self, fanout: FanOut) -> tuple[int, float]:
        """(events per task, events per second per task) of the latency run."""
        rate = min(self.max_latency_rate, self.latency_frames_per_s / fanout.sockets)
        return max(5, round(rate * self.latency_seconds)), rate


ONE_TASK = (FanOut(1, 1), FanOut(1, 100), FanOut(1, 1000))

SIZES = {
    "smoke": Sizes(
        name="smoke", fanouts=(FanOut(1, 1), FanOut(1, 10), FanOut(3, 2)),
        layers=("memory", "redis"), frames_per_run=500, min_events=50, max_events=50,
        latency_frames_per_s=200, latency_seconds=0.25, max_latency_rate=100,
        idle_sockets=20, connect_sockets=50, short_tasks=20, short_concurrency=5,
        quiet=1.0, stream_quiet=15,
        scale=(20, 20, 2, 2), idle=(10, 10, 2),
    ),
    "medium": Sizes(
        name="medium", fanouts=(*ONE_TASK, FanOut(100, 10)), layers=LAYERS,
        frames_per_run=30_000, min_events=30, max_events=5_000,
        latency_frames_per_s=1_000, latency_seconds=3, max_latency_rate=50,
        idle_sockets=1_000, connect_sockets=1_000, short_tasks=1_000, short_concurrency=100,
        quiet=3.0, stream_quiet=60,
        scale=(1_000, 20, 6, 4), idle=(500, 100, 12),
    ),
    "full": Sizes(
        name="full", fanouts=(*ONE_TASK, FanOut(100, 10)), layers=LAYERS,
        frames_per_run=100_000, min_events=100, max_events=20_000,
        latency_frames_per_s=1_000, latency_seconds=6, max_latency_rate=50,
        idle_sockets=1_000, connect_sockets=1_000, short_tasks=2_000, short_concurrency=100,
        quiet=5.0, stream_quiet=60,
    ),
}
