"""Who may read /metrics and /ready's reasons (streamapp/monitoring.py): public unless a setting
limits it; then allowed addresses (found through TRUSTED_PROXIES) or a bearer token."""

from __future__ import annotations

import json
import logging

import pytest
from django.test import AsyncRequestFactory

from streamapp import views
from tests.support.clients import with_streamapp
from tests.support.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "s3cret-for-the-scraper-only"


@pytest.fixture
def layer_down(settings):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
    }}


async def get(path, address="127.0.0.1", **headers):
    """The view's answer to a request from ``address`` (the test client always says 127.0.0.1)."""
    request = AsyncRequestFactory().get(path, headers=headers)
    request.META["REMOTE_ADDR"] = address
    view = {"/metrics": views.metrics_view, "/ready": views.ready}[path]
    return await view(request)


async def test_metrics_are_public_until_a_setting_limits_them(settings):
    assert (await get("/metrics", "203.0.113.9")).status_code == 200
    with_streamapp(settings, METRICS_TOKEN=SECRET)
    refused = await get("/metrics", "203.0.113.9")
    assert refused.status_code == 403 and b"streamapp_" not in refused.content
    allowed = await get("/metrics", "203.0.113.9", Authorization=f"Bearer {SECRET}")
    assert allowed.status_code == 200 and b"streamapp_sockets_connected" in allowed.content
    wrong = await get("/metrics", "203.0.113.9", Authorization=f"Bearer {SECRET}x")
    assert wrong.status_code == 403


async def test_metrics_by_address_and_network(settings):
    with_streamapp(settings, METRICS_ALLOWED_ADDRESSES=["10.0.0.0/8", "192.0.2.7"])
    assert (await get("/metrics", "10.20.30.40")).status_code == 200
    assert (await get("/metrics", "192.0.2.7")).status_code == 200
    assert (await get("/metrics", "192.0.2.8")).status_code == 403
    assert (await get("/metrics", "not-an-address")).status_code == 403


async def test_metrics_addresses_behind_a_trusted_proxy(settings):
    """The proxy's own address is not the scraper's: the one it saw is."""
    with_streamapp(settings, METRICS_ALLOWED_ADDRESSES=["192.0.2.7"], TRUSTED_PROXIES=1)
    via_proxy = {"X-Forwarded-For": "192.0.2.7"}
    assert (await get("/metrics", "10.0.0.2", **via_proxy)).status_code == 200
    forged = {"X-Forwarded-For": "192.0.2.7, 203.0.113.9"}  # the client wrote the first entry
    assert (await get("/metrics", "10.0.0.2", **forged)).status_code == 403
    with_streamapp(settings, METRICS_ALLOWED_ADDRESSES=["192.0.2.7"], TRUSTED_PROXIES=None)
    assert (await get("/metrics", "10.0.0.2", **via_proxy)).status_code == 403


async def test_ready_tells_the_public_only_unavailable_and_logs_why(settings, layer_down, caplog):
    caplog.set_level(logging.DEBUG, logger="streamapp.readiness")
    first, again = await get("/ready", "203.0.113.9"), await get("/ready", "203.0.113.9")
    for response in (first, again):
        assert response.status_code == 503
        assert json.loads(response.content) == {"ready": False, "status": "unavailable"}
        assert b"Error 111" not in response.content and b"127.0.0.1" not in response.content
    logged = [(r.levelname, r.getMessage()) for r in caplog.records
              if r.name == "streamapp.readiness"]
    assert [level for level, _ in logged] == ["WARNING", "DEBUG"]  # a poller logs changes once
    assert logged[0][1].startswith("not ready: channel layer: ConnectionError: Error 111")


async def test_ready_tells_its_reasons_to_whoever_may_read_metrics(settings, layer_down):
    with_streamapp(settings, METRICS_TOKEN=SECRET)
    public = await get("/ready")
    assert "problems" not in json.loads(public.content)
    operator = await get("/ready", Authorization=f"Bearer {SECRET}")
    assert operator.status_code == 503
    assert [p.split(":")[0] for p in json.loads(operator.content)["problems"]] == ["channel layer"]
