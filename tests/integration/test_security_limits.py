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
from django.core.cache import caches

from consumers import limits
from streamapp.asgi import handshakes
from tests.conftest import USING_REDIS
from tests.support.clients import bearer, from_address, make_user, session_cookie, with_streamapp
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


@pytest.fixture(autouse=True)
def fresh_counts(settings):
    """Counts of this test's own: user ids repeat from test to test, and Redis keeps counts."""
    default = settings.CACHES["default"]
    settings.CACHES = {**settings.CACHES,
                       "default": {**default, "KEY_PREFIX": f"t{uuid.uuid4().hex[:12]}"}}


@pytest.fixture
def address():
    """A client address of this test's own: counters in a shared cache never collide."""
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


async def connect(application, address, path="/ws/tasks/", headers=None):
    ws = WebsocketCommunicator(from_address(application, address), path, headers=headers or [])
    connected, _ = await ws.connect(timeout=5)
    assert connected
    return ws


async def ping(ws) -> dict:
    await ws.send_json_to({"action": "ping"})
    return await ws.receive_json_from(timeout=5)


async def refused(ws) -> str:
    """The refusal's message, after checking it is rate_limited and 4429."""
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["rate_limited"] and code == 4429, (frames, code)
    return frames[0]["message"]


async def test_connection_attempts_per_client_trip_and_recover(application, settings, clock,
                                                                address):
    with_streamapp(settings, CONNECTION_RATE=(3, 60.0))
    sockets = [await connect(application, address) for _ in range(3)]
    for ws in sockets:
        assert await ping(ws) == {"type": "pong"}

    one_task = await connect(application, address, "/ws/tasks/demo/exampletask/1/")
    assert await refused(one_task) == "too many connections from your address; try later"
    other = await connect(application, f"{address}0")  # another address is not affected
    assert await ping(other) == {"type": "pong"}
    assert await ping(sockets[0]) == {"type": "pong"}  # nor are open sockets

    clock.advance(20)  # a bucket of 3 per 60 s refills one every 20 s: one more, not three
    again = await connect(application, address)
    assert await ping(again) == {"type": "pong"}
    await refused(await connect(application, address))
    for ws in [*sockets, other, again]:
        await ws.disconnect()


async def test_signed_in_clients_of_one_address_each_have_their_own_budget(application, settings,
                                                                           clock, address):
    """Behind a NAT: one person's reconnects spend their own budget, not their neighbours'."""
    with_streamapp(settings, CONNECTION_RATE=(2, 60.0), ADDRESS_CONNECTION_RATE=(10, 60.0))
    alice, bob = await make_user("alice"), await make_user("bob")
    for _ in range(2):
        await (await connect(application, address, headers=bearer(alice))).disconnect()
    abusive = [await connect(application, address, headers=bearer(alice)) for _ in range(5)]
    for ws in abusive:  # refused by alice's own bucket: the address's budget is untouched
        await refused(ws)
    bobs = [await connect(application, address, headers=await session_cookie(bob))
            for _ in range(2)]
    for ws in bobs:
        assert await ping(ws) == {"type": "pong"}
        await ws.disconnect()
    anonymous = [await connect(application, address) for _ in range(2)]  # share one bucket
    for ws in anonymous:
        assert await ping(ws) == {"type": "pong"}
        await ws.disconnect()
    # The address: 2 (alice) + 2 (bob) + 2 (anonymous) taken of 10; made-up tokens are anonymous
    # once refused, so they spend the anonymous bucket too, which is empty.
    made_up = await connect(application, address, headers=[(b"authorization", b"Bearer x1")])
    await refused(made_up)


async def test_one_address_has_a_ceiling_for_everyone(application, settings, clock, address):
    with_streamapp(settings, CONNECTION_RATE=(5, 60.0), ADDRESS_CONNECTION_RATE=(3, 60.0))
    for n in range(3):
        token = [(b"authorization", f"Bearer t{n}".encode())]
        ws = await connect(application, address, headers=token)
        await ws.disconnect()
    await refused(await connect(application, address, headers=[(b"authorization", b"Bearer t9")]))


async def test_a_user_has_one_budget_whatever_the_address_and_credential(application, settings,
                                                                         clock):
    with_streamapp(settings, USER_CONNECTION_RATE=(2, 60.0))
    carol = await make_user("carol")
    opened = [await connect(application, f"10.9.{n}.1", headers=bearer(carol)) for n in range(2)]
    message = await refused(await connect(application, "10.9.3.1",
                                          headers=await session_cookie(carol)))
    assert message == "too many connections for your account; try later"
    for ws in opened:
        await ws.disconnect()


async def test_open_sockets_are_capped_per_user_and_per_anonymous_address(application, settings,
                                                                         address):
    with_streamapp(settings, USER_SOCKETS=2, ANONYMOUS_SOCKETS=2)
    dave = await make_user("dave")
    mine = [await connect(application, f"10.8.{n}.1", headers=bearer(dave)) for n in range(2)]
    assert await refused(await connect(application, address, headers=bearer(dave))) == (
        "too many open sockets for your account; try later")
    anonymous = [await connect(application, address) for _ in range(2)]
    assert await refused(await connect(application, address)) == (
        "too many open sockets for your address; try later")
    await mine[0].disconnect()  # a closed socket gives its place back
    replacement = await connect(application, address, headers=bearer(dave))
    assert await ping(replacement) == {"type": "pong"}
    for ws in [mine[1], replacement, *anonymous]:
        await ws.disconnect()


async def test_behind_a_trusted_proxy_the_client_is_the_address_it_saw(application, settings,
                                                                       clock):
    """The proxy appends; the client writes what it likes before that. TRUSTED_PROXIES=1."""
    with_streamapp(settings, CONNECTION_RATE=(2, 60.0), TRUSTED_PROXIES=1)
    client = f"203.0.113.{uuid.uuid4().int % 250}"
    for n in range(2):
        forwarded = f"198.51.100.{n}, {client}".encode()
        ws = await connect(application, "10.0.0.2", headers=[(b"x-forwarded-for", forwarded)])
        await ws.disconnect()
    rotated = [(b"x-forwarded-for", f"198.51.100.77, {client}".encode())]
    await refused(await connect(application, "10.0.0.2", headers=rotated))
    elsewhere = [(b"x-forwarded-for", b"198.51.100.77, 203.0.113.251")]
    await (await connect(application, "10.0.0.2", headers=elsewhere)).disconnect()


@pytest.mark.skipif(not USING_REDIS, reason="the shared count lives in Redis")
async def test_connection_counts_are_shared_through_redis(application, settings, clock, address):
    """Another process sees (and spends) the same bucket: here a raw Redis client plays it."""
    with_streamapp(settings, CONNECTION_RATE=(5, 60.0))
    ws = await connect(application, address)
    key = caches["default"].make_key(f"streamapp:rl:client:{address}:-")
    other_process = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        assert float(other_process.hget(key, "t")) == 4.0
        assert 0 < other_process.pttl(key) <= 61_000
        other_process.hset(key, "t", "0.5")  # four handshakes served by another process
    finally:
        other_process.close()
    await refused(await connect(application, address))
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
    assert any("rate limit store unavailable" in r.getMessage() for r in caplog.records)


async def test_a_refused_client_that_leaves_before_its_handshake_is_let_go(application, settings,
                                                                          address):
    with_streamapp(settings, CONNECTION_RATE=(1, 60.0))
    await (await connect(application, address)).disconnect()
    gone = ApplicationCommunicator(from_address(application, address),
                                   {"type": "websocket", "path": "/ws/tasks/", "headers": []})
    await gone.send_input({"type": "websocket.disconnect", "code": 1001})
    await gone.wait(timeout=5)  # returned, sent nothing
    assert await gone.receive_nothing()


async def test_unlimited_connections_when_the_limits_are_none(application, settings, address):
    with_streamapp(settings, CONNECTION_RATE=None, ADDRESS_CONNECTION_RATE=None,
                   USER_CONNECTION_RATE=None, USER_SOCKETS=None, ANONYMOUS_SOCKETS=None)
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
    assert await ping(ws) == {"type": "pong"}  # one refusal is far from closing it


@pytest.mark.parametrize("action", ["subscribe", "cancel"])
async def test_refused_subscribes_and_cancels_close_the_socket_with_4429(communicator_for,
                                                                         settings, clock, action):
    """An anonymous client asking again and again for what it may not have (the issue's flood of
    forbidden subscribes) spends the socket's REFUSAL_RATE, then the socket is closed."""
    with_streamapp(settings, OPEN_ACCESS=False, REFUSAL_RATE=(3, 1.0))
    task = await BurstTask.objects.acreate(status="completed")
    ws = await communicator_for("/ws/tasks/")
    for _ in range(3):
        await ws.send_json_to({"action": action, "task": task.task_key})
        assert (await ws.receive_json_from(timeout=5))["code"] == "forbidden"
    clock.advance(0.34)  # one refusal's worth of refill
    await ws.send_json_to({"action": action, "task": "testapp.bursttask.0"})
    assert (await ws.receive_json_from(timeout=5))["code"] == "not_found"  # counts the same
    await ws.send_json_to({"action": action, "task": task.task_key})
    frames, code = await receive_until_closed(ws)
    assert [f["code"] for f in frames] == ["forbidden", "rate_limited"] and code == 4429
    assert frames[1]["message"] == "too many refused subscribes and cancels; closing"
    await task.arefresh_from_db()
    assert task.status == "completed"


async def test_refusals_refill_so_a_client_that_slows_down_stays(communicator_for, settings,
                                                                 clock):
    with_streamapp(settings, OPEN_ACCESS=False, REFUSAL_RATE=(2, 1.0))
    ws = await communicator_for("/ws/tasks/")
    for _ in range(10):
        for _ in range(2):
            await ws.send_json_to({"action": "subscribe", "task": "testapp.bursttask.0"})
            assert (await ws.receive_json_from(timeout=5))["code"] == "not_found"
        clock.advance(1)
    assert await ping(ws) == {"type": "pong"}
