"""Redis restarted in the middle of a stream (a private redis-server): subscribers hear the task
again within 2 s of Redis answering, not at their next convergence (DESIGN §4).

A worker runs the task and a web-only daphne serves the subscribers, so every event crosses
Redis. While Redis is away the task goes on (the log has its events, their announcements are
lost); when it answers, daphne's hub makes its group memberships again (RedisChannelLayer
forgot them) and every socket re-checks its task at once. CONVERGE_SECONDS is a minute here:
convergence cannot be what repairs them. The worker logs the outage once when it starts and
once when it ends.

RedisPubSubChannelLayer keeps its subscriptions through a restart (redis-py subscribes again)
and its failed reads do not reach streamapp: its subscribers resume with the task's next batch,
once channels_redis's reader, which pauses a second after each failed read, is back (measured
0.1-1.9 s after Redis answered); tests/e2e/test_redis_restart.py checks their streams whole.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.conftest import USING_REDIS
from tests.support.databases import module_process_database
from tests.support.processes import Daphne, RedisServer, Worker, start_all
from tests.support.subscribers import (
    Subscriber,
    create_task,
    event_after,
    logged,
    settings_env,
    task_row,
)
from tests.support.wsclients import layer_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not USING_REDIS, reason="runs with the Redis services"),
]

RESUME_SECONDS = 2.0
SUBSCRIBERS = 10

process_db = module_process_database("layerout")


async def log_reaches(process_db, key: str, seq: int, timeout: float = 20) -> None:
    """Until the task's log holds ``seq``: with Redis away, the log is the only news."""
    deadline = time.monotonic() + timeout
    while logged(process_db, key)[1] < seq:
        assert time.monotonic() < deadline, f"the task's log stalled below {seq}"
        await asyncio.sleep(0.05)


@pytest.mark.timeout(180)
async def test_subscribers_resume_within_two_seconds_of_redis_answering(process_db):
    layer = "redis"  # RedisChannelLayer, REDIS_URL's default (RedisPubSubChannelLayer: below)
    with RedisServer() as redis:
        env = layer_env(process_db.env, layer, redis.url, CONVERGE_SECONDS=60,
                        WORKER_POLL_SECONDS=60)
        web_env = settings_env(env, RUN_TASKS=0, AUTO_START=0)
        server, worker = Daphne(web_env), Worker(env)
        start_all(server, worker)
        try:
            key = create_task(web_env, "demo.SlowTask", "seconds=8")
            subscribers = [await Subscriber.one_task(server, key) for _ in range(SUBSCRIBERS)]
            subscribers.append(await Subscriber.many_tasks(server, key))
            for subscriber in subscribers:
                await subscriber.seen(event_after(4))

            redis.kill()
            heard = max(s.seqs[-1] for s in subscribers)
            await log_reaches(process_db, key, heard + 10)
            redis.start()
            answered_at = time.monotonic()
            resumed = []
            for subscriber in subscribers:
                before = subscriber.seqs[-1]
                news = await subscriber.seen(event_after(before), timeout=30)
                resumed.append(subscriber.arrival(news) - answered_at)
            print(f"{layer}: resumed {min(resumed):.2f}–{max(resumed):.2f} s after Redis answered")
            finals = [await s.ended(timeout=30) for s in subscribers]
            await subscribers[-1].close()
        finally:
            output = worker.stop()
            print(server.stop())  # shown when the test fails

    assert max(resumed) < RESUME_SECONDS
    status, last_seq = task_row(process_db, key, "status", "last_seq")
    assert status == "completed" and logged(process_db, key) == (last_seq, last_seq)
    for subscriber, final in zip(subscribers, finals, strict=True):
        assert subscriber.seqs == list(range(1, last_seq + 1))
        assert (final["status"], final["seq"]) == ("completed", last_seq)

    outage_lines = [line for line in output.splitlines() if line.startswith("channel layer ")]
    assert len(outage_lines) == 2, output
    assert outage_lines[0].startswith("channel layer unavailable, riding it out")
    assert outage_lines[1].startswith("channel layer back after") and "failed=" in output
    assert "Traceback" not in output

