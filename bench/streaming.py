"""The streamapp side of the benchmark: BenchTasks created, started and run by the coordinator."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection
from django.db.models import Count, Max

from streamapp.coordinator import coordinator
from streamapp.models import FINAL_STATUSES, Status, TaskEvent

from .models import BenchTask
from .wire import SHORT_EVENTS


def path_of(task: BenchTask) -> str:
    """The task's part of the one-task endpoint's URL: ``bench/benchtask/<pk>``."""
    return f"{task._meta.app_label}/{task._meta.model_name}/{task.pk}"


async def create(count: int, events: int, rate: float) -> list[str]:
    """``count`` pending BenchTasks; returns their URL paths."""
    tasks = await BenchTask.objects.abulk_create(
        [BenchTask(events=events, rate=rate) for _ in range(count)]
    )
    return [path_of(task) for task in tasks]


async def run(path: str) -> None:
    """Start one task through the coordinator and wait until it has ended."""
    task = await BenchTask.objects.aget(pk=int(path.rsplit("/", 1)[-1]))
    if not await coordinator.start_task(task):
        raise RuntimeError(f"{task.task_key} did not start (status {task.status})")
    await coordinator.wait_task(task)
    if task.status != Status.COMPLETED:
        raise RuntimeError(f"{task.task_key} ended {task.status}: {task.error}")


async def short_task(number: int) -> bool:
    """A tiny task from creation to its final status, all through the coordinator: started
    unsaved (the coordinator saves it with the other new ones), SHORT_EVENTS events, finish."""
    task = BenchTask(events=SHORT_EVENTS)
    started = await coordinator.start_task(task)
    await coordinator.wait_task(task)
    return started and task.status == Status.COMPLETED


async def short_task_saved_first(number: int) -> bool:
    """``short_task``, the row saved by the caller first (``acreate``), one hop of its own."""
    task = await BenchTask.objects.acreate(events=SHORT_EVENTS)
    started = await coordinator.start_task(task)
    await coordinator.wait_task(task)
    return started and task.status == Status.COMPLETED


async def short_task_handed(number: int) -> bool:
    """``short_task`` in a web process that runs no tasks (``RUN_TASKS`` off): the coordinator
    saves it and hands it to the ``runtasks`` workers; done once its final status is recorded."""
    task = BenchTask(events=SHORT_EVENTS)
    handed = await coordinator.start_task(task)
    return handed and await endings().wait(task.pk) == Status.COMPLETED


class Endings:
    """Waits for tasks that run in other processes to end: one query for all of them every
    POLL_SECONDS (the bench's reading of the database, not how streamapp hears of news)."""

    POLL_SECONDS = 0.01

    def __init__(self) -> None:
        self._waiting: dict[int, asyncio.Future[str]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def wait(self, pk: int) -> str:
        """The task's final status, once it has one."""
        self._waiting[pk] = asyncio.get_running_loop().create_future()
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll(), name="bench endings")
        return await self._waiting[pk]

    async def _poll(self) -> None:
        try:
            while self._waiting:
                await asyncio.sleep(self.POLL_SECONDS)
                ended = BenchTask.objects.filter(pk__in=list(self._waiting),
                                                 status__in=FINAL_STATUSES)
                async for pk, status in ended.values_list("pk", "status"):
                    self._waiting.pop(pk).set_result(status)
        finally:
            self._poller = None


_endings: dict[asyncio.AbstractEventLoop, Endings] = {}


def endings() -> Endings:
    """This event loop's ``Endings``."""
    return _endings.setdefault(asyncio.get_running_loop(), Endings())


async def forget() -> int:
    """Delete every BenchTask and its events: a run on a database kept from earlier runs starts
    as on a fresh one (a table of many finished and dead rows slows the workers' picks)."""
    count = await BenchTask.objects.acount()
    await TaskEvent.objects.filter(task_key__startswith=f"{BenchTask._meta.app_label}.").adelete()
    await BenchTask.objects.all().adelete()
    await sync_to_async(vacuum)()
    return count


def vacuum() -> None:
    """PostgreSQL: reclaim the deleted rows now (VACUUM runs outside a transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (BenchTask, TaskEvent):
                cursor.execute(f"VACUUM ANALYZE {connection.ops.quote_name(model._meta.db_table)}")


async def tally(after: int) -> dict[str, Any]:
    """The BenchTasks with a pk above ``after`` by status, and their logged events: how many
    tasks have exactly seqs 1..SHORT_EVENTS, and the events missing or doubled; ``last_pk``:
    the highest pk of all, the ``after`` of the next run."""
    tasks = {pk: status async for pk, status in
             BenchTask.objects.filter(pk__gt=after).values_list("pk", "status")}
    statuses: dict[str, int] = {}
    for status in tasks.values():
        statuses[status] = statuses.get(status, 0) + 1
    keys = {BenchTask(pk=pk).task_key: pk for pk in tasks}
    logged = TaskEvent.objects.filter(task_key__in=list(keys)).values("task_key").annotate(
        rows=Count("id"), seqs=Count("seq", distinct=True), top=Max("seq"),
    )
    whole = missing = doubled = 0
    seen = set()
    async for row in logged:
        seen.add(row["task_key"])
        whole += row["rows"] == row["seqs"] == row["top"] == SHORT_EVENTS
        missing += max(SHORT_EVENTS - row["seqs"], 0)
        doubled += row["rows"] - row["seqs"]
    missing += SHORT_EVENTS * (len(keys) - len(seen))
    top = (await BenchTask.objects.aaggregate(top=Max("pk")))["top"] or 0
    return {"tasks": len(tasks), "statuses": statuses, "whole": whole, "missing": missing,
            "doubled": doubled, "last_pk": top}


async def run_all(paths: list[str]) -> None:
    await asyncio.gather(*(run(path) for path in paths))


QUIET_RATE = 1 / 3600  # a quiet task: its first event at once, the next an hour later


async def idle_tasks(running: int, finished: int) -> dict[str, list[str]]:
    """``running`` tasks that have sent one event and go quiet, ``finished`` ones that have
    completed (one event each); returns their task keys."""
    quiet = await BenchTask.objects.abulk_create(
        [BenchTask(events=2, rate=QUIET_RATE) for _ in range(running)]
    )
    done = await BenchTask.objects.abulk_create([BenchTask(events=1) for _ in range(finished)])
    for task in done:
        await coordinator.start_task(task)
    for task in done:
        await coordinator.wait_task(task)
    for task in quiet:
        await coordinator.start_task(task)
    return {"running": [t.task_key for t in quiet], "finished": [t.task_key for t in done]}


async def start_tasks(keys: list[str]) -> int:
    started = 0
    for key in keys:
        started += await coordinator.start_task(await task_of(key))
    return started


async def task_of(name: str) -> BenchTask:
    """The BenchTask of a task key or an URL path (both end with the pk)."""
    pk = name.rstrip("/").replace("/", ".").rsplit(".", 1)[-1]
    return await BenchTask.objects.aget(pk=int(pk))


async def stop_tasks(keys: list[str]) -> int:
    """Cancel the tasks still running of ``keys``; returns how many."""
    stopped = 0
    for key in keys:
        stopped += await coordinator.cancel_task(await task_of(key))
    return stopped
