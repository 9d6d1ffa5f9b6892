"""The coordinator: claims tasks with a lease, runs each in an asyncio task, records outcomes.

One ``Run`` per task this process executes: the job (``process()`` under a timeout), its
heartbeat, its EventStream and its signal mailbox. Process-wide background work (the control
listener for cancel/signal messages and the sweeper of expired leases) starts on first use, or
with the server (streamapp.serving) or the worker (streamapp.worker).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections

from . import broadcast, eventlog, frames, handoff, leases, metrics, retention
from .conf import app_settings
from .dbretry import with_retries
from .events import EventStream
from .keys import stream_task_models
from .models import STARTABLE_STATUSES, Status, StreamTask

logger = logging.getLogger("streamapp.runner")

SHUTDOWN_ERROR = {"type": "WorkerShutdown", "message": "the worker shut down before the task ended"}
WORKER_LOST_ERROR = {"type": "WorkerLost", "message": "the worker running the task stopped"}
# How long a cancelled process() may take to clean up before cancel_task or shutdown stop
# waiting for it; shutdown then records the outcome itself.
CANCEL_GRACE_SECONDS = 5.0


@dataclass
class Outcome:
    status: str
    final_value: Any = None
    error: dict[str, str] | None = None


@dataclass
class Run:
    """One task executing in this process."""

    task: StreamTask
    stream: EventStream | None = None  # set once the run has read the log's position
    job: asyncio.Task[None] | None = None  # _execute: the whole run; None while still claiming
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
        """Cancel ``process()`` (now, or as soon as it is created); the first reason counts."""
        if self.stop_reason is None:
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
        """Start ``task``; False when it is already running or has completed.

        With ``RUN_TASKS`` on (the default) this process claims the task and runs it: True means
        this call started it here. With ``RUN_TASKS`` off (web processes of a split deployment)
        the task is handed to the ``runtasks`` workers instead: True means it now waits, pending,
        for a worker, which has been woken (a failed or cancelled task is made pending again);
        concurrent callers may all see True, and the task still runs once.
        """
        if not app_settings.RUN_TASKS:
            return await handoff.hand_to_workers(task)
        return await self._start(task, STARTABLE_STATUSES)

    async def run_pending(self, task: StreamTask) -> bool:
        """Claim ``task`` only if it is still pending and run it here: a worker's pick."""
        return await self._start(task, (Status.PENDING,))

    async def _start(self, task: StreamTask, statuses: tuple[str, ...]) -> bool:
        if not self._accepting:
            return False
        await self.ensure_started()
        key = task.task_key
        if key in self._runs:
            return False
        run = self._runs[key] = Run(task=task)
        won = False
        try:
            # Join before claiming: a cancel or signal sent as soon as another process sees the
            # task running must find us; the listener keeps it on this reserved run.
            await self._join_control(key)
            won = await leases.claim(task, self.owner, app_settings.LEASE_SECONDS, statuses)
        finally:
            if not won:
                del self._runs[key]
                await self._leave_control(key)
        if not won:
            return False
        metrics.task_started(key)
        # A fresh context: the run outlives its caller, e.g. an admin request whose thread
        # (asgiref's thread-sensitive executor) is gone once the response is sent.
        run.job = asyncio.create_task(
            self._execute(run), name=f"streamapp:{key}", context=contextvars.Context()
        )
        logger.info("task claimed key=%s owner=%s attempt=%d", key, self.owner, task.attempts,
                    extra={"task_key": key})
        return True

    async def cancel_task(self, task: StreamTask) -> bool:
        """Cancel ``task`` wherever it runs; False when it had already ended."""
        key = task.task_key
        run = self._runs.get(key)
        if run is not None and run.job is not None:
            run.stop("cancel")
            await asyncio.wait([run.job], timeout=CANCEL_GRACE_SECONDS)
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
        return task.task_key in self.running_keys

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop claiming; let running tasks finish for ``timeout`` seconds, then cancel them."""
        self._accepting = False
        timeout = app_settings.SHUTDOWN_TIMEOUT if timeout is None else timeout
        runs = [run for run in self._runs.values() if run.job is not None]
        if runs:
            logger.info("shutting down running=%d timeout=%s", len(runs), timeout)
            _, late = await asyncio.wait([run.job for run in runs], timeout=timeout)
            for run in runs:
                run.stop("shutdown")
            if late:
                _, stuck = await asyncio.wait(late, timeout=CANCEL_GRACE_SECONDS)
                for run in runs:
                    if run.job in stuck:
                        await self._abandon(run)
        for job in self._background:
            job.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        self._control_channel = None

    async def _abandon(self, run: Run) -> None:
        """Record the shutdown outcome of a run whose ``process()`` swallows cancellation."""
        logger.error("task ignores cancellation key=%s", run.key, extra={"task_key": run.key})
        try:
            await self._record(run, self._stopped_outcome(run))
        except Exception:
            logger.exception("could not record key=%s; a sweeper will", run.key)

    def reopen(self) -> None:
        """Accept tasks again after ``shutdown`` (tests and embedding code reuse one process)."""
        self._accepting = True

    @property
    def running_keys(self) -> list[str]:
        """Keys of the tasks executing in this process (not those still being claimed)."""
        return [key for key, run in self._runs.items() if run.job is not None]

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
            outcome = await self._run_process(run)
            run.heartbeat.cancel()
            await self._record(run, outcome)
        except Exception:
            # The database stayed away longer than the retries: the lease is no longer renewed,
            # so a sweeper ends the task when it expires.
            logger.exception("task bookkeeping failed key=%s", key, extra={"task_key": key})
        finally:
            # Whatever happened, this process forgets the run; an unrecorded outcome leaves the
            # lease to expire and the sweeper to end the task.
            run.heartbeat.cancel()
            if run.work is not None:
                run.work.cancel()
            self._runs.pop(key, None)
            metrics.task_stopped(key)
            task._event_stream = None
            await self._leave_control(key)

    async def _run_process(self, run: Run) -> Outcome:
        """Open the task's event stream, run ``process()``, and flush what it sent."""
        task, key = run.task, run.key
        position = await with_retries(lambda: eventlog.current_seq(key), what="event log position")
        run.stream = EventStream(key, position, task.get_event_retention())
        task._event_stream = run.stream  # send_event on this instance goes to this stream
        await self._publish_state(task, task.revision, run.stream.seq)
        outcome = await self._outcome_of(run)
        try:
            await run.stream.drain()
        except Exception as exc:
            if outcome.status == Status.COMPLETED:
                outcome = Outcome(Status.FAILED, error=error_of(exc))
        return outcome

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
            return self._stopped_outcome(run)
        except TimeoutError as exc:
            if deadline.expired():
                message = f"the task ran longer than its timeout of {timeout} s"
                return Outcome(Status.FAILED, error={"type": "TimeoutError", "message": message})
            return Outcome(Status.FAILED, error=error_of(exc))
        except Exception as exc:
            logger.warning("task failed key=%s error=%r", run.key, exc,
                           extra={"task_key": run.key})
            return Outcome(Status.FAILED, error=error_of(exc))

    @staticmethod
    def _stopped_outcome(run: Run) -> Outcome:
        """How a run this process stopped ends: by cancel, by shutdown, or with its lease lost."""
        if run.stop_reason == "cancel":
            return Outcome(Status.CANCELLED)
        if run.stop_reason == "shutdown":
            if run.task.attempts < run.task.max_attempts:
                return Outcome(Status.PENDING, error=SHUTDOWN_ERROR)
            return Outcome(Status.CANCELLED, error=SHUTDOWN_ERROR)
        return Outcome("lease_lost")

    async def _record(self, run: Run, outcome: Outcome) -> None:
        task, key = run.task, run.key
        if outcome.status == "lease_lost":
            logger.warning("lease lost, task abandoned key=%s", key, extra={"task_key": key})
            return
        last_seq = run.stream.logged_seq if run.stream is not None else task.last_seq
        won = await with_retries(
            lambda: leases.finish(
                task, self.owner, outcome.status, last_seq=last_seq,
                final_value=outcome.final_value, error=outcome.error,
            ),
            what="final status", key=key,
        )
        if not won:
            logger.warning("lease lost before the outcome was recorded key=%s", key,
                           extra={"task_key": key})
            return
        task.status, task.final_value, task.error = outcome.status, outcome.final_value, outcome.error
        task.last_seq, task.revision = last_seq, task.revision + 1
        logger.info("task ended key=%s status=%s", key, outcome.status, extra={"task_key": key})
        metrics.task_finished(key, outcome.status, task.started_at)
        await self._publish_state(task, task.revision, last_seq)
        if outcome.status == Status.PENDING:
            await broadcast.wake_workers()  # a retry: another worker should take it
        if outcome.status == Status.FAILED:
            await task.on_failure(outcome.error)

    async def _heartbeat(self, run: Run) -> None:
        """Renew the lease; stop the run once the lease is lost or may have run out."""
        lease = app_settings.LEASE_SECONDS
        held_until = time.monotonic() + lease
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
            asked_at = time.monotonic()
            try:
                held = await with_retries(
                    lambda: leases.renew(run.task, self.owner, lease), what="heartbeat",
                    attempts=3,
                )
            except Exception:
                logger.warning("heartbeat failed key=%s", run.key, exc_info=True,
                               extra={"task_key": run.key})
                if time.monotonic() < held_until:
                    continue
                # Unrenewed past its end, the lease may be swept and the task run elsewhere:
                # stop, so it never runs twice at once.
                held = False
            if not held:
                run.stop("lease_lost")
                return
            held_until = asked_at + lease
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
            listen = broadcast.receive_forever(
                layer, self._control_channel, self._on_control, "control channel"
            )
            self._background.append(asyncio.create_task(listen, name="control"))
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
            logger.warning("control %s failed key=%s", operation, key, exc_info=True,
                           extra={"task_key": key})

    def _on_control(self, message: dict[str, Any]) -> None:
        """Cancel and signal messages for tasks running here, from any process."""
        run = self._runs.get(message.get("task"))
        if run is None:
            return
        if message["type"] == "task.cancel":
            run.stop("cancel")
        elif message["type"] == "task.signal":
            run.deliver_signal(message["name"], message.get("data"))

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:
                logger.warning("sweep failed", exc_info=True)
                await sync_to_async(close_old_connections)()
            await asyncio.sleep(app_settings.SWEEP_SECONDS)

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
                metrics.lease_expired(key, retry)
                await task.arefresh_from_db()
                logger.warning("lease expired key=%s retry=%s", key, retry,
                               extra={"task_key": key})
                await self._publish_state(task, task.revision, last_seq)
                if retry:
                    await broadcast.wake_workers()
        return count


coordinator = Coordinator()
