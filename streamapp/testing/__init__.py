"""Test your own StreamTasks: connect to them, run them to their end, check their streams.

Plain helpers, built on ``channels.testing.WebsocketCommunicator`` and the project's own ASGI
application (``ASGI_APPLICATION``), so a test goes through the same wiring as a client. They
work from pytest (with pytest-django and pytest-asyncio; fixtures in
``streamapp.testing.fixtures``) and from Django's ``TransactionTestCase`` (async test methods).
Tasks run in the test's process: use a database that threads share (``TransactionTestCase``,
or ``@pytest.mark.django_db(transaction=True)``) and the in-memory channel layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from channels.routing import get_default_application
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import AsyncClient, override_settings

from ..conf import app_settings
from ..coordinator import coordinator
from ..models import FINAL_STATUSES, StreamTask

__all__ = [
    "IN_MEMORY_LAYERS", "TaskRun", "assert_stream_whole", "connect", "finish_running_tasks",
    "in_memory_layer", "run_task", "streamapp_settings", "subscribe", "task_path",
]

IN_MEMORY_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


def in_memory_layer() -> override_settings:
    """``with in_memory_layer():`` (or as a decorator): one process, no Redis."""
    return override_settings(CHANNEL_LAYERS=IN_MEMORY_LAYERS)


def streamapp_settings(**overrides: Any) -> override_settings:
    """``with streamapp_settings(AUTO_START=False):``: STREAMAPP keys changed, the rest kept."""
    current = getattr(settings, "STREAMAPP", None) or {}
    return override_settings(STREAMAPP={**current, **overrides})


def task_path(task: StreamTask, since: int | None = None) -> str:
    """The one-task endpoint of ``task``: ``/ws/tasks/<app_label>/<model>/<pk>/[?since=N]``."""
    meta = task._meta
    path = f"/ws/tasks/{meta.app_label}/{meta.model_name}/{task.pk}/"
    return path if since is None else f"{path}?since={since}"


async def session_cookie(user: Any) -> list[tuple[bytes, bytes]]:
    """A ``Cookie`` header of a session signed in as ``user``, as a browser would send it."""
    client = AsyncClient()
    await client.aforce_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    return [(b"cookie", f"{cookie.key}={cookie.value}".encode())]


async def connect(
    task: StreamTask | None = None,
    *,
    user: Any = None,
    since: int | None = None,
    application: Any = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    timeout: float = 5,
) -> WebsocketCommunicator:
    """A connected communicator: ``task``'s endpoint, or ``ws/tasks/`` when ``task`` is None.

    ``user``: signed in through a real session cookie (None: anonymous). ``application``:
    defaults to the project's ``ASGI_APPLICATION``. Disconnect it when done.
    """
    path = task_path(task, since) if task is not None else "/ws/tasks/"
    headers = list(headers or [])
    if user is not None:
        headers += await session_cookie(user)
    communicator = WebsocketCommunicator(application or get_default_application(), path,
                                         headers=headers)
    connected, _ = await communicator.connect(timeout=timeout)
    if not connected:
        raise AssertionError(f"the server refused the WebSocket handshake on {path}")
    return communicator


async def subscribe(
    communicator: WebsocketCommunicator, task: StreamTask, since: int | None = None
) -> None:
    """On ``ws/tasks/``: subscribe to ``task`` (``since``: replay from there)."""
    action: dict[str, Any] = {"action": "subscribe", "task": task.task_key}
    if since is not None:
        action["since"] = since
    await communicator.send_json_to(action)


@dataclass
class TaskRun:
    """What a client saw of one task, from its first frame to the server's close."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None

    @property
    def events(self) -> list[dict[str, Any]]:
        return [frame for frame in self.frames if frame["type"] == "event"]

    @property
    def names(self) -> list[str]:
        """Each event's name, in order (``send_event(name, data)``)."""
        return [frame["event"] for frame in self.events]

    @property
    def data(self) -> list[Any]:
        return [frame["data"] for frame in self.events]

    @property
    def final(self) -> dict[str, Any]:
        """The last ``state`` frame."""
        return [frame for frame in self.frames if frame["type"] == "state"][-1]

    @property
    def status(self) -> str:
        return self.final["status"]

    @property
    def final_value(self) -> Any:
        return self.final["final_value"]

    @property
    def error(self) -> dict[str, Any] | None:
        return self.final["error"]


async def receive_until_closed(
    communicator: WebsocketCommunicator, timeout: float = 10
) -> TaskRun:
    """Every frame up to the server's close (``timeout``: the longest wait for one frame)."""
    run = TaskRun()
    while True:
        try:
            output = await communicator.receive_output(timeout)
        except TimeoutError:
            raise AssertionError(
                f"no frame and no close for {timeout} s; the last frames were "
                f"{run.frames[-3:]} (is CHANNEL_LAYERS set, and the task finishing?)"
            ) from None
        if output["type"] == "websocket.close":
            run.close_code = output.get("code")
            return run
        run.frames.append(json.loads(output["text"]))


async def run_task(
    task: StreamTask, *, user: Any = None, application: Any = None, timeout: float = 10
) -> TaskRun:
    """Watch ``task`` from its first event to its final state, as a client would.

    Subscribes with ``since=0`` (so nothing is missed), starts the task if subscribing does
    not (``AUTO_START`` off), and returns the frames once the server closes the socket.
    ``timeout``: the longest wait for any one frame.
    """
    communicator = await connect(task, user=user, since=0, application=application)
    try:
        if not app_settings.AUTO_START:
            await coordinator.start_task(task)
        return await receive_until_closed(communicator, timeout)
    finally:
        await communicator.disconnect()


def assert_stream_whole(frames: list[dict[str, Any]], since: int = 0) -> None:
    """Raise AssertionError unless ``frames`` hold every event after ``since`` once, in order,
    and end with a final ``state`` whose ``seq`` is the last event's."""
    events = [frame for frame in frames if frame["type"] == "event"]
    seqs = [frame["seq"] for frame in events]
    expected = list(range(since + 1, since + 1 + len(seqs)))
    if seqs != expected:
        raise AssertionError(f"event seqs are not {since + 1}, {since + 2}, … in order: {seqs}")
    states = [frame for frame in frames if frame["type"] == "state"]
    if not states or states[-1]["status"] not in FINAL_STATUSES:
        raise AssertionError(f"the stream does not end with a final state: {frames[-1:]}")
    last = seqs[-1] if seqs else since
    if states[-1]["seq"] != last:
        raise AssertionError(f"the final state says seq {states[-1]['seq']}, the last event "
                             f"was {last}: events are missing")
    if frames[-1] is not states[-1]:
        raise AssertionError(f"frames follow the final state: {frames[frames.index(states[-1]):]}")


async def finish_running_tasks(timeout: float = 0) -> None:
    """End whatever a test left running (cancelled after ``timeout`` s), ready for the next."""
    await coordinator.shutdown(timeout=timeout)
    coordinator.reopen()

