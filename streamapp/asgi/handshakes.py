"""Handshake limits: WebSocket handshakes per client address, counted in the Django cache.

Counted in fixed windows in the cache so that every process sharing it (Redis) shares the
count, with one cache round trip per handshake. ``now`` is the one clock of this module: tests
replace it.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import caches

from .. import metrics, protocol
from ..adapters import rediscache
from ..conf import app_settings

logger = logging.getLogger("streamapp.ratelimit")


def now() -> float:
    """Wall-clock seconds: windows in a shared cache need one clock across processes."""
    return time.time()


def count_hit(name: str, seconds: float) -> int:
    """Count a hit on ``name`` in the current ``seconds``-long window; return its count."""
    cache = caches[app_settings.RATE_LIMIT_CACHE]
    key = f"streamapp:rl:{name}:{int(now() // seconds)}"
    ttl = math.ceil(seconds) + 1
    raw = cache.make_and_validate_key(key)
    client = rediscache.client_of(cache, raw)
    if client is not None:
        # One round trip. RedisCache stores ints as plain Redis integers: INCR and get agree.
        pipe = client.pipeline(transaction=False)
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
    error = protocol.error("rate_limited", "too many connections from your address; try later")
    await send({"type": "websocket.send", "text": protocol.encode(error)})
    await send({"type": "websocket.close", "code": protocol.CLOSE_RATE_LIMITED})


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
