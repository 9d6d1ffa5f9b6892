"""``/ready``: the database and the channel layer both answer, or a 503 that says only
"unavailable" (the reason goes to the log: tests/integration/test_monitoring_access.py)."""

from __future__ import annotations

import pytest

from tests.support.processes import free_port

pytestmark = pytest.mark.django_db(transaction=True)


async def test_ready_when_database_and_layer_answer(async_client):
    response = await async_client.get("/ready")
    assert response.status_code == 200 and response.json() == {"ready": True, "status": "ok"}


async def test_not_ready_logs_the_layer_that_does_not_answer(async_client, settings, caplog):
    settings.CHANNEL_LAYERS = {"default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [f"redis://127.0.0.1:{free_port()}/0"]},  # nothing listens there
    }}
    response = await async_client.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "status": "unavailable"}
    logged = [r.getMessage() for r in caplog.records if r.name == "streamapp.readiness"]
    assert [m.split(":")[1].strip() for m in logged] == ["channel layer"]


async def test_not_ready_without_a_channel_layer(async_client, settings, caplog):
    settings.CHANNEL_LAYERS = {}
    response = await async_client.get("/ready")
    assert response.status_code == 503
    assert "not ready: channel layer: none configured (CHANNEL_LAYERS)" in caplog.messages
