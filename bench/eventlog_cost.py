"""What logging an event costs on the hot path of ``send_event``.

    python -m bench.eventlog_cost            # SQLite and the in-memory layer
    DATABASE_URL=… REDIS_URL=… python -m bench.eventlog_cost

Prints microseconds per event for: the raw INSERT at several batch sizes, and a whole task
emitting events as fast as it can (encode, log in batches, announce), with and without the log.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

EVENTS = 5000


async def append_cost(batch: int) -> float:
    from django.utils import timezone

    from streamapp.eventlog import store
    from streamapp.eventlog.store import LoggedEvent

    key = f"bench.append.{batch}"
    now = timezone.now()
    frame = '{"type":"event","task":"bench","seq":0,"event":"tick","data":{"i":1}}'
    started = time.perf_counter()
    for first in range(1, EVENTS + 1, batch):
        await store.append(key, [
            LoggedEvent(seq, "tick", frame, now) for seq in range(first, first + batch)
        ])
    return (time.perf_counter() - started) / EVENTS * 1e6


async def task_cost(with_log: bool) -> tuple[float, float]:
    """µs per event of a BurstTask run, and the average batch it wrote."""
    from streamapp.coordinator import coordinator
    from streamapp.eventlog import store, stream
    from tests.testapp.models import BurstTask

    batches = []
    append = store.append

    async def counted_append(key, batch, fence=None):
        batches.append(len(batch))
        if with_log:
            await append(key, batch, fence)

    stream.store.append = counted_append
    try:
        task = await BurstTask.objects.acreate(count=EVENTS)
        started = time.perf_counter()
        assert await coordinator.start_task(task)
        await coordinator.wait_task(task)
        elapsed = time.perf_counter() - started
    finally:
        stream.store.append = append
    return elapsed / EVENTS * 1e6, sum(batches) / len(batches)


async def measure() -> None:
    from django.db import connection

    from streamapp.coordinator import coordinator

    layer = "redis" if os.environ.get("REDIS_URL") else "in-memory"
    print(f"database {connection.vendor}, layer {layer}, {EVENTS} events")
    for batch in (1, 10, 100, 1000):
        print(f"  INSERT in batches of {batch:>4}: {await append_cost(batch):8.1f} µs/event")
    for with_log in (False, True):
        per_event, batch = await task_cost(with_log)
        what = "with the log   " if with_log else "without the log"
        print(f"  task emitting {what}: {per_event:8.1f} µs/event (batches of {batch:.0f})")
    await coordinator.shutdown(timeout=0)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.support.processes import ProcessDatabase

    with tempfile.TemporaryDirectory() as tmp:
        database = ProcessDatabase(Path(tmp), "bench_eventlog_cost").create()
        admin_env = dict(os.environ)
        os.environ.update(database.env)
        import django
        from django.db import connections

        django.setup()
        try:
            asyncio.run(measure())
        finally:
            connections.close_all()
            os.environ.clear()
            os.environ.update(admin_env)
            database.drop()


if __name__ == "__main__":
    main()
