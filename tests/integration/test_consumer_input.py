"""No client input reaches an unhandled exception in the consumers (DESIGN §4 malformed input).

Generated frames, paths, query strings and headers (full Unicode, nested and oversized) go
through the real ASGI stack: origin check, handshake limits, session and token auth, consumers.
For every example: nothing escapes (a communicator re-raises what the application raised), a
frame with a malformed field leaves the socket open and its subscription streaming, and the
sockets and subscriptions gauges are back where they were once the socket is gone. A failure of
ours closes in protocol: a ``server_error`` frame, then 1011 (4011 where the server refuses it).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.testing import WebsocketCommunicator
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from consumers import connection as consumer_sockets
from streamapp.exceptions import UnknownTask
from tests.integration.test_security_input import like_daphne
from tests.support.clients import bearer, from_address, make_user, with_streamapp
from tests.support.helpers import receive_until, receive_until_closed
from tests.testapp.models import BurstTask, StepTask

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Hypothesis draws in its own thread while the event loop serves: the server's own use of
    # `random` then looks to hypothesis as if a strategy had used it.
    pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"),
]

PROFILE = hypothesis_settings(
    max_examples=120, derandomize=True, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
)
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
UNICODE_DIGITS = ["²", "¹", "⁰", "①", "١٢"]
GAUGES = ("streamapp_sockets_connected", "streamapp_subscriptions")


def gauges() -> tuple[float, ...]:
    return tuple(REGISTRY.get_sample_value(name) or 0.0 for name in GAUGES)


@pytest.fixture(autouse=True)
def gauges_come_back():
    """No socket or subscription of this module's tests outlives it, whatever it threw at the
    server. (From where they were: unit tests that open a Subscription by hand leave theirs.)"""
    before = gauges()
    yield
    assert gauges() == before


def json_values():
    scalars = (st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT
               | st.sampled_from(UNICODE_DIGITS))
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
        max_leaves=10,
    )


# Digits and numbers of every script: what str.isdigit() and int() disagree about.
NUMERALS = st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=3)


def malformed_fields(key: str):
    """A frame whose action is known and one of its fields is anything at all."""
    since = NUMERALS | json_values()
    return st.one_of(
        st.builds(lambda value: {"action": "subscribe", "task": key, "since": value}, since),
        st.builds(lambda action, task: {"action": action, "task": task},
                  st.sampled_from(["subscribe", "unsubscribe", "cancel"]), json_values()),
        st.builds(lambda action, extra: {"action": action, "task": key, "x": extra},
                  st.sampled_from(["subscribe", "ping"]), json_values()),
    )


def headers():
    name = st.sampled_from([b"origin", b"authorization", b"cookie", b"x-forwarded-for",
                            b"sec-websocket-protocol", b"user-agent"])
    return st.lists(st.tuples(name, st.binary(max_size=50)), max_size=4)


async def run_examples(strategy, check) -> None:
    """Hypothesis in a thread of its own; each example runs on this event loop."""
    loop = asyncio.get_running_loop()

    @PROFILE
    @given(value=strategy)
    def examples(value):
        asyncio.run_coroutine_threadsafe(check(value), loop).result(timeout=60)

    await asyncio.to_thread(examples)


async def read_to_pong(ws) -> list[dict]:
    """Frames up to the pong of the ping sent after the frame under test."""
    frames = []
    while True:
        output = await ws.receive_output(timeout=10)  # re-raises the application's exception
        assert output["type"] == "websocket.send", output
        frame = json.loads(output["text"].encode("utf-8"))  # sendable as a real text frame
        if frame == {"type": "pong"}:
            return frames
        frames.append(frame)


async def test_a_malformed_field_is_answered_and_the_socket_streams_on(application, settings):
    with_streamapp(settings, MAX_BAD_FRAMES=10**6, MESSAGE_RATE=None, REFUSAL_RATE=None)
    before = gauges()
    task = await StepTask.objects.acreate()
    ws = WebsocketCommunicator(application, "/ws/tasks/")
    assert (await ws.connect(timeout=5))[0]
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    await receive_until(ws, lambda f: f.get("status") == "running")

    async def check(frame):
        await ws.send_to(text_data=json.dumps(frame, ensure_ascii=False))
        await ws.send_json_to({"action": "ping"})
        for reply in await read_to_pong(ws):
            assert reply["type"] in {"error", "state", "event"}, reply
            if reply["type"] == "error":
                assert reply["code"] in {"bad_request", "not_found", "forbidden"}, reply

    await run_examples(malformed_fields(task.task_key), check)
    await task.send_signal("step", "go")  # the subscription outlived every example
    event = await receive_until(ws, lambda f: f.get("type") == "event")
    assert event[-1]["task"] == task.task_key and event[-1]["seq"] == 1
    await ws.disconnect()
    await task.send_signal("step", "stop")
    assert gauges() == before


async def test_any_path_query_and_headers_end_in_protocol(application, settings):
    """Handshakes of every shape, through every middleware (TRUSTED_PROXIES on, so the
    forwarded header is read), on both endpoints; gauges return after each."""
    with_streamapp(settings, TRUSTED_PROXIES=1, OPEN_ACCESS=False)
    user = await make_user("fuzz")
    done = await BurstTask.objects.acreate(status="completed")
    before = gauges()
    parts = st.one_of(
        st.just(f"testapp/bursttask/{done.pk}"), st.tuples(ANY_TEXT, ANY_TEXT, ANY_TEXT).map(
            lambda p: "/".join(s.replace("/", "") or "x" for s in p)),
    )
    handshakes = st.tuples(parts, st.binary(max_size=40), headers(), st.booleans())

    async def check(example):
        path, query, extra, signed_in = example
        scope_headers = [*extra, *(bearer(user) if signed_in else [])]
        app = from_address(application, "10.0.0.2")
        ws = WebsocketCommunicator(app, f"/ws/tasks/{path}/", headers=scope_headers)
        ws.scope["query_string"] = query
        connected, _ = await ws.connect(timeout=10)
        if connected:
            frames, code = await receive_until_closed(ws, timeout=10)
            assert code in {1000, 4403, 4404, 4429}, (frames, code)
            for frame in frames:
                assert frame["type"] in {"state", "event", "error"}
                if frame["type"] == "error":
                    frame["message"].encode("utf-8")
        await ws.disconnect()
        await ws.wait(timeout=10)
        assert gauges() == before

    await run_examples(handshakes, check)


@pytest.mark.parametrize("since", UNICODE_DIGITS)
async def test_the_issues_crash_is_a_bad_request_and_the_socket_stays(communicator_for, since):
    before = gauges()
    task = await StepTask.objects.acreate()
    ws = await communicator_for("/ws/tasks/")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key})
    await receive_until(ws, lambda f: f.get("status") == "running")
    await ws.send_json_to({"action": "subscribe", "task": task.task_key, "since": since})
    reply = await ws.receive_json_from(timeout=5)
    assert reply["code"] == "bad_request" and "ASCII digits" in reply["message"]
    await task.send_signal("step", "go")
    assert (await ws.receive_json_from(timeout=5))["seq"] == 1  # the other subscription goes on
    await ws.disconnect()
    assert gauges() == before


@pytest.mark.parametrize("strict", [False, True], ids=["asgi", "like-daphne"])
async def test_our_own_failure_closes_in_protocol_and_gives_the_gauges_back(application,
                                                                            monkeypatch, strict,
                                                                            caplog):
    before = gauges()
    done = await BurstTask.objects.acreate(status="completed")
    app = like_daphne(application) if strict else application
    ws = WebsocketCommunicator(app, "/ws/tasks/")
    assert (await ws.connect(timeout=5))[0]
    await ws.send_json_to({"action": "subscribe", "task": done.task_key})
    assert (await ws.receive_json_from(timeout=5))["type"] == "state"

    async def broken(model, pk, key, latest):
        if key == "testapp.bursttask.0":
            raise RuntimeError("a bug of ours")
        raise UnknownTask(key)

    monkeypatch.setattr("consumers.subscription.read_for_subscriber", broken)
    await ws.send_json_to({"action": "subscribe", "task": "testapp.bursttask.0"})
    frames, code = await receive_until_closed(ws)
    assert frames == [{"type": "error", "code": "server_error",
                       "message": "the server failed handling this socket; reconnect"}]
    assert code == (4011 if strict else 1011)
    assert any(r.getMessage().startswith("socket failed handling websocket.receive")
               and r.exc_info[1].args == ("a bug of ours",) for r in caplog.records)
    await ws.disconnect()
    assert gauges() == before


async def test_a_failure_before_the_accept_is_told_too(application, monkeypatch):
    before = gauges()

    def broken(*args, **kwargs):
        raise RuntimeError("no outlet")

    monkeypatch.setattr(consumer_sockets.SocketOutlet, "for_socket", broken)
    ws = WebsocketCommunicator(application, "/ws/tasks/")
    connected, _ = await ws.connect(timeout=5)
    assert connected
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["server_error"] and code == 1011
    await ws.disconnect()
    assert gauges() == before
