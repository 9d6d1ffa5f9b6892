"""A cancelled task's final state says who or what cancelled it, when that is known (DESIGN §3)."""

from __future__ import annotations

import pytest

from streamapp.coordinator import coordinator
from streamapp.runner.coordinator import Coordinator
from tests.support.clients import make_user, session_cookie
from tests.support.helpers import receive_until, receive_until_closed
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)

FINAL = ("completed", "failed", "cancelled")


async def test_a_client_cancel_names_the_user(communicator_for):
    alice = await make_user("alice")
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task, headers=await session_cookie(alice))
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.send_json_to({"action": "cancel"})
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "cancelled" and code == 1000
    assert frames[-1]["error"] == {"type": "Cancelled", "message": "cancelled by alice"}
    await task.arefresh_from_db()
    assert task.error == frames[-1]["error"]


async def test_an_anonymous_client_cancel_says_so(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for("/ws/tasks/")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.send_json_to({"action": "cancel", "task": task.task_key})
    [*_, final] = await receive_until(ws, lambda f: f.get("status") in FINAL)
    assert final["error"] == {"type": "Cancelled", "message": "cancelled by an anonymous client"}


async def test_a_pending_task_cancelled_through_the_api_keeps_the_reason():
    task = await StepTask.objects.acreate()
    assert await coordinator.cancel_task(task, reason="cancelled by the nightly cleanup")
    await task.arefresh_from_db()
    assert task.status == "cancelled"
    assert task.error == {"type": "Cancelled", "message": "cancelled by the nightly cleanup"}


async def test_the_reason_crosses_processes_with_the_cancel_message(communicator_for):
    """Another process's coordinator (here a second one) reaches the run through the layer."""
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    elsewhere = Coordinator()
    try:
        assert await elsewhere.cancel_task(task, reason="cancelled by an operator")
        frames, _ = await receive_until_closed(ws)
    finally:
        await elsewhere.shutdown(timeout=0)
    assert frames[-1]["error"] == {"type": "Cancelled", "message": "cancelled by an operator"}


async def test_without_a_reason_the_error_stays_null(communicator_for):
    task = await StepTask.objects.acreate()
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f.get("status") == "running")
    assert await coordinator.cancel_task(task)
    frames, _ = await receive_until_closed(ws)
    assert frames[-1]["status"] == "cancelled" and frames[-1]["error"] is None
