"""Operator commands: listtasks, tailtask against a running task, cleanup_tasks."""

from __future__ import annotations

import asyncio
import io
import threading
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from demo.models import ExampleTask
from streamapp.coordinator import coordinator
from streamapp.eventlog import store
from streamapp.ops.cleanup import parse_age
from tests.support.helpers import command, run_to_end
from tests.testapp.models import BurstTask, ErrorTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)


class WatchedOutput(io.StringIO):
    """A stdout the test can wait on: ``wait_for(text)`` returns once ``text`` was written."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty
        self.changed = threading.Condition()

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        with self.changed:
            written = super().write(text)
            self.changed.notify_all()
        return written

    def wait_for(self, text: str, timeout: float = 10) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: text in self.getvalue(), timeout), self.getvalue()




# -- listtasks --------------------------------------------------------------------------------


async def test_listtasks_filters_by_model_and_status_as_a_table():
    done = await BurstTask.objects.acreate(count=2)
    await run_to_end(done)
    failed = await ErrorTask.objects.acreate()
    await run_to_end(failed)
    waiting = await StepTask.objects.acreate()

    lines = (await command("listtasks", "--status", "failed")).splitlines()
    assert lines[0].split() == ["KEY", "STATUS", "CREATED", "DURATION", "ATTEMPTS", "ERROR"]
    assert len(lines) == 2
    key, status, _date, _time, duration, attempts, error = lines[1].split()
    assert (key, status, attempts, error) == (failed.task_key, "failed", "1", "ValueError")
    assert duration.endswith("s")

    lines = (await command("listtasks", "-m", "testapp.BurstTask", "-m", "testapp.steptask")
             ).splitlines()
    assert [line.split()[:2] for line in lines[1:]] == [
        [waiting.task_key, "pending"], [done.task_key, "completed"]  # newest first
    ]
    assert lines[1].split()[4:] == ["-", "0"]  # never started: no duration, no attempt
    assert (await command("listtasks", "-m", "testapp.steptask", "-s", "running")
            ) == "No tasks match.\n"
    with pytest.raises(CommandError, match="no task model auth.user"):
        await command("listtasks", "--model", "auth.user")
    with pytest.raises(CommandError, match="--limit must be at least 1"):
        await command("listtasks", "--limit", "0")


# -- tailtask ---------------------------------------------------------------------------------


async def test_tailtask_follows_a_running_task_live_and_exits_on_its_final_state():
    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    out = WatchedOutput()
    tail = asyncio.ensure_future(command("tailtask", task.task_key, "--interval", "0.05",
                                         stdout=out))
    await asyncio.to_thread(out.wait_for, "== running (seq 0)")
    for n in (1, 2):
        await task.send_signal("step")
        await asyncio.to_thread(out.wait_for, f'#{n} step {{"n": {n}}}')  # shown while it runs
    await task.send_signal("step", "stop")
    output = await asyncio.wait_for(tail, timeout=10)
    assert output.splitlines() == [
        "== running (seq 0)",
        '#1 step {"n": 1}',
        '#2 step {"n": 2}',
        "== completed (seq 2) final_value=2",
    ]


async def test_tailtask_draws_a_progress_bar_from_progress_events():
    task = await ExampleTask.objects.acreate(message="bar", steps=4, delay=0)
    await run_to_end(task)
    lines = (await command("tailtask", task.task_key)).splitlines()
    assert lines[0] == '#1 start {"message": "bar", "total_steps": 4}'
    assert [line.split("  #")[0] for line in lines[1:5]] == [
        "[########----------------------] 1/4  25%",
        "[###############---------------] 2/4  50%",
        "[######################--------] 3/4  75%",
        "[##############################] 4/4 100%",
    ]
    assert lines[-1] == '== completed (seq 6) final_value="Completed processing: bar"'

    # On a terminal the bar redraws one line instead of scrolling.
    tty = WatchedOutput(tty=True)
    await command("tailtask", task.task_key, "--since", "2", stdout=tty)
    assert tty.getvalue().startswith("\r\x1b[2K[###############---------------] 2/4  50%")
    assert tty.getvalue().count("\n") == 3  # the bar's line, the complete event, the state


async def test_tailtask_exits_non_zero_when_the_task_did_not_complete():
    task = await ErrorTask.objects.acreate(kind="KeyError")
    await run_to_end(task)
    out = io.StringIO()
    with pytest.raises(CommandError, match=f"{task.task_key} ended failed"):
        await command("tailtask", task.task_key, stdout=out)
    assert out.getvalue().splitlines()[-1] == "== failed (seq 1) KeyError: 'failure on purpose'"
    with pytest.raises(CommandError, match="no task testapp.steptask.999999"):
        await command("tailtask", "testapp.steptask.999999")


async def test_tailtask_says_when_the_log_no_longer_holds_the_first_events():
    task = await BurstTask.objects.acreate(count=10)
    await run_to_end(task)
    assert await store.trim(task.task_key, keep=3) == 7
    lines = (await command("tailtask", task.task_key)).splitlines()
    assert lines[0] == "! history_truncated: events 1-7 are no longer kept"
    assert lines[1:] == ['#8 tick {"i": 8}', '#9 tick {"i": 9}', '#10 tick {"i": 10}',
                         "== completed (seq 10) final_value=10"]


# -- cleanup_tasks ----------------------------------------------------------------------------


async def test_cleanup_tasks_dry_run_counts_and_the_real_run_deletes_old_finished_tasks():
    old_done, old_failed, recent = (
        await BurstTask.objects.acreate(count=3), await ErrorTask.objects.acreate(),
        await BurstTask.objects.acreate(count=2),
    )
    for task in (old_done, old_failed, recent):
        await run_to_end(task)
    long_ago = timezone.now() - timedelta(days=8)
    for task in (old_done, old_failed):  # arrange: they ended eight days ago
        await type(task).objects.filter(pk=task.pk).aupdate(completed_at=long_ago)
    old_pending = await StepTask.objects.acreate(created_at=long_ago)  # never ended: kept

    dry = (await command("cleanup_tasks", "--older-than", "7d", "--dry-run")).splitlines()
    assert dry[0].startswith("Would delete 2 tasks and 4 events (ended before ")
    assert dry[1:] == ["  testapp.bursttask: 1", "  testapp.errortask: 1"]
    assert await BurstTask.objects.acount() == 2
    assert await store.current_seq(old_done.task_key) == 3

    real = (await command("cleanup_tasks", "--older-than", "1w")).splitlines()
    assert real[0].startswith("Deleted 2 tasks and 4 events")
    assert [t.pk async for t in BurstTask.objects.all()] == [recent.pk]
    assert not await ErrorTask.objects.aexists()
    assert await StepTask.objects.filter(pk=old_pending.pk).aexists()
    assert await store.current_seq(old_done.task_key) == 0
    assert await store.current_seq(old_failed.task_key) == 0
    assert await store.current_seq(recent.task_key) == 2


async def test_cleanup_deletes_a_task_once_with_the_events_its_proxy_logged(proxy_of):
    proxy = proxy_of(BurstTask)
    task = await proxy.objects.acreate(count=2)
    await run_to_end(task)  # logged under testapp.proxybursttask.<pk>
    await BurstTask.objects.filter(pk=task.pk).aupdate(
        completed_at=timezone.now() - timedelta(days=8)
    )

    real = (await command("cleanup_tasks", "--older-than", "7d")).splitlines()

    assert real[0].startswith("Deleted 1 tasks and 2 events")
    assert real[1:] == ["  testapp.bursttask: 1"]
    assert await store.current_seq(task.task_key) == 0


def test_ages_parse_and_a_bad_age_is_refused():
    assert parse_age("7d") == timedelta(days=7)
    assert parse_age("1d12h") == timedelta(hours=36)
    assert parse_age(" 90 s") == timedelta(seconds=90)
    assert parse_age("2w") == timedelta(weeks=2)
    for bad in ("", "7", "7x", "-7d", "d7"):
        with pytest.raises(ValueError, match="expected an age like 7d"):
            parse_age(bad)
    with pytest.raises(CommandError, match="--older-than: expected an age"):
        call_command("cleanup_tasks", "--older-than", "soon")
