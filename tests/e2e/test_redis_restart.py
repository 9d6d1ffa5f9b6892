"""Redis restarted in the middle of a stream (a private redis-server, never the shared one):
every subscriber still ends with the full sequence and the final state, on one connection.

While Redis is away the task goes on (its events reach the log, their announcements are lost),
daphne's consumers keep their sockets and retry the layer; afterwards RedisChannelLayer has
forgotten every group membership and RedisPubSubChannelLayer lost what was published: quiet
subscriptions notice, repair from the log and join again.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request

import pytest

from tests.conftest import USING_REDIS
from tests.support.databases import module_process_database
from tests.support.processes import Daphne, RedisServer, manage
from tests.support.wsclients import (
    Followed,
    connect_many,
    follow,
    layer_env,
    run_task_elsewhere,
    task_url,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not USING_REDIS, reason="runs with the Redis services"),
]

SUBSCRIBERS = 20
STEPS = 80  # about 0.05 s apart: events start, progress x STEPS, complete


process_db = module_process_database("restart")


async def logged_seq(server, key: str) -> int:
    """The task's last seq as the database has it (the layer is down: HTTP is the way in)."""
    url = f"{server.url}/tasks/{key.replace('.', '/')}/"
    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())
    return json.loads(body)["seq"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("layer", ["redis", "pubsub"])
async def test_redis_restarted_mid_stream(layer, process_db):
    with RedisServer() as redis:
        env = layer_env(process_db.env, layer, redis.url, AUTO_START=False, CONVERGE_SECONDS=0.5)
        key = manage(env, "starttask", "demo.ExampleTask", "message=restart", f"steps={STEPS}",
                     "delay=0.05", "--pending").strip().splitlines()[-1]
        with Daphne(env) as server:
            sockets = await connect_many(task_url(server, key), SUBSCRIBERS)
            for ws in sockets:
                assert '"status":"pending"' in await ws.recv()
            seen = [Followed() for _ in sockets]
            pairs = zip(sockets, seen, strict=True)
            readers = asyncio.gather(*(follow(ws, server, key, seen=rec) for ws, rec in pairs))
            worker = asyncio.create_task(run_task_elsewhere(env, key))
            try:
                await asyncio.wait_for(asyncio.gather(*(s.reached(5) for s in seen)), 30)
                redis.kill()
                outage_from = max(s.seqs[-1] for s in seen)
                deadline = asyncio.get_running_loop().time() + 30
                while await logged_seq(server, key) < outage_from + 10:
                    # Nothing to wait on while Redis is down but the log itself.
                    assert asyncio.get_running_loop().time() < deadline, "the task stalled"
                    await asyncio.sleep(0.05)
                redis.start()
                assert await asyncio.wait_for(worker, 60) == "completed"
                streams = await asyncio.wait_for(readers, 60)
            finally:
                worker.cancel()
                readers.cancel()
            repairs = server.output.count("repairs lost news")

    events = STEPS + 2
    for stream in streams:
        assert stream.seqs == list(range(1, events + 1)) and stream.reconnects == 0
        assert stream.final == {
            "type": "state", "task": key, "status": "completed", "seq": events,
            "final_value": "Completed processing: restart", "error": None,
        }
    if layer == "redis":
        assert repairs >= 1  # its group memberships died with Redis: only the log could tell
