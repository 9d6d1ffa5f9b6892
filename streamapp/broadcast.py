"""streamapp on the channel layer: group names, the messages it publishes, its listeners' loop.

The layer is a doorbell, not a log: a publish may be dropped (a full channel, Redis away), so a
failed publish is swallowed; subscribers repair from the event log. A layer that is away is an
outage (streamapp/outages.py): logged when it starts and when it ends, with what failed
meanwhile counted, never once per message.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from channels.layers import get_channel_layer

from . import outages, protocol
from .adapters import memorylayer
from .outages import is_unavailable

logger = logging.getLogger("streamapp.broadcast")

# Short prefixes keep every group name under the layer's 100-character limit.
TASK_GROUP_PREFIX = "sa.t."
CONTROL_GROUP_PREFIX = "sa.c."
WORKERS_GROUP = "sa.workers"
RETRY_SECONDS = (0.1, 0.25, 0.5, 1.0)  # between failed receives: soon back once the layer is


def task_group(key: str) -> str:
    """Subscribers of a task's events and state changes."""
    return TASK_GROUP_PREFIX + key


def control_group(key: str) -> str:
    """The process running a task: cancel and signal messages."""
    return CONTROL_GROUP_PREFIX + key


async def _group_send(group: str, message: dict[str, Any]) -> bool:
    layer = get_channel_layer()
    if layer is None:
        return False
    if memorylayer.nobody_in(layer, group):
        return True  # this process is the whole layer, and nobody here listens
    try:
        await layer.group_send(group, message)
    except Exception as exc:  # the layer only carries news; the log and the DB stay right
        layer_trouble(message["type"], exc, key=message.get("task"))
        return False
    outages.channel_layer.answered()
    return True


def layer_trouble(what: str, exc: BaseException, key: str | None = None) -> None:
    """A layer operation failed: an outage when the layer is away, else logged with its cause."""
    if is_unavailable(exc):
        outages.channel_layer.failed(what, exc)
    else:
        logger.warning("channel layer %s failed key=%s", what, key, exc_info=True,
                       extra={"task_key": key})


async def publish_events(key: str, events: Sequence[tuple[int, str]]) -> bool:
    """Announce logged events ``(seq, frame)`` of one task, in order, in one layer message."""
    return await _group_send(
        task_group(key), {"type": "stream.events", "task": key, "events": list(events)}
    )


async def publish_state(key: str, revision: int, status: str, seq: int, frame: str) -> bool:
    return await _group_send(
        task_group(key),
        {
            "type": "stream.state",
            "task": key,
            "revision": revision,
            "status": status,
            "seq": seq,
            "frame": frame,
        },
    )


async def publish_task_state(task: Any, seq: int) -> bool:
    """Announce a StreamTask's status as loaded, at ``seq``; its revision orders the news."""
    frame = protocol.state(task.task_key, task.status, seq, task.final_value, task.error)
    return await publish_state(
        task.task_key, task.revision, task.status, seq, protocol.encode(frame)
    )


async def send_control(key: str, message: dict[str, Any]) -> bool:
    """Reach whichever process runs the task ``key`` (cancel, signals)."""
    return await _group_send(control_group(key), {**message, "task": key})


async def wake_workers() -> bool:
    """Tell task workers a task became claimable, so none has to wait for its poll.

    Calls that come while a wake-up is being sent share the next one (``WakeUps``).
    """
    loop = asyncio.get_running_loop()
    wakes = _wake_ups.get(loop)
    if wakes is None:
        wakes = _wake_ups[loop] = WakeUps()
    return await wakes.wake()


class WakeUps:
    """One event loop's wake-ups, coalesced: a burst of N handed tasks sends a few messages,
    not N, to every worker.

    A caller's task is claimable before it calls, so the wake-up it gets is always one whose
    sending starts after its call: while one is being sent, the callers wait for the next,
    which goes out once that one is done; every caller waiting for it shares it.
    """

    def __init__(self) -> None:
        self._sending: asyncio.Task[bool] | None = None
        self._next: asyncio.Task[bool] | None = None

    async def wake(self) -> bool:
        if self._next is None:
            self._next = asyncio.create_task(self._send(self._sending), name="wake workers")
        # Shielded: a caller cancelled leaves the wake-up going for the others.
        return await asyncio.shield(self._next)

    async def _send(self, previous: asyncio.Task[bool] | None) -> bool:
        if previous is not None:
            await asyncio.wait([previous])
        self._sending, self._next = self._next, None  # later callers wait for another one
        return await _group_send(WORKERS_GROUP, {"type": "workers.wake"})


_wake_ups: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, WakeUps] = (
    weakref.WeakKeyDictionary()
)


async def receive_forever(
    layer: Any,
    channel: str,
    handle: Callable[[dict[str, Any]], Awaitable[None] | None],
    what: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Hand every message arriving on ``channel`` to ``handle`` (awaited if async), until cancelled.

    A failed receive (Redis away) is reported and retried, soon at first, then every second;
    ``on_failure`` hears of each failure (the caller may have memberships to make again).
    """
    failures = 0
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            layer_trouble(f"{what} receive", exc)
            if on_failure is not None:
                on_failure()
            await asyncio.sleep(RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)])
            failures += 1
            continue
        failures = 0
        outages.channel_layer.answered()
        handled = handle(message)
        if handled is not None:
            await handled
