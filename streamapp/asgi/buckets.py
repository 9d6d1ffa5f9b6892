"""Token buckets and open-socket counts for the handshake limits: in Redis, or in this process.

One call takes a token from each of a few buckets in order (stopping at the first that is empty:
a refused client does not spend the budgets behind it) and, for a socket about to open, claims
a place under a cap of open sockets. With Redis behind ``STREAMAPP["RATE_LIMIT_CACHE"]`` that is
one Lua script, one round trip, atomic, and every process shares the counts; with any other
cache the counts live in this process (say so in a multi-process deployment: each process then
allows the whole budget).

A bucket holds ``count`` tokens and refills at ``count / seconds`` per second: a burst of
``count``, then a steady rate, with no window boundary to double it. An open socket is a member
of a sorted set scored by when its claim lapses; the process that holds it renews its claims in
one pipeline every SLOT_SECONDS / 3, so a crashed process's sockets stop counting within
SLOT_SECONDS.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches

from ..adapters import rediscache
from ..conf import app_settings

logger = logging.getLogger("streamapp.ratelimit")

SLOT_SECONDS = 120.0
MAX_LOCAL_KEYS = 50_000  # past this, buckets that have refilled completely are forgotten
ROUTING_KEY = "streamapp:limits"  # every limit key lives on the Redis server this one maps to

OK = 0
SOCKETS_FULL = -1

# KEYS: the buckets, then the slot set when there is one.
# ARGV: now, bucket count, (capacity, per second) per bucket, then cap, member, lapse time.
# Returns 0 (taken), i (bucket i was empty) or -1 (the slot set was full).
TAKE = """
local now = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local slot = KEYS[n + 1]
if slot then
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now)
  if redis.call('ZCARD', slot) >= tonumber(ARGV[3 + 2 * n]) then
    return -1
  end
end
for i = 1, n do
  local capacity = tonumber(ARGV[1 + 2 * i])
  local rate = tonumber(ARGV[2 + 2 * i])
  local state = redis.call('HMGET', KEYS[i], 't', 's')
  local tokens = tonumber(state[1]) or capacity
  local stamp = tonumber(state[2]) or now
  local elapsed = now - stamp
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(capacity, tokens + elapsed * rate)
  if tokens < 1 then
    return i
  end
  redis.call('HSET', KEYS[i], 't', tostring(tokens - 1), 's', tostring(now))
  redis.call('PEXPIRE', KEYS[i], math.ceil(capacity / rate * 1000) + 1000)
end
if slot then
  redis.call('ZADD', slot, tonumber(ARGV[5 + 2 * n]), ARGV[4 + 2 * n])
  redis.call('PEXPIRE', slot, math.ceil((tonumber(ARGV[5 + 2 * n]) - now) * 1000) + 1000)
end
return 0
"""


@dataclass(frozen=True)
class Bucket:
    """``count`` tokens refilled over ``seconds``, under ``key``."""

    key: str
    count: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.count / self.seconds


@dataclass(frozen=True)
class Slot:
    """At most ``cap`` open sockets under ``key``."""

    key: str
    cap: int


class Limits(Protocol):
    async def take(
        self, moment: float, buckets: Sequence[Bucket], slot: Slot | None, member: str
    ) -> int:
        """OK, the 1-based index of the empty bucket, or SOCKETS_FULL."""

    async def release(self, slot: Slot, member: str) -> None:
        """The socket ``member`` has closed."""


class LocalLimits:
    """The counts in this process: exact for one process, no I/O."""

    def __init__(self) -> None:
        self.buckets: dict[str, tuple[float, float, float]] = {}  # key -> tokens, stamp, full at
        self.slots: dict[str, set[str]] = {}

    async def take(
        self, moment: float, buckets: Sequence[Bucket], slot: Slot | None, member: str
    ) -> int:
        if slot is not None and len(self.slots.get(slot.key, ())) >= slot.cap:
            return SOCKETS_FULL
        for index, bucket in enumerate(buckets, 1):
            tokens, stamp, _ = self.buckets.get(bucket.key, (bucket.count, moment, moment))
            tokens = min(bucket.count, tokens + max(0.0, moment - stamp) * bucket.per_second)
            if tokens < 1.0:
                return index
            tokens -= 1.0
            full_at = moment + (bucket.count - tokens) / bucket.per_second
            self.buckets[bucket.key] = (tokens, moment, full_at)
        if slot is not None:
            self.slots.setdefault(slot.key, set()).add(member)
        if len(self.buckets) > MAX_LOCAL_KEYS:
            self.buckets = {k: v for k, v in self.buckets.items() if v[2] > moment}
        return OK

    async def release(self, slot: Slot, member: str) -> None:
        members = self.slots.get(slot.key)
        if members is not None:
            members.discard(member)
            if not members:
                del self.slots[slot.key]


class RedisLimits:
    """The counts in Redis, shared by every process that uses the same server and key prefix."""

    def __init__(self, client: Any, clock: Callable[[], float]) -> None:
        self.client = client
        self.clock = clock  # the clock claims are scored by
        self.script = client.register_script(TAKE)
        self.held: dict[tuple[str, str], None] = {}  # (slot key, member) of this process
        self._renewer: asyncio.Task[None] | None = None

    async def take(
        self, moment: float, buckets: Sequence[Bucket], slot: Slot | None, member: str
    ) -> int:
        keys = [bucket.key for bucket in buckets]
        args: list[Any] = [repr(moment), len(buckets)]
        for bucket in buckets:
            args += [bucket.count, repr(bucket.per_second)]
        if slot is not None:
            keys.append(slot.key)
            args += [slot.cap, member, repr(moment + SLOT_SECONDS)]
        outcome = int(await sync_to_async(self.script, thread_sensitive=False)(keys, args))
        if outcome == OK and slot is not None:
            self.held[(slot.key, member)] = None
            self._keep_renewing()
        return outcome

    async def release(self, slot: Slot, member: str) -> None:
        if (slot.key, member) in self.held:
            del self.held[(slot.key, member)]
            if not self.held and self._renewer is not None:
                self._renewer.cancel()  # nothing to renew: no task outlives the sockets
                self._renewer = None
            await sync_to_async(self.client.zrem, thread_sensitive=False)(slot.key, member)

    def _keep_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever(), name="streamapp slots")

    async def _renew_forever(self) -> None:
        while self.held:
            await asyncio.sleep(SLOT_SECONDS / 3)
            held = list(self.held)
            if not held:
                return
            try:
                await sync_to_async(self._renew, thread_sensitive=False)(
                    held, self.clock() + SLOT_SECONDS
                )
            except Exception:  # noqa: BLE001 - the claims lapse; the next round tries again
                logger.warning("renewing open-socket counts failed", exc_info=True)

    def _renew(self, held: list[tuple[str, str]], lapse: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, member in held:
            pipe.zadd(key, {member: lapse}, xx=True)
        for key in {key for key, _ in held}:
            pipe.pexpire(key, int(SLOT_SECONDS * 1000) + 1000)
        pipe.execute()


_stores: dict[tuple[str, str], tuple[Limits, str]] = {}
_members = itertools.count(1)
PROCESS = uuid.uuid4().hex[:12]


def new_member() -> str:
    """A name for one socket's claim, unique across processes."""
    return f"{PROCESS}:{next(_members)}"


def store(clock: Callable[[], float]) -> tuple[Limits, str]:
    """The limits for ``RATE_LIMIT_CACHE`` and the prefix its keys take; ``clock`` as ``now``."""
    alias = app_settings.RATE_LIMIT_CACHE
    identity = (alias, repr(settings.CACHES.get(alias)))
    found = _stores.get(identity)
    if found is None:
        cache = caches[alias]
        prefix = cache.make_key("streamapp:rl:")
        client = rediscache.client_of(cache, cache.make_key(ROUTING_KEY))
        limits: Limits = RedisLimits(client, clock) if client is not None else LocalLimits()
        found = _stores[identity] = (limits, prefix)
    return found
