"""The load generator's remote control: HTTP endpoints that run producers inside the server.

``POST /bench/<endpoint>`` with a JSON object of keyword arguments; the answer is JSON. Producer
calls answer with ``started`` and ``finished`` (the server's ``time.time()``), so the client can
frame its measurement window from the moment the first event could be created.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import baseline, floor, memprobe, streaming

logger = logging.getLogger("bench.control")

PRODUCERS: dict[str, Callable[[str, int, float], Awaitable[None]]] = {
    "floor": floor.produce,
    "baseline": baseline.produce,
}
SHORT_TASKS: dict[str, Callable[[int], Awaitable[bool]]] = {
    "baseline": baseline.short_task,
    "streamapp": streaming.short_task,
    "streamapp_saved_first": streaming.short_task_saved_first,
    "streamapp_handed": streaming.short_task_handed,
}


async def create(count: int, events: int, rate: float) -> dict[str, Any]:
    """streamapp: pending tasks to subscribe to before they start."""
    return {"groups": await streaming.create(count, events, rate)}


async def produce(target: str, groups: list[str], events: int, rate: float) -> dict[str, Any]:
    """Run one producer per group, all at once; answer when every one has finished."""
    started = time.time()
    if target == "streamapp":
        await streaming.run_all(groups)  # events and rate are the tasks' own fields
    else:
        await asyncio.gather(*(PRODUCERS[target](group, events, rate) for group in groups))
    return {"started": started, "finished": time.time()}


async def short(target: str, count: int, concurrency: int) -> dict[str, Any]:
    """``count`` short tasks, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def gated(number: int) -> bool:
        async with gate:
            return await SHORT_TASKS[target](number)

    started = time.time()
    done = await asyncio.gather(*(gated(number) for number in range(count)))
    return {"started": started, "finished": time.time(), "completed": sum(done)}


async def tally(after: int = 0) -> dict[str, Any]:
    """BenchTasks above pk ``after``: statuses and whether each has its short task's events."""
    return await streaming.tally(after)


async def forget() -> dict[str, Any]:
    """Delete every BenchTask and its events (bench.workers, before each run)."""
    return {"deleted": await streaming.forget()}


async def idle(running: int, finished: int) -> dict[str, Any]:
    """streamapp: quiet running tasks and finished ones, for idle subscriptions."""
    return await streaming.idle_tasks(running, finished)


async def start(keys: list[str]) -> dict[str, Any]:
    """Start tasks without waiting for them (through the workers when RUN_TASKS is off)."""
    return {"started": await streaming.start_tasks(keys)}


async def stop(keys: list[str]) -> dict[str, Any]:
    return {"stopped": await streaming.stop_tasks(keys)}


async def collect_garbage() -> dict[str, Any]:
    """Before a memory reading: garbage is not memory a connection holds."""
    return {"collected": gc.collect()}


async def memory(action: str, sockets: int = 1) -> dict[str, Any]:
    """``mark`` before opening sockets, ``report`` once they are open (bench/memprobe.py)."""
    return memprobe.mark() if action == "mark" else memprobe.report(sockets)


ENDPOINTS: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
    "/bench/create": create,
    "/bench/produce": produce,
    "/bench/short": short,
    "/bench/gc": collect_garbage,
    "/bench/tally": tally,
    "/bench/forget": forget,
    "/bench/idle": idle,
    "/bench/start": start,
    "/bench/stop": stop,
    "/bench/memory": memory,
}


async def read_body(receive: Callable) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def application(scope: dict[str, Any], receive: Callable, send: Callable) -> None:
    body = await read_body(receive)
    endpoint = ENDPOINTS.get(scope["path"])
    if endpoint is None or scope["method"] != "POST":
        status, result = 404, {"error": f"no endpoint {scope['method']} {scope['path']}"}
    else:
        try:
            status, result = 200, await endpoint(**json.loads(body or b"{}"))
        except Exception as exc:
            logger.exception("bench endpoint failed path=%s", scope["path"])
            status, result = 500, {"error": f"{type(exc).__name__}: {exc}"}
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json")],
    })
    await send({"type": "http.response.body", "body": json.dumps(result).encode()})
