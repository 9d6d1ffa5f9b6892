"""pytest fixtures for testing StreamTasks: ``pytest_plugins = ["streamapp.testing.fixtures"]``
in your ``conftest.py`` (needs pytest-django and pytest-asyncio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from . import connect, finish_running_tasks, in_memory_layer, streamapp_settings


@pytest.fixture
def streamapp_layer() -> Iterator[Any]:
    """The in-memory channel layer, for this test."""
    with in_memory_layer():
        yield get_channel_layer()


@pytest.fixture
async def streamapp_runtime() -> AsyncIterator[None]:
    """No task outlives the test: whatever still runs is cancelled at its end."""
    yield
    await finish_running_tasks()


@pytest.fixture
async def task_socket(
    streamapp_runtime: None,
) -> AsyncIterator[Callable[..., Awaitable[WebsocketCommunicator]]]:
    """``ws = await task_socket(task, user=alice, since=0)``: ``streamapp.testing.connect``,
    disconnected at the end of the test."""
    opened: list[WebsocketCommunicator] = []

    async def open_socket(*args: Any, **kwargs: Any) -> WebsocketCommunicator:
        communicator = await connect(*args, **kwargs)
        opened.append(communicator)
        return communicator

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


@pytest.fixture
def streamapp_override() -> Iterator[Callable[..., None]]:
    """``streamapp_override(AUTO_START=False)``: STREAMAPP keys for the rest of the test."""
    active = []

    def override(**values: Any) -> None:
        context = streamapp_settings(**values)
        context.enable()
        active.append(context)

    yield override
    for context in reversed(active):
        context.disable()
