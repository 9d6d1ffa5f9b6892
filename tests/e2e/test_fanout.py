"""500 subscribers on one daphne, one task emitting 5,000 events, over the real Redis: every
subscriber ends with seq 1..5000 in order, no duplicates, then the final state.

The task runs in a worker process of its own, so it emits at full speed whatever daphne does; a
tenth of the subscribers read nothing until it has finished. Emitting as fast as it can, a task's
events reach the layer in a handful of big batches, and nothing is dropped; so on
RedisChannelLayer the task leaves 0.2 ms between events: thousands of small messages, daphne
falls behind, and at its default capacity the layer drops most of them (the test checks that
repairs happened). RedisPubSubChannelLayer never drops for a slow process (its queues have no
bound), and thousands of small messages would take minutes: there the task emits flat out.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import pytest

from tests.conftest import USING_REDIS
from tests.support.databases import module_process_database
from tests.support.processes import Daphne, manage
from tests.support.wsclients import (
    LAGGING_CLIENTS,
    connect_many,
    follow,
    layer_env,
    run_task_elsewhere,
    task_url,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not USING_REDIS, reason="needs the real Redis (REDIS_URL)"),
]

SUBSCRIBERS = 500
EVENTS = 5000


process_db = module_process_database("fanout")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("layer, task", [
    ("redis", ["testapp.PacedTask", "pause=0.0002"]),
    ("pubsub", ["testapp.BurstTask"]),
])
async def test_500_subscribers_each_get_all_5000_events_in_order(layer, task, process_db):
    key = manage(process_db.env, "starttask", *task, f"count={EVENTS}",
                 "--pending").strip().splitlines()[-1]
    # Slow readers must not be taken for dead clients by the final close (default 30 s).
    env = layer_env(process_db.env, layer, AUTO_START=False, SLOW_CLIENT_SECONDS=300)
    # A load test: coverage tracing would triple daphne's CPU per frame and measures nothing new.
    env = {k: v for k, v in env.items() if k not in ("COVERAGE_PROCESS_CONFIG",
                                                      "COVERAGE_PROCESS_START")}
    with Daphne(env, None, *LAGGING_CLIENTS) as server:
        sockets = await connect_many(task_url(server, key), SUBSCRIBERS)
        for ws in sockets:
            assert '"status":"pending"' in await ws.recv()
        started = time.monotonic()
        emitted = asyncio.Event()
        readers = asyncio.gather(*(
            follow(ws, server, key, start=emitted if i % 10 == 0 else None)
            for i, ws in enumerate(sockets)
        ))
        try:
            assert await run_task_elsewhere(env, key) == "completed"
            emitted.set()
            streams = await readers
        finally:
            readers.cancel()
        elapsed = time.monotonic() - started
        daphne_cpu = cpu_seconds(server.process.pid)
        repairs = server.output.count("repairs lost news")

    codes = Counter(code for seen in streams for code in seen.close_codes)
    print(f"\n{layer}: {SUBSCRIBERS}x{EVENTS} in {elapsed:.1f} s, daphne CPU {daphne_cpu:.1f} s, "
          f"convergence repairs {repairs}, reconnects {sum(s.reconnects for s in streams)}, "
          f"close codes {dict(codes)}")
    whole = list(range(1, EVENTS + 1))
    for seen in streams:
        assert seen.seqs == whole and seen.reconnects == 0
        assert seen.final == {
            "type": "state", "task": key, "status": "completed", "seq": EVENTS,
            "final_value": EVENTS, "error": None,
        }
