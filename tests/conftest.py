"""Fixtures: communicators on the real ASGI application, and a clean coordinator per test."""

from __future__ import annotations

import os

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connections
from channels.testing import WebsocketCommunicator

from consumers.logpages import log_pages
from streamapp.coordinator import coordinator

from .helpers import task_path

USING_REDIS = bool(os.environ.get("REDIS_URL"))
USING_POSTGRES = bool(os.environ.get("DATABASE_URL"))


@pytest.fixture(scope="session")
def application():
    from asgi import application as asgi_application

    return asgi_application


@pytest.fixture(autouse=True)
async def clean_runtime():
    """Each test starts with no runs and an empty channel layer, and leaves none behind."""
    coordinator.reopen()
    yield
    await coordinator.shutdown(timeout=0)
    coordinator.reopen()
    log_pages.clear()  # a later test may reuse a task key
    layer = get_channel_layer()
    if layer is not None and hasattr(layer, "flush"):
        await layer.flush()
    # The async ORM's worker thread holds its own connection: close it so the test database
    # can be flushed and dropped.
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def communicator_for(application):
    """``await communicator_for(task_or_path, since=None)``: a connected WebsocketCommunicator."""
    opened: list[WebsocketCommunicator] = []

    async def connect(target, since=None, headers=None, expect_accept=True):
        path = target if isinstance(target, str) else task_path(target)
        if since is not None:
            path += f"?since={since}"
        communicator = WebsocketCommunicator(application, path, headers=headers or [])
        connected, _ = await communicator.connect(timeout=5)
        assert connected is expect_accept
        opened.append(communicator)
        return communicator

    yield connect
    for communicator in opened:
        await communicator.disconnect(timeout=5)
