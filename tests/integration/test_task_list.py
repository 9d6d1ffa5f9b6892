"""``GET /tasks/``: the tasks a user may watch (DESIGN §3), on the real URLconf and views."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streamapp.coordinator import coordinator
from streamapp.keys import stream_task_models
from streamapp.models import TaskEvent
from tests.support.clients import bearer, make_user, with_streamapp
from tests.testapp.models import BurstTask, ErrorTask, OwnedTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


def keys(body) -> list[str]:
    return [row["task"] for row in body["tasks"]]


async def get(client, query: str = "", status: int = 200, authorization: str | None = None):
    headers = {"Authorization": authorization} if authorization else None
    response = await client.get(f"/tasks/{query}", headers=headers)
    assert response.status_code == status, response.content
    return response.json()


async def walk(client, query: str) -> list[str]:
    """Every key, following ``next`` to the end."""
    body = await get(client, query)
    seen = keys(body)
    while body["next"] is not None:
        parts = urlsplit(body["next"])
        body = await get(client, f"?{parts.query}")
        seen += keys(body)
    return seen


async def test_each_row_is_the_state_frame_with_model_and_created_time(async_client):
    done = await BurstTask.objects.acreate(count=3)
    await coordinator.start_task(done)
    await coordinator.wait_task(done, timeout=5)
    failed = await ErrorTask.objects.acreate()
    await coordinator.start_task(failed)
    await coordinator.wait_task(failed, timeout=5)
    waiting = await StepTask.objects.acreate()

    body = await get(async_client)

    assert keys(body) == [waiting.task_key, failed.task_key, done.task_key]  # newest first
    assert body["next"] is None
    assert body["tasks"][2] == {
        "type": "state", "task": done.task_key, "status": "completed", "seq": 3,
        "final_value": 3, "error": None, "model": "burst task",
        "created_at": done.created_at.isoformat(),
    }
    assert body["tasks"][1]["status"] == "failed" and body["tasks"][1]["seq"] == 1
    assert body["tasks"][1]["error"] == {"type": "ValueError", "message": "failure on purpose"}
    assert body["tasks"][0]["status"] == "pending" and body["tasks"][0]["seq"] == 0
    single = await async_client.get(f"/tasks/testapp/bursttask/{done.pk}/")
    assert single.json() == {k: v for k, v in body["tasks"][2].items()
                             if k not in ("model", "created_at")}


async def test_a_running_task_lists_the_seq_of_its_log(async_client):
    task = await StepTask.objects.acreate(status="running")
    await TaskEvent.objects.abulk_create(
        TaskEvent(task_key=task.task_key, seq=seq, name="step", frame="{}") for seq in (1, 2, 3)
    )
    assert (await get(async_client))["tasks"][0]["seq"] == 3


async def test_filters_by_status_model_and_created_after(async_client):
    now = timezone.now()
    old = await BurstTask.objects.acreate(created_at=now - timedelta(hours=2))
    failed = await BurstTask.objects.acreate(created_at=now - timedelta(minutes=5),
                                             status="failed")
    step = await StepTask.objects.acreate(created_at=now - timedelta(minutes=1),
                                          status="running")

    assert keys(await get(async_client, "?status=failed")) == [failed.task_key]
    assert keys(await get(async_client, "?status=running&status=failed")) == [
        step.task_key, failed.task_key]
    assert keys(await get(async_client, "?status=running,pending")) == [
        step.task_key, old.task_key]
    assert keys(await get(async_client, "?model=testapp.BurstTask")) == [
        failed.task_key, old.task_key]
    assert keys(await get(async_client, "?model=testapp.steptask,testapp.bursttask&status=failed")
                ) == [failed.task_key]
    after = (now - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert keys(await get(async_client, f"?created_after={after}")) == [
        step.task_key, failed.task_key]
    naive = (now - timedelta(minutes=3)).replace(tzinfo=None).isoformat()  # read as UTC here
    assert keys(await get(async_client, f"?created_after={naive}")) == [step.task_key]


@pytest.mark.parametrize("query, says", [
    ("?state=running", "unknown parameter 'state'; expected status, model, created_after"),
    ("?status=done", "unknown status 'done'; expected pending, running, completed"),
    ("?model=testapp.nothing", "no task model 'testapp.nothing'; expected one of "),
    ("?model=auth.user", "no task model 'auth.user'"),
    ("?created_after=yesterday", "created_after must be an ISO 8601 date and time"),
    ("?created_after=2026-13-45T00:00:00", "created_after must be an ISO 8601 date and time"),
    ("?created_after=2026-01-01T00:00:00&created_after=2026-01-02T00:00:00",
     "created_after may be given once, got 2 values"),
    ("?limit=0", "limit must be a whole number from 1 to 100, got '0'"),
    ("?limit=101", "limit must be a whole number from 1 to 100"),
    ("?limit=ten", "limit must be a whole number from 1 to 100"),
    ("?cursor=garbage", "cursor is not one this endpoint gave out: follow `next`"),
    ("?cursor=WyJ4IiwgMSwgMl0", "cursor is not one this endpoint gave out"),
])
async def test_bad_queries_are_400_with_a_message_that_says_what_was_expected(async_client,
                                                                               query, says):
    body = await get(async_client, query, status=400)
    assert body["type"] == "error" and body["code"] == "bad_request"
    assert says in body["message"]


async def test_only_get_and_head(async_client):
    assert (await async_client.head("/tasks/")).status_code == 200
    response = await async_client.post("/tasks/")
    assert response.status_code == 405


async def test_pages_follow_one_another_with_no_task_twice_while_tasks_are_created(async_client):
    # Two models and tasks created at the same instant: the order must be total.
    instant = timezone.now() - timedelta(minutes=10)
    await BurstTask.objects.abulk_create(BurstTask(created_at=instant) for _ in range(7))
    await StepTask.objects.abulk_create(StepTask(created_at=instant) for _ in range(6))
    for minutes in range(12):
        await BurstTask.objects.acreate(created_at=instant + timedelta(minutes=minutes % 4))
    existing = [task.task_key async for task in BurstTask.objects.all()]
    existing += [task.task_key async for task in StepTask.objects.all()]

    seen: list[str] = []
    body = await get(async_client, "?limit=4")
    while True:
        seen += keys(body)
        await BurstTask.objects.acreate()  # newer than every page: listed before them all
        await StepTask.objects.acreate(created_at=instant)  # a tie with existing rows
        if body["next"] is None:
            break
        assert len(body["tasks"]) == 4
        body = await get(async_client, f"?{urlsplit(body['next']).query}")

    assert len(seen) == len(set(seen))
    assert set(existing) <= set(seen)  # nothing that existed when the walk began was skipped
    created = {}
    async for model_task in BurstTask.objects.all():
        created[model_task.task_key] = (model_task.created_at, "testapp.bursttask", model_task.pk)
    async for model_task in StepTask.objects.all():
        created[model_task.task_key] = (model_task.created_at, "testapp.steptask", model_task.pk)
    assert seen == sorted(seen, key=created.__getitem__, reverse=True)


async def test_next_keeps_the_filters(async_client):
    await BurstTask.objects.abulk_create(BurstTask(status="failed") for _ in range(3))
    await BurstTask.objects.abulk_create(BurstTask() for _ in range(3))
    body = await get(async_client, "?status=failed&limit=2")
    assert body["next"].startswith("http://testserver/tasks/?")
    assert "status=failed" in body["next"] and "limit=2" in body["next"]
    assert len(await walk(async_client, "?status=failed&limit=2")) == 3


class TestAccess:
    """With OPEN_ACCESS off, as deployed: the same rule as subscribing, narrowed by the hook."""

    @pytest.fixture(autouse=True)
    def closed_access(self, settings):
        with_streamapp(settings, OPEN_ACCESS=False)

    async def test_each_user_lists_only_what_the_hook_allows(self):
        alice, bob = await make_user("alice"), await make_user("bob")
        staff = await make_user("root", is_staff=True)
        alices = [await OwnedTask.objects.acreate(owner=alice) for _ in range(3)]
        bobs = [await OwnedTask.objects.acreate(owner=bob) for _ in range(2)]

        as_alice, as_bob, as_staff = AsyncClient(), AsyncClient(), AsyncClient()
        await as_alice.aforce_login(alice)
        await as_bob.aforce_login(bob)
        await as_staff.aforce_login(staff)
        owned = "?model=testapp.ownedtask&limit=2"
        assert await walk(as_alice, owned) == [t.task_key for t in reversed(alices)]
        assert await walk(as_bob, owned) == [t.task_key for t in reversed(bobs)]
        assert len(await walk(as_staff, owned)) == 5
        assert await walk(AsyncClient(), "") == []  # anonymous: nothing at all

        # A bearer token speaks for its user, as on the socket.
        body = await get(AsyncClient(), owned, authorization=bearer(bob)[0][1].decode())
        assert keys(body) == [t.task_key for t in reversed(bobs)]

    async def test_can_subscribe_still_has_the_last_word(self):
        alice = await make_user("alice")
        client = AsyncClient()
        await client.aforce_login(alice)
        mine = await StepTask.objects.acreate(label="mine")
        await StepTask.objects.acreate(label="secret")
        await StepTask.objects.acreate(label="broken")

        def can_subscribe(task, user):
            if task.label == "broken":
                raise RuntimeError("a hook with a bug")
            return task.label != "secret"

        with mock.patch.object(StepTask, "can_subscribe", can_subscribe):
            body = await get(client, "?model=testapp.steptask")
            websocket_view = await client.get(f"/tasks/testapp/steptask/{mine.pk}/")
        assert keys(body) == [mine.task_key]  # neither the refused nor the broken one
        assert websocket_view.status_code == 200

    async def test_a_refused_token_is_403_and_says_why(self):
        body = await get(AsyncClient(), status=403, authorization="Bearer not-a-token")
        assert body["code"] == "forbidden"
        assert body["message"] == (
            "no tasks listed (token refused: the token's signature is not valid)")


@pytest.mark.django_db  # sync: the test client runs the view on this thread's connection
def test_listing_ten_thousand_tasks_costs_as_many_queries_as_listing_three(client):
    def listing(query: str) -> tuple[int, bool, list[str]]:
        """How many tasks the page holds, whether there is a next one, and the SQL it took."""
        with CaptureQueriesContext(connection) as captured:
            response = client.get(f"/tasks/{query}")
        assert response.status_code == 200
        body = response.json()
        return len(body["tasks"]), body["next"] is not None, [
            q["sql"] for q in captured.captured_queries]

    one_model, every_model = "?model=testapp.bursttask&limit=100", "?limit=100&status=pending"
    BurstTask.objects.bulk_create(BurstTask() for _ in range(3))
    small = {query: listing(query) for query in (one_model, every_model)}
    assert small[one_model][:2] == small[every_model][:2] == (3, False)

    BurstTask.objects.bulk_create(BurstTask() for _ in range(10_000))
    StepTask.objects.bulk_create(StepTask() for _ in range(50))
    newest = list(BurstTask.objects.order_by("-created_at", "-pk")[:100])
    TaskEvent.objects.bulk_create(
        TaskEvent(task_key=task.task_key, seq=seq, name="tick", frame="{}")
        for task in newest for seq in (1, 2)
    )
    for query, bound in ((one_model, 2), (every_model, len(stream_task_models()) + 1)):
        listed, more, sql = listing(query)
        assert listed == 100 and more
        # One query per model (anonymous sees no OwnedTask: none() costs nothing), one on the log.
        assert len(sql) == len(small[query][2]) <= bound, sql
        log_queries = [text for text in sql if "streamapp_taskevent" in text]
        assert len(log_queries) == 1 and "GROUP BY" in log_queries[0]
    for row in client.get(f"/tasks/{one_model}").json()["tasks"]:
        assert row["seq"] == 2
