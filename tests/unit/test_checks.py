"""System checks: each one triggered by the misconfiguration it exists for."""

from __future__ import annotations

import io

import pytest
from django.apps import apps
from django.core import checks
from django.core.management import call_command
from django.test import modify_settings, override_settings

from demo.models import ExampleTask, FailingTask
from streamapp.checks import config as streamapp_checks
from streamapp.keys import stream_task_models

NO_SUCH_BACKEND = {"default": {"BACKEND": "nowhere.ChannelLayer"}}
IN_MEMORY = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer",
                     "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}}


def ids() -> list[str]:
    return [message.id for message in checks.run_checks() if message.id.startswith("streamapp.")]


@pytest.fixture
def worker_process():
    streamapp_checks.mark_worker_process()
    yield
    streamapp_checks.mark_worker_process(False)


def test_a_correct_configuration_has_no_warnings():
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        assert ids() == []


def test_in_memory_layer_in_a_runtasks_worker(worker_process):
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        [warning] = [m for m in checks.run_checks() if m.id.startswith("streamapp.")]
    assert warning.id == "streamapp.W001"
    assert "this process is a `runtasks` worker" in warning.msg
    with override_settings(CHANNEL_LAYERS=REDIS):
        assert ids() == []


def test_a_worker_without_an_in_memory_layer_is_not_warned(worker_process):
    for layers in (REDIS, NO_SUCH_BACKEND, {}):
        with override_settings(CHANNEL_LAYERS=layers):
            assert "streamapp.W001" not in ids()


def test_runtasks_on_the_command_line_is_recognised(monkeypatch):
    monkeypatch.setattr("sys.argv", ["manage.py", "runtasks"])
    assert streamapp_checks.is_worker_process()
    monkeypatch.setattr("sys.argv", ["manage.py", "check"])
    assert not streamapp_checks.is_worker_process()


@override_settings(CHANNEL_LAYERS=IN_MEMORY, STREAMAPP={"RUN_TASKS": False})
def test_in_memory_layer_when_tasks_run_in_separate_workers():
    [warning] = [m for m in checks.run_checks() if m.id == "streamapp.W001"]
    assert "RUN_TASKS'] is False" in warning.msg


@modify_settings(INSTALLED_APPS={"remove": ["channels"]})
def test_channels_missing_from_installed_apps():
    assert "streamapp.W002" in ids()


@override_settings(MIGRATION_MODULES={"testapp": None})
def test_task_models_of_an_app_without_migrations():
    warned = [m.obj._meta.label for m in checks.run_checks() if m.id == "streamapp.W003"]
    testapp_tasks = [m._meta.label for m in stream_task_models() if m._meta.app_label == "testapp"]
    assert "testapp.BurstTask" in testapp_tasks
    assert sorted(warned) == sorted(testapp_tasks)


@override_settings(MIGRATION_MODULES={"demo": "tests.partial_migrations"})
def test_a_task_model_added_without_its_migration():
    warned = [m for m in checks.run_checks() if m.id == "streamapp.W003"]
    assert sorted(m.obj._meta.label for m in warned) == [
        "demo.FailingTask", "demo.SignalTask", "demo.SlowTask"
    ]
    assert warned[0].hint == "Run `manage.py makemigrations demo`."
    only_testapp = streamapp_checks.check_task_models_migrated([apps.get_app_config("testapp")])
    assert only_testapp == []


@pytest.mark.parametrize("lease, heartbeat", [(5, 10), (10, 10)])
def test_a_lease_not_longer_than_the_heartbeat(lease, heartbeat):
    with override_settings(STREAMAPP={"LEASE_SECONDS": lease, "HEARTBEAT_SECONDS": heartbeat}):
        assert ids() == ["streamapp.W004"]
    assert ids() == []


@override_settings(STREAMAPP={"LEASE_SECONDS": 5, "HEARTBEAT_SECONDS": 10})
def test_manage_py_check_reports_the_warning():
    out, err = io.StringIO(), io.StringIO()
    call_command("check", stdout=out, stderr=err)
    report = out.getvalue() + err.getvalue()
    assert "?: (streamapp.W004) STREAMAPP['LEASE_SECONDS'] (5) is not longer than" in report



async def loud_process(task):
    return "loud"


def test_a_proxy_with_its_own_process_is_warned(proxy_of):
    loud = proxy_of(ExampleTask, process=loud_process)
    proxy_of(FailingTask)  # only another name for the rows
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        warned = [m for m in checks.run_checks() if m.id == "streamapp.W005"]
    assert [m.obj for m in warned] == [loud]
    assert "runs the pending rows of its table as demo.ExampleTask" in warned[0].msg


def test_a_proxy_is_judged_by_the_table_it_uses(proxy_of):
    proxy_task_model = proxy_of(FailingTask)
    with override_settings(CHANNEL_LAYERS=IN_MEMORY):
        assert ids() == []
    with override_settings(MIGRATION_MODULES={"demo": "tests.partial_migrations"}):
        warned = [m.obj for m in checks.run_checks() if m.id == "streamapp.W003"]
    assert FailingTask in warned and proxy_task_model not in warned
