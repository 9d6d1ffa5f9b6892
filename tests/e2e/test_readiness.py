"""/ready: 200 when the database and the channel layer answer, 503 otherwise; the reason is logged,
never told to the public."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient, override_settings

from tests.support.processes import Daphne, free_port, server_env

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},
    }
}


async def test_ready_when_database_and_channel_layer_answer():
    response = await AsyncClient().get("/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "status": "ok"}


async def test_not_ready_when_the_channel_layer_is_unreachable(caplog):
    with override_settings(CHANNEL_LAYERS=CLOSED_REDIS):
        try:
            response = await AsyncClient().get("/ready")
        finally:
            await get_channel_layer().close_pools()
        health = await AsyncClient().get("/health")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "status": "unavailable"}
    logged = [r.getMessage() for r in caplog.records if r.name == "streamapp.readiness"]
    assert len(logged) == 1 and logged[0].startswith("not ready: channel layer: ")
    assert health.status_code == 200  # liveness does no I/O


async def test_not_ready_without_a_channel_layer(caplog):
    with override_settings(CHANNEL_LAYERS={}):
        response = await AsyncClient().get("/ready")
    assert response.status_code == 503
    assert "not ready: channel layer: none configured (CHANNEL_LAYERS)" in caplog.messages


@pytest.mark.slow
def test_not_ready_when_the_database_is_unreachable():
    """Daphne whose settings point PostgreSQL at a port nothing listens on."""
    env = server_env(DATABASE_URL=f"postgres://postgres@127.0.0.1:{free_port()}/nowhere")
    with Daphne(env) as server:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{server.url}/ready", timeout=10)
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as health:
            assert health.read() == b"OK"
    assert refused.value.code == 503
    assert json.loads(refused.value.read()) == {"ready": False, "status": "unavailable"}
    line = server.wait_for_line("not ready: ")  # the reason is in the log, not the answer
    assert "database: OperationalError: " in line and "Connection refused" in line
