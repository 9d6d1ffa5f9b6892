"""The handshake limits' store (streamapp/asgi/buckets.py): token buckets and open-socket caps,
in this process and (with REDIS_URL) in Redis through one Lua script. Time is passed in: no
sleeping."""

from __future__ import annotations

import os
import uuid

import pytest
import redis

from streamapp.asgi.buckets import (
    OK,
    SOCKETS_FULL,
    Bucket,
    LocalLimits,
    RedisLimits,
    Slot,
    new_member,
)

T0 = 1_700_000_000.0


@pytest.fixture(params=["local", "redis"])
def limits(request):
    if request.param == "local":
        yield LocalLimits()
        return
    if not os.environ.get("REDIS_URL"):
        pytest.skip("the shared store needs REDIS_URL")
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    yield RedisLimits(client, clock=lambda: T0)
    client.close()


@pytest.fixture
def name():
    return f"test:{uuid.uuid4().hex}:"


async def take_many(limits, moment, buckets, times):
    return [await limits.take(moment, buckets, None, "") for _ in range(times)]


async def test_a_bucket_gives_its_burst_then_its_rate(limits, name):
    bucket = [Bucket(name + "b", 60, 60.0)]  # 60 at once, then one a second
    assert await take_many(limits, T0, bucket, 61) == [OK] * 60 + [1]
    assert await limits.take(T0 + 0.5, bucket, None, "") == 1
    assert await limits.take(T0 + 1.0, bucket, None, "") == OK
    assert await limits.take(T0 + 1.0, bucket, None, "") == 1
    assert await take_many(limits, T0 + 61.0, bucket, 61) == [OK] * 60 + [1]  # refilled, capped


async def test_no_window_boundary_lets_a_double_burst_through(limits, name):
    """Fixed windows let 120 through in 3 s across a boundary; a bucket lets 60 + what refills."""
    bucket = [Bucket(name + "b", 60, 60.0)]
    taken = 0
    for step in range(30):  # 3 seconds, ten attempts a tenth of a second apart, each 10 times
        taken += (await take_many(limits, T0 + 58.5 + step * 0.1, bucket, 10)).count(OK)
    assert taken == 62  # the burst, and two seconds' refill (3 s minus the first tenth)


async def test_a_refused_first_bucket_spends_nothing_of_the_next(limits, name):
    client, address = Bucket(name + "client", 2, 60.0), Bucket(name + "address", 3, 60.0)
    assert await take_many(limits, T0, [client, address], 5) == [OK, OK, 1, 1, 1]
    other = Bucket(name + "other", 2, 60.0)
    assert await take_many(limits, T0, [other, address], 2) == [OK, 2]  # one token was left


async def test_a_slot_cap_counts_open_sockets_and_frees_on_release(limits, name):
    slot = Slot(name + "slot", 2)
    members = [new_member() for _ in range(3)]
    assert [await limits.take(T0, [], slot, m) for m in members] == [OK, OK, SOCKETS_FULL]
    await limits.release(slot, members[0])
    assert await limits.take(T0, [], slot, members[2]) == OK


async def test_a_full_slot_spends_no_token(limits, name):
    slot, bucket = Slot(name + "slot", 1), Bucket(name + "b", 2, 60.0)
    assert await limits.take(T0, [bucket], slot, new_member()) == OK
    assert await limits.take(T0, [bucket], slot, new_member()) == SOCKETS_FULL
    await limits.release(slot, "nobody")  # releasing what was never held changes nothing
    assert await limits.take(T0, [bucket], None, "") == OK  # the refused claim spent none


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the lapse of claims is Redis's")
async def test_claims_of_a_process_that_died_lapse(name):
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    dead, alive = RedisLimits(client, clock=lambda: T0), RedisLimits(client, clock=lambda: T0)
    slot = Slot(name + "slot", 1)
    try:
        assert await dead.take(T0, [], slot, "dead:1") == OK
        dead.held.clear()  # the process is gone: nobody renews or releases its claim
        assert await alive.take(T0 + 60, [], slot, "alive:1") == SOCKETS_FULL
        assert await alive.take(T0 + 121, [], slot, "alive:1") == OK
        alive.held.clear()
    finally:
        client.close()


@pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="renewing claims is Redis's")
async def test_a_living_process_renews_its_claims(name):
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    limits = RedisLimits(client, clock=lambda: T0)
    slot = Slot(name + "slot", 1)
    try:
        assert await limits.take(T0, [], slot, "alive:1") == OK
        limits._renew(list(limits.held), T0 + 100 + 120)  # the round at T0 + 100
        assert await limits.take(T0 + 200, [], slot, "alive:2") == SOCKETS_FULL
        await limits.release(slot, "alive:1")
        assert limits.held == {} and limits._renewer is None
        assert await limits.take(T0 + 200, [], slot, "alive:2") == OK
        await limits.release(slot, "alive:2")
    finally:
        client.close()


async def test_local_buckets_forget_what_has_refilled_when_there_are_too_many(monkeypatch):
    monkeypatch.setattr("streamapp.asgi.buckets.MAX_LOCAL_KEYS", 10)
    limits = LocalLimits()
    for i in range(10):
        await limits.take(T0, [Bucket(f"k{i}", 10, 10.0)], None, "")
    assert len(limits.buckets) == 10  # at the bound: all kept
    await limits.take(T0 + 2, [Bucket("late", 10, 10.0)], None, "")  # the others refilled by then
    assert list(limits.buckets) == ["late"]
