"""The coordinator: the runner's facade. Starts, cancels and drains the runs of this process.

The database decides which process runs which task (a lease, runner/leases.py); each run is a
``Run`` (runner/run.py). Process-wide background work (the control listener for cancel and
signal messages, runner/control.py, the sweeper of expired leases, runner/sweeper.py, and the
purge of expired events) starts on first use, or with the server (runner/server_hooks.py) or
the worker (runner/worker.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import uuid
from typing import Any

from .. import broadcast, metrics
from ..conf import app_settings
from ..handover import open_sockets
from ..models import STARTABLE_STATUSES, Status, StreamTask
from ..positions import task_state
from . import leases
from .control import ControlChannel
from .retention import purge_forever
from .run import Run, cancelled_error
from .sweeper import sweep, sweep_forever

logger = logging.getLogger("streamapp.runner")

# How long a cancelled process() may take to clean up before cancel_task or shutdown stop
# waiting for it; shutdown then records the outcome itself.
CANCEL_GRACE_SECONDS = 5.0


class Coordinator:
    """Runs StreamTasks in this process; the database decides which process runs which task."""

    def __init__(self) -> None:
        self.owner = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._runs: dict[str, Run] = {}
        self._background: list[asyncio.Task[None]] = []
        self._control = ControlChannel(self._on_control)
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

        A task not saved yet is saved first, with the other new tasks started at the same
        moment (one INSERT for all of them, ``bulk_create``: no ``save()`` call, no signals).
        """
        created = task._state.adding
        if created:
            await leases.create(task)
        if not app_settings.RUN_TASKS:
            return await self._hand_to_workers(task, created)
        return await self._start(task, STARTABLE_STATUSES)

    async def run_pending(self, task: StreamTask) -> bool:
        """Claim ``task`` only if it is still pending and run it here: a worker's pick."""
        return await self._start(task, (Status.PENDING,))

    async def run_all_pending(self, tasks: list[StreamTask]) -> list[bool | BaseException]:
        """``run_pending`` for a worker's picks at once: their claims share one UPDATE.

        Each answer is True, False or the error that task's claim raised."""
        return await self._start_all(tasks, (Status.PENDING,))

    async def cancel_task(self, task: StreamTask, reason: str | None = None) -> bool:
        """Cancel ``task`` wherever it runs; False when it had already ended.

        ``reason`` (who or what cancels, e.g. "cancelled by alice") becomes the final state's
        ``error`` as ``{"type": "Cancelled", "message": reason}``; without one it is null.
        """
        key = task.task_key
        run = self._runs.get(key)
        if run is not None and run.job is not None:
            run.stop("cancel", cancelled_error(reason))
            await asyncio.wait([run.job], timeout=CANCEL_GRACE_SECONDS)
            return True
        if await leases.cancel_pending(task, cancelled_error(reason)):
            await task.arefresh_from_db()
            await broadcast.publish_task_state(task, task.last_seq)
            return True
        await task.arefresh_from_db(fields=["status"])
        if task.status == Status.RUNNING:
            return await broadcast.send_control(key, {"type": "task.cancel", "reason": reason})
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

    @property
    def accepting(self) -> bool:
        """False from ``shutdown`` until ``reopen``: no task starts here."""
        return self._accepting

    @property
    def running_keys(self) -> list[str]:
        """Keys of the tasks executing in this process (not those still being claimed)."""
        return [key for key, run in self._runs.items() if run.job is not None]

    async def shutdown(self, timeout: float | None = None) -> None:
        """Close this process's sockets (1012), stop claiming; let running tasks finish for
        ``timeout`` seconds, then cancel them."""
        self._accepting = False
        await open_sockets.aclose_all()
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            # Started on a loop that is gone (an async TransactionTestCase test, async_to_sync):
            # its runs and background tasks went with it.
            self._runs.clear()
            self._background.clear()
            self._loop = None
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
        self._control.close()

    def reopen(self) -> None:
        """Accept tasks again after ``shutdown`` (tests and embedding code reuse one process)."""
        self._accepting = True

    async def sweep(self) -> int:
        """End or retry every running task whose lease expired; returns how many."""
        return await sweep()

    async def ensure_started(self) -> None:
        """Start the control listener, the sweeper and the purge on this event loop, once."""
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._background:
            return
        if self._loop is not None and self._loop is not loop:
            # The old loop is gone (a test, or async_to_sync): its runs died with it.
            self._runs.clear()
        self._loop = loop
        self._background = []
        listener = await self._control.open()
        if listener is not None:
            self._background.append(listener)
        self._background.append(asyncio.create_task(sweep_forever(), name="sweeper"))
        if app_settings.PURGE_SECONDS is not None:
            self._background.append(
                asyncio.create_task(purge_forever(), name="purge expired events")
            )

    # -- runs -------------------------------------------------------------------------------

    async def _start(self, task: StreamTask, statuses: tuple[str, ...]) -> bool:
        (answer,) = await self._start_all([task], statuses)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    async def _start_all(
        self, tasks: list[StreamTask], statuses: tuple[str, ...]
    ) -> list[bool | BaseException]:
        """Claim ``tasks`` and run the ones won here: True, False (not ours) or the claim's error.

        Every run joins its control group before any of them claims, so the claims reach the
        group committer at the same moment and share one UPDATE (runner/leases.py); a join's
        round trip to the layer no longer splits them.
        """
        if not self._accepting:
            return [False] * len(tasks)
        await self.ensure_started()
        runs = [self._reserve(task) for task in tasks]
        reserved = [run for run in runs if run is not None]
        try:
            # Join before claiming: a cancel or signal sent as soon as another process sees the
            # task running must find us; the listener keeps it on this reserved run.
            await asyncio.gather(*(self._control.join(run.key) for run in reserved))
            errors = await asyncio.gather(
                *(self._claim(run, statuses) for run in reserved), return_exceptions=True
            )
        finally:
            lost = [run for run in reserved if run.lease is None]
            for run in lost:
                del self._runs[run.key]
            await asyncio.gather(*(self._control.leave(run.key) for run in lost))
        claim_errors = {run.key: error for run, error in zip(reserved, errors, strict=True)}
        answers: list[bool | BaseException] = []
        for run in runs:
            error = claim_errors.get(run.key) if run is not None else None
            if error is not None:
                answers.append(error)
            elif run is None or run.lease is None:  # already running here, or not ours
                answers.append(False)
            else:
                self._launch(run)
                answers.append(True)
        return answers

    def _reserve(self, task: StreamTask) -> Run | None:
        """The run of ``task`` in this process, or None when it already has one."""
        if task.task_key in self._runs:
            return None
        run = self._runs[task.task_key] = Run(task, self.owner, self._control)
        return run

    async def _claim(self, run: Run, statuses: tuple[str, ...]) -> None:
        run.lease = await leases.claim(run.task, self.owner, app_settings.LEASE_SECONDS, statuses)

    def _launch(self, run: Run) -> None:
        key = run.key
        metrics.task_started(key)
        # A fresh context: the run outlives its caller, e.g. an admin request whose thread
        # (asgiref's thread-sensitive executor) is gone once the response is sent.
        run.job = asyncio.create_task(
            self._execute(run), name=f"streamapp:{key}", context=contextvars.Context()
        )
        logger.info("task claimed key=%s owner=%s attempt=%d", key, self.owner, run.task.attempts,
                    extra={"task_key": key})

    async def _execute(self, run: Run) -> None:
        try:
            await run.execute()
        finally:
            # Whatever happened, this process forgets the run; an unrecorded outcome leaves the
            # lease to expire and the sweeper to end the task.
            self._runs.pop(run.key, None)
            metrics.task_stopped(run.key)
            await self._control.leave(run.key)

    async def _abandon(self, run: Run) -> None:
        """Record the shutdown outcome of a run whose ``process()`` swallows cancellation."""
        logger.error("task ignores cancellation key=%s", run.key, extra={"task_key": run.key})
        try:
            await run.record(run.stopped_outcome())
        except Exception:
            logger.exception("could not record key=%s; a sweeper will", run.key)

    async def _hand_to_workers(self, task: StreamTask, created: bool = False) -> bool:
        """Leave ``task`` pending for a ``runtasks`` worker and wake the workers.

        A failed or cancelled task is made pending again first. True while the task waits for a
        worker; False when it is running or completed. A task this call ``created`` pending was
        pending from its INSERT on: handed over (True) without reading it back, even when a
        worker woken for another task has taken it already.
        """
        if not (created and task.status == Status.PENDING):
            if await leases.requeue(task):
                await task.arefresh_from_db()
                state = await task_state(task)
                await broadcast.publish_task_state(task, state["seq"])
            else:
                await task.arefresh_from_db(fields=["status"])
            if task.status != Status.PENDING:
                return False
        await broadcast.wake_workers()
        logger.info("task handed to the workers key=%s", task.task_key,
                    extra={"task_key": task.task_key})
        return True

    def _on_control(self, message: dict[str, Any]) -> None:
        """Cancel and signal messages for tasks running here, from any process."""
        run = self._runs.get(message.get("task"))
        if run is None:
            return
        if message["type"] == "task.cancel":
            run.stop("cancel", cancelled_error(message.get("reason")))
        elif message["type"] == "task.signal":
            run.context.deliver_signal(message["name"], message.get("data"))


coordinator = Coordinator()
