"""The coordinator: claims tasks with a lease, runs each in an asyncio task, records outcomes.

One ``Run`` per task this process executes: the job (``process()`` under a timeout), its
heartbeat, its EventStream and its signal mailbox. Process-wide background work (the control
listener for cancel/signal messages and the sweeper of expired leases) starts on first use.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections

from . import broadcast, eventlog, frames, leases, retention
from .conf import app_settings
from .dbretry import with_retries
from .events import EventStream
from .keys import stream_task_models
from .models import Status, StreamTask

logger = logging.getLogger("streamapp.runner")

SHUTDOWN_ERROR = {"type": "WorkerShutdown", "message": "the worker shut down before the task ended"}
WORKER_LOST_ERROR = {"type": "WorkerLost", "message": "the worker running the task stopped"}


@dataclass
class Outcome:
    status: str
    final_value: Any = None
    error: dict[str, str] | None = None


@dataclass
class Run:
    """One task executing in this process."""

    task: StreamTask
    stream: EventStream
    job: asyncio.Task[None] | None = None  # _execute: the whole run, with its bookkeeping
    work: asyncio.Task[Any] | None = None  # process() itself: what cancel and timeout stop
    heartbeat: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # "cancel", "shutdown" or "lease_lost" once we stop it
    signals: defaultdict[str, deque[Any]] = field(default_factory=lambda: defaultdict(deque))
    waiters: defaultdict[str, list[asyncio.Future[Any]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    @property
    def key(self) -> str:
        return self.task.task_key

    def stop(self, reason: str) -> None:
        """Cancel ``process()`` (now, or as soon as it is created) and remember why."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        if self.work is not None:
            self.work.cancel()

    def deliver_signal(self, name: str, data: Any) -> None:
        waiters = self.waiters[name]
        while waiters:
            future = waiters.pop(0)
            if not future.done():
                future.set_result(data)
                return
        self.signals[name].append(data)


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


class Coordinator:
    """Runs StreamTasks in this process; the database decides which process runs which task."""

    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._runs: dict[str, Run] = {}
        self._background: list[asyncio.Task[None]] = []
        self._control_channel: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = True

    # -- public API -------------------------------------------------------------------------

    async def start_task(self, task: StreamTask) -> bool:
        """Claim and start ``task`` here; False when it is already running or has completed."""
        if not self._accepting:
            return False
        await self.ensure_started()
        key = task.task_key
        if key in self._runs:
            return False
        lease = app_settings.LEASE_SECONDS
        if not await leases.claim(task, self.owner, lease):
            return False
        stream = EventStream(key, await eventlog.current_seq(key), task.get_event_retention())
        run = Run(task=task, stream=stream)
        task._event_stream = stream  # send_event on this instance goes to this stream
        self._runs[key] = run
        await self._join_control(key)  # before returning: a signal sent next must find us
        run.job = asyncio.create_task(self._execute(run), name=f"streamapp:{key}")
        logger.info("task claimed key=%s owner=%s attempt=%d", key, self.owner, task.attempts,
                    extra={"task_key": key})
        return True

    async def cancel_task(self, task: StreamTask) -> bool:
        """Cancel ``task`` wherever it runs; False when it had already ended."""
        key = task.task_key
        run = self._runs.get(key)
        if run is not None:
            run.stop("cancel")
            await asyncio.wait([run.job])
            return True
        if await leases.cancel_pending(task):
            await task.arefresh_from_db()
            await self._publish_state(task, task.revision, task.last_seq)
            return True
        await task.arefresh_from_db(fields=["status"])
        if task.status == Status.RUNNING:
            return await broadcast.send_control(key, {"type": "task.cancel"})
        return False

    async def wait_task(self, task: StreamTask, timeout: float | None = None) -> bool:
        """Wait until ``task`` stops running in this process; False if ``timeout`` passed first."""
        run = self._runs.get(task.task_key)
        if run is None or run.job is None:
            return True
        done, _ = await asyncio.wait([run.job], timeout=timeout)
        return bool(done)

    def is_task_running(self, task: StreamTask) -> bool:
        """Is ``task`` executing in this process?"""
        return task.task_key in self._runs

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop claiming; let running tasks finish for ``timeout`` seconds, then cancel them."""
        self._accepting = False
        timeout = app_settings.SHUTDOWN_TIMEOUT if timeout is None else timeout
        jobs = [run.job for run in self._runs.values() if run.job is not None]
        if jobs:
            logger.info("shutting down running=%d timeout=%s", len(jobs), timeout)
            _, late = await asyncio.wait(jobs, timeout=timeout)
            for run in list(self._runs.values()):
                run.stop("shutdown")
            if late:
                await asyncio.wait(late)
        for job in self._background:
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        self._control_channel = None

    def reopen(self) -> None:
        """Accept tasks again after ``shutdown`` (tests and embedding code reuse one process)."""
        self._accepting = True

    @property
    def running_keys(self) -> list[str]:
        return list(self._runs)

    # -- signals ----------------------------------------------------------------------------

    async def wait_signal(self, task: StreamTask, name: str, timeout: float | None) -> Any:
        run = self._runs.get(task.task_key)
        if run is None:
            raise RuntimeError("wait_signal() works only inside a running task's process()")
        if run.signals[name]:
            return run.signals[name].popleft()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        run.waiters[name].append(future)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            if future in run.waiters[name]:
                run.waiters[name].remove(future)

    # -- one run ----------------------------------------------------------------------------

    async def _execute(self, run: Run) -> None:
        task, key = run.task, run.key
        run.heartbeat = asyncio.create_task(self._heartbeat(run), name=f"heartbeat:{key}")
        try:
            await self._publish_state(task, task.revision, run.stream.seq)
            outcome = await self._outcome_of(run)
            try:
                await run.stream.drain()
            except Exception as exc:
                if outcome.status == Status.COMPLETED:
                    outcome = Outcome(Status.FAILED, error=error_of(exc))
            run.heartbeat.cancel()
            await self._record(run, outcome)
        finally:
            # Whatever happened, this process forgets the run; an unrecorded outcome leaves the
            # lease to expire and the sweeper to end the task.
            run.heartbeat.cancel()
            if run.work is not None:
                run.work.cancel()
            self._runs.pop(key, None)
            task._event_stream = None
            await self._leave_control(key)

    async def _outcome_of(self, run: Run) -> Outcome:
        """Run ``process()`` under the task's timeout and say how it ended."""
        task = run.task
        timeout = task.get_timeout()
        run.work = asyncio.create_task(task.process(), name=f"process:{run.key}")
        if run.stop_reason is not None:
            run.work.cancel()
        try:
            async with asyncio.timeout(timeout) as deadline:
                value = await run.work
            frames.encode({"final_value": value})  # refuse what the DB could not store
            return Outcome(Status.COMPLETED, final_value=value)
        except asyncio.CancelledError:
            if run.stop_reason is None:
                raise  # someone else cancelled us (the event loop is closing): let it through
            if run.stop_reason == "cancel":
                return Outcome(Status.CANCELLED)
            if run.stop_reason == "shutdown":
                if task.attempts < task.max_attempts:
                    return Outcome(Status.PENDING, error=SHUTDOWN_ERROR)
                return Outcome(Status.CANCELLED, error=SHUTDOWN_ERROR)
            return Outcome("lease_lost")
        except TimeoutError as exc:
            if deadline.expired():
                message = f"the task ran longer than its timeout of {timeout} s"
                return Outcome(Status.FAILED, error={"type": "TimeoutError", "message": message})
            return Outcome(Status.FAILED, error=error_of(exc))
        except Exception as exc:
            logger.warning("task failed key=%s error=%r", run.key, exc,
                           extra={"task_key": run.key})
            return Outcome(Status.FAILED, error=error_of(exc))

    async def _record(self, run: Run, outcome: Outcome) -> None:
        task, key = run.task, run.key
        if outcome.status == "lease_lost":
            logger.warning("lease lost, task abandoned key=%s", key, extra={"task_key": key})
            return
        last_seq = run.stream.logged_seq
        won = await with_retries(
            lambda: leases.finish(
                task, self.owner, outcome.status, last_seq=last_seq,
                final_value=outcome.final_value, error=outcome.error,
            ),
            what="final status",
        )
        if not won:
            logger.warning("lease lost before the outcome was recorded key=%s", key,
                           extra={"task_key": key})
            return
        task.status, task.final_value, task.error = outcome.status, outcome.final_value, outcome.error
        task.last_seq, task.revision = last_seq, task.revision + 1
        logger.info("task ended key=%s status=%s", key, outcome.status, extra={"task_key": key})
        await self._publish_state(task, task.revision, last_seq)
        if outcome.status == Status.FAILED:
            await task.on_failure(outcome.error)

    async def _heartbeat(self, run: Run) -> None:
        lease = app_settings.LEASE_SECONDS
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
            try:
                held = await leases.renew(run.task, self.owner, lease)
            except Exception:
                logger.warning("heartbeat failed key=%s", run.key, exc_info=True)
                await sync_to_async(close_old_connections)()
                continue
            if not held:
                run.stop("lease_lost")
                return
            await self._join_control(run.key)  # refresh the membership before group_expiry

    async def _publish_state(self, task: StreamTask, revision: int, seq: int) -> None:
        frame = frames.state(task.task_key, task.status, seq, task.final_value, task.error)
        await broadcast.publish_state(
            task.task_key, revision, task.status, seq, frames.encode(frame)
        )

    # -- process-wide background work -------------------------------------------------------

    async def ensure_started(self) -> None:
        """Start the control listener and the sweeper on this event loop, once."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._background:
            return
        if self._loop is not None and self._loop is not loop:
            # The old loop is gone (a test, or async_to_sync): its runs died with it.
            self._runs.clear()
        self._loop = loop
        self._background = []
        layer = get_channel_layer()
        if layer is not None:
            # The default prefix matters: channels_redis serves every process-local channel
            # from one Redis list per prefix, and a second prefix would make receivers of the
            # two lists take turns holding its receive lock (seconds of delay).
            self._control_channel = await layer.new_channel()
            self._background.append(asyncio.create_task(self._listen(layer), name="control"))
        self._background.append(asyncio.create_task(self._sweep_forever(), name="sweeper"))
        if app_settings.PURGE_SECONDS is not None:
            self._background.append(
                asyncio.create_task(retention.purge_forever(), name="purge expired events")
            )

    async def _join_control(self, key: str) -> None:
        await self._control_membership("group_add", key)

    async def _leave_control(self, key: str) -> None:
        await self._control_membership("group_discard", key)

    async def _control_membership(self, operation: str, key: str) -> None:
        layer = get_channel_layer()
        if layer is None or self._control_channel is None:
            return
        try:
            await getattr(layer, operation)(broadcast.control_group(key), self._control_channel)
        except Exception:  # cancel/signal news may be missed; the task itself goes on
            logger.warning("control %s failed key=%s", operation, key, exc_info=True)

    async def _listen(self, layer: Any) -> None:
        """Cancel and signal messages for tasks running here, from any process."""
        while True:
            try:
                message = await layer.receive(self._control_channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("control channel receive failed", exc_info=True)
                await asyncio.sleep(1)
                continue
            run = self._runs.get(message.get("task"))
            if run is None:
                continue
            if message["type"] == "task.cancel":
                run.stop("cancel")
            elif message["type"] == "task.signal":
                run.deliver_signal(message["name"], message.get("data"))

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(app_settings.SWEEP_SECONDS)
            try:
                await self.sweep()
            except Exception:
                logger.warning("sweep failed", exc_info=True)
                await sync_to_async(close_old_connections)()

    async def sweep(self) -> int:
        """End or retry every running task whose lease expired; returns how many."""
        count = 0
        for model in stream_task_models():
            async for task in model.objects.expired():
                key = task.task_key
                retry = task.attempts < task.max_attempts
                last_seq = max(task.last_seq, await eventlog.current_seq(key))
                if not await leases.expire(task, retry=retry, last_seq=last_seq,
                                           error=WORKER_LOST_ERROR):
                    continue
                count += 1
                await task.arefresh_from_db()
                logger.warning("lease expired key=%s retry=%s", key, retry,
                               extra={"task_key": key})
                await self._publish_state(task, task.revision, last_seq)
                if retry:
                    await broadcast.wake_workers()
        return count


coordinator = Coordinator()
