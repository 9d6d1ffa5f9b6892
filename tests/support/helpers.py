"""Helpers shared by the tests: paths and frame collection with timeouts (never sleeps)."""

from __future__ import annotations

import asyncio
import io
import json

from django.core.management import call_command
from django.db import connections


def task_path(task) -> str:
    meta = task._meta
    return f"/ws/tasks/{meta.app_label}/{meta.model_name}/{task.pk}/"


async def receive_until_closed(communicator, timeout=5):
    """Every JSON frame up to the server's close, and the close code."""
    received = []
    while True:
        output = await communicator.receive_output(timeout)
        if output["type"] == "websocket.close":
            return received, output.get("code")
        received.append(json.loads(output["text"]))


async def receive_until(communicator, predicate, timeout=5):
    """Frames up to and including the first one for which ``predicate`` is true."""
    received = []
    while True:
        frame = await communicator.receive_json_from(timeout)
        received.append(frame)
        if predicate(frame):
            return received


def events_of(frames):
    """The event frames among ``frames``."""
    return [f for f in frames if f["type"] == "event"]


async def group_members(group: str) -> set[str]:
    """The channels in a channel-layer group (in-memory and RedisChannelLayer)."""
    from channels.layers import InMemoryChannelLayer, get_channel_layer

    layer = get_channel_layer()
    if isinstance(layer, InMemoryChannelLayer):
        return set(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    return {m.decode() for m in await connection.zrange(layer._group_key(group), 0, -1)}


async def started_step_task(communicator_for, **kwargs):
    """A StepTask with one socket on it, running: the test then sets the pace with ``step``."""
    from tests.testapp.models import StepTask

    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, **kwargs)
    await receive_until(ws, lambda f: f.get("status") == "running")
    return task, ws


async def step(task, times=1):
    for _ in range(times):
        await task.send_signal("step", "go")


async def run_to_end(task) -> None:
    """Start ``task`` in this process and wait until its run has ended."""
    from streamapp.coordinator import coordinator

    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=10)


async def finished_burst(count):
    """A BurstTask of ``count`` events, run to its end."""
    from tests.testapp.models import BurstTask

    task = await BurstTask.objects.acreate(count=count)
    await run_to_end(task)
    return task


async def command(*args, stdout=None) -> str:
    """Run a management command in a thread of its own, as a shell would; returns its output.

    The thread is not reused, so its own database connection is closed at the end.
    """
    out = stdout or io.StringIO()

    def run() -> None:
        try:
            call_command(*args, stdout=out)
        finally:
            connections.close_all()

    await asyncio.to_thread(run)
    return out.getvalue()
