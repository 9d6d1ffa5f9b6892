"""One task executing in this process: ``process()`` under its timeout, its heartbeat, its event
stream and signal mailbox, and the outcome recorded under its lease.

Every write of the run is fenced by its lease (runner/leases.py): the first one refused
(``LeaseLost``) stops the run where it is, and it writes and announces nothing more. A database
outage is ridden out for up to LEASE_SECONDS: the writes retry, events wait in the stream; a
longer one fails the task with an error that says so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from .. import broadcast, metrics, protocol
from ..conf import app_settings
from ..context import RunContext
from ..dbretry import TRANSIENT_ERRORS, with_retries
from ..eventlog.stream import EventStream
from ..exceptions import LeaseLost
from ..models import Status, StreamTask
from . import leases, outcomes
from .control import ControlChannel

logger = logging.getLogger("streamapp.runner")

SHUTDOWN_ERROR = {"type": "WorkerShutdown", "message": "the worker shut down before the task ended"}
LEASE_LOST = "lease_lost"  # an outcome this process must not record: another one owns the task
DATABASE_GONE = "database"  # the database stayed away longer than the run rides out


@dataclass
class Outcome:
    status: str
    final_value: Any = None
    error: dict[str, str] | None = None


def cancelled_error(reason: str | None) -> dict[str, str] | None:
    """A cancelled task's ``error``: who or what cancelled it, when known (DESIGN §3)."""
    return None if not reason else {"type": "Cancelled", "message": str(reason)[:200]}


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
        self.lease: leases.Lease | None = None  # set once claimed: the token of every write
        self.stream: EventStream | None = None  # set once the run has read the log's position
        self.job: asyncio.Task[None] | None = None  # the whole run; None while still claiming
        self.work: asyncio.Task[Any] | None = None  # process() itself: what cancel and timeout stop
        self.heartbeat: asyncio.Task[None] | None = None  # from its first beat on
        self.stop_reason: str | None = None  # "cancel", "shutdown", "database" once stopped
        self.stop_error: dict[str, str] | None = None  # why: a cancel's who, a "database" stop
        self.lease_lost = False  # a write was refused: record nothing, announce nothing

    def stop(self, reason: str, error: dict[str, str] | None = None) -> None:
        """Cancel ``process()`` (now, or as soon as it is created); the first reason counts."""
        if self.stop_reason is None:
            self.stop_reason, self.stop_error = reason, error
        if self.work is not None:
            self.work.cancel()

    def lose_lease(self) -> None:
        """A fenced write was refused: stop at once, whatever else stopped the run."""
        if not self.lease_lost:
            logger.warning("lease lost, stopping key=%s", self.key, extra={"task_key": self.key})
        self.lease_lost = True
        self.stop(LEASE_LOST)

    async def retrying(self, operation: Any, what: str) -> Any:
        """A database operation of the run, retried through an outage for up to a lease."""
        return await with_retries(
            operation, what=what, key=self.key, patience=app_settings.LEASE_SECONDS
        )

    async def execute(self) -> None:
        """Run ``process()`` with a heartbeat beside it, then record how it ended.

        The heartbeat's task starts at its first beat, HEARTBEAT_SECONDS in: a short task never
        has one."""
        first_beat = asyncio.get_running_loop().call_later(
            app_settings.HEARTBEAT_SECONDS, self._start_heartbeat
        )
        try:
            outcome = await self._run_process()
            self._stop_heartbeat(first_beat)
            await self.record(outcome)
        except Exception:
            # The database stayed away longer than the retries: the lease is no longer renewed,
            # so a sweeper ends the task when it expires.
            logger.exception("task bookkeeping failed key=%s", self.key,
                             extra={"task_key": self.key})
        finally:
            self._stop_heartbeat(first_beat)
            if self.work is not None:
                self.work.cancel()

    def _start_heartbeat(self) -> None:
        self.heartbeat = asyncio.create_task(self._heartbeat(), name=f"heartbeat:{self.key}")

    def _stop_heartbeat(self, first_beat: asyncio.TimerHandle) -> None:
        first_beat.cancel()
        if self.heartbeat is not None:
            self.heartbeat.cancel()

    async def _run_process(self) -> Outcome:
        """Open the task's event stream, run ``process()``, and flush what it sent."""
        task, key = self.task, self.key
        # A retry goes on from what was durably logged (read with the claim); the row's
        # last_seq outlives a purged log.
        position = max(task.last_seq, self.lease.logged_seq)
        self.stream = self.context.stream = EventStream(
            key, position, task.get_event_retention(),
            fence=self.lease, on_lease_lost=self.lose_lease,
        )
        await broadcast.publish_task_state(task, self.stream.seq)
        outcome = await self._outcome()
        try:
            await self.stream.drain()
        except Exception as exc:
            if outcome.status == Status.COMPLETED:
                outcome = Outcome(Status.FAILED, error=error_of(exc))
        return Outcome(LEASE_LOST) if self.lease_lost else outcome

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
        """How a run this process stopped ends: by cancel, by shutdown, by a database outage
        longer than the run rides out, or with its lease lost."""
        if self.lease_lost:
            return Outcome(LEASE_LOST)
        if self.stop_reason == DATABASE_GONE:
            return Outcome(Status.FAILED, error=self.stop_error)
        if self.stop_reason == "cancel":
            return Outcome(Status.CANCELLED, error=self.stop_error)
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
        try:
            await self.retrying(
                lambda: outcomes.finish(
                    self.lease, outcome.status, last_seq=last_seq,
                    final_value=outcome.final_value, error=outcome.error,
                ),
                "final status",
            )
        except LeaseLost:
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
        """Renew the lease every HEARTBEAT_SECONDS; stop the run once it is lost, or once the
        database has stayed away for longer than a lease."""
        lease_seconds = app_settings.LEASE_SECONDS
        while True:  # started at the first beat: renew, then wait for the next
            try:
                await self.retrying(lambda: leases.renew(self.lease, lease_seconds), "heartbeat")
            except LeaseLost:
                self.lose_lease()
                return
            except TRANSIENT_ERRORS as exc:
                logger.error("database away too long, failing the task key=%s error=%s",
                             self.key, exc, extra={"task_key": self.key})
                self.stop(DATABASE_GONE, error_of(exc))
                return
            except Exception:
                logger.exception("heartbeat failed key=%s", self.key, extra={"task_key": self.key})
            else:
                await self.control.join(self.key)  # refresh the membership before group_expiry
            await asyncio.sleep(app_settings.HEARTBEAT_SECONDS)
