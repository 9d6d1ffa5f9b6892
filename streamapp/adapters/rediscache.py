"""A raw redis-py client behind Django's RedisCache, for a pipelined counter.

Django's ``RedisCache.incr`` costs two round trips (EXISTS, INCR); the handshake limiter wants
one. Django keeps the client behind the private ``cache._cache.get_client``; ``probe()`` checks
it is still there, and without it ``client_of`` answers None (the limiter then uses the public,
slower API: never no limit at all).
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient


def probe() -> list[str]:
    """What the installed Django lacks of what ``client_of`` uses ([]: all there)."""
    if not callable(getattr(RedisCacheClient, "get_client", None)):
        return ["django.core.cache.backends.redis.RedisCacheClient.get_client"]
    return []


def client_of(cache: Any, raw_key: str) -> Any | None:
    """The redis-py client that holds ``raw_key`` for writing, or None (not Redis, or unknown)."""
    if not isinstance(cache, RedisCache) or probe():
        return None
    return cache._cache.get_client(raw_key, write=True)
