"""PostgreSQL away for 15 s in the middle of a task (DESIGN §4): a worker runs it, subscribers
watch through a web-only daphne, and both reach the database through a relay the test cuts
(every connection dropped, new ones turned away), as a stopped server or a failover looks to
them; the shared server itself keeps running for everyone else.

The outage is shorter than the lease (20 s here, 30 s by default): the task goes on, its events
wait in the worker's memory and reach the log and the subscribers in order once the database
answers, and the worker logs the outage once when it starts and once when it ends.
"""

from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.support.databases import module_process_database
from tests.support.faults import TcpRelay
from tests.support.processes import Daphne, Worker, start_all
from tests.support.subscribers import (
    Subscriber,
    create_task,
    event_after,
    layer_prefix,
    logged,
    settings_env,
    task_row,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(not (USING_REDIS and USING_POSTGRES),
                       reason="a PostgreSQL outage, with the worker apart from daphne (Redis)"),
]

OUTAGE = 15.0
LEASE = 20.0

process_db = module_process_database("pgoutage")


@pytest.fixture
def relayed_env(process_db):
    """The processes' environment, their database behind a relay the test can cut."""
    database = urlsplit(process_db.env["DATABASE_URL"])
    prefix = layer_prefix("pgoutage")
    with TcpRelay(database.hostname, database.port or 5432) as relay:
        netloc = f"{database.username}@127.0.0.1:{relay.port}"
        env = settings_env(
            {**process_db.env, "DATABASE_URL": database._replace(netloc=netloc).geturl(),
             "STREAMAPP_LAYER_PREFIX": prefix},
            LEASE_SECONDS=LEASE, HEARTBEAT_SECONDS=2, SWEEP_SECONDS=1, WORKER_POLL_SECONDS=60,
        )
        yield relay, env
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for name in client.scan_iter(match=f"{prefix}*"):
        client.delete(name)


async def test_a_task_rides_out_a_15_s_database_outage(relayed_env, process_db):
    relay, env = relayed_env
    web_env = settings_env(env, RUN_TASKS=0, AUTO_START=0)
    server, worker = Daphne(web_env), Worker(env)
    start_all(server, worker)
    try:
        key = create_task(web_env, "demo.SlowTask", f"seconds={OUTAGE + 4}")
        subscribers = [await Subscriber.one_task(server, key) for _ in range(2)]
        subscribers.append(await Subscriber.many_tasks(server, key))
        for subscriber in subscribers:
            await subscriber.seen(event_after(9))

        relay.cut(OUTAGE)
        cut_at = time.monotonic()
        await worker.line("database unavailable", timeout=10)
        finals = [await s.ended(timeout=OUTAGE + 30) for s in subscribers]
        print(f"task ended {time.monotonic() - cut_at:.1f} s after the cut")
        codes = [await s.closed_with() for s in subscribers[:2]]
        await subscribers[2].close()
    finally:
        output = worker.stop()
        print(server.stop())  # shown when the test fails

    status, attempts, last_seq = task_row(process_db, key, "status", "attempts", "last_seq")
    assert (status, attempts) == ("completed", 1), output
    assert logged(process_db, key) == (last_seq, last_seq)
    for subscriber, final in zip(subscribers, finals, strict=True):
        assert (final["status"], final["seq"]) == ("completed", last_seq)
        assert subscriber.seqs == list(range(1, last_seq + 1))  # whole, in order, each once
    assert codes == [1000, 1000]
    # The events of the outage were made during it: about ten a second, none lost.
    assert last_seq >= 10 * OUTAGE

    outage_lines = [line for line in output.splitlines() if line.startswith("database ")]
    assert len(outage_lines) == 2, output
    started, ended = outage_lines
    assert started.startswith("database unavailable, riding it out")
    assert ended.startswith("database back after") and "failed=" in ended
    assert OUTAGE - 1 <= float(ended.split()[3]) <= OUTAGE + 10
    assert "Traceback" not in output and relay.turned_away > 0
