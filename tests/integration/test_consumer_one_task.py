"""The one-task endpoint ``ws/tasks/<app_label>/<model>/<pk>/``, point by point (DESIGN §3)."""

from __future__ import annotations

import pytest

from demo.models import ExampleTask, FailingTask, SignalTask
from streamapp.coordinator import coordinator
from tests.support.helpers import events_of, receive_until, receive_until_closed
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


async def test_example_task_streams_from_pending_to_completed(communicator_for):
    """Subscribing to a pending task starts it; the whole stream arrives, then state, then 1000."""
    task = await ExampleTask.objects.acreate(message="hi", steps=3, delay=0)
    ws = await communicator_for(task)
    frames, code = await receive_until_closed(ws)

    assert frames[0] == {
        "type": "state", "task": task.task_key, "status": "pending", "seq": 0,
        "final_value": None, "error": None,
    }
    assert [f["status"] for f in frames if f["type"] == "state"] == [
        "pending", "running", "completed"
    ]
    events = events_of(frames)
    assert [e["event"] for e in events] == ["start", "progress", "progress", "progress", "complete"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["data"] == {"message": "hi", "total_steps": 3}
    assert events[2]["data"] == {"step": 2, "total_steps": 3}
    assert all(e["task"] == task.task_key and e["ts"].endswith("+00:00") for e in events)
    final = frames[-1]
    assert final["type"] == "state" and final["seq"] == 5
    assert final["final_value"] == "Completed processing: hi"
    assert code == 1000

    await task.arefresh_from_db()
    assert task.status == "completed" and task.final_value == "Completed processing: hi"
    assert task.completed_at is not None and task.started_at is not None and task.attempts == 1


async def test_many_clients_get_the_same_events_in_the_same_order(communicator_for):
    task = await StepTask.objects.acreate()
    clients = [await communicator_for(task) for _ in range(5)]
    for ws in clients:
        await receive_until(ws, lambda f: f.get("status") == "running")
    for _ in range(20):
        await task.send_signal("step", "go")
    await task.send_signal("step", "stop")
    streams = []
    for ws in clients:
        frames, code = await receive_until_closed(ws)
        streams.append([(f["seq"], f["data"]["n"]) for f in events_of(frames)])
        assert frames[-1]["status"] == "completed" and code == 1000
    assert streams[0] == [(n, n) for n in range(1, 21)]
    assert all(stream == streams[0] for stream in streams)


async def test_a_late_client_gets_the_latest_event_at_once(communicator_for):
    task = await StepTask.objects.acreate()
    first = await communicator_for(task)
    await receive_until(first, lambda f: f.get("status") == "running")
    for _ in range(3):
        await task.send_signal("step", "go")
    await receive_until(first, lambda f: f.get("seq") == 3 and f["type"] == "event")

    late = await communicator_for(task)
    state = await late.receive_json_from(timeout=5)
    assert state["type"] == "state" and state["status"] == "running" and state["seq"] == 3
    latest = await late.receive_json_from(timeout=5)
    assert latest["type"] == "event" and latest["seq"] == 3 and latest["data"] == {"n": 3}
    assert await late.receive_nothing(timeout=0.1)

    await task.send_signal("step", "go")
    live = await late.receive_json_from(timeout=5)
    assert live["seq"] == 4


async def test_since_replays_only_what_was_missed(communicator_for):
    task = await BurstTask.objects.acreate(count=6)
    assert await coordinator.start_task(task)
    await coordinator.wait_task(task)

    ws = await communicator_for(task, since=2)
    frames, code = await receive_until_closed(ws)
    assert frames[0]["type"] == "state" and frames[0]["status"] == "completed"
    assert [f["seq"] for f in events_of(frames)] == [3, 4, 5, 6]
    assert frames[-1] == frames[0]  # the final state closes the stream, after the events
    assert code == 1000


async def test_replay_and_live_do_not_race(communicator_for):
    """Events sent while a client replays come once each and in order."""
    task = await BurstTask.objects.acreate(count=400)
    assert await coordinator.start_task(task)
    ws = await communicator_for(task, since=0)  # joins mid-stream
    frames, code = await receive_until_closed(ws, timeout=10)
    assert [f["seq"] for f in events_of(frames)] == list(range(1, 401))
    assert frames[-1] == {**frames[-1], "type": "state", "status": "completed", "seq": 400}


async def test_task_continues_after_its_clients_disconnect(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.disconnect()
    for _ in range(2):
        await task.send_signal("step", "go")
    await task.send_signal("step", "stop")
    assert await coordinator.wait_task(task, timeout=5)
    await task.arefresh_from_db()
    assert task.status == "completed" and task.final_value == 2

    again = await communicator_for(task, since=0)
    frames, _ = await receive_until_closed(again)
    assert [f["data"]["n"] for f in events_of(frames)] == [1, 2]


async def test_a_finished_task_answers_with_its_final_state_and_closes(communicator_for):
    task = await BurstTask.objects.acreate(count=2)
    await coordinator.start_task(task)
    await coordinator.wait_task(task)
    ws = await communicator_for(task)
    frames, code = await receive_until_closed(ws)
    assert frames[0] == {
        "type": "state", "task": task.task_key, "status": "completed", "seq": 2,
        "final_value": 2, "error": None,
    }
    assert [f["seq"] for f in events_of(frames)] == [2]  # the latest event only
    assert code == 1000


async def test_a_failing_task_tells_every_subscriber(communicator_for):
    task = await FailingTask.objects.acreate(fail_at=3)
    first = await communicator_for(task)
    second = await communicator_for(task)
    for ws in (first, second):
        frames, code = await receive_until_closed(ws)
        final = frames[-1]
        assert final["status"] == "failed"
        assert final["error"] == {"type": "RuntimeError", "message": "boom"}
        assert code == 1000
    await task.arefresh_from_db()
    assert task.status == "failed" and task.error == {"type": "RuntimeError", "message": "boom"}
    assert task.completed_at is not None
    assert not coordinator.is_task_running(task)


async def test_signal_task_continues_when_signalled(communicator_for):
    task = await SignalTask.objects.acreate(message="wait")
    ws = await communicator_for(task)
    started = await receive_until(ws, lambda f: f.get("event") == "started")
    assert started[-1]["data"] == {"message": "wait"}
    await task.send_signal("continue", {"answer": 42})
    frames, code = await receive_until_closed(ws)
    events = events_of(frames)
    assert [e["event"] for e in events] == ["final", "complete"]
    assert events[0]["data"] == {"data": {"answer": 42}}
    assert frames[-1]["final_value"] == {"answer": 42}


async def test_unknown_task_is_not_found_with_4404(communicator_for):
    for path in (
        "/ws/tasks/demo/exampletask/999999/",
        "/ws/tasks/demo/nosuchmodel/1/",
        "/ws/tasks/auth/user/1/",
        "/ws/tasks/demo/exampletask/not-a-number/",
    ):
        ws = await communicator_for(path)
        frames, code = await receive_until_closed(ws)
        assert frames == [{"type": "error", "code": "not_found", "message": frames[0]["message"]}]
        assert code == 4404


async def test_model_name_is_case_insensitive(communicator_for):
    task = await BurstTask.objects.acreate(count=1)
    ws = await communicator_for(f"/ws/tasks/testapp/BurstTask/{task.pk}/")
    frames, _ = await receive_until_closed(ws)
    assert frames[0]["task"] == f"testapp.bursttask.{task.pk}"
    assert frames[-1]["status"] == "completed"


async def test_other_ws_paths_are_refused_with_4404(communicator_for):
    for path in ("/ws/other/", "/ws/tasks/demo/", "/ws/tasks/demo/exampletask/1/extra/"):
        ws = await communicator_for(path)
        frames, code = await receive_until_closed(ws)
        assert frames[0]["code"] == "not_found" and code == 4404


async def test_garbage_gets_bad_request_and_the_socket_stays_open(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    for text in ("not json", "[1, 2]", '{"action": "dance"}', '{"no": "action"}',
                 '{"action": "subscribe", "task": "demo.exampletask.1"}',
                 '{"action": "cancel", "task": 7}'):
        await ws.send_to(text_data=text)
        frame = await ws.receive_json_from(timeout=5)
        assert frame["type"] == "error" and frame["code"] == "bad_request", text
    await ws.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_json_from(timeout=5))["code"] == "bad_request"

    await ws.send_json_to({"action": "ping"})
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}
    await task.send_signal("step", "go")
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1


async def test_bad_since_is_reported_and_ignored(communicator_for):
    task = await BurstTask.objects.acreate(count=2)
    await coordinator.start_task(task)
    await coordinator.wait_task(task)
    ws = await communicator_for(f"/ws/tasks/testapp/bursttask/{task.pk}/?since=-4")
    frames, code = await receive_until_closed(ws)
    assert frames[0]["code"] == "bad_request"
    assert frames[1]["type"] == "state" and [f["seq"] for f in events_of(frames)] == [2]


async def test_since_ahead_of_the_task_is_reported(communicator_for):
    task = await BurstTask.objects.acreate(count=2)
    await coordinator.start_task(task)
    await coordinator.wait_task(task)
    ws = await communicator_for(task, since=50)
    frames, code = await receive_until_closed(ws)
    assert frames[0]["type"] == "state"
    assert frames[1]["code"] == "bad_request" and events_of(frames) == []


async def test_cancel_action_cancels_the_task(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.send_json_to({"action": "cancel"})
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "cancelled" and code == 1000
    await task.arefresh_from_db()
    assert task.status == "cancelled" and task.completed_at is not None


async def test_cancel_naming_another_task_is_a_bad_request(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.send_json_to({"action": "cancel", "task": "testapp.steptask.999"})
    frame = await ws.receive_json_from(timeout=5)
    assert frame["code"] == "bad_request"
    assert coordinator.is_task_running(task)
