"""streamapp.testing, used as a project's own test suite would use it (demo tasks stand in)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import TransactionTestCase

from demo.models import ExampleTask, FailingTask
from streamapp.testing import (
    TaskRun,
    assert_stream_whole,
    connect,
    in_memory_layer,
    run_task,
    streamapp_settings,
    subscribe,
)

pytest_plugins = ["streamapp.testing.fixtures"]
pytestmark = pytest.mark.django_db(transaction=True)


async def test_run_task_returns_every_frame_and_the_outcome():
    task = await ExampleTask.objects.acreate(message="hi", steps=3, delay=0)
    run = await run_task(task)
    assert_stream_whole(run.frames)
    assert run.names == ["start", "progress", "progress", "progress", "complete"]
    assert run.data[1] == {"step": 1, "total_steps": 3}
    assert run.status == "completed" and run.final_value == "Completed processing: hi"
    assert run.close_code == 1000


async def test_a_failing_task_reports_its_error():
    run = await run_task(await FailingTask.objects.acreate(fail_at=2))
    assert run.status == "failed"
    assert run.error == {"type": "RuntimeError", "message": "boom"}


async def test_run_task_starts_the_task_itself_when_subscribers_do_not():
    with streamapp_settings(AUTO_START=False):
        run = await run_task(await ExampleTask.objects.acreate(message="m", steps=1, delay=0))
    assert run.status == "completed"


async def test_a_user_signed_in_through_a_session(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "OPEN_ACCESS": False}
    alice = await sync_to_async(User.objects.create_user)("alice", password="x")
    task = await ExampleTask.objects.acreate(message="m", steps=1, delay=0)
    assert (await run_task(task, user=alice)).status == "completed"
    refused = await connect(task)  # anonymous: the default can_subscribe wants a signed-in user
    assert (await refused.receive_json_from(timeout=5))["code"] == "forbidden"
    assert (await refused.receive_output(timeout=5))["code"] == 4403


async def test_the_multiplexed_endpoint(task_socket):
    task = await ExampleTask.objects.acreate(message="m", steps=2, delay=0)
    ws = await task_socket()
    await subscribe(ws, task, since=0)
    frames = []
    while not frames or frames[-1].get("status") != "completed":
        frames.append(await ws.receive_json_from(timeout=5))
    assert_stream_whole(frames)


async def test_fixtures_override_settings_and_layer(streamapp_override, streamapp_layer):
    from streamapp.conf import app_settings

    streamapp_override(SLOW_CLIENT_SECONDS=3.0)
    assert app_settings.SLOW_CLIENT_SECONDS == 3.0
    assert type(streamapp_layer).__name__ == "InMemoryChannelLayer"


@pytest.mark.parametrize("frames, why", [
    ([{"type": "event", "seq": 1}, {"type": "event", "seq": 3},
      {"type": "state", "status": "completed", "seq": 3}], "not 1, 2, … in order: [1, 3]"),
    ([{"type": "event", "seq": 1}, {"type": "event", "seq": 1},
      {"type": "state", "status": "completed", "seq": 1}], "not 1, 2, … in order: [1, 1]"),
    ([{"type": "event", "seq": 1}, {"type": "state", "status": "running", "seq": 1}],
     "does not end with a final state"),
    ([{"type": "event", "seq": 1}, {"type": "state", "status": "completed", "seq": 2}],
     "the final state says seq 2, the last event was 1"),
])
def test_assert_stream_whole_names_what_is_wrong(frames, why):
    with pytest.raises(AssertionError, match=why.replace("(", r"\(").replace("[", r"\[")):
        assert_stream_whole(frames)


def test_task_run_reads_the_last_state():
    run = TaskRun(frames=[{"type": "state", "status": "running", "seq": 0},
                          {"type": "state", "status": "cancelled", "seq": 0,
                           "final_value": None, "error": {"type": "Cancelled", "message": "x"}}])
    assert run.status == "cancelled" and run.error["type"] == "Cancelled" and run.events == []


class TransactionTestCaseUse(TransactionTestCase):
    """The same helpers from Django's own test case (as the README shows)."""

    async def test_run_task(self):
        with in_memory_layer():
            task = await ExampleTask.objects.acreate(message="tc", steps=2, delay=0)
            run = await run_task(task)
        assert_stream_whole(run.frames)
        self.assertEqual(run.status, "completed")
