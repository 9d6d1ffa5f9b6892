"""The Django admin of StreamTask models, through Django's async test client.

The client runs the admin's sync views in a thread beside the test's event loop, as daphne does,
so the actions reach the coordinator running on that loop.
"""

from __future__ import annotations

import html

import pytest
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import AsyncClient, override_settings

from streamapp.admin import StreamTaskAdmin, StreamTaskAdminMixin, register_stream_task_models
from streamapp.coordinator import coordinator
from streamapp.keys import stream_task_models
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)

CHANGELIST = "/admin/testapp/steptask/"


@pytest.fixture
async def staff_client():
    user = await sync_to_async(get_user_model().objects.create_superuser)(
        "admin", "admin@example.com", "pw"
    )
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def post(client: AsyncClient, path: str, data: dict):
    """Post as Django's ASGIHandler serves a request: its sync view gets a thread of its own
    (ThreadSensitiveContext, which the test client leaves out), not the one the runner's
    database calls use. That thread's connection is closed before the thread goes."""
    async with ThreadSensitiveContext():
        try:
            return await client.post(path, data, follow=True)
        finally:
            await sync_to_async(connections.close_all)()


def link(task) -> str:
    return f">{task.task_key}</a>"


async def test_every_stream_task_model_is_registered():
    # (the runner tests define a proxy model at run time, after the admin was set up)
    for model in [m for m in stream_task_models() if not m._meta.proxy]:
        assert isinstance(admin.site._registry[model], StreamTaskAdminMixin)
    assert register_stream_task_models() == []  # a second pass registers nothing twice
    with override_settings(STREAMAPP={"ADMIN_AUTO_REGISTER": False}):
        assert register_stream_task_models(admin.AdminSite(name="bare")) == []


async def test_list_filters_by_status_and_searches_by_key(staff_client):
    waiting, cancelled, other = [await StepTask.objects.acreate(label=n) for n in "abc"]
    assert await coordinator.cancel_task(cancelled)  # pending: cancelled at once

    listing = (await staff_client.get(CHANGELIST)).content.decode()
    assert all(link(task) in listing for task in (waiting, cancelled, other))

    filtered = (await staff_client.get(CHANGELIST, {"status__exact": "cancelled"})).content.decode()
    assert link(cancelled) in filtered
    assert link(waiting) not in filtered and link(other) not in filtered

    found = (await staff_client.get(CHANGELIST, {"q": other.task_key})).content.decode()
    assert link(other) in found and link(waiting) not in found
    by_pk = (await staff_client.get(CHANGELIST, {"q": str(other.pk)})).content.decode()
    assert link(other) in by_pk and link(waiting) not in by_pk
    elsewhere = f"testapp.bursttask.{other.pk}"  # the same pk of another model: no match
    found = (await staff_client.get(CHANGELIST, {"q": elsewhere})).content.decode()
    assert link(other) not in found
    by_label = (await staff_client.get(CHANGELIST, {"q": "b"})).content.decode()
    assert link(cancelled) in by_label and link(waiting) not in by_label


async def test_change_page_shows_the_latest_events_read_only(staff_client, monkeypatch):
    monkeypatch.setattr(admin.site._registry[BurstTask], "event_log_limit", 5)
    task = await BurstTask.objects.acreate(count=12)
    assert await coordinator.start_task(task)
    assert await coordinator.wait_task(task, timeout=5)

    response = await staff_client.get(f"/admin/testapp/bursttask/{task.pk}/change/")
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert "The latest 5 events, newest first." in page
    shown = [i for i in range(1, 13) if f'<td><code>{{"i": {i}}}</code></td>' in page]
    assert shown == [8, 9, 10, 11, 12]
    assert page.index('{"i": 12}') < page.index('{"i": 8}')  # newest first
    assert 'name="status"' not in page  # the runner's columns are not editable here


async def test_cancel_action_cancels_a_running_task_through_the_coordinator(staff_client):
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    response = await post(
        staff_client, CHANGELIST, {"action": "cancel_tasks", "_selected_action": [task.pk]}
    )
    await task.arefresh_from_db()
    assert task.status == "cancelled"
    assert task.error["type"] == "Cancelled" and task.error["message"].endswith(" in the admin")
    assert not coordinator.is_task_running(task)
    assert f"Cancelled: {task.task_key}." in response.content.decode()


async def test_cancel_action_respects_the_models_can_cancel_hook(staff_client, monkeypatch):
    monkeypatch.setattr(StepTask, "can_cancel", lambda self, user: False)
    task = await StepTask.objects.acreate()
    response = await post(
        staff_client, CHANGELIST, {"action": "cancel_tasks", "_selected_action": [task.pk]}
    )
    assert "You may not cancel 1 of the selected tasks." in response.content.decode()
    await task.arefresh_from_db()
    assert task.status == "pending"


async def test_run_again_restarts_an_ended_task_and_skips_a_completed_one(staff_client):
    cancelled, completed = await StepTask.objects.acreate(), await StepTask.objects.acreate()
    assert await coordinator.start_task(cancelled)
    assert await coordinator.cancel_task(cancelled)
    assert await coordinator.start_task(completed)
    await completed.send_signal("step", "stop")
    assert await coordinator.wait_task(completed, timeout=5)

    response = await post(
        staff_client, CHANGELIST,
        {"action": "run_tasks_again", "_selected_action": [cancelled.pk, completed.pk]},
    )
    page = response.content.decode()
    assert f"Started: {cancelled.task_key}." in page
    assert f"Not started (are running or completed): {completed.task_key}." in page
    assert coordinator.is_task_running(cancelled)
    await cancelled.send_signal("step", "stop")
    assert await coordinator.wait_task(cancelled, timeout=5)
    await cancelled.arefresh_from_db()
    await completed.arefresh_from_db()
    assert (cancelled.status, cancelled.attempts) == ("completed", 2)
    assert (completed.status, completed.attempts) == ("completed", 1)


async def test_a_project_admin_with_the_mixin_keeps_its_own_choices():
    class ReportAdmin(StreamTaskAdminMixin, admin.ModelAdmin):
        search_fields = ("label",)
        readonly_fields = ("label",)

    site = admin.AdminSite(name="project")
    site.register(StepTask, ReportAdmin)
    assert register_stream_task_models(site) != []  # the other models
    model_admin = site._registry[StepTask]
    assert type(model_admin) is ReportAdmin
    assert model_admin.get_search_fields(None) == ["label"]
    readonly = model_admin.get_readonly_fields(None)
    assert readonly[0] == "label" and "status" in readonly and "event_log" in readonly
    assert isinstance(site._registry[BurstTask], StreamTaskAdmin)
