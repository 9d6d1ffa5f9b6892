"""A connect's cost: what the handshake and the subscribe read, on the real ASGI application.

After a deploy every client reconnects at once, so each connect reads as little as it can: one
query for the task's row, its log's top and latest event; no session lookup for a client that
sends a token or no session cookie.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from streamapp import positions
from tests.support.clients import bearer, make_user, session_cookie
from tests.support.helpers import events_of, receive_until, run_to_end, step, task_path
from tests.testapp.models import BurstTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


def _start_capture() -> None:
    connection = connections["default"]
    connection.force_debug_cursor = True
    connection.queries_log.clear()


def _stop_capture() -> list[str]:
    connection = connections["default"]
    connection.force_debug_cursor = False
    return [query["sql"] for query in connection.queries_log]


@contextlib.asynccontextmanager
async def database_queries():
    """The SQL the async ORM's thread runs meanwhile (where every query of a socket runs)."""
    found: list[str] = []
    await sync_to_async(_start_capture)()
    try:
        yield found
    finally:
        found.extend(await sync_to_async(_stop_capture)())


async def test_a_subscribe_reads_the_database_once(communicator_for):
    task = await BurstTask.objects.acreate(count=3)
    await run_to_end(task)
    async with database_queries() as queries:
        ws = await communicator_for(task)
        frames = [await ws.receive_json_from(timeout=5) for _ in range(3)]
    assert [(f["type"], f.get("seq")) for f in frames] == [("state", 3), ("event", 3),
                                                            ("state", 3)]
    mine = [q for q in queries if task.task_key in q]  # not the sweeper's, running meanwhile
    assert len(mine) == 1, mine
    assert "testapp_bursttask" in mine[0]  # the row, the log's top and latest event: one SELECT


async def test_a_replay_subscribe_reads_the_row_once_then_the_log(communicator_for):
    task = await BurstTask.objects.acreate(count=3)
    await run_to_end(task)
    async with database_queries() as queries:
        ws = await communicator_for(task, since=0)
        frames = [await ws.receive_json_from(timeout=5) for _ in range(5)]
    assert [f.get("seq") for f in events_of(frames)] == [1, 2, 3]
    row_reads = [q for q in queries if task.task_key in q and "testapp_bursttask" in q]
    assert len(row_reads) == 1, queries


@pytest.mark.parametrize("client", ["cookieless", "token"])
async def test_no_session_is_looked_up_without_a_session_cookie(application, client):
    user = await make_user(f"connect-{client}")
    task = await BurstTask.objects.acreate(count=1)
    await run_to_end(task)
    headers = bearer(user) if client == "token" else []
    async with database_queries() as queries:
        ws = WebsocketCommunicator(application, task_path(task), headers=headers)
        assert (await ws.connect(timeout=5))[0]
        await receive_until(ws, lambda f: f.get("type") == "state")
        await ws.disconnect()
    assert not [q for q in queries if "django_session" in q], queries


async def test_a_session_cookie_signs_the_socket_in(application, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "OPEN_ACCESS": False}
    user = await make_user("connect-session")
    task = await BurstTask.objects.acreate(count=1)
    await run_to_end(task)
    anonymous = WebsocketCommunicator(application, task_path(task))
    assert (await anonymous.connect(timeout=5))[0]
    assert (await anonymous.receive_json_from(timeout=5))["code"] == "forbidden"
    await anonymous.disconnect()
    signed_in = WebsocketCommunicator(application, task_path(task),
                                      headers=await session_cookie(user))
    assert (await signed_in.connect(timeout=5))[0]
    assert (await signed_in.receive_json_from(timeout=5))["type"] == "state"
    await signed_in.disconnect()


async def test_a_path_names_the_task_as_the_task_names_itself(communicator_for):
    """``…/StepTask/007/`` is ``testapp.steptask.7``: its live events arrive."""
    task = await StepTask.objects.acreate(pk=7)
    ws = await communicator_for("/ws/tasks/testapp/StepTask/007/")
    await receive_until(ws, lambda f: f.get("status") == "running")
    await step(task)
    frame = await ws.receive_json_from(timeout=5)
    assert (frame["type"], frame["task"], frame["seq"]) == ("event", "testapp.steptask.7", 1)


async def test_subscribers_of_one_task_that_read_together_share_a_query(communicator_for):
    """A reconnect storm: many sockets of one task at once; each still gets its whole stream."""
    task = await BurstTask.objects.acreate(count=3)
    await run_to_end(task)
    sockets = 20
    async with database_queries() as queries:
        opened = await asyncio.gather(*(communicator_for(task) for _ in range(sockets)))
        for ws in opened:
            frames = [await ws.receive_json_from(timeout=5) for _ in range(3)]
            assert [(f["type"], f.get("seq")) for f in frames] == [
                ("state", 3), ("event", 3), ("state", 3)]
    row_reads = [q for q in queries if task.task_key in q and "testapp_bursttask" in q]
    assert 1 <= len(row_reads) < sockets, len(row_reads)


def test_reads_of_one_task_in_a_group_give_each_caller_its_own_row(django_assert_num_queries):
    task = BurstTask.objects.create(count=1)
    other = BurstTask.objects.create(count=2)
    read = (BurstTask, task.pk, task.task_key, True)
    with django_assert_num_queries(3):  # one per distinct read
        first, second, third, fourth = positions._read_for_subscribers(
            [read, read, (BurstTask, other.pk, other.task_key, True),
             (BurstTask, task.pk, task.task_key, False)])
    assert first is not second
    assert (first.pk, second.pk, third.pk, fourth.pk) == (task.pk, task.pk, other.pk, task.pk)
    assert getattr(fourth, positions.TOP_FRAME) is None  # asked without the latest event
    first.count = 99
    assert second.count == 1


def test_a_read_that_fails_answers_its_caller_only():
    task = BurstTask.objects.create(count=1)
    answers = positions._read_for_subscribers(
        [(BurstTask, "not a number", "testapp.bursttask.x", True),
         (BurstTask, task.pk, task.task_key, True)])
    assert isinstance(answers[0], TypeError)  # the caller gets its own error back
    assert answers[1].pk == task.pk
