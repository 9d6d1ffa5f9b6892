"""Handshakes per client address (streamapp/asgi/handshakes.py), counted in a local-memory cache
on a clock the test turns by hand (scripts/mutation runs these)."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid

import pytest
from django.core.cache import caches

from streamapp.asgi import handshakes
from streamapp.asgi.handshakes import (
    ConnectionRateLimitMiddleware,
    client_address,
    connection_allowed,
    count_hit,
    refuse_rate_limited,
)


class Clock:
    def __init__(self) -> None:
        self.now = 6000.0  # the start of a 60-second window

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch, settings):
    settings.CACHES = {"limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                                  "LOCATION": "handshake-tests"}}
    settings.STREAMAPP = {**settings.STREAMAPP, "RATE_LIMIT_CACHE": "limits",
                          "CONNECTION_RATE": (2, 60.0)}
    caches["limits"].clear()
    clock = Clock()
    monkeypatch.setattr(handshakes, "now", clock)
    return clock


def test_hits_are_counted_per_name_in_fixed_windows(clock):
    assert [count_hit("a", 60.0) for _ in range(3)] == [1, 2, 3]
    assert count_hit("b", 60.0) == 1
    clock.now += 59.9
    assert count_hit("a", 60.0) == 4
    clock.now += 0.1  # the next window
    assert count_hit("a", 60.0) == 1


REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_reachable() -> bool:
    host, _, port = REDIS_URL.split("//", 1)[1].split("/", 1)[0].partition(":")
    try:
        socket.create_connection((host, int(port or 6379)), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def redis_limits(clock, settings):
    """The limiter's cache on Redis (its one-round-trip pipeline), under a prefix of its own."""
    if not redis_reachable():
        pytest.skip(f"no Redis at {REDIS_URL}")
    prefix = f"handshake-test-{uuid.uuid4().hex}"
    settings.CACHES = {"limits": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                  "LOCATION": REDIS_URL, "KEY_PREFIX": prefix}}
    cache = caches["limits"]
    yield cache
    # Only this test's keys: RedisCache.clear() would flush the whole database, shared with
    # whatever else uses this Redis.
    client = cache._cache.get_client(write=True)
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)


def test_on_redis_hits_are_counted_in_fixed_windows_that_expire(redis_limits, clock):
    assert [count_hit("a", 60.0) for _ in range(3)] == [1, 2, 3]
    assert count_hit("b", 60.0) == 1
    raw = redis_limits.make_and_validate_key("streamapp:rl:a:100")
    client = redis_limits._cache.get_client(raw)
    assert int(client.get(raw)) == 3 and 0 < client.ttl(raw) <= 61
    assert redis_limits.get("streamapp:rl:a:100") == 3  # Django's API reads the same count
    clock.now += 60.0
    assert count_hit("a", 60.0) == 1


def test_a_window_is_kept_a_little_longer_than_it_lasts(clock, monkeypatch):
    added = []
    cache = caches["limits"]
    real_add = cache.add

    def add(key, value, timeout):
        added.append((key, timeout))
        return real_add(key, value, timeout)

    monkeypatch.setattr(cache, "add", add)
    count_hit("a", 2.5)
    assert added == [("streamapp:rl:a:2400", 4)]


def test_a_window_opened_by_another_process_meanwhile_is_counted_on(clock, monkeypatch):
    cache = caches["limits"]

    def add(key, value, timeout):
        cache.set(key, 5, timeout)  # the other process won the race
        return False

    monkeypatch.setattr(cache, "add", add)
    assert count_hit("a", 60.0) == 6


async def test_a_client_may_connect_up_to_the_rate(clock):
    assert [await connection_allowed("10.0.0.1") for _ in range(3)] == [True, True, False]
    assert await connection_allowed("10.0.0.2")
    clock.now += 60.0
    assert await connection_allowed("10.0.0.1")


async def test_without_a_rate_everyone_may_connect(clock, settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "CONNECTION_RATE": None}
    assert all([await connection_allowed("10.0.0.1") for _ in range(10)])


async def test_a_cache_outage_lets_handshakes_in_and_says_so(clock, monkeypatch, caplog):
    def broken(name, seconds):
        raise ConnectionError("cache away")

    monkeypatch.setattr(handshakes, "count_hit", broken)
    with caplog.at_level(logging.WARNING, logger="streamapp.ratelimit"):
        assert await connection_allowed("10.0.0.1")
    assert "rate limit cache unavailable; handshake allowed address=10.0.0.1" in caplog.text


def test_the_client_address_is_the_peer_host_cut_short():
    assert client_address({"client": ["10.0.0.1", 5000]}) == "10.0.0.1"
    assert client_address({"client": ["h" * 150, 1]}) == "h" * 100
    assert client_address({"client": None}) is None and client_address({}) is None


class Peer:
    def __init__(self, first="websocket.connect"):
        self.incoming = [{"type": first}]
        self.sent = []

    async def receive(self):
        return self.incoming.pop(0)

    async def send(self, message):
        self.sent.append(message)


async def test_a_refused_client_is_accepted_told_why_then_closed_4429():
    peer = Peer()
    await refuse_rate_limited(peer.receive, peer.send)
    accept, said, close = peer.sent
    assert accept == {"type": "websocket.accept"}
    assert json.loads(said["text"]) == {
        "type": "error", "code": "rate_limited",
        "message": "too many connections from your address; try later",
    }
    assert said["type"] == "websocket.send" and close == {"type": "websocket.close", "code": 4429}


async def test_a_refusal_that_gets_no_connect_sends_nothing():
    peer = Peer(first="websocket.disconnect")
    await refuse_rate_limited(peer.receive, peer.send)
    assert peer.sent == []


async def test_the_middleware_refuses_sockets_over_the_rate_only(clock):
    let_in = []
    peer = Peer()

    async def inner(scope, receive, send):
        assert (receive, send) == (peer.receive, peer.send)  # the socket's own, passed on
        let_in.append((scope["type"], (scope.get("client") or [None])[0]))

    middleware = ConnectionRateLimitMiddleware(inner)
    for _ in range(3):
        peer = Peer()
        await middleware({"type": "websocket", "client": ["10.0.0.1", 1]}, peer.receive,
                         peer.send)
    assert let_in == [("websocket", "10.0.0.1")] * 2 and peer.sent[-1]["code"] == 4429
    peer = Peer()
    await middleware({"type": "websocket", "client": ["10.0.0.2", 1]}, peer.receive, peer.send)
    peer = Peer()
    await middleware({"type": "http", "client": ["10.0.0.1", 1]}, peer.receive, peer.send)
    peer = Peer()
    await middleware({"type": "websocket", "client": None}, peer.receive, peer.send)
    assert let_in[2:] == [("websocket", "10.0.0.2"), ("http", "10.0.0.1"), ("websocket", None)]
