"""The task worker behind ``manage.py runtasks``: claims pending tasks and runs them here.

A worker is woken through the channel layer (group ``sa.workers``) when a task becomes
claimable, and when one of its own runs ends; polling every WORKER_POLL_SECONDS is only the
fallback for a lost wake-up. Candidates are picked oldest first with ``SELECT … FOR UPDATE SKIP
LOCKED`` where the database has it, so workers picking at the same moment take different rows;
the coordinator's conditional UPDATE (``status = 'pending'``) still decides who runs each task.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections, connections, transaction
from django.db.models import QuerySet

from .. import outages
from ..broadcast import WORKERS_GROUP, layer_trouble, receive_forever
from ..conf import app_settings
from ..dbretry import is_transient
from ..keys import stream_task_tables
from ..models import StreamTask
from .coordinator import Coordinator
from .coordinator import coordinator as default_coordinator

logger = logging.getLogger("streamapp.worker")

Report = Callable[[str], None]


def _pick_pending(limit: int) -> list[StreamTask]:
    """Up to ``limit`` pending tasks of every StreamTask table, oldest first; the tables kept in
    one database are read in one transaction. A proxy's rows are its concrete model's."""
    by_database: dict[str, list[QuerySet]] = {}
    for model in stream_task_tables():
        rows = model.objects.claimable().order_by("created_at", "pk")
        by_database.setdefault(rows.db, []).append(rows)
    found: list[StreamTask] = []
    for alias, querysets in by_database.items():
        skip_locked = connections[alias].features.has_select_for_update_skip_locked
        with transaction.atomic(using=alias):
            for rows in querysets:
                if skip_locked:
                    rows = rows.select_for_update(skip_locked=True)
                found.extend(rows[:limit])
    found.sort(key=lambda task: task.created_at)
    return found[:limit]


pick_pending = sync_to_async(_pick_pending)


class Worker:
    """Runs pending StreamTasks in this process, at most ``concurrency`` at a time.

    The worker owns its process's coordinator: when ``run`` returns, the coordinator has shut
    down (running tasks drained or cancelled within SHUTDOWN_TIMEOUT).
    """

    def __init__(
        self,
        *,
        concurrency: int | None = None,
        poll_seconds: float | None = None,
        report: Report | None = None,
        coordinator: Coordinator = default_coordinator,
    ) -> None:
        self.concurrency = concurrency or app_settings.WORKER_CONCURRENCY
        self.poll_seconds = poll_seconds or app_settings.WORKER_POLL_SECONDS
        self.coordinator = coordinator
        self.report = report or (lambda line: None)
        self.ran = 0
        self._stopping = False
        self._news = asyncio.Event()  # a wake-up, a run that ended, or stop()
        self._channel: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    def stop(self) -> None:
        """Stop claiming; ``run`` then shuts the coordinator down and returns."""
        if not self._stopping:
            logger.info("worker stopping running=%d", len(self.coordinator.running_keys))
        self._stopping = True
        self._news.set()

    def install_signal_handlers(self) -> bool:
        """SIGTERM and SIGINT stop the worker gracefully; call it inside the event loop.

        Only the main thread receives signals: elsewhere (a worker embedded in a thread) this
        does nothing and returns False.
        """
        if threading.current_thread() is not threading.main_thread():
            return False
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        return True

    async def run(self, *, until_idle: bool = False) -> int:
        """Claim and run tasks until ``stop()``; returns how many runs it started.

        ``until_idle``: return as soon as no task is pending and none runs here (a batch mode,
        and what tests use to drive a worker deterministically).
        """
        await self.coordinator.ensure_started()  # the control listener and the sweeper
        await self._join_workers_group()
        self.report(f"worker ready owner={self.coordinator.owner}")
        try:
            while not self._stopping:
                self._news.clear()
                claimed = await self._claim_safely()
                if until_idle and not claimed and not self.coordinator.running_keys:
                    break
                if not await self._wait_for_news():
                    await self._join_workers_group()  # quiet: refresh before group_expiry
        finally:
            await self._close()
        return self.ran

    async def claim_available(self) -> int:
        """Claim pending tasks while slots are free and candidates remain; returns how many."""
        claimed = 0
        while not self._stopping:
            free = self.concurrency - len(self.coordinator.running_keys)
            if free <= 0:
                break
            candidates = await pick_pending(free)
            if self._stopping:
                break
            # All at once: the committer makes their claims one UPDATE (runner/leases.py)
            # instead of one thread hop each.
            outcomes = await self.coordinator.run_all_pending(candidates)
            won = 0
            for task, outcome in zip(candidates, outcomes, strict=True):
                if outcome is True:
                    won += 1
                    self._watch(task)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]  # the ones won above run and are watched all the same
            if not won:
                if not candidates or not self.coordinator.accepting:
                    break  # nothing pending, or this process takes no more tasks
                continue  # every candidate went to another worker: look past them
            claimed += won
        return claimed

    async def _claim_safely(self) -> int:
        try:
            claimed = await self.claim_available()
        except Exception as exc:
            # The database is away: try again at the next wake-up or poll.
            if is_transient(exc):
                outages.database.failed("claim", exc)
            else:
                logger.warning("claiming failed", exc_info=True)
            await sync_to_async(close_old_connections)()
            return 0
        outages.database.answered()
        return claimed

    def _watch(self, task: StreamTask) -> None:
        """Count the run and hear when it ends: a freed slot is news."""
        self.ran += 1
        self.report(f"claimed {task.task_key}")
        watcher = asyncio.create_task(self.coordinator.wait_task(task), name="worker:watch")
        self._tasks.add(watcher)
        watcher.add_done_callback(self._ended)

    def _ended(self, watcher: asyncio.Task[Any]) -> None:
        self._tasks.discard(watcher)
        self._news.set()

    async def _wait_for_news(self) -> bool:
        """Wait for news or the poll interval; True when news came."""
        try:
            async with asyncio.timeout(self.poll_seconds):
                await self._news.wait()
        except TimeoutError:
            return False
        return True

    # -- the wake-up channel ----------------------------------------------------------------

    async def _join_workers_group(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            if self._channel is None:
                self._channel = await layer.new_channel()
                listen = receive_forever(
                    layer, self._channel, lambda message: self._news.set(), "wake-up channel"
                )
                self._tasks.add(asyncio.create_task(listen, name="worker:wake"))
            await layer.group_add(WORKERS_GROUP, self._channel)
        except Exception as exc:  # no wake-ups for now: polling still finds the tasks
            layer_trouble(f"join {WORKERS_GROUP}", exc)

    async def _close(self) -> None:
        layer = get_channel_layer()
        if layer is not None and self._channel is not None:
            try:
                await layer.group_discard(WORKERS_GROUP, self._channel)
            except Exception:
                logger.warning("leaving %s failed", WORKERS_GROUP, exc_info=True)
        await self.coordinator.shutdown()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._channel = None
