"""One task executing in this process: ``process()`` under its timeout, its heartbeat, its event
stream and signal mailbox, and the outcome recorded under its lease."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from .. import broadcast, metrics, protocol
from ..conf import app_settings
from ..context import RunContext
from ..dbretry import with_retries
from ..eventlog import store
from ..eventlog.stream import EventStream
from ..models import Status, StreamTask
from . import leases
from .control import ControlChannel

logger = logging.getLogger("streamapp.runner")

SHUTDOWN_ERROR = {"type": "WorkerShutdown", "message": "the worker shut down before the task ended"}
LEASE_LOST = "lease_lost"  # an outcome this process must not record: another one owns the task


@dataclass
class Outcome:
    status: str
    final_value: Any = None
    error: dict[str, str] | None = None


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


class Run:
    """One task executing in this process, from its claim to its recorded outcome."""

    def __init__(self, task: StreamTask, owner: str, control: ControlChannel) -> None:
        self.task = task
        self.key = task.task_key
        self.owner = owner
        self.control = control
        self.context = RunContext(self.key)
        self.stream: EventStream | None = None  # set once the run has read the log's position
        self.job: asyncio.Task[None] | None = None  # the whole run; None while still claiming
        self.work: asyncio.Task[Any] | None = None  # process() itself: what cancel and timeout stop
        self.stop_reason: str | None = None  # "cancel", "shutdown" or "lease_lost" once stopped

    def stop(self, reason: str) -> None:
        """Cancel ``process()`` (now, or as soon as it is created); the first reason counts."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.work is not None:
            self.work.cancel()

    async def execute(self) -> None:
        """Run ``process()`` with a heartbeat beside it, then record how it ended."""
        heartbeat = asyncio.create_task(self._heartbeat(), name=f"heartbeat:{self.key}")
        try:
            outcome = await self._run_process()
            heartbeat.cancel()
            await self.record(outcome)
        except Exception:
            # The database stayed away longer than the retries: the lease is no longer renewed,
            # so a sweeper ends the task when it expires.
            logger.exception("task bookkeeping failed key=%s", self.key,
                             extra={"task_key": self.key})
        finally:
            heartbeat.cancel()
            if self.work is not None:
                self.work.cancel()

    async def _run_process(self) -> Outcome:
        """Open the task's event stream, run ``process()``, and flush what it sent."""
        task, key = self.task, self.key
        position = await with_retries(lambda: store.current_seq(key), what="event log position")
        self.stream = self.context.stream = EventStream(key, position, task.get_event_retention())
        await broadcast.publish_task_state(task, self.stream.seq)
        outcome = await self._outcome()
        try:
            await self.stream.drain()
        except Exception as exc:
            if outcome.status == Status.COMPLETED:
                outcome = Outcome(Status.FAILED, error=error_of(exc))
        return outcome

    async def _outcome(self) -> Outcome:
        """Run ``process()`` under the task's timeout and say how it ended."""
        timeout = self.task.get_timeout()
        self.work = self.context.start(self.task.process(), name=f"process:{self.key}")
        if self.stop_reason is not None:
            self.work.cancel()
        try:
            async with asyncio.timeout(timeout) as deadline:
                value = await self.work
            protocol.encode({"final_value": value})  # refuse what the DB could not store
            return Outcome(Status.COMPLETED, final_value=value)
        except asyncio.CancelledError:
            if self.stop_reason is None:
                raise  # someone else cancelled us (the event loop is closing): let it through
            return self.stopped_outcome()
        except TimeoutError as exc:
            if deadline.expired():
                message = f"the task ran longer than its timeout of {timeout} s"
                return Outcome(Status.FAILED, error={"type": "TimeoutError", "message": message})
            return Outcome(Status.FAILED, error=error_of(exc))
        except Exception as exc:
            logger.warning("task failed key=%s error=%r", self.key, exc,
                           extra={"task_key": self.key})
            return Outcome(Status.FAILED, error=error_of(exc))

    def stopped_outcome(self) -> Outcome:
        """How a run this process stopped ends: by cancel, by shutdown, or with its lease lost."""
        if self.stop_reason == "cancel":
            return Outcome(Status.CANCELLED)
        if self.stop_reason == "shutdown":
            if self.task.attempts < self.task.max_attempts:
                return Outcome(Status.PENDING, error=SHUTDOWN_ERROR)
            return Outcome(Status.CANCELLED, error=SHUTDOWN_ERROR)
        return Outcome(LEASE_LOST)

    async def record(self, outcome: Outcome) -> None:
        """Write the outcome under the lease, then tell subscribers (and workers, for a retry)."""
        task, key = self.task, self.key
        if outcome.status == LEASE_LOST:
            logger.warning("lease lost, task abandoned key=%s", key, extra={"task_key": key})
            return
        last_seq = self.stream.logged_seq if self.stream is not None else task.last_seq
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
        task.status, task.final_value = outcome.status, outcome.final_value
        task.error = outcome.error
        task.last_seq, task.revision = last_seq, task.revision + 1
        logger.info("task ended key=%s status=%s", key, outcome.status, extra={"task_key": key})
        metrics.task_finished(key, outcome.status, task.started_at)
        await broadcast.publish_task_state(task, last_seq)
        if outcome.status == Status.PENDING:
            await broadcast.wake_workers()  # a retry: another worker should take it
        if outcome.status == Status.FAILED:
            await task.on_failure(outcome.error)

    async def _heartbeat(self) -> None:
        """Renew the lease; stop the run once the lease is lost or may have run out."""
        lease = app_settings.LEASE_SECONDS
        held_until = time.monotonic() + lease
        while True:
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
            asked_at = time.monotonic()
            try:
                held = await with_retries(
                    lambda: leases.renew(self.task, self.owner, lease), what="heartbeat",
                    attempts=3,
                )
            except Exception:
                logger.warning("heartbeat failed key=%s", self.key, exc_info=True,
                               extra={"task_key": self.key})
                if time.monotonic() < held_until:
                    continue
                # Unrenewed past its end, the lease may be swept and the task run elsewhere:
                # stop, so it never runs twice at once.
                held = False
            if not held:
                self.stop(LEASE_LOST)
                return
            held_until = asked_at + lease
            await self.control.join(self.key)  # refresh the membership before group_expiry
