"""pytest fixtures for testing StreamTasks: ``pytest_plugins = ["streamapp.testing.fixtures"]``
in your ``conftest.py`` (needs pytest-django and pytest-asyncio)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from . import IN_MEMORY_LAYERS, connect, finish_running_tasks


@pytest.fixture
def streamapp_layer(settings: Any) -> Any:
    """The in-memory channel layer, for this test.

    Through pytest-django's ``settings``, like ``streamapp_override``: its changes are undone in
    reverse order, so two of them never restore each other's settings.
    """
    settings.CHANNEL_LAYERS = IN_MEMORY_LAYERS
    return get_channel_layer()


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
def streamapp_override(settings: Any) -> Callable[..., None]:
    """``streamapp_override(AUTO_START=False)``: STREAMAPP keys for the rest of the test."""

    def override(**values: Any) -> None:
        settings.STREAMAPP = {**(getattr(settings, "STREAMAPP", None) or {}), **values}

    return override
