"""HTTP endpoints: /health, and a task's state without a socket."""

from __future__ import annotations

import pytest

from streamapp.coordinator import coordinator
from tests.testapp.models import BurstTask

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_is_a_plain_ok(async_client):
    response = await async_client.get("/health")
    assert response.status_code == 200 and response.content == b"OK"


async def test_task_state_json_matches_the_state_frame(async_client):
    task = await BurstTask.objects.acreate(count=3)
    await coordinator.start_task(task)
    await coordinator.wait_task(task, timeout=5)
    response = await async_client.get(f"/tasks/testapp/BurstTask/{task.pk}/")
    assert response.status_code == 200
    assert response.json() == {
        "type": "state", "task": task.task_key, "status": "completed", "seq": 3,
        "final_value": 3, "error": None,
    }


@pytest.mark.parametrize("path", [
    "/tasks/testapp/bursttask/999999/", "/tasks/auth/user/1/", "/tasks/testapp/nothing/1/",
    "/tasks/testapp/bursttask/abc/",
])
async def test_unknown_tasks_are_404_json(async_client, path):
    response = await async_client.get(path)
    assert response.status_code == 404
    assert response.json()["type"] == "error" and response.json()["code"] == "not_found"
