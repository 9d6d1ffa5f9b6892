"""Fixtures: communicators on the real ASGI application, and a clean coordinator per test."""

from __future__ import annotations

import os

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.apps import apps
from django.db import connections

from consumers.logpages import log_pages
from streamapp import outages
from streamapp.coordinator import coordinator

from .support.browser import launch_chromium, open_page
from .support.helpers import task_path
from .support.processes import ProcessDatabase

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
    try:
        await coordinator.shutdown(timeout=0)
        layer = get_channel_layer()
        if layer is not None and hasattr(layer, "flush"):
            await layer.flush()
    finally:
        # A failed test must not leave the next one a closed coordinator or a held connection:
        # the async ORM's worker thread keeps its own, and the test database must be flushed.
        coordinator.reopen()
        log_pages.clear()  # a later test may reuse a task key
        outages.reset()  # nor does it inherit an outage (the sweeper holds off after one)
        await sync_to_async(connections.close_all)()


@pytest.fixture
def proxy_of():
    """``proxy_of(model, **attributes)``: a proxy StreamTask model reading ``model``'s table, out
    of the app registry after the test (workers, sweeps and checks walk the registry)."""
    made = []

    def make(model, **attributes):
        meta = type("Meta", (), {"proxy": True, "app_label": model._meta.app_label})
        body = {"Meta": meta, "__module__": __name__, **attributes}
        proxy = type(f"Proxy{model.__name__}", (model,), body)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        del apps.all_models[proxy._meta.app_label][proxy._meta.model_name]
    apps.clear_cache()


@pytest.fixture
def process_db(tmp_path):
    """A migrated database of its own for tests whose servers run in subprocesses."""
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path, f"{tag}_e2e").create()
    yield database
    database.drop()


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
        try:
            await communicator.disconnect(timeout=5)
        except Exception:  # the test already failed or closed it; the next must still run
            pass


@pytest.fixture(scope="session")
async def chromium():
    """One headless Chromium for the whole run (tests/support/browser.py)."""
    async with launch_chromium() as browser:
        yield browser


@pytest.fixture
async def page(chromium):
    """A fresh browser page; the test fails if the page throws an uncaught error."""
    async with open_page(chromium) as browser_page:
        yield browser_page


@pytest.fixture(params=["run's layer", "pubsub"])
async def layer(request, settings):
    """The run's channel layer, then (with Redis) RedisPubSubChannelLayer."""
    if request.param == "pubsub":
        if not USING_REDIS:
            pytest.skip("RedisPubSubChannelLayer needs REDIS_URL")
        prefix = os.environ.get("STREAMAPP_LAYER_PREFIX", "asgi") + "_pubsub"
        settings.CHANNEL_LAYERS = {"default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [os.environ["REDIS_URL"]], "prefix": prefix},
        }}
    yield get_channel_layer()
    if request.param == "pubsub":
        # Its receive task and connections end with this test, not with the session.
        await coordinator.shutdown(timeout=0)
        coordinator.reopen()
        await get_channel_layer().flush()
