"""``ws/tasks/``: many tasks over one socket, each with its own ``since`` (DESIGN §3)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from streamapp.coordinator import coordinator
from tests.support.helpers import finished_burst, receive_until
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)



async def test_twenty_tasks_each_with_its_own_since(communicator_for):
    tasks = [await finished_burst(10) for _ in range(20)]
    ws = await communicator_for("/ws/tasks/")
    for i, task in enumerate(tasks):
        await ws.send_json_to({"action": "subscribe", "task": task.task_key, "since": i % 10})
    by_task = defaultdict(list)
    ended = set()
    while len(ended) < len(tasks):
        frame = await ws.receive_json_from(timeout=10)
        by_task[frame["task"]].append(frame)
        if frame["type"] == "state" and len(by_task[frame["task"]]) > 1:
            ended.add(frame["task"])
    for i, task in enumerate(tasks):
        frames = by_task[task.task_key]
        since = i % 10
        assert frames[0]["type"] == "state" and frames[0]["status"] == "completed"
        assert [f["seq"] for f in frames[1:-1]] == list(range(since + 1, 11))
        assert [f["data"]["i"] for f in frames[1:-1]] == list(range(since + 1, 11))
        assert frames[-1] == frames[0]
    assert await ws.receive_nothing(timeout=0.2)  # the socket stays open, quiet


async def test_unsubscribe_stops_that_tasks_frames_only(communicator_for):
    first, second = [await StepTask.objects.acreate() for _ in range(2)]
    ws = await communicator_for("/ws/tasks/")
    for task in (first, second):
        await ws.send_json_to({"action": "subscribe", "task": task.task_key})
        await receive_until(ws, lambda f, key=task.task_key: f["task"] == key
                            and f.get("status") == "running")
    await first.send_signal("step", "go")
    await second.send_signal("step", "go")
    frames = [await ws.receive_json_from(timeout=5) for _ in range(2)]
    assert sorted((f["task"], f["seq"]) for f in frames) == sorted(
        [(first.task_key, 1), (second.task_key, 1)]
    )

    await ws.send_json_to({"action": "unsubscribe", "task": first.task_key})
    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}  # unsubscribe is done
    for _ in range(3):
        await first.send_signal("step", "go")
    await first.send_signal("step", "stop")
    await second.send_signal("step", "go")
    await second.send_signal("step", "stop")
    frames = await receive_until(ws, lambda f: f.get("status") == "completed", timeout=5)
    assert {f["task"] for f in frames} == {second.task_key}
    assert [(f["type"], f["seq"]) for f in frames] == [("event", 2), ("state", 2)]
    assert await coordinator.wait_task(first, timeout=5)
    await first.arefresh_from_db()
    assert first.status == "completed" and first.last_seq == 4
    assert await ws.receive_nothing(timeout=0.2)


async def test_the_subscription_limit_answers_an_error_and_keeps_the_socket(
    communicator_for, settings
):
    settings.STREAMAPP = {**settings.STREAMAPP, "MAX_SUBSCRIPTIONS": 3, "AUTO_START": False}
    tasks = [await StepTask.objects.acreate() for _ in range(4)]
    ws = await communicator_for("/ws/tasks/")
    for task in tasks[:3]:
        await ws.send_json_to({"action": "subscribe", "task": task.task_key})
        assert (await ws.receive_json_from(timeout=5))["status"] == "pending"

    await ws.send_json_to({"action": "subscribe", "task": tasks[3].task_key})
    error = await ws.receive_json_from(timeout=5)
    assert error == {
        "type": "error", "code": "rate_limited", "task": tasks[3].task_key,
        "message": "a socket may hold 3 subscriptions",
    }
    await ws.send_json_to({"action": "subscribe", "task": tasks[0].task_key, "since": 0})
    assert (await ws.receive_json_from(timeout=5))["task"] == tasks[0].task_key  # resubscribe

    await ws.send_json_to({"action": "unsubscribe", "task": tasks[1].task_key})
    await ws.send_json_to({"action": "subscribe", "task": tasks[3].task_key})
    frame = await ws.receive_json_from(timeout=5)
    assert frame["type"] == "state" and frame["task"] == tasks[3].task_key
