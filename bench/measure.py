"""The measurements: one fan-out run, short tasks, idle memory; each returns a dict of figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

from .clients import Audience
from .crowd import Crowd
from .server import (
    CLOCK_TICKS,
    BenchServer,
    CpuSampler,
    ServerConfig,
    cpu_seconds,
    rss_bytes,
    wait_until_idle,
)
from .sizes import FanOut, Sizes
from .targets import Target

MAX_FAILURES_KEPT = 5
WARM_UP_SOCKETS = 10
RUN_LIMIT = 900  # seconds: a run that still trickles in after this is cut off


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


async def fan_out(
    server: BenchServer, target: Target, fanout: FanOut, events: int, rate: float,
    sizes: Sizes, around_delivery: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """Subscribe every socket, start the producers, and time what arrives.

    The delivery window runs from the moment the server started producing to the last event
    frame received; server CPU is read over exactly that window.
    """
    groups = await target.groups(server, fanout.tasks, events, rate)
    urls = [target.url(server, group) for group in groups for _ in range(fanout.subscribers)]
    audience = Audience(urls, events, target.stateful)
    await audience.open()
    try:
        await wait_until_idle(server.pid)
        async with CpuSampler(server.pid) as sampler, around_delivery():
            client_cpu, wall = time.process_time(), time.time()
            produced = await target.produce(server, groups, events, rate)
            quiet = sizes.stream_quiet if target.stateful else sizes.quiet
            complete = await audience.wait(quiet, limit=RUN_LIMIT)
            client_cpu, wall = time.process_time() - client_cpu, time.time() - wall
    finally:
        await audience.close()
    start = produced["started"]
    end = audience.last_event_at if audience.received else produced["finished"]
    seconds = max(end - start, 1e-9)
    server_cpu = sampler.between(start, end)
    frames = audience.received
    return {
        "target": target.name, "tasks": fanout.tasks, "subscribers": fanout.subscribers,
        "mode": "fixed" if rate else "max", "events": events, "rate": rate,
        "expected": audience.expected, "received": frames,
        "lost": audience.expected - frames, "seq_errors": audience.seq_errors,
        "complete": complete, "failures": len(audience.failures),
        "failure_examples": audience.failures[:MAX_FAILURES_KEPT],
        "seconds": seconds, "frames_per_s": frames / seconds,
        "server_cpu_s": server_cpu, "cpu_ticks": round(server_cpu * CLOCK_TICKS),
        "cpu_us_per_frame": server_cpu / frames * 1e6 if frames else None,
        "server_busy": server_cpu / seconds,
        "client_busy": client_cpu / wall if wall else None,
        "p50_ms": _ms(percentile(audience.latencies, 0.50)),
        "p99_ms": _ms(percentile(audience.latencies, 0.99)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def fixed_rate_at_scale(
    server: BenchServer, target: Target, sizes: Sizes,
    around: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """One task, many subscribers, a fixed rate: latency and CPU per frame when the server is
    far from flat out, the sockets spread over several load-generator processes."""
    subscribers, rate, seconds, processes = sizes.scale
    events = max(5, round(rate * seconds))
    groups = await target.groups(server, 1, events, rate)
    crowd = Crowd([target.url(server, groups[0])] * subscribers, events, processes,
                  stateful=target.stateful)
    connect_seconds = await crowd.open()
    try:
        await wait_until_idle(server.pid)
        async with CpuSampler(server.pid) as sampler, around():
            quiet = sizes.stream_quiet if target.stateful else sizes.quiet
            produced, complete = await asyncio.gather(
                target.produce(server, groups, events, rate), crowd.wait(quiet, RUN_LIMIT)
            )
    finally:
        await crowd.close()
    start = produced["started"]
    end = crowd.last_event_at if crowd.received else produced["finished"]
    window = max(end - start, 1e-9)
    server_cpu = sampler.between(start, end)
    frames = crowd.received
    return {
        "target": target.name, "subscribers": subscribers, "rate": rate, "events": events,
        "processes": processes, "expected": crowd.expected, "received": frames,
        "lost": crowd.expected - frames, "seq_errors": crowd.seq_errors, "complete": complete,
        "failures": len(crowd.failures), "failure_examples": crowd.failures[:MAX_FAILURES_KEPT],
        "seconds": window, "frames_per_s": frames / window, "server_cpu_s": server_cpu,
        "cpu_us_per_frame": server_cpu / frames * 1e6 if frames else None,
        "server_busy": server_cpu / window, "client_busy": crowd.client_busy,
        "connect_seconds": connect_seconds,
        "p50_ms": _ms(percentile(crowd.latencies, 0.50)),
        "p99_ms": _ms(percentile(crowd.latencies, 0.99)),
    }


async def idle_subscriptions(server: BenchServer, sizes: Sizes) -> dict[str, Any]:
    """Server CPU while ``sockets`` × ``subscriptions`` subscriptions wait for news that does not
    come: half of them to quiet running tasks, half to finished ones (streamapp only)."""
    sockets, subscriptions, seconds = sizes.idle
    tasks = await server.post("idle", running=subscriptions // 2,
                              finished=subscriptions - subscriptions // 2)
    keys = tasks["running"] + tasks["finished"]
    crowd = Crowd([server.ws_url("ws/tasks/")] * sockets, 0, min(4, sockets), subscribe=keys)
    try:
        connect_seconds = await crowd.open()
        rss_before = rss_bytes(server.pid)
        await wait_until_idle(server.pid, timeout=30)
        cpu, wall = cpu_seconds(server.pid), time.time()
        await asyncio.sleep(seconds)  # the measurement is of a server left alone
        cpu, wall = cpu_seconds(server.pid) - cpu, time.time() - wall
        results = await crowd.report()
    finally:
        await crowd.close()
        await server.post("stop", keys=tasks["running"])
    return {
        "target": "streamapp", "sockets": sockets, "subscriptions": sockets * len(keys),
        "seconds": wall, "server_cpu_s": cpu, "core_share": cpu / wall,
        "connect_seconds": connect_seconds, "rss": rss_before,
        "failures": sum(r["failure_count"] for r in results),
    }


async def short_tasks(
    server: BenchServer, target: Target, sizes: Sizes,
    around: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext, variant: str = "",
) -> dict[str, Any]:
    """Short tasks started and finished per second, run inside the server."""
    async with around():
        cpu = cpu_seconds(server.pid)
        result = await server.post(
            "short", target=target.name + variant, count=sizes.short_tasks,
            concurrency=sizes.short_concurrency,
        )
        cpu = cpu_seconds(server.pid) - cpu
    seconds = result["finished"] - result["started"]
    return {
        "target": target.name + variant, "count": sizes.short_tasks,
        "completed": result["completed"], "concurrency": sizes.short_concurrency,
        "seconds": seconds, "tasks_per_s": result["completed"] / seconds,
        "cpu_us_per_task": cpu / sizes.short_tasks * 1e6,
    }


async def connect_time(
    server: BenchServer, target: Target, sockets: int,
    around: Callable[[], AbstractAsyncContextManager[Any]] = nullcontext,
) -> dict[str, Any]:
    """Seconds for ``sockets`` sockets to connect and be subscribed, CONNECTING_AT_ONCE at a
    time; streamapp's count once their ``state`` frame is in, the others once accepted."""
    group = (await target.groups(server, 1, 0, 0))[0]
    audience = Audience([target.url(server, group)] * sockets, 0, target.stateful)
    await wait_until_idle(server.pid)
    async with around():
        cpu, wall = cpu_seconds(server.pid), time.time()
        await audience.open()
        wall, cpu = time.time() - wall, cpu_seconds(server.pid) - cpu
    await audience.close()
    await wait_until_idle(server.pid)
    return {
        "target": target.name, "sockets": sockets, "seconds": wall,
        "per_s": sockets / wall, "cpu_us_per_socket": cpu / sockets * 1e6,
    }


async def idle_memory(
    layer: str, config: ServerConfig, target: Target, sizes: Sizes
) -> dict[str, Any]:
    """Server RSS per idle subscribed socket, in a fresh server of its own.

    A fresh process per target: memory freed by another target's sockets would otherwise be
    reused and hide what these sockets cost. A few sockets open and close first, so one-time
    allocations (imports, caches) are not counted.
    """
    async with BenchServer(layer, config, label=f"-idle-{target.name}") as server:
        group = (await target.groups(server, 1, 0, 0))[0]
        warm_up = Audience([target.url(server, group)] * WARM_UP_SOCKETS, 0, target.stateful)
        await warm_up.open()
        await warm_up.close()
        before = await settled_rss(server)
        audience = Audience([target.url(server, group)] * sizes.idle_sockets, 0, target.stateful)
        await audience.open()
        try:
            after = await settled_rss(server)
        finally:
            await audience.close()
    return {
        "target": target.name, "sockets": sizes.idle_sockets,
        "rss_before": before, "rss_after": after,
        "bytes_per_socket": (after - before) / sizes.idle_sockets,
    }



async def settled_rss(server: BenchServer) -> int:
    """The server's RSS once it is idle and has collected its garbage."""
    await wait_until_idle(server.pid)
    await server.post("gc")
    return rss_bytes(server.pid)
