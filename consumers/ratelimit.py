"""Rate limits: handshakes per client address (shared through the Django cache), frames per socket.

Frames are counted in-process with a token bucket (no I/O on the hot path); handshakes are counted
in fixed windows in the cache so that every process sharing it (Redis) shares the count, with one
cache round trip per handshake. ``now`` is the one clock of this module: tests replace it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache

from streamapp import frames, metrics
from streamapp.conf import app_settings

logger = logging.getLogger("streamapp.ratelimit")

CLOSE_RATE_LIMITED = 4429


def now() -> float:
    """Wall-clock seconds: windows in a shared cache need one clock across processes."""
    return time.time()


class TokenBucket:
    """``count`` tokens, refilled at ``count / seconds`` per second; one token per frame."""

    def __init__(self, count: int, seconds: float) -> None:
        self.capacity = float(count)
        self.per_second = count / seconds
        self.tokens = self.capacity
        self.stamp = now()

    def take(self) -> bool:
        moment = now()
        elapsed = max(0.0, moment - self.stamp)  # a clock stepped back refills nothing
        self.tokens = min(self.capacity, self.tokens + elapsed * self.per_second)
        self.stamp = moment
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SocketLimits:
    """One socket's allowance of frames, and how far it has misbehaved."""

    def __init__(self) -> None:
        rate = app_settings.MESSAGE_RATE
        self.bucket = TokenBucket(*rate) if rate else None
        self.refused_in_a_row = 0
        self.bad_frames = 0

    def admit(self) -> bool:
        """Take a frame from the allowance; False when the socket is over its rate."""
        if self.bucket is None or self.bucket.take():
            self.refused_in_a_row = 0
            return True
        self.refused_in_a_row += 1
        return False

    def must_close(self, code: str) -> bool:
        """Record an error answered to the client; True when the socket must now be closed."""
        if code == "too_large":
            return True
        if code == "rate_limited":
            return self.refused_in_a_row >= app_settings.MAX_REFUSED_FRAMES
        if code == "bad_request":
            self.bad_frames += 1
            return self.bad_frames >= app_settings.MAX_BAD_FRAMES
        return False


def count_hit(name: str, seconds: float) -> int:
    """Count a hit on ``name`` in the current ``seconds``-long window; returns the window's count."""
    cache = caches[app_settings.RATE_LIMIT_CACHE]
    key = f"streamapp:rl:{name}:{int(now() // seconds)}"
    ttl = math.ceil(seconds) + 1
    if isinstance(cache, RedisCache):
        # Django's RedisCache.incr costs two round trips (EXISTS, INCR); a pipeline does it in one.
        # RedisCache stores ints as plain Redis integers, so INCR and cache.get agree.
        raw = cache.make_and_validate_key(key)
        pipe = cache._cache.get_client(raw, write=True).pipeline(transaction=False)
        pipe.set(raw, 0, ex=ttl, nx=True)
        pipe.incr(raw)
        return int(pipe.execute()[1])
    try:
        return cache.incr(key)  # the common case: the window already has hits
    except ValueError:
        if cache.add(key, 1, ttl):
            return 1
        return cache.incr(key)  # another process opened the window first


async def connection_allowed(address: str) -> bool:
    """May ``address`` open one more socket now? A cache outage lets it (and logs why)."""
    rate = app_settings.CONNECTION_RATE
    if not rate:
        return True
    count, seconds = rate
    try:
        hits = await sync_to_async(count_hit, thread_sensitive=False)(f"connect:{address}", seconds)
    except Exception:  # noqa: BLE001 - a limiter must not take the sockets down with the cache
        logger.warning("rate limit cache unavailable; handshake allowed address=%s", address,
                       exc_info=True)
        return True
    return hits <= count


def client_address(scope: dict[str, Any]) -> str | None:
    """The peer's address (daphne's ``--proxy-headers`` puts the real client's here)."""
    client = scope.get("client")
    return str(client[0])[:100] if client else None


async def refuse_rate_limited(receive: Any, send: Any) -> None:
    """A one-shot WebSocket app: accept, say ``rate_limited``, close 4429 (DESIGN §3)."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    error = frames.error("rate_limited", "too many connections from your address; try later")
    await send({"type": "websocket.send", "text": frames.encode(error)})
    await send({"type": "websocket.close", "code": CLOSE_RATE_LIMITED})


class ConnectionRateLimitMiddleware:
    """Refuses handshakes beyond ``STREAMAPP["CONNECTION_RATE"]`` per client address.

    Outside the auth stack on purpose: a flood is turned away before any session lookup.
    A scope with no client address (a unix socket without proxy headers) is not counted.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        address = client_address(scope)
        if scope["type"] == "websocket" and address is not None:
            if not await connection_allowed(address):
                logger.info("handshake rate limited address=%s", address)
                metrics.rate_limited("connections")
                return await refuse_rate_limited(receive, send)
        return await self.inner(scope, receive, send)
