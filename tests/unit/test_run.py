"""One run (streamapp/runner/run.py): how each way of ending is recorded and announced.

The database and the in-memory layer are real; the run is driven by signals and ``stop`` calls,
never by sleeps (scripts/mutation runs these).
"""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import pytest
from channels.layers import get_channel_layer
from django.db import OperationalError
from django.utils import timezone

from streamapp import broadcast, outages
from streamapp.eventlog import store
from streamapp.models import Status
from streamapp.runner import leases, outcomes
from streamapp.runner.control import ControlChannel
from streamapp.runner.run import (
    LEASE_LOST,
    SHUTDOWN_ERROR,
    Outcome,
    Run,
    cancelled_error,
    error_of,
)
from tests.runnerapp.models import RetryTask
from tests.testapp.models import ErrorTask, StepTask

# Flushing only these apps' tables after each test keeps a test to milliseconds.
pytestmark = pytest.mark.django_db(
    transaction=True, available_apps=["streamapp", "tests.testapp", "tests.runnerapp"]
)

OWNER = "host:1:run"


class Announcements:
    """What the layer carried to a task's subscribers and to the workers, in order."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.layer = get_channel_layer()
        self.channel: str | None = None
        self.messages: list[dict] = []

    async def listen(self) -> None:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(broadcast.task_group(self.key), self.channel)
        await self.layer.group_add(broadcast.WORKERS_GROUP, self.channel)

    async def drain(self) -> list[dict]:
        """Everything announced so far (the in-memory layer delivers at once)."""
        while True:
            try:
                message = await asyncio.wait_for(self.layer.receive(self.channel), timeout=0.05)
            except TimeoutError:
                return self.messages
            self.messages.append(message)

    async def shape(self) -> list[tuple]:
        shapes = []
        for m in await self.drain():
            if m["type"] == "stream.state":
                shapes.append(("state", m["status"], m["seq"]))
            elif m["type"] == "stream.events":
                shapes.append(("events", [seq for seq, _ in m["events"]]))
            else:
                shapes.append((m["type"],))
        return shapes


class Control(ControlChannel):
    """The control channel, recording the memberships a run renews."""

    def __init__(self) -> None:
        super().__init__(lambda message: None)
        self.joins: list[str] = []

    async def join(self, key: str) -> None:
        self.joins.append(key)


async def claimed(model=StepTask, timeout=None, process=None, on_failure=None, **fields):
    """A claimed task and its Run; ``timeout``, ``process``, ``on_failure`` override the model's."""
    task = await model.objects.acreate(**fields)
    for name, value in (("timeout", timeout), ("process", process), ("on_failure", on_failure)):
        if value is not None:
            setattr(task, name, value)
    run = Run(task, OWNER, Control())
    run.lease = await leases.claim(task, OWNER, 30.0)
    assert run.lease is not None
    heard = Announcements(task.task_key)
    await heard.listen()
    return task, run, heard


async def until(condition, timeout=5.0):
    """Let the loop run until ``condition()`` holds (each turn is a step of the run)."""

    async def turns():
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(turns(), timeout)


async def started(run):
    run.job = asyncio.create_task(run.execute())
    await until(lambda: run.work is not None)  # process() is created once the stream is open
    return run.job


async def row(task):
    return await type(task).objects.aget(pk=task.pk)


async def test_a_completed_run_is_recorded_then_announced_after_its_last_event():
    task, run, heard = await claimed()
    job = await started(run)
    run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    seen = await row(task)
    assert (seen.status, seen.final_value, seen.error, seen.last_seq, seen.revision) == (
        Status.COMPLETED, 2, None, 2, 2,
    )
    assert seen.lease_owner == "" and seen.completed_at is not None
    assert (task.status, task.revision, task.last_seq, task.final_value) == (
        Status.COMPLETED, 2, 2, 2,
    )
    shape = await heard.shape()
    assert shape[0] == ("state", "running", 0) and shape[-1] == ("state", "completed", 2)
    assert [seq for s in shape if s[0] == "events" for seq in s[1]] == [1, 2]
    final = heard.messages[-1]
    assert final["revision"] == 2 and final["task"] == task.task_key
    assert '"status":"completed"' in final["frame"] and '"final_value":2' in final["frame"]


async def test_a_run_goes_on_from_the_seq_the_log_has():
    task, run, heard = await claimed()
    job = await started(run)
    run.context.deliver_signal("step", "go")
    await until(lambda: run.stream.seq >= 1)
    run.stop("cancel")
    await asyncio.wait_for(job, timeout=5)
    again = Run(task, "host:2:other", Control())
    again.lease = await leases.claim(task, "host:2:other", 30.0)  # started again, elsewhere
    job = await started(again)
    again.context.deliver_signal("step", "go")
    again.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert [s for s, _ in await store.since(task.task_key, 0)] == [1, 2]
    assert (await row(task)).last_seq == 2
    assert (await heard.shape())[-3:] == [
        ("state", "running", 1), ("events", [2]), ("state", "completed", 2),
    ]


async def test_a_failure_is_recorded_with_its_error_and_announced():
    task, run, heard = await claimed(ErrorTask, kind="ValueError")
    await asyncio.wait_for(run.execute(), timeout=5)
    seen = await row(task)
    assert seen.status == Status.FAILED and seen.last_seq == 1
    assert seen.error == {"type": "ValueError", "message": "failure on purpose"}
    assert (await heard.shape())[-1] == ("state", "failed", 1)
    assert '"error":{"type":"ValueError","message":"failure on purpose"}' in heard.messages[-1][
        "frame"
    ]


async def test_a_timeout_fails_the_task_with_timeout_error():
    task, run, heard = await claimed(timeout=0.05)
    await asyncio.wait_for(run.execute(), timeout=5)  # process() waits for a step forever
    seen = await row(task)
    assert seen.status == Status.FAILED
    assert seen.error == {
        "type": "TimeoutError", "message": "the task ran longer than its timeout of 0.05 s",
    }


async def test_a_timeout_error_raised_by_the_task_itself_is_its_own_failure():
    task, run, heard = await claimed(ErrorTask, kind="TimeoutError")
    await asyncio.wait_for(run.execute(), timeout=5)
    assert (await row(task)).error == {"type": "TimeoutError", "message": "failure on purpose"}


async def test_a_final_value_the_database_cannot_store_fails_the_task():
    async def odd_value():
        return {"when": object()}

    task, run, heard = await claimed(process=odd_value)
    await asyncio.wait_for(run.execute(), timeout=5)
    seen = await row(task)
    assert seen.status == Status.FAILED and seen.error["type"] == "EventNotSerializable"


async def test_cancel_ends_the_run_cancelled_with_no_error():
    task, run, heard = await claimed()
    job = await started(run)
    run.context.deliver_signal("step", "go")
    await until(lambda: run.stream.seq >= 1)
    run.stop("cancel")
    run.stop("shutdown")  # the first reason counts
    await asyncio.wait_for(job, timeout=5)
    seen = await row(task)
    assert (seen.status, seen.error, seen.last_seq) == (Status.CANCELLED, None, 1)
    assert (await heard.shape())[-1] == ("state", "cancelled", 1)


async def test_a_run_stopped_before_process_starts_never_runs_it():
    task, run, heard = await claimed()
    run.stop("cancel")
    await asyncio.wait_for(run.execute(), timeout=5)
    assert (await row(task)).status == Status.CANCELLED and run.work.cancelled()


async def test_shutdown_puts_a_task_with_attempts_left_back_to_pending_and_wakes_workers():
    task, run, heard = await claimed(RetryTask)
    job = await started(run)
    run.stop("shutdown")
    await asyncio.wait_for(job, timeout=5)
    seen = await row(task)
    assert (seen.status, seen.error, seen.completed_at) == (Status.PENDING, SHUTDOWN_ERROR, None)
    last_state, wake = (await heard.shape())[-2:]
    assert last_state[:2] == ("state", "pending") and wake == ("workers.wake",)
    assert last_state[2] == seen.last_seq  # whatever it had sent before the shutdown


async def test_shutdown_cancels_a_task_on_its_last_attempt():
    task, run, heard = await claimed()
    job = await started(run)
    run.stop("shutdown")
    await asyncio.wait_for(job, timeout=5)
    seen = await row(task)
    assert (seen.status, seen.error) == (Status.CANCELLED, SHUTDOWN_ERROR)
    assert ("workers.wake",) not in await heard.shape()


async def test_a_run_that_lost_its_lease_records_and_announces_nothing(caplog):
    task, run, heard = await claimed()
    job = await started(run)
    run.stop(LEASE_LOST)
    await asyncio.wait_for(job, timeout=5)
    assert f"lease lost, task abandoned key={task.task_key}" in caplog.text
    assert "bookkeeping failed" not in caplog.text
    seen = await row(task)
    assert (seen.status, seen.lease_owner, seen.revision) == (Status.RUNNING, OWNER, 1)
    assert await heard.shape() == [("state", "running", 0)]


async def test_an_outcome_whose_lease_was_taken_meanwhile_is_not_announced():
    task, run, heard = await claimed()
    job = await started(run)
    await type(task).objects.filter(pk=task.pk).aupdate(lease_owner="host:9:thief")
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert (await row(task)).status == Status.RUNNING
    assert await heard.shape() == [("state", "running", 0)]
    assert task.status == Status.RUNNING and task.revision == 1


async def test_a_failed_task_gets_its_on_failure_hook():
    failures = []

    async def on_failure(error):
        failures.append(error)

    task, run, heard = await claimed(ErrorTask, on_failure=on_failure, kind="KeyError")
    await asyncio.wait_for(run.execute(), timeout=5)
    assert failures == [{"type": "KeyError", "message": "'failure on purpose'"}]


async def test_error_of_names_the_exception_and_its_message():
    assert error_of(ValueError("bad")) == {"type": "ValueError", "message": "bad"}


# -- the heartbeat ---------------------------------------------------------------------------


@pytest.fixture
def beating(settings, monkeypatch):
    """Heartbeats every 10 ms. ``renewals`` gets the lease seconds of each renewal made, or the
    name of the error a renewal raised; ``failures`` are raised by the next renewals, in order,
    and ``always`` (when set) by every renewal after them."""
    settings.STREAMAPP = {**settings.STREAMAPP, "HEARTBEAT_SECONDS": 0.01, "LEASE_SECONDS": 30.0}
    real_renew = leases.renew
    state = SimpleNamespace(renewals=asyncio.Queue(), failures=[], always=None)

    async def renew(lease, lease_seconds):
        error = state.failures.pop(0) if state.failures else state.always
        if error is not None:
            state.renewals.put_nowait(type(error).__name__)
            raise error
        await real_renew(lease, lease_seconds)
        state.renewals.put_nowait(lease_seconds)

    monkeypatch.setattr(leases, "renew", renew)
    return state


async def renewal(beating):
    return await asyncio.wait_for(beating.renewals.get(), timeout=5)


async def test_the_heartbeat_renews_the_lease_for_lease_seconds_and_the_control_membership(
    beating,
):
    task, run, heard = await claimed()
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_expires_at=timezone.now())
    job = await started(run)
    assert await renewal(beating) == 30.0
    seen = await row(task)
    assert (seen.lease_expires_at - timezone.now()).total_seconds() > 25
    await until(lambda: run.control.joins)  # after a renewal, the control membership too
    assert run.control.joins[0] == task.task_key
    assert await renewal(beating) == 30.0  # and again, a heartbeat later
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert (await row(task)).status == Status.COMPLETED
    await asyncio.wait([run.heartbeat], timeout=5)
    assert run.heartbeat.cancelled()  # the run's end stopped its heartbeat


async def test_a_lease_taken_by_another_worker_stops_the_run_at_its_next_heartbeat(
    beating, caplog
):
    task, run, heard = await claimed()
    job = await started(run)
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="host:9:sweeper-retried")
    await asyncio.wait_for(job, timeout=5)  # no signal: the heartbeat stopped process()
    assert run.lease_lost and run.stop_reason == LEASE_LOST and run.work.cancelled()
    seen = await row(task)
    assert (seen.status, seen.lease_owner) == (Status.RUNNING, "host:9:sweeper-retried")
    assert await heard.shape() == [("state", "running", 0)]
    assert caplog.text.count(f"lease lost, stopping key={task.task_key}") == 1


async def test_a_heartbeat_the_database_missed_is_tried_again_within_the_lease(beating, caplog):
    beating.failures.append(OperationalError("server closed the connection"))
    task, run, heard = await claimed()
    job = await started(run)
    assert await renewal(beating) == "OperationalError"
    assert await renewal(beating) == 30.0  # retried, not left to the next heartbeat's turn
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert run.stop_reason is None and (await row(task)).status == Status.COMPLETED
    assert outages.database.failed_by_kind == {"heartbeat": 1} and not outages.database.down
    assert "heartbeat failed" not in caplog.text


async def test_a_database_away_longer_than_a_lease_fails_the_task_saying_so(
    beating, settings, caplog
):
    settings.STREAMAPP = {**settings.STREAMAPP, "LEASE_SECONDS": 0.05}
    beating.always = OperationalError("server closed the connection")
    task, run, heard = await claimed()
    job = await started(run)
    await asyncio.wait_for(job, timeout=5)  # a lease, not the default patience
    assert run.stop_reason == "database" and run.work.cancelled()
    seen = await row(task)
    assert seen.status == Status.FAILED and seen.error["type"] == "OperationalError"
    assert re.fullmatch(
        rf"the database did not answer for \d+ s \(heartbeat of {task.task_key}\); gave up: "
        "server closed the connection",
        seen.error["message"],
    )
    assert (await heard.shape())[-1] == ("state", "failed", 0)
    assert f"database away too long, failing the task key={task.task_key}" in caplog.text
    assert beating.renewals.qsize() >= 2  # it went on trying meanwhile


async def test_a_heartbeat_that_fails_for_another_reason_is_logged_and_the_run_goes_on(
    beating, caplog
):
    beating.failures.append(RuntimeError("a bug"))
    task, run, heard = await claimed()
    job = await started(run)
    assert await renewal(beating) == "RuntimeError"
    assert await renewal(beating) == 30.0  # the next heartbeat
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert run.stop_reason is None and (await row(task)).status == Status.COMPLETED
    assert f"heartbeat failed key={task.task_key}" in caplog.text


# -- what goes wrong around process() --------------------------------------------------------


@pytest.fixture
def failing_writes(monkeypatch):
    """``fail("append")`` makes the event log's appends raise, for good."""
    real_append = store.append

    def fail(what):
        async def broken(*args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(store, what, broken)

    yield fail
    monkeypatch.setattr(store, "append", real_append)


async def test_events_that_could_not_be_logged_fail_a_completed_run(failing_writes):
    task, run, heard = await claimed()
    job = await started(run)
    failing_writes("append")
    run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert run.work.result() == 1  # process() itself completed
    seen = await row(task)
    assert (seen.status, seen.error, seen.final_value, seen.last_seq) == (
        Status.FAILED, {"type": "RuntimeError", "message": "disk full"}, None, 0,
    )


async def test_a_failed_run_keeps_its_own_error_when_its_events_could_not_be_logged_either(
    failing_writes,
):
    task, run, heard = await claimed()
    job = await started(run)
    failing_writes("append")
    run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "raise")
    await asyncio.wait_for(job, timeout=5)
    assert (await row(task)).error == {"type": "ValueError", "message": "asked to fail"}


async def test_a_run_keeps_the_task_own_event_retention():
    task, run, heard = await claimed()
    task.event_retention = 2
    job = await started(run)
    for _ in range(4):
        run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert await store.oldest_seq(task.task_key) >= 3


async def test_a_run_whose_bookkeeping_fails_ends_quietly_for_the_sweeper(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr("streamapp.runner.run.EventStream", broken)  # opening the stream fails
    task, run, heard = await claimed()
    await asyncio.wait_for(run.execute(), timeout=5)
    assert run.work is None and (await row(task)).status == Status.RUNNING
    assert f"task bookkeeping failed key={task.task_key}" in caplog.text


async def test_an_outcome_recorded_before_the_stream_opened_keeps_the_task_last_seq():
    """The coordinator records a run stuck before it read the log (shutdown)."""
    task, run, heard = await claimed()
    await StepTask.objects.filter(pk=task.pk).aupdate(last_seq=3)
    task.last_seq = 3
    await run.record(Outcome(Status.CANCELLED, error=SHUTDOWN_ERROR))
    seen = await row(task)
    assert (seen.status, seen.last_seq, seen.error) == (Status.CANCELLED, 3, SHUTDOWN_ERROR)
    assert task.error == SHUTDOWN_ERROR


async def test_a_new_run_has_nothing_under_way():
    task = await StepTask.objects.acreate()
    run = Run(task, OWNER, Control())
    assert (run.lease, run.stream, run.job, run.work, run.heartbeat, run.stop_reason) == (
        None, None, None, None, None, None,
    )  # the coordinator tells a run it could not claim by its lease
    assert run.key == task.task_key and run.owner == OWNER and not run.lease_lost


async def test_a_cancel_that_names_who_cancelled_records_it():
    task, run, heard = await claimed()
    job = await started(run)
    run.stop("cancel", cancelled_error("ann"))
    await asyncio.wait_for(job, timeout=5)
    assert (await row(task)).error == {"type": "Cancelled", "message": "ann"}
    final = (await heard.drain())[-1]
    assert '"error":{"type":"Cancelled","message":"ann"}' in final["frame"]


def test_a_cancel_reason_is_cut_short_and_absent_when_unknown():
    assert cancelled_error(None) is None and cancelled_error("") is None
    assert cancelled_error("x" * 300) == {"type": "Cancelled", "message": "x" * 200}
    assert cancelled_error(42) == {"type": "Cancelled", "message": "42"}


async def test_a_lost_lease_overrides_any_other_stop():
    task, run, heard = await claimed()
    job = await started(run)
    run.stop("cancel")
    run.lose_lease()
    await asyncio.wait_for(job, timeout=5)
    assert run.stopped_outcome().status == LEASE_LOST
    assert (await row(task)).status == Status.RUNNING


# -- the lease lost by a write of the run ----------------------------------------------------


@pytest.fixture
def finishes(monkeypatch):
    """The outcomes the run tried to write (outcomes.finish), in order."""
    real_finish = outcomes.finish
    tried = []

    async def finish(lease, status, **kwargs):
        tried.append(status)
        return await real_finish(lease, status, **kwargs)

    monkeypatch.setattr(outcomes, "finish", finish)
    return tried


async def test_an_event_the_fence_refuses_stops_the_run_and_nothing_more_is_written(finishes):
    task, run, heard = await claimed()
    job = await started(run)
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="host:9:thief")
    run.context.deliver_signal("step", "go")
    await asyncio.wait_for(job, timeout=5)  # no "stop": the refused write stopped process()
    assert run.lease_lost and run.work.cancelled()
    assert await store.current_seq(task.task_key) == 0 and finishes == []
    assert await heard.shape() == [("state", "running", 0)]
    assert (await row(task)).lease_owner == "host:9:thief"


async def test_a_run_whose_last_events_the_fence_refused_records_nothing(finishes, caplog):
    """process() returned, then its last events were refused: the run is over for this
    process, and it does not try to write its outcome."""
    task, run, heard = await claimed()
    job = await started(run)
    await StepTask.objects.filter(pk=task.pk).aupdate(lease_owner="host:9:thief")
    run.context.deliver_signal("step", "go")
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert run.work.result() == 1 and run.lease_lost
    assert finishes == [] and await store.current_seq(task.task_key) == 0
    assert f"lease lost, task abandoned key={task.task_key}" in caplog.text
    assert await heard.shape() == [("state", "running", 0)]


# -- the outcome's write ---------------------------------------------------------------------


async def test_an_outcome_the_database_missed_is_recorded_once_it_answers(monkeypatch, finishes):
    recording = outcomes.finish  # the spy: it counts the tries that reach the database
    tries = []

    async def finish(*args, **kwargs):
        tries.append(args[1])
        if len(tries) == 1:
            raise OperationalError("server closed the connection")
        return await recording(*args, **kwargs)

    monkeypatch.setattr(outcomes, "finish", finish)
    task, run, heard = await claimed()
    job = await started(run)
    run.context.deliver_signal("step", "stop")
    await asyncio.wait_for(job, timeout=5)
    assert tries == [Status.COMPLETED, Status.COMPLETED] and finishes == [Status.COMPLETED]
    assert (await row(task)).status == Status.COMPLETED
    assert outages.database.failed_by_kind == {"final status": 1} and not outages.database.down
    assert await heard.shape() == [("state", "running", 0), ("state", "completed", 0)]


async def test_only_a_failed_task_gets_its_on_failure_hook():
    calls = []

    async def on_failure(error):
        calls.append(error)

    for stop in ("stop", "cancel"):
        task, run, heard = await claimed(on_failure=on_failure)
        job = await started(run)
        if stop == "stop":
            run.context.deliver_signal("step", "stop")
        else:
            run.stop("cancel")
        await asyncio.wait_for(job, timeout=5)
        assert (await row(task)).status in (Status.COMPLETED, Status.CANCELLED)
    assert calls == []
