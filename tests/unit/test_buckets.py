"""The handshake limits' store (streamapp/asgi/buckets.py) without a server: the counts in this
process, what the Redis store hands its Lua script and its renewals (a recording stand-in for
redis-py), and which store a cache gets. Time is passed in, the renewer's sleeps are the test's:
no sleeping (scripts/mutation runs these; tests/integration/test_limit_store.py runs the script
itself against Redis)."""

from __future__ import annotations

import asyncio
import logging
import threading
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import caches

from streamapp.asgi import buckets
from streamapp.asgi.buckets import (
    OK,
    SLOT_SECONDS,
    SOCKETS_FULL,
    TAKE,
    Bucket,
    LocalLimits,
    RedisLimits,
    Slot,
    new_member,
)

T0 = 1_700_000_000.0


# -- the counts in this process --------------------------------------------------------------


async def takes(limits, moment, bucket_list, times):
    return [await limits.take(moment, bucket_list, None, "") for _ in range(times)]


async def test_a_bucket_gives_its_burst_then_its_rate():
    limits, bucket = LocalLimits(), [Bucket("b", 3, 3.0)]  # 3 at once, then one a second
    assert await takes(limits, T0, bucket, 4) == [OK, OK, OK, 1]
    assert await limits.take(T0 + 0.99, bucket, None, "") == 1
    assert await limits.take(T0 + 1.0, bucket, None, "") == OK
    assert await limits.take(T0 + 1.0, bucket, None, "") == 1


async def test_a_bucket_refills_at_count_per_seconds():
    limits, bucket = LocalLimits(), [Bucket("b", 4, 2.0)]  # 2 tokens a second
    await takes(limits, T0, bucket, 4)
    assert await limits.take(T0 + 0.49, bucket, None, "") == 1  # 0.98 of a token
    assert await takes(limits, T0 + 1.0, bucket, 3) == [OK, OK, 1]


async def test_a_bucket_never_holds_more_than_its_count():
    limits, bucket = LocalLimits(), [Bucket("b", 2, 1.0)]
    assert await limits.take(T0, bucket, None, "") == OK
    assert await takes(limits, T0 + 100.0, bucket, 3) == [OK, OK, 1]


async def test_a_clock_stepped_back_refills_nothing():
    limits, bucket = LocalLimits(), [Bucket("b", 1, 1.0)]
    assert await limits.take(T0, bucket, None, "") == OK
    assert await limits.take(T0 - 50.0, bucket, None, "") == 1
    assert await limits.take(T0 + 1.0, bucket, None, "") == OK


async def test_the_empty_bucket_is_named_and_a_refused_one_spends_nothing_of_the_next():
    limits = LocalLimits()
    client, address = Bucket("client", 2, 60.0), Bucket("address", 3, 60.0)
    assert await takes(limits, T0, [client, address], 4) == [OK, OK, 1, 1]
    other = Bucket("other", 2, 60.0)
    assert await takes(limits, T0, [other, address], 2) == [OK, 2]  # one token was left


async def test_a_slot_counts_open_sockets_up_to_its_cap_and_frees_on_release():
    limits, slot = LocalLimits(), Slot("sockets", 2)
    assert [await limits.take(T0, [], slot, m) for m in ("a", "b", "c")] == [OK, OK, SOCKETS_FULL]
    await limits.release(slot, "a")
    assert await limits.take(T0, [], slot, "c") == OK
    assert await limits.take(T0, [], slot, "d") == SOCKETS_FULL  # b and c hold it
    await limits.release(slot, "nobody")  # releasing what was never held changes nothing
    assert await limits.take(T0, [], slot, "d") == SOCKETS_FULL
    await limits.release(slot, "b")
    await limits.release(slot, "c")
    assert limits.slots == {}  # a slot nobody holds is forgotten
    await limits.release(slot, "c")  # and releasing from it again is harmless


async def test_slots_are_counted_apart():
    limits = LocalLimits()
    assert await limits.take(T0, [], Slot("one", 1), "a") == OK
    assert await limits.take(T0, [], Slot("two", 1), "b") == OK
    assert await limits.take(T0, [], Slot("one", 1), "c") == SOCKETS_FULL


async def test_a_full_slot_spends_no_token():
    limits, slot, bucket = LocalLimits(), Slot("sockets", 1), Bucket("b", 2, 60.0)
    assert await limits.take(T0, [bucket], slot, "a") == OK
    assert await limits.take(T0, [bucket], slot, "b") == SOCKETS_FULL
    assert await limits.take(T0, [bucket], None, "") == OK  # the refused claim spent none
    assert await limits.take(T0, [bucket], None, "") == 1


async def test_a_refused_token_claims_no_socket():
    limits, slot, bucket = LocalLimits(), Slot("sockets", 1), Bucket("b", 1, 60.0)
    assert await limits.take(T0, [bucket], None, "") == OK
    assert await limits.take(T0, [bucket], slot, "a") == 1
    assert limits.slots == {}


async def test_past_the_bound_buckets_that_have_refilled_are_forgotten(monkeypatch):
    monkeypatch.setattr(buckets, "MAX_LOCAL_KEYS", 3)
    limits = LocalLimits()

    async def one_token(key, moment):  # of 10, at 2 a second: full again half a second on
        await limits.take(moment, [Bucket(key, 10, 5.0)], None, "")

    await one_token("a", T0)
    await one_token("b", T0 + 0.25)
    await one_token("c", T0 + 0.5)
    assert list(limits.buckets) == ["a", "b", "c"]  # at the bound: all kept, a full again
    await one_token("d", T0 + 0.6)
    assert list(limits.buckets) == ["b", "c", "d"]  # past it: a is forgotten
    await one_token("e", T0 + 0.75)
    assert list(limits.buckets) == ["c", "d", "e"]  # b is full at that very instant
    assert await takes(limits, T0 + 0.75, [Bucket("a", 10, 5.0)], 11) == [OK] * 10 + [1]


def test_each_socket_claim_has_a_name_of_its_own_that_names_the_process():
    first, second = new_member(), new_member()
    assert first != second
    assert first.startswith(buckets.PROCESS + ":") and second.startswith(buckets.PROCESS + ":")


# -- what the Redis store asks of redis-py ---------------------------------------------------


class Recorder:
    """The slice of redis-py RedisLimits uses: the script answers ``outcomes`` in turn (OK when
    none are left); every call is recorded, with the thread it ran on."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.threads: list[int] = []
        self.outcomes: list[int] = []
        self.fail_pipelines = 0

    def register_script(self, source):
        self.source = source

        def script(keys, args):
            self.threads.append(threading.get_ident())
            self.calls.append(("script", keys, args))
            return self.outcomes.pop(0) if self.outcomes else OK

        return script

    def zrem(self, key, member):
        self.threads.append(threading.get_ident())
        self.calls.append(("zrem", key, member))

    def pipeline(self, transaction):
        return Pipeline(self, transaction)


class Pipeline:
    def __init__(self, redis, transaction):
        self.redis, self.commands = redis, [("pipeline", bool(transaction))]

    def zadd(self, key, mapping, xx=False):
        self.commands.append(("zadd", key, mapping, bool(xx)))

    def pexpire(self, key, milliseconds):
        self.commands.append(("pexpire", key, milliseconds))

    def execute(self):
        self.redis.threads.append(threading.get_ident())
        if self.redis.fail_pipelines:
            self.redis.fail_pipelines -= 1
            raise ConnectionError("redis went away")
        self.redis.calls.append(tuple(self.commands))


@pytest.fixture
def rounds(monkeypatch):
    """The renewer's sleeps, held by the test: ``await rounds.asked()`` is the next sleep's
    length; ``rounds.go()`` ends it."""
    asked, go = asyncio.Queue(), asyncio.Queue()

    async def sleep(seconds):
        asked.put_nowait(seconds)
        await go.get()

    monkeypatch.setattr(
        buckets, "asyncio", SimpleNamespace(sleep=sleep, create_task=asyncio.create_task)
    )
    return SimpleNamespace(
        asked=lambda: asyncio.wait_for(asked.get(), timeout=5), go=lambda: go.put_nowait(None)
    )


async def until(condition, timeout=5.0):
    async def turns():
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(turns(), timeout)


async def test_the_script_gets_the_buckets_in_order_and_their_rates():
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    assert redis.source is TAKE
    redis.outcomes = [2]
    refused = await limits.take(T0 + 0.5, [Bucket("client", 5, 10.0), Bucket("address", 20, 8.0)],
                                None, "")
    assert refused == 2
    assert redis.calls == [("script", ["client", "address"],
                            [repr(T0 + 0.5), 2, 5, repr(0.5), 20, repr(2.5)])]
    assert limits.held == {} and limits._renewer is None


async def test_a_socket_claim_adds_its_slot_cap_member_and_lapse_and_is_held(rounds):
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    assert await limits.take(T0, [Bucket("user", 3, 1.0)], Slot("sockets", 4), "p:1") == OK
    assert redis.calls == [("script", ["user", "sockets"],
                            [repr(T0), 1, 3, repr(3.0), 4, "p:1", repr(T0 + SLOT_SECONDS)])]
    assert list(limits.held) == [("sockets", "p:1")]
    renewer = limits._renewer
    assert await rounds.asked() == SLOT_SECONDS / 3
    assert await limits.take(T0, [], Slot("sockets", 4), "p:2") == OK
    assert limits._renewer is renewer  # one renewer for every socket of the process
    assert list(limits.held) == [("sockets", "p:1"), ("sockets", "p:2")]
    await limits.release(Slot("sockets", 4), "p:1")
    await limits.release(Slot("sockets", 4), "p:2")


@pytest.mark.parametrize("outcome", [1, SOCKETS_FULL])
async def test_a_refused_claim_is_not_held(outcome):
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    redis.outcomes = [outcome]
    assert await limits.take(T0, [Bucket("b", 1, 1.0)], Slot("sockets", 1), "p:1") == outcome
    assert limits.held == {} and limits._renewer is None


async def test_a_release_removes_a_held_claim_and_the_last_one_stops_the_renewer(rounds):
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    slot = Slot("sockets", 2)
    await limits.take(T0, [], slot, "p:1")
    await limits.take(T0, [], slot, "p:2")
    renewer = limits._renewer
    await rounds.asked()
    redis.calls.clear()
    await limits.release(slot, "elsewhere:9")  # not this process's: not touched
    assert redis.calls == []
    await limits.release(slot, "p:1")
    assert redis.calls == [("zrem", "sockets", "p:1")] and limits._renewer is renewer
    await limits.release(slot, "p:2")
    assert redis.calls[-1] == ("zrem", "sockets", "p:2")
    assert limits.held == {} and limits._renewer is None
    await asyncio.wait([renewer], timeout=5)
    assert renewer.cancelled()


async def test_held_claims_are_renewed_every_third_of_their_lapse_in_one_pipeline(rounds):
    redis = Recorder()
    clock = SimpleNamespace(now=T0)
    limits = RedisLimits(redis, clock=lambda: clock.now)
    await limits.take(T0, [], Slot("user:1", 3), "p:1")
    await limits.take(T0, [], Slot("user:1", 3), "p:2")
    await limits.take(T0, [], Slot("user:2", 3), "p:3")
    redis.calls.clear()
    assert await rounds.asked() == SLOT_SECONDS / 3
    clock.now = T0 + 40.0
    rounds.go()
    assert await rounds.asked() == SLOT_SECONDS / 3  # renewed, and asleep again
    lapse = T0 + 40.0 + SLOT_SECONDS
    (renewal,) = redis.calls
    assert renewal[0] == ("pipeline", False)  # not a transaction: one round trip, no MULTI
    assert renewal[1:4] == (
        ("zadd", "user:1", {"p:1": lapse}, True),  # only claims still there (XX): a claim
        ("zadd", "user:1", {"p:2": lapse}, True),  # released meanwhile stays released
        ("zadd", "user:2", {"p:3": lapse}, True),
    )
    expiry = int(SLOT_SECONDS * 1000) + 1000
    assert sorted(renewal[4:]) == [("pexpire", "user:1", expiry), ("pexpire", "user:2", expiry)]
    for member, key in (("p:1", "user:1"), ("p:2", "user:1"), ("p:3", "user:2")):
        await limits.release(Slot(key, 3), member)


async def test_a_failed_renewal_is_logged_and_tried_again_next_round(rounds, caplog):
    redis = Recorder()
    redis.fail_pipelines = 1
    limits = RedisLimits(redis, clock=lambda: T0)
    await limits.take(T0, [], Slot("sockets", 1), "p:1")
    redis.calls.clear()
    with caplog.at_level(logging.WARNING, logger="streamapp.ratelimit"):
        await rounds.asked()
        rounds.go()
        await rounds.asked()
        assert redis.calls == [] and "renewing open-socket counts failed" in caplog.text
        rounds.go()
        await rounds.asked()
    assert len(redis.calls) == 1 and redis.calls[0][1][0] == "zadd"
    await limits.release(Slot("sockets", 1), "p:1")


async def test_a_renewer_that_wakes_to_nothing_held_ends(rounds):
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    await limits.take(T0, [], Slot("sockets", 1), "p:1")
    renewer = limits._renewer
    await rounds.asked()
    limits.held.clear()  # as if released between its wake-up and its renewal
    rounds.go()
    await asyncio.wait_for(renewer, timeout=5)
    redis.calls.clear()
    assert await limits.take(T0, [], Slot("sockets", 1), "p:2") == OK
    assert limits._renewer is not renewer and not limits._renewer.done()  # a new one
    await rounds.asked()
    await limits.release(Slot("sockets", 1), "p:2")


async def test_redis_calls_do_not_wait_for_the_orm_thread(rounds):
    """Django runs database calls on asgiref's one thread-sensitive thread; a handshake's
    round trip to Redis must not queue behind them."""
    orm_thread = await sync_to_async(threading.get_ident)()
    redis = Recorder()
    limits = RedisLimits(redis, clock=lambda: T0)
    await limits.take(T0, [], Slot("sockets", 1), "p:1")
    await rounds.asked()
    rounds.go()
    await rounds.asked()
    await limits.release(Slot("sockets", 1), "p:1")
    assert len(redis.threads) == 3  # the script, the renewal, the release
    assert orm_thread not in redis.threads


# -- which store --------------------------------------------------------------------------------


@pytest.fixture
def fresh_stores(monkeypatch):
    monkeypatch.setattr(buckets, "_stores", {})


def clock():
    return T0


def test_a_cache_that_is_not_redis_counts_in_this_process(fresh_stores, settings):
    settings.CACHES = {
        **settings.CACHES,
        "limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.STREAMAPP = {**settings.STREAMAPP, "RATE_LIMIT_CACHE": "limits"}
    limits, prefix = buckets.store(clock)
    assert isinstance(limits, LocalLimits)
    assert prefix == caches["limits"].make_key("streamapp:rl:") == ":1:streamapp:rl:"
    assert buckets.store(clock) == (limits, prefix)  # one store per cache, kept


def test_the_store_follows_the_rate_limit_cache_setting_and_its_configuration(
    fresh_stores, settings
):
    settings.CACHES = {
        **settings.CACHES,
        "limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                   "KEY_PREFIX": "site1"},
    }
    settings.STREAMAPP = {**settings.STREAMAPP, "RATE_LIMIT_CACHE": "limits"}
    first, prefix = buckets.store(clock)
    assert prefix == "site1:1:streamapp:rl:"
    settings.CACHES = {
        **settings.CACHES,
        "limits": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                   "KEY_PREFIX": "site2"},
    }
    second, prefix = buckets.store(clock)
    assert prefix == "site2:1:streamapp:rl:" and second is not first  # configured anew


def test_a_redis_cache_shares_its_counts_through_redis(fresh_stores, settings):
    settings.CACHES = {
        **settings.CACHES,
        "limits": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                   "LOCATION": "redis://127.0.0.1:1/0", "KEY_PREFIX": "site"},
    }  # nothing is sent until a handshake is counted: no server is needed here
    settings.STREAMAPP = {**settings.STREAMAPP, "RATE_LIMIT_CACHE": "limits"}
    limits, prefix = buckets.store(clock)
    assert isinstance(limits, RedisLimits) and limits.clock is clock
    assert prefix == "site:1:streamapp:rl:"
    pool = limits.client.connection_pool.connection_kwargs
    assert (pool["host"], pool["port"]) == ("127.0.0.1", 1)
