"""Beyond one process: daphne processes and runtasks workers on the real Redis and PostgreSQL.

Web daphne A and B only serve sockets (RUN_TASKS off; A does not even auto-start, so whatever
runs was started elsewhere); runtasks workers execute. Leases are short (2 s, heartbeat 0.5 s,
sweep 0.5 s) so crash recovery shows within seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from urllib.parse import urlsplit

import pytest
import redis
import websockets

from tests.conftest import USING_POSTGRES, USING_REDIS
from tests.support.faults import TcpRelay
from tests.support.processes import Daphne, ProcessDatabase, Worker, manage, start_all

pytestmark = [
    pytest.mark.slow,
    pytest.mark.services,
    pytest.mark.skipif(
        not (USING_REDIS and USING_POSTGRES),
        reason="several processes share tasks only through channels_redis and PostgreSQL: "
        "set REDIS_URL and DATABASE_URL (scripts/test does on its second run)",
    ),
]

LEASE, SWEEP = 2.0, 0.5
SHORT_LEASES = {
    "STREAMAPP_LEASE_SECONDS": str(LEASE),
    "STREAMAPP_HEARTBEAT_SECONDS": "0.5",
    "STREAMAPP_SWEEP_SECONDS": str(SWEEP),
    "STREAMAPP_SHUTDOWN_TIMEOUT": "1",
    # Far longer than any wait below: a task that reaches a worker quickly was woken up.
    "STREAMAPP_WORKER_POLL_SECONDS": "60",
}
FINAL = {"completed", "failed", "cancelled"}


class Cluster:
    """One database and one layer prefix shared by every process a test starts."""

    def __init__(self, database: ProcessDatabase) -> None:
        self.database = database
        # Not an extension of this process's prefix: each test's layer flush deletes
        # "<prefix>*", and would take the cluster's group memberships with it.
        self.prefix = "mp_" + os.environ.get("STREAMAPP_LAYER_PREFIX", "sa")
        self.env = {**database.env, **SHORT_LEASES, "STREAMAPP_LAYER_PREFIX": self.prefix}
        self.web_env = {**self.env, "STREAMAPP_RUN_TASKS": "0"}
        self.workers: list[Worker] = []
        self.servers: list[Daphne] = []  # stopped at the end, even after a failed test

    def daphnes(self, *envs: dict[str, str]) -> list[Daphne]:
        servers = [Daphne(env) for env in envs]
        self.servers += servers
        start_all(*servers)
        return servers

    def ensure_workers(self, count: int) -> list[Worker]:
        """At least ``count`` live runtasks workers (killed ones are replaced)."""
        self.workers = [w for w in self.workers if w.process.poll() is None]
        new = [Worker(self.env) for _ in range(count - len(self.workers))]
        self.workers += new
        start_all(*new)
        return self.workers

    def stop_workers(self) -> None:
        for worker in list(self.workers):
            self.stop_worker(worker, signal.SIGTERM)

    def stop_worker(self, worker: Worker, sig: int | None) -> str:
        self.workers.remove(worker)
        return worker.stop(sig)

    def create(self, model: str, *fields: str) -> str:
        """A new pending task's key."""
        return manage(self.env, "starttask", model, *fields, "--pending").splitlines()[-1]

    def row(self, key: str, *columns: str) -> tuple:
        app_label, model, pk = key.split(".")
        return self.database.fetchone(
            f"SELECT {', '.join(columns)} FROM {app_label}_{model} WHERE id = %s", int(pk)
        )

    def orphan(self, key: str) -> None:
        """Make the task look as a worker that died leaves it: running, its lease run out."""
        app_label, model, pk = key.split(".")
        assert self.database.fetchone(
            f"UPDATE {app_label}_{model} SET status = 'running', attempts = 1, "
            "lease_owner = 'dead-host:1:deadbeef', lease_expires_at = now() - interval '1 s' "
            "WHERE id = %s RETURNING id", int(pk)
        )

    def worker_running(self, key: str) -> Worker:
        owner, = self.row(key, "lease_owner")
        pid = int(owner.split(":")[1])
        return next(worker for worker in self.workers if worker.pid == pid)

    def forget_layer(self) -> None:
        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for name in client.scan_iter(match=f"{self.prefix}*"):
            client.delete(name)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tag = os.environ.get("STREAMAPP_TEST_DB", "test_streamapp")
    database = ProcessDatabase(tmp_path_factory.mktemp("cluster"), f"{tag}_mp").create()
    cluster = Cluster(database)
    yield cluster
    for process in cluster.workers + cluster.servers:
        if process.process is not None:
            process.stop()
    database.drop()
    cluster.forget_layer()


@pytest.fixture(scope="module")
def web(cluster):
    """Daphne A (sockets only, no auto-start) and daphne B (sockets only, hands tasks over)."""
    a, b = cluster.daphnes({**cluster.web_env, "STREAMAPP_AUTO_START": "0"}, cluster.web_env)
    yield a, b
    a.stop()
    b.stop()


def url(server: Daphne, key: str) -> str:
    return f"{server.ws_url}/ws/tasks/{key.replace('.', '/')}/"


async def frames_until(ws, predicate, timeout: float = 10) -> list[dict]:
    """Frames up to and including the first that ``predicate`` accepts."""
    received = []
    async with asyncio.timeout(timeout):
        while True:
            received.append(json.loads(await ws.recv()))
            if predicate(received[-1]):
                return received


async def rest_of_stream(ws, timeout: float = 10, so_far: list[dict] = ()) -> list[dict]:
    """``so_far`` and the frames up to the server's close: 1000, after a final state."""
    async with asyncio.timeout(timeout):
        received = [*so_far] + [json.loads(message) async for message in ws]
    assert ws.close_code == 1000
    assert received[-1]["type"] == "state" and received[-1]["status"] in FINAL
    return received


def http_json(address: str) -> dict:
    with urllib.request.urlopen(address, timeout=10) as response:
        return json.loads(response.read())


def is_state(status: str):
    return lambda frame: frame["type"] == "state" and frame["status"] == status


def seqs(frames: list[dict]) -> list[int]:
    return [f["seq"] for f in frames if f["type"] == "event"]


async def watch_on_a_then_start_on_b(web, key: str):
    """A client on A watching the pending task ``key``, and one on B whose subscription starts it.

    Returns both sockets and the frames each has received up to the task's ``running`` state.
    Close a socket you will not read: unread frames stall it (websockets stops reading), and
    its closing handshake then waits for the close timeout.
    """
    a_server, b_server = web
    a = await websockets.connect(url(a_server, key), open_timeout=10)
    a_frames = await frames_until(a, lambda f: f["type"] == "state")
    assert a_frames[-1]["status"] == "pending"
    b = await websockets.connect(url(b_server, key), open_timeout=10)
    a_frames += await frames_until(a, is_state("running"))
    return a, b, a_frames, await frames_until(b, is_state("running"))


async def test_a_task_started_through_b_runs_on_a_worker_and_streams_to_a_client_on_a(cluster, web):
    [worker] = cluster.ensure_workers(1)
    key = cluster.create("demo.ExampleTask", "message=fan-out", "steps=20", "delay=0.01")
    started = time.monotonic()
    a, b, a_frames, _ = await watch_on_a_then_start_on_b(web, key)
    reached_worker = time.monotonic() - started
    a_frames += await rest_of_stream(a)
    b_frames = await rest_of_stream(b)

    assert [f["status"] for f in a_frames if f["type"] == "state"] == [
        "pending", "running", "completed"
    ]
    events = [f for f in a_frames if f["type"] == "event"]
    assert [e["event"] for e in events] == ["start"] + ["progress"] * 20 + ["complete"]
    assert [e["data"].get("step") for e in events[1:-1]] == list(range(1, 21))
    assert seqs(a_frames) == list(range(1, 23))
    assert a_frames[-1]["final_value"] == "Completed processing: fan-out"
    assert seqs(b_frames)[-1] == 22 and b_frames[-1] == a_frames[-1]
    await worker.line(f"claimed {key}")  # executed by the worker, not by a web process
    for server in web:  # what a load balancer asks: the database and Redis both answer
        assert (await asyncio.to_thread(http_json, f"{server.url}/ready"))["ready"] is True
    print(f"pending → running seen on A {reached_worker:.3f} s after B's subscribe")
    assert reached_worker < 5, "a wake-up, not the 60 s poll, brings tasks to the workers"


async def test_twenty_concurrent_starts_from_two_processes_run_the_task_once(cluster, web):
    """Twenty subscribers on two daphnes that run tasks themselves: each start races to claim."""
    c, d = cluster.daphnes(cluster.env, cluster.env)
    key = cluster.create("runnerapp.CountedTask")
    clients = await asyncio.gather(*(
        websockets.connect(url(server, key), open_timeout=10) for server in [c, d] * 10
    ))
    for ws in clients:  # every client sees the one run's first event
        await frames_until(ws, lambda f: f.get("event") == "started")
    assert cluster.row(key, "runs", "attempts", "status") == (1, 1, "running")

    await clients[0].send(json.dumps({"action": "cancel"}))
    for ws in clients:
        assert (await rest_of_stream(ws))[-1]["status"] == "cancelled"
    assert cluster.row(key, "runs", "attempts", "status") == (1, 1, "cancelled")
    c.stop()
    d.stop()


async def test_a_cancel_from_a_process_not_running_the_task_reaches_every_subscriber(
    cluster, web
):
    cluster.ensure_workers(1)
    key = cluster.create("runnerapp.CleanupTask")
    a, b, *_ = await watch_on_a_then_start_on_b(web, key)
    async with websockets.connect(f"{web[0].ws_url}/ws/tasks/", open_timeout=10) as many:
        await many.send(json.dumps({"action": "subscribe", "task": key}))
        await frames_until(many, lambda f: f.get("event") == "waiting")
        # Daphne A runs nothing; the worker runs the task and hears the cancel through Redis.
        await many.send(json.dumps({"action": "cancel", "task": key}))
        frames = await frames_until(many, is_state("cancelled"))  # ws/tasks/ stays open
        assert [f.get("event") or f["status"] for f in frames][-2:] == ["cleanup", "cancelled"]
        await many.send(json.dumps({"action": "unsubscribe", "task": key}))
    for ws in (a, b):
        frames = await rest_of_stream(ws)
        assert [f.get("event") or f["status"] for f in frames][-2:] == ["cleanup", "cancelled"]
    assert cluster.row(key, "status", "lease_owner") == ("cancelled", "")


async def test_canceltask_command_cancels_a_task_on_a_worker(cluster, web):
    cluster.ensure_workers(1)
    output = manage(cluster.web_env, "starttask", "demo.SlowTask", "seconds=30").splitlines()
    assert output[0] == "Handed to the runtasks workers (RUN_TASKS is off here)."
    key = output[-1]
    async with websockets.connect(url(web[0], key), open_timeout=10) as a:
        await frames_until(a, lambda f: f["type"] == "event")  # running on the worker
        assert manage(cluster.env, "canceltask", key).strip() == f"{key} cancelled"
        assert (await rest_of_stream(a))[-1]["status"] == "cancelled"


async def test_a_timeout_on_a_worker_fails_the_task_with_timeout_error(cluster, web):
    cluster.ensure_workers(1)
    key = cluster.create("testapp.TimeoutTask")  # timeout = 0.3 s
    a, b, *_ = await watch_on_a_then_start_on_b(web, key)
    for ws in (a, b):
        final = (await rest_of_stream(ws))[-1]
        assert final["status"] == "failed" and final["error"]["type"] == "TimeoutError"


@pytest.mark.parametrize(
    "model, retried", [("demo.SlowTask", False), ("runnerapp.RetryTask", True)]
)
async def test_a_killed_workers_task_is_recovered_within_a_lease_and_a_sweep(
    cluster, web, model, retried
):
    cluster.ensure_workers(2)
    key = cluster.create(model, "seconds=30" if not retried else "seconds=1.5")
    a, b, *_ = await watch_on_a_then_start_on_b(web, key)
    await b.close()
    await frames_until(a, lambda f: f["type"] == "event")
    victim = cluster.worker_running(key)
    killed = time.monotonic()
    cluster.stop_worker(victim, signal.SIGKILL)

    status = "pending" if retried else "failed"
    recovered = (await frames_until(a, is_state(status), timeout=LEASE + SWEEP + 10))[-1]
    noticed = time.monotonic() - killed
    assert recovered["error"]["type"] == "WorkerLost"
    print(f"{model}: {status} (WorkerLost) on A {noticed:.2f} s after SIGKILL")
    assert noticed < LEASE + SWEEP + 3  # the lease, one sweep, and slack for a loaded machine
    frames = await rest_of_stream(a, timeout=15, so_far=[recovered])
    if retried:  # the surviving worker ran it again; the seq numbering carries on
        assert [f["status"] for f in frames if f["type"] == "state"] == [
            "pending", "running", "completed"
        ]
        assert frames[-1]["final_value"] == {"attempt": 2}
        assert cluster.row(key, "attempts") == (2,)
    else:
        assert frames[-1]["status"] == "failed"
    all_seqs = seqs(frames)
    assert all_seqs == sorted(set(all_seqs))


async def test_sigterm_to_a_worker_leaves_no_task_running(cluster, web):
    workers = cluster.ensure_workers(1)
    keys, watchers = [], []
    for model in ("demo.SlowTask", "runnerapp.RetryTask"):
        keys.append(key := cluster.create(model, "seconds=30"))
        a, b, *_ = await watch_on_a_then_start_on_b(web, key)
        await b.close()
        await frames_until(a, lambda f: f["type"] == "event")
        watchers.append(a)
    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)  # all at once: no survivor re-claims
    for worker in list(workers):
        output = cluster.stop_worker(worker, None)
        assert worker.process.returncode == 0, output

    slow = await rest_of_stream(watchers[0])
    assert slow[-1]["status"] == "cancelled" and slow[-1]["error"]["type"] == "WorkerShutdown"
    retry = await frames_until(watchers[1], is_state("pending"))
    assert retry[-1]["error"]["type"] == "WorkerShutdown"  # retries remain: pending again
    assert cluster.row(keys[0], "status", "lease_owner") == ("cancelled", "")
    assert cluster.row(keys[1], "status", "lease_owner") == ("pending", "")
    await watchers[1].close()


async def test_daphne_running_tasks_sweeps_from_its_start_and_ends_its_tasks_on_sigterm(
    cluster, web
):
    """Daphne has no lifespan: streamapp hooks Twisted's start-up and before-shutdown triggers."""
    cluster.stop_workers()
    orphan = cluster.create("demo.SlowTask")
    cluster.orphan(orphan)  # left running by a worker that died; nobody sweeps yet
    async with websockets.connect(url(web[0], orphan), open_timeout=10) as watcher:
        assert (await frames_until(watcher, lambda f: True))[-1]["status"] == "running"
        [server] = cluster.daphnes(cluster.env)  # runs tasks: sweeps at once, no request
        final = (await rest_of_stream(watcher))[-1]
        assert final["status"] == "failed" and final["error"]["type"] == "WorkerLost"

    key = cluster.create("demo.SlowTask", "seconds=30")
    async with websockets.connect(url(web[0], key), open_timeout=10) as a:
        await frames_until(a, lambda f: f["type"] == "state")
        async with websockets.connect(url(server, key), open_timeout=10):
            await frames_until(a, lambda f: f["type"] == "event")
            server.stop(signal.SIGTERM)
        assert server.process.returncode == 0
        final = (await rest_of_stream(a))[-1]
    assert final["status"] == "cancelled" and final["error"]["type"] == "WorkerShutdown"
    assert cluster.row(key, "status", "lease_owner") == ("cancelled", "")


async def test_a_worker_rides_out_a_brief_database_outage(cluster, web):
    """Its connections drop and reconnects fail for 2 s: it retries, and the task completes."""
    cluster.stop_workers()  # the worker below, whose database is behind the relay, runs it
    database = urlsplit(cluster.env["DATABASE_URL"])
    with TcpRelay(database.hostname, database.port or 5432) as relay:
        relayed = database._replace(netloc=f"{database.username}@127.0.0.1:{relay.port}")
        worker = Worker({**cluster.env, "DATABASE_URL": relayed.geturl(),
                         "STREAMAPP_LEASE_SECONDS": "6"}).start()
        try:
            key = cluster.create("demo.SlowTask", "seconds=4")
            a, b, *_ = await watch_on_a_then_start_on_b(web, key)
            await b.close()
            await frames_until(a, lambda f: f["type"] == "event")
            relay.cut(seconds=2)
            frames = await rest_of_stream(a, timeout=30)
        finally:
            output = worker.stop()
    assert frames[-1]["status"] == "completed", output
    assert seqs(frames) == list(range(seqs(frames)[0], seqs(frames)[-1] + 1))  # no gap, no repeat
    assert cluster.row(key, "attempts", "lease_owner") == (1, "")
    assert "database unavailable, riding it out" in output and relay.turned_away > 0  # felt
