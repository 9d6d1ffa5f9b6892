"""A worker frozen past its lease (SIGSTOP), declared lost, then resumed (SIGCONT): it writes
nothing more (DESIGN §4, the fencing rule in docs/architecture.md).

Real processes on PostgreSQL and Redis: two web-only daphnes serve the subscribers, worker A
runs the task and is frozen, worker B's sweeper ends the task (and runs its retry). Leases are
short (2 s, heartbeat 0.5 s, sweep 0.25 s), so a test takes seconds.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis

from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.support.databases import module_process_database
from tests.support.processes import Daphne, Worker, start_all
from tests.support.subscribers import (
    Subscriber,
    create_task,
    event_after,
    is_state,
    layer_prefix,
    logged,
    settings_env,
    task_row,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(not (USING_REDIS and USING_POSTGRES),
                       reason="workers and daphnes share tasks through Redis and PostgreSQL"),
]

LEASE = 2.0

process_db = module_process_database("zombie")


@pytest.fixture(scope="module")
def env(process_db):
    prefix = layer_prefix("zombie")
    yield settings_env(
        {**process_db.env, "STREAMAPP_LAYER_PREFIX": prefix},
        LEASE_SECONDS=LEASE, HEARTBEAT_SECONDS=0.5, SWEEP_SECONDS=0.25, SHUTDOWN_TIMEOUT=1,
        WORKER_POLL_SECONDS=60,  # a task reaches a worker by its wake-up
    )
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    for name in client.scan_iter(match=f"{prefix}*"):
        client.delete(name)


@pytest.fixture(scope="module")
def web(env):
    """Two daphnes that only serve sockets; a subscriber starts nothing."""
    servers = [Daphne(settings_env(env, RUN_TASKS=0, AUTO_START=0)) for _ in range(2)]
    start_all(*servers)
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def workers(env):
    """Two runtasks workers: whichever claims a task is frozen, the other sweeps (a resumed
    worker works on as before: the next test may freeze it again)."""
    pair = [Worker(env), Worker(env)]
    start_all(*pair)
    yield pair
    for worker in pair:
        if worker.process.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)  # a failed test may leave one frozen
        worker.stop()


async def subscribers_of(web, key: str) -> list[Subscriber]:
    """A one-task socket on each daphne and a ws/tasks/ socket, all replaying from seq 0."""
    return [
        await Subscriber.one_task(web[0], key),
        await Subscriber.one_task(web[1], key),
        await Subscriber.many_tasks(web[1], key),
    ]


async def frozen_while_running(workers, web, env, process_db, model: str, *fields: str):
    """A new task runs on one worker, which is frozen mid-stream; the other one is up."""
    key = create_task(settings_env(env, RUN_TASKS=0), model, *fields)
    subscribers = await subscribers_of(web, key)
    for subscriber in subscribers:
        await subscriber.seen(event_after(4))
    owner, = task_row(process_db, key, "lease_owner")
    [frozen] = [w for w in workers if w.pid == int(owner.split(":")[1])]
    os.kill(frozen.pid, signal.SIGSTOP)
    [other] = [w for w in workers if w is not frozen]
    return frozen, other, key, subscribers


async def test_a_frozen_worker_past_its_lease_writes_nothing_when_it_resumes(workers, web, env,
                                                                            process_db):
    a, b, key, subscribers = await frozen_while_running(
        workers, web, env, process_db, "demo.SlowTask", "seconds=60"
    )
    frozen_at = time.monotonic()
    finals = [await s.ended(timeout=LEASE + 15) for s in subscribers]
    print(f"declared lost {time.monotonic() - frozen_at:.1f} s after SIGSTOP")
    os.kill(a.pid, signal.SIGCONT)
    await a.line("lease lost", timeout=15)  # A found its lease gone: it stops there

    status, error, last_seq = task_row(process_db, key, "status", "error", "last_seq")
    assert (status, error["type"]) == ("failed", "WorkerLost")
    assert logged(process_db, key) == (last_seq, last_seq)  # 1..last_seq, nothing beyond
    for subscriber, final in zip(subscribers, finals, strict=True):
        assert (final["status"], final["seq"], final["error"]["type"]) == (
            "failed", last_seq, "WorkerLost"
        )
        assert subscriber.seqs == list(range(1, last_seq + 1))
        assert subscriber.frames[-1] == final
    await subscribers[2].nothing_after(finals[2], timeout=1.0)  # ws/tasks/ stays open: quiet
    assert [await s.closed_with() for s in subscribers[:2]] == [1000, 1000]
    assert f"task ended key={key}" not in a.output
    await subscribers[2].close()


async def test_with_a_retry_the_zombie_writes_nothing_and_the_stream_stays_whole(
    workers, web, env, process_db
):
    """max_attempts = 2: B's sweeper makes the task pending and B runs it again; A resumes in
    the middle of the retry. Every subscriber sees one gap-free sequence and B's outcome."""
    a, b, key, subscribers = await frozen_while_running(
        workers, web, env, process_db, "runnerapp.RetryTask", "seconds=3"
    )
    await b.line(f"claimed {key}", timeout=LEASE + 15)
    for subscriber in subscribers:
        await subscriber.seen(lambda f: f["type"] == "event" and f["data"]["attempt"] == 2)
    os.kill(a.pid, signal.SIGCONT)
    await a.line("lease lost", timeout=15)
    finals = [await s.ended(timeout=15) for s in subscribers]

    status, attempts, last_seq = task_row(process_db, key, "status", "attempts", "last_seq")
    assert (status, attempts) == ("completed", 2)
    assert logged(process_db, key) == (last_seq, last_seq)
    for subscriber, final in zip(subscribers, finals, strict=True):
        assert (final["status"], final["seq"], final["final_value"]) == (
            "completed", last_seq, {"attempt": 2}
        )
        assert subscriber.seqs == list(range(1, last_seq + 1))  # each seq once, in order
        tries = [f["data"]["attempt"] for f in subscriber.frames if f["type"] == "event"]
        assert tries == sorted(tries)  # no event of the old run after the retry's first
        states = [f["status"] for f in subscriber.frames if f["type"] == "state"]
        assert states[-3:] == ["pending", "running", "completed"] and is_state("completed")(final)
    assert f"task ended key={key}" not in a.output
    await subscribers[2].close()
