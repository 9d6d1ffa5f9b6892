"""``runtasks`` and ``canceltask`` in this process; settings from the environment; checks."""

from __future__ import annotations

import pytest
from django.core.management.base import CommandError

from demo.models import ExampleTask, SlowTask
from streamapp.checks.config import (
    check_channel_layer_spans_processes,
    check_lease_outlives_heartbeat,
    check_runner_settings,
)
from streamapp.conf import from_environment
from streamapp.exceptions import StreamAppConfigurationError
from streamapp.runner import leases
from tests.conftest import USING_REDIS
from tests.support.helpers import command

pytestmark = pytest.mark.django_db(transaction=True)



async def test_runtasks_until_idle_runs_the_pending_tasks_and_exits():
    tasks = [await ExampleTask.objects.acreate(message=str(i), delay=0) for i in range(3)]
    output = await command("runtasks", "--until-idle", "--concurrency", "2")
    assert "concurrency=2" in output and "stopped after 3 runs" in output
    for task in tasks:
        assert f"claimed {task.task_key}" in output
        await task.arefresh_from_db()
        assert task.status == "completed"


async def test_canceltask_cancels_a_pending_task():
    task = await SlowTask.objects.acreate()
    assert (await command("canceltask", task.task_key)).strip() == f"{task.task_key} cancelled"
    await task.arefresh_from_db()
    assert task.status == "cancelled"


async def test_canceltask_explains_what_it_cannot_do():
    done = await ExampleTask.objects.acreate(delay=0)
    await command("runtasks", "--until-idle")
    with pytest.raises(CommandError, match="had already ended: completed"):
        await command("canceltask", done.task_key)
    with pytest.raises(CommandError, match="no task demo.exampletask.999999"):
        await command("canceltask", "demo.exampletask.999999")
    with pytest.raises(CommandError, match="malformed task key"):
        await command("canceltask", "not a key")


async def test_canceltask_on_a_task_running_elsewhere():
    task = await SlowTask.objects.acreate()
    assert await leases.claim(task, "elsewhere:1:0000", lease_seconds=30)  # runs elsewhere
    if USING_REDIS:  # the message goes out, but nobody runs it there to answer
        with pytest.raises(CommandError, match="is still running after 0.3 s"):
            await command("canceltask", task.task_key, "--timeout", "0.3")
    else:
        with pytest.raises(CommandError, match="in-memory channel layer cannot reach"):
            await command("canceltask", task.task_key)


def test_settings_come_from_streamapp_environment_variables():
    environ = {
        "STREAMAPP_LEASE_SECONDS": "2", "STREAMAPP_RUN_TASKS": "off",
        "STREAMAPP_WORKER_CONCURRENCY": "3", "STREAMAPP_DEFAULT_TIMEOUT": "none",
        "STREAMAPP_TEST_DB": "not a setting", "OTHER": "x",
    }
    assert from_environment(environ) == {
        "LEASE_SECONDS": 2.0, "RUN_TASKS": False, "WORKER_CONCURRENCY": 3,
        "DEFAULT_TIMEOUT": None,
    }
    assert from_environment({"STREAMAPP_DEFAULT_TIMEOUT": "1.5"}) == {"DEFAULT_TIMEOUT": 1.5}


@pytest.mark.parametrize("name, value", [
    ("RUN_TASKS", "maybe"), ("LEASE_SECONDS", "soon"), ("WORKER_CONCURRENCY", "2.5"),
])
def test_a_bad_environment_value_names_the_variable(name, value):
    with pytest.raises(StreamAppConfigurationError, match=f"STREAMAPP_{name}='{value}'"):
        from_environment({f"STREAMAPP_{name}": value})


def test_checks_refuse_lease_settings_that_cannot_work(settings):
    assert check_runner_settings() == []
    settings.STREAMAPP = {**settings.STREAMAPP, "LEASE_SECONDS": 5, "HEARTBEAT_SECONDS": 5,
                          "SWEEP_SECONDS": 0, "SHUTDOWN_TIMEOUT": 0}
    assert [m.id for m in check_runner_settings()] == ["streamapp.E002"]
    assert [m.id for m in check_lease_outlives_heartbeat()] == ["streamapp.W004"]


def test_checks_warn_when_web_processes_hand_off_over_an_in_memory_layer(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    expected = [] if USING_REDIS else ["streamapp.W001"]
    assert [m.id for m in check_channel_layer_spans_processes()] == expected


async def test_starttask_runs_the_task_here_by_default():
    output = await command("starttask", "demo.ExampleTask", "message=here", "steps=2", "delay=0")
    *_, said, key = output.splitlines()
    assert said == "Ran here and ended completed."
    task = await ExampleTask.objects.aget(pk=key.rsplit(".", 1)[1])
    assert task.status == "completed" and task.task_key == key


async def test_starttask_hands_the_task_to_the_workers_when_run_tasks_is_off(settings):
    settings.STREAMAPP = {**settings.STREAMAPP, "RUN_TASKS": False}
    output = await command("starttask", "demo.ExampleTask", "message=there")
    *_, said, key = output.splitlines()
    assert said == "Handed to the runtasks workers (RUN_TASKS is off here)."
    task = await ExampleTask.objects.aget(pk=key.rsplit(".", 1)[1])
    assert task.status == "pending"
