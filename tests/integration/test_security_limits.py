"""Rate limits trip and recover (DESIGN §3 rate_limited / 4429, §4 flooding input).

Time is driven by replacing ``consumers.limits.now`` and ``streamapp.asgi.handshakes.now``:
recovery is deterministic, no sleeps.
"""

from __future__ import annotations

import os
import uuid

import pytest
import redis
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.core.cache.backends.locmem import LocMemCache

from consumers import limits
from streamapp.asgi import handshakes
from tests.conftest import USING_REDIS
from tests.support.clients import from_address, with_streamapp
from tests.support.helpers import receive_until_closed
from tests.support.processes import free_port
from tests.testapp.models import BurstTask

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(limits, "now", fake)
    monkeypatch.setattr(handshakes, "now", fake)
    return fake


@pytest.fixture
def address():
    """A client address of this test's own: counters in a shared cache never collide."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def connect(application, address, path="/ws/tasks/"):
    ws = WebsocketCommunicator(from_address(application, address), path)
    connected, _ = await ws.connect(timeout=5)
    assert connected
    return ws


async def ping(ws) -> dict:
    await ws.send_json_to({"action": "ping"})
    return await ws.receive_json_from(timeout=5)


async def test_connection_attempts_per_address_trip_and_recover(application, settings, clock,
                                                                address):
    with_streamapp(settings, CONNECTION_RATE=(3, 60.0))
    sockets = [await connect(application, address) for _ in range(3)]
    for ws in sockets:
        assert await ping(ws) == {"type": "pong"}

    refused = await connect(application, address, "/ws/tasks/demo/exampletask/1/")
    frames, code = await receive_until_closed(refused)
    assert [f["code"] for f in frames] == ["rate_limited"] and code == 4429
    other = await connect(application, f"{address}0")  # another address is not affected
    assert await ping(other) == {"type": "pong"}
    assert await ping(sockets[0]) == {"type": "pong"}  # nor are open sockets

    clock.advance(60)
    again = await connect(application, address)
    assert await ping(again) == {"type": "pong"}
    for ws in [*sockets, other, again]:
        await ws.disconnect()


@pytest.mark.skipif(not USING_REDIS, reason="the shared count lives in Redis")
async def test_connection_counts_are_shared_through_redis(application, settings, clock, address):
    """Another process sees (and adds to) the same count: here a raw Redis client plays it."""
    with_streamapp(settings, CONNECTION_RATE=(5, 60.0))
    ws = await connect(application, address)
    key = cache.make_and_validate_key(f"streamapp:rl:connect:{address}:{int(clock() // 60)}")
    other_process = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        assert int(other_process.get(key)) == 1
        assert 0 < other_process.ttl(key) <= 61
        other_process.incrby(key, 4)  # four handshakes served by another process
    finally:
        other_process.close()
    refused = await connect(application, address)
    frames, code = await receive_until_closed(refused)
    assert frames[0]["code"] == "rate_limited" and code == 4429
    await ws.disconnect()


async def test_a_cache_outage_lets_handshakes_through_and_says_so(application, settings, address,
                                                                  caplog):
    settings.CACHES = {
        **settings.CACHES,
        "down": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                 "LOCATION": f"redis://127.0.0.1:{free_port()}/0"},
    }
    with_streamapp(settings, RATE_LIMIT_CACHE="down", CONNECTION_RATE=(1, 60.0))
    for _ in range(2):
        ws = await connect(application, address)
        assert await ping(ws) == {"type": "pong"}
        await ws.disconnect()
    assert any("rate limit cache unavailable" in r.getMessage() for r in caplog.records)


async def test_a_refused_client_that_leaves_before_its_handshake_is_let_go(application, settings,
                                                                          address):
    with_streamapp(settings, CONNECTION_RATE=(1, 60.0))
    await (await connect(application, address)).disconnect()
    gone = ApplicationCommunicator(from_address(application, address),
                                   {"type": "websocket", "path": "/ws/tasks/", "headers": []})
    await gone.send_input({"type": "websocket.disconnect", "code": 1001})
    await gone.wait(timeout=5)  # returned, sent nothing
    assert await gone.receive_nothing()


async def test_unlimited_connections_when_the_rate_is_none(application, settings, address):
    with_streamapp(settings, CONNECTION_RATE=None)
    sockets = [await connect(application, address) for _ in range(3)]
    for ws in sockets:
        assert await ping(ws) == {"type": "pong"}
        await ws.disconnect()


async def test_messages_per_socket_trip_recover_and_a_flood_is_closed(application, settings, clock):
    with_streamapp(settings, MESSAGE_RATE=(5, 1.0), MAX_REFUSED_FRAMES=4)
    ws = await connect(application, "")
    for _ in range(5):
        assert await ping(ws) == {"type": "pong"}
    assert await ping(ws) == {
        "type": "error", "code": "rate_limited", "message": "too many frames; slow down"
    }
    clock.advance(0.2)  # one frame's worth of refill
    assert await ping(ws) == {"type": "pong"}
    assert (await ping(ws))["code"] == "rate_limited"

    clock.advance(1)
    for _ in range(5):
        assert await ping(ws) == {"type": "pong"}
    for _ in range(3):
        await ws.send_json_to({"action": "ping"})
    for _ in range(3):
        assert (await ws.receive_json_from(timeout=5))["code"] == "rate_limited"
    await ws.send_json_to({"action": "ping"})  # the fourth refused in a row: closed
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["rate_limited"] and code == 4429


async def test_an_accepted_frame_resets_the_flood_count(application, settings, clock):
    with_streamapp(settings, MESSAGE_RATE=(1, 1.0), MAX_REFUSED_FRAMES=3)
    ws = await connect(application, "")
    for _ in range(5):
        assert await ping(ws) == {"type": "pong"}
        for _ in range(2):
            assert (await ping(ws))["code"] == "rate_limited"
        clock.advance(1)
    await ws.disconnect()


async def test_a_flood_on_the_one_task_endpoint_is_closed_with_4429(communicator_for, settings,
                                                                     clock):
    with_streamapp(settings, MESSAGE_RATE=(2, 1.0), MAX_REFUSED_FRAMES=2)
    task = await BurstTask.objects.acreate(count=1, status="running")
    ws = await communicator_for(task)
    assert (await ws.receive_json_from(timeout=5))["type"] == "state"
    for _ in range(4):
        await ws.send_json_to({"action": "ping"})
    frames, code = await receive_until_closed(ws)
    assert [f.get("code", f["type"]) for f in frames] == [
        "pong", "pong", "rate_limited", "rate_limited"
    ]
    assert code == 4429


@pytest.mark.parametrize("path", ["/ws/tasks/", "one-task"])
async def test_a_socket_that_keeps_sending_bad_frames_is_closed(communicator_for, settings, path):
    with_streamapp(settings, MAX_BAD_FRAMES=3)
    if path == "one-task":
        task = await BurstTask.objects.acreate(count=1, status="running")
        ws = await communicator_for(task)
        await ws.receive_json_from(timeout=5)
    else:
        ws = await communicator_for(path)
    for _ in range(2):
        await ws.send_to(text_data="nope")
        assert (await ws.receive_json_from(timeout=5))["code"] == "bad_request"
        assert await ping(ws) == {"type": "pong"}  # good frames do not undo bad ones
    await ws.send_to(text_data="nope")
    await ws.send_to(text_data='{"action": "ping"}')  # sent before it saw the close: dropped
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["bad_request"] and code == 4400


async def test_subscriptions_per_socket_trip_and_recover(communicator_for, settings):
    with_streamapp(settings, MAX_SUBSCRIPTIONS=2)
    tasks = [await BurstTask.objects.acreate(status="completed") for _ in range(3)]
    ws = await communicator_for("/ws/tasks/")
    for task in tasks[:2]:
        await ws.send_json_to({"action": "subscribe", "task": task.task_key})
        assert (await ws.receive_json_from(timeout=5))["type"] == "state"
    await ws.send_json_to({"action": "subscribe", "task": tasks[2].task_key})
    assert await ws.receive_json_from(timeout=5) == {
        "type": "error", "code": "rate_limited", "task": tasks[2].task_key,
        "message": "a socket may hold 2 subscriptions",
    }
    await ws.send_json_to({"action": "subscribe", "task": tasks[0].task_key})  # not a new one
    assert (await ws.receive_json_from(timeout=5))["type"] == "state"
    await ws.send_json_to({"action": "unsubscribe", "task": tasks[0].task_key})
    await ws.send_json_to({"action": "subscribe", "task": tasks[2].task_key})
    assert (await ws.receive_json_from(timeout=5))["task"] == tasks[2].task_key
    assert await ping(ws) == {"type": "pong"}  # the refusal did not count towards closing it


def test_count_hit_counts_per_window(settings, clock):
    """The counter itself, on whichever cache this run uses (LocMem, or Redis in one round trip)."""
    name = f"unit:{uuid.uuid4().hex}"
    assert [handshakes.count_hit(name, 10) for _ in range(3)] == [1, 2, 3]
    clock.advance(10)
    assert handshakes.count_hit(name, 10) == 1


def test_a_window_opened_by_a_rival_meanwhile_is_counted_on(settings, clock, monkeypatch):
    """The generic path's race: incr finds no window, then another process's add wins."""
    settings.CACHES = {**settings.CACHES, "local": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": uuid.uuid4().hex}}
    with_streamapp(settings, RATE_LIMIT_CACHE="local")
    real_add = LocMemCache.add

    def a_rival_adds_first(self, key, value, timeout=None, version=None):
        real_add(self, key, 1, timeout, version)  # the rival's hit opens the window
        return real_add(self, key, value, timeout, version)  # so ours finds it taken

    monkeypatch.setattr(LocMemCache, "add", a_rival_adds_first)
    assert handshakes.count_hit("race", 10) == 2
