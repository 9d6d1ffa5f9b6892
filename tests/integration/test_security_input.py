"""Hostile input (DESIGN §3 errors, §4 malformed / oversized / flooding input).

Each kind of bad frame gets its documented error, the socket's other subscriptions and every
other client go on; keys never reach a model that is not a StreamTask, not even by a query.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from channels.testing import WebsocketCommunicator
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from consumers import limits
from demo.models import ExampleTask
from streamapp.conf import app_settings
from streamapp.coordinator import coordinator
from tests.support.clients import bearer, make_user, with_streamapp
from tests.support.helpers import receive_until, receive_until_closed
from tests.testapp.models import StepTask

pytestmark = pytest.mark.django_db(transaction=True)

ERROR_CODES = {"not_found", "forbidden", "bad_request", "rate_limited", "too_large",
               "history_truncated"}
MISBEHAVIOUR_CLOSES = {1009, 4400, 4429}
NOT_STREAM_TASKS = [
    "auth.user.1", "AUTH.User.1", "sessions.session.abc", "auth.permission.1", "auth.group.1",
    "contenttypes.contenttype.1", "admin.logentry.1", "streamapp.taskevent.1",
]
DEEP = "[" * 30_000 + "]" * 30_000  # under the frame limit, far beyond any parser's depth

# (frame, expected error code): every kind of bad frame the protocol names.
HOSTILE = [
    ("not json", "bad_request"),
    ("", "bad_request"),
    ("[1, 2]", "bad_request"),
    ('"subscribe"', "bad_request"),
    ("42", "bad_request"),
    ("null", "bad_request"),
    (DEEP, "bad_request"),
    ('{"action": ' + DEEP + "}", "bad_request"),
    ('{"action": "dance"}', "bad_request"),
    ('{"action": ["subscribe"]}', "bad_request"),
    ('{"action": {"$ne": null}}', "bad_request"),
    ('{"no": "action"}', "bad_request"),
    ('{"action": "subscribe"}', "bad_request"),
    ('{"action": "subscribe", "task": 7}', "bad_request"),
    ('{"action": "subscribe", "task": ["testapp.steptask.1"]}', "bad_request"),
    ('{"action": "subscribe", "task": "x\\ud800"}', "bad_request"),
    ('{"action": "cancel"}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": -1}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": 9007199254740992}',
     "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": 1e400}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": 1.5}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": "soon"}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": true}', "bad_request"),
    ('{"action": "subscribe", "task": "testapp.steptask.1", "since": ' + "9" * 5000 + "}",
     "bad_request"),
    *[(json.dumps({"action": action, "task": key}), "not_found")
      for action in ("subscribe", "cancel", "unsubscribe")
      for key in [
          "../../etc/passwd", "testapp/steptask/1", "testapp.steptask.1/../2", "",
          "testapp.steptask.1 OR 1=1", "testapp.steptask.1;DROP TABLE auth_user",
          "testapp.steptask.'1'--", "tëstapp.steptask.1", "testapp.steptask.١",
          "testapp.steptask.1\x00", "testapp.steptask.abc", "testapp.nosuchmodel.1",
          "nosuchapp.steptask.1", "x" * 10_000, *NOT_STREAM_TASKS,
      ]],
    # Well-formed keys of no row: unsubscribing from them is a quiet no-op, the rest not_found.
    *[(json.dumps({"action": action, "task": key}), "not_found")
      for action in ("subscribe", "cancel")
      for key in ["testapp.steptask.99999999999999999999", "testapp.steptask.-1"]],
]


async def send_raw(ws: WebsocketCommunicator, frame: str | bytes) -> None:
    """Any frame, empty ones too (``send_to`` refuses those)."""
    key = "bytes" if isinstance(frame, bytes) else "text"
    await ws.send_input({"type": "websocket.receive", key: frame})


@pytest.fixture
def lenient(settings):
    """Room for the whole catalogue on one socket: the closing thresholds are tested elsewhere."""
    with_streamapp(settings, MAX_BAD_FRAMES=10_000, MESSAGE_RATE=None, REFUSAL_RATE=None)


async def test_every_bad_frame_gets_its_error_and_nothing_else_is_disturbed(communicator_for,
                                                                          lenient):
    task = await StepTask.objects.acreate()
    bystander = await communicator_for(task)
    await receive_until(bystander, lambda f: f.get("status") == "running")
    ws = await communicator_for("/ws/tasks/")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    assert (await ws.receive_json_from(timeout=5))["type"] == "state"

    for text, code in HOSTILE:
        await send_raw(ws, text)
        reply = await ws.receive_json_from(timeout=5)
        assert reply["type"] == "error" and reply["code"] == code, (text[:80], reply)
        assert len(reply["message"]) < 300 and json.dumps(reply).encode("utf-8")
    for binary in (b"\x81\xfe\x00\x00", b"", b'{"action": "ping"}'):
        await send_raw(ws, binary)
        assert (await ws.receive_json_from(timeout=5))["code"] == "bad_request"
    await ws.send_to(text_data='{"action": "ping", "extra": ' + "[" * 500 + "]" * 500 + "}")
    assert await ws.receive_json_from(timeout=5) == {"type": "pong"}

    await task.send_signal("step", "go")  # the socket's subscription and the bystander go on
    for client in (ws, bystander):
        event = await client.receive_json_from(timeout=5)
        assert event["type"] == "event" and event["seq"] == 1
    await task.arefresh_from_db()
    assert task.status == "running"


@pytest.mark.parametrize("path", ["/ws/tasks/", "one-task"])
async def test_a_frame_over_the_size_limit_is_too_large_and_closes_1009(communicator_for, path):
    task = await StepTask.objects.acreate()
    bystander = await communicator_for(task)
    await receive_until(bystander, lambda f: f.get("status") == "running")
    ws = await communicator_for(task if path == "one-task" else path)
    if path == "one-task":
        await receive_until(ws, lambda f: f["type"] == "state")
    limit = app_settings.MAX_CLIENT_FRAME_BYTES
    await ws.send_to(text_data='{"action": "ping", "pad": "' + "é" * (limit // 2) + '"}')
    frames, code = await receive_until_closed(ws)
    assert frames == [{"type": "error", "code": "too_large",
                       "message": f"frames are limited to {limit} bytes"}]
    assert code == 1009
    await task.send_signal("step", "go")
    assert (await bystander.receive_json_from(timeout=5))["seq"] == 1


def like_daphne(application):
    """``application`` behind a server that, like daphne (autobahn), lets an application close
    only with 1000 or 3000-4999."""

    async def app(scope, receive, send):
        async def strict_send(message):
            code = message.get("code", 1000)
            if message["type"] == "websocket.close" and code != 1000 and not 3000 <= code <= 4999:
                raise Exception(f"invalid close code {code} (must be 1000 or from [3000, 4999])")
            await send(message)

        return await application(scope, receive, strict_send)

    return app


async def test_too_large_closes_4009_where_the_server_refuses_1009(application, caplog):
    caplog.set_level(logging.INFO, logger="streamapp")
    ws = WebsocketCommunicator(like_daphne(application), "/ws/tasks/")
    assert (await ws.connect(timeout=5))[0]
    await ws.send_to(text_data="x" * (app_settings.MAX_CLIENT_FRAME_BYTES + 1))
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["too_large"] and code == 4009
    assert any("server refused close code=1009" in r.getMessage() for r in caplog.records)
    await ws.disconnect()


class AllQueries:
    """Every SQL statement any thread or context runs while open.

    CaptureQueriesContext watches one connection, and the consumers' ORM calls run in the async
    ORM's thread on connections of their own (one per consumer context): wrapping Django's
    cursor sees them all.
    """

    real = CursorWrapper._execute_with_wrappers

    def __init__(self) -> None:
        self.sql: list[str] = []

    def __enter__(self) -> AllQueries:
        def recording(cursor, sql, params, many, executor):
            self.sql.append(str(sql).lower())
            return AllQueries.real(cursor, sql, params, many, executor)

        CursorWrapper._execute_with_wrappers = recording
        return self

    def __exit__(self, *exc_info) -> None:
        CursorWrapper._execute_with_wrappers = AllQueries.real


async def test_non_stream_task_models_are_not_found_without_a_query(communicator_for, lenient):
    ws = await communicator_for("/ws/tasks/")
    task = await StepTask.objects.acreate(status="completed")
    with AllQueries() as refused:
        for key in NOT_STREAM_TASKS:
            for action in ("subscribe", "cancel"):
                await ws.send_json_to({"action": action, "task": key})
                assert (await ws.receive_json_from(timeout=5))["code"] == "not_found"
        for path in ("/ws/tasks/auth/user/1/", "/ws/tasks/sessions/session/x/"):
            one = await communicator_for(path)
            frames, code = await receive_until_closed(one)
            assert frames[0]["code"] == "not_found" and code == 4404
            response = await AsyncClient().get(path[3:])  # the HTTP state read: /tasks/…
            assert response.status_code == 404 and response.json()["code"] == "not_found"
    with AllQueries() as allowed:  # the recorder does see the consumers' queries
        await ws.send_json_to({"action": "subscribe", "task": task.task_key})
        assert (await ws.receive_json_from(timeout=5))["type"] == "state"

    assert any("testapp_steptask" in sql for sql in allowed.sql)
    for table in ("auth_user", "django_session", "auth_permission", "auth_group",
                  "django_content_type", "django_admin_log", "streamapp_taskevent"):
        assert not any(table in sql for sql in refused.sql), table
    assert refused.sql == []


# -- the property: whatever a client throws, the server answers in protocol and others go on ----

def json_values():
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                   max_size=3),
        max_leaves=8,
    )


def hostile_frames(real_key: str):
    keys = st.sampled_from([real_key, *NOT_STREAM_TASKS, "../x", "testapp.steptask.0"]) | st.text(
        max_size=40) | st.from_regex(r"[a-z]{1,8}\.[a-z]{1,10}\.[0-9a-z-]{1,6}", fullmatch=True)
    objects = st.fixed_dictionaries(
        {"action": st.sampled_from(["subscribe", "unsubscribe", "cancel", "ping"]) | json_values()},
        optional={"task": keys | json_values(), "since": st.integers() | json_values()},
    )
    limit = 64 * 1024
    text = (
        objects.map(json.dumps)
        | json_values().map(json.dumps)
        | st.text(max_size=50)
        | st.sampled_from([DEEP, "{" * 5000, "x" * (limit + 1)])
    )
    return text | st.binary(max_size=40)


class HostileClient:
    """Throws one frame, then a ping, and reads until the pong; reconnects when closed."""

    def __init__(self, application, headers) -> None:
        self.application = application
        self.headers = headers
        self.ws: WebsocketCommunicator | None = None
        self.closes: list[int] = []

    async def throw(self, frame: str | bytes) -> None:
        if self.ws is None:
            self.ws = WebsocketCommunicator(self.application, "/ws/tasks/", headers=self.headers)
            assert (await self.ws.connect(timeout=5))[0]
        await send_raw(self.ws, frame)
        await self.ws.send_to(text_data='{"action": "ping"}')
        while True:
            output = await self.ws.receive_output(timeout=10)  # re-raises a consumer's exception
            if output["type"] == "websocket.close":
                assert output["code"] in MISBEHAVIOUR_CLOSES
                self.closes.append(output["code"])
                await self.ws.disconnect()
                self.ws = None
                return
            reply = json.loads(output["text"].encode("utf-8"))  # sendable as a real text frame
            assert reply["type"] in {"state", "event", "error", "pong"}
            if reply["type"] == "error":
                assert reply["code"] in ERROR_CODES and isinstance(reply["message"], str)
            if reply == {"type": "pong"}:
                return


# Hypothesis draws in its own thread while the event loop streams on: the server's own use of
# `random` (channels_redis) then looks to hypothesis as if a strategy had used it.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_generated_frames_never_break_the_server_nor_a_good_client(application, settings,
                                                                         monkeypatch, caplog):
    """A signed-in (not staff, not owner) client throws generated frames at ws/tasks/ while a
    task streams to a well-behaved client; the real limits apply, a clock drives their refill."""
    with_streamapp(settings, OPEN_ACCESS=False)
    now = [1_700_000_000.0]
    monkeypatch.setattr(limits, "now", lambda: now[0])
    task = await ExampleTask.objects.acreate(message="stream", steps=10**6, delay=0.002)
    good = WebsocketCommunicator(application, f"/ws/tasks/demo/exampletask/{task.pk}/",
                                 headers=bearer(await make_user("good")))
    assert (await good.connect(timeout=5))[0]
    await receive_until(good, lambda f: f.get("event") == "progress")  # streaming from here on
    hostile = HostileClient(application, bearer(await make_user("mallory")))
    loop = asyncio.get_running_loop()

    async def one_round(frame):
        await hostile.throw(frame)
        now[0] += 1.0  # a second per round: the frame allowance refills as it would

    @hypothesis_settings(max_examples=300, deadline=None, derandomize=True,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(frame=hostile_frames(task.task_key))
    def throw(frame):
        asyncio.run_coroutine_threadsafe(one_round(frame), loop).result(timeout=60)

    with caplog.at_level(logging.WARNING):
        await asyncio.to_thread(throw)  # hypothesis drives from a thread; the loop serves both
        assert await coordinator.cancel_task(task)
        frames, code = await receive_until_closed(good, timeout=30)
    if hostile.ws is not None:
        await hostile.ws.disconnect()

    events = [f for f in frames if f["type"] == "event"]
    final = frames[-1]
    assert final["status"] == "cancelled" and code == 1000
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], final["seq"] + 1))
    assert all(e["data"]["step"] == e["seq"] - 1 for e in events)  # seq 1 was "start"
    assert final["seq"] > 100  # it did stream all along
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
