"""A whole benchmark: per layer, one server runs every fan-out for the three targets in turn and
the short tasks; then each target's idle memory is read in a fresh server.

Within a scenario the targets take turns (floor, baseline, streamapp), so a change in the
machine's load between scenarios touches all three alike.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .measure import (
    connect_time,
    fan_out,
    fixed_rate_at_scale,
    idle_memory,
    idle_subscriptions,
    short_tasks,
)
from .profiling import py_spy, top_functions
from .report import number
from .server import BenchServer, ServerConfig
from .sizes import FanOut, Sizes
from .targets import BASELINE, STREAMAPP, TARGETS

Progress = Callable[[str], None]
PACKAGES = (
    "django", "channels", "channels-redis", "daphne", "twisted", "uvicorn", "websockets", "redis"
)


async def run_benchmark(
    sizes: Sizes, config: ServerConfig, out_dir: Path, progress: Progress,
    profile_subscribers: int | None = None, profile_parts: tuple[str, ...] = (),
) -> dict[str, Any]:
    results: dict[str, Any] = {
        "sizes": sizes.name, "machine": machine(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "started": datetime.now(UTC).isoformat(timespec="seconds"), "layers": {},
    }
    began = time.monotonic()
    for layer in sizes.layers:
        results["layers"][layer] = await run_layer(
            layer, sizes, config, out_dir, progress, profile_subscribers, profile_parts
        )
    results["seconds"] = time.monotonic() - began
    results["machine"]["load_average_after"] = os.getloadavg()
    return results


async def run_layer(
    layer: str, sizes: Sizes, config: ServerConfig, out_dir: Path, progress: Progress,
    profile_subscribers: int | None, profile_parts: tuple[str, ...] = (),
) -> dict[str, Any]:
    fanouts: list[dict[str, Any]] = []
    profiles: list[str] = []
    short: list[dict[str, Any]] = []
    connects: list[dict[str, Any]] = []
    memory: list[dict[str, Any]] = []
    scale: list[dict[str, Any]] = []
    idle: dict[str, Any] | None = None
    def profiled(part: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
        stem = out_dir / f"profile-{layer}-{part}"
        profiles.append(str(stem.with_suffix(".txt")))
        return partial(py_spy, server.pid, stem.with_suffix(".collapsed"))

    async with BenchServer(layer, config) as server:
        for fanout in sizes.fanouts if "fanout" in sizes.parts else ():
            for target in TARGETS:
                around = nullcontext
                if target is STREAMAPP and fanout == FanOut(1, profile_subscribers or 0):
                    stem = out_dir / f"profile-{layer}-{fanout.subscribers}"
                    around = partial(py_spy, server.pid, stem.with_suffix(".collapsed"))
                    profiles.append(str(stem.with_suffix(".txt")))
                run = await fan_out(server, target, fanout, sizes.max_rate_events(fanout), 0,
                                    sizes, around)
                fanouts.append({"layer": layer, **run})
                progress(describe(layer, fanout, run))
                events, rate = sizes.fixed_rate(fanout)
                run = await fan_out(server, target, fanout, events, rate, sizes)
                fanouts.append({"layer": layer, **run})
                progress(describe(layer, fanout, run))
        for target in TARGETS if "scale" in sizes.parts else ():
            around = profiled("scale") if target is STREAMAPP and "scale" in profile_parts else (
                nullcontext)
            scale.append(await fixed_rate_at_scale(server, target, sizes, around))
            progress(describe_scale(layer, scale[-1]))
        if "idle" in sizes.parts:
            idle = await idle_subscriptions(server, sizes)
            progress(f"{layer:7} idle           streamapp: {idle['subscriptions']:,} "
                     f"subscriptions, server CPU {idle['core_share']:.1%} of a core")
        for target in (BASELINE, STREAMAPP) if "short" in sizes.parts else ():
            around = profiled("short") if target is STREAMAPP and "short" in profile_parts else (
                nullcontext)
            short.append(await short_tasks(server, target, sizes, around))
            progress(f"{layer:7} short tasks    {target.name:9}: "
                     f"{short[-1]['tasks_per_s']:,.0f} tasks/s")
        if "short" in sizes.parts:
            short.append(await short_tasks(server, STREAMAPP, sizes, variant="_saved_first"))
            progress(f"{layer:7} short tasks    streamapp, saved first: "
                     f"{short[-1]['tasks_per_s']:,.0f} tasks/s")
        for target in TARGETS if "connect" in sizes.parts else ():
            around = nullcontext
            if target is STREAMAPP and "connect" in profile_parts:
                around = profiled("connect")
            connects.append(await connect_time(server, target, sizes.connect_sockets, around))
            progress(f"{layer:7} connect        {target.name:9}: {connects[-1]['sockets']:,} in "
                     f"{connects[-1]['seconds']:.2f} s, "
                     f"{connects[-1]['cpu_us_per_socket']:,.0f} µs server CPU each")
    for path in profiles:
        Path(path).write_text(top_functions(Path(path).with_suffix(".collapsed")))
        progress(f"profile: {path}")
    for target in TARGETS if "memory" in sizes.parts else ():
        memory.append(await idle_memory(layer, config, target, sizes))
        progress(f"{layer:7} idle memory    {target.name:9}: "
                 f"{memory[-1]['bytes_per_socket'] / 1024:,.1f} KiB per socket")
    return {"fanout": fanouts, "short": short, "memory": memory, "connect": connects,
            "scale": scale, "idle": idle, "profiles": profiles}


def describe_scale(layer: str, run: dict[str, Any]) -> str:
    return "  ".join([
        f"{layer:7} scale {run['subscribers']:,} × {run['rate']:g}/s {run['target']:9}:",
        f"{run['frames_per_s']:9,.0f} frames/s",
        f"{number(run['cpu_us_per_frame'], ',.0f'):>6} µs/frame",
        f"p50 {number(run['p50_ms'], ',.1f')} ms p99 {number(run['p99_ms'], ',.1f'):>7} ms",
        f"lost {run['lost']}", f"client {run['client_busy']:.0%} busy",
        *([f"failures {run['failures']}: {run['failure_examples'][0]}"] if run["failures"] else []),
    ])


def describe(layer: str, fanout: FanOut, run: dict[str, Any]) -> str:
    """One progress line per run."""
    parts = [
        f"{layer:7} {fanout.label:14} {run['target']:9} {run['mode']:5}:",
        f"{run['frames_per_s']:9,.0f} frames/s",
        f"{number(run['cpu_us_per_frame'], ',.0f'):>6} µs/frame",
        f"p99 {number(run['p99_ms'], ',.1f'):>7} ms",
        f"lost {run['lost']}",
    ]
    if run["seq_errors"]:
        parts.append(f"seq errors {run['seq_errors']}")
    if run["failures"]:
        parts.append(f"failures {run['failures']}: {run['failure_examples'][0]}")
    return "  ".join(parts)


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: version(name) for name in PACKAGES},
        "load_average_before": os.getloadavg(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

