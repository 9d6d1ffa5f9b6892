"""Prometheus metrics: ``/metrics`` read after real runs, per process and in multiprocess mode."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from django.test import AsyncClient, override_settings
from prometheus_client.parser import text_string_to_metric_families

from streamapp import broadcast
from streamapp.coordinator import coordinator
from streamapp.runner import leases
from tests.support.helpers import receive_until, receive_until_closed, run_to_end
from tests.support.processes import Daphne, manage, server_env
from tests.testapp.models import BurstTask, ErrorTask, StepTask

pytestmark = pytest.mark.django_db(transaction=True)

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape() -> Samples:
    response = await AsyncClient().get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    return parse(response.content.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class Change:
    """``change("streamapp_tasks_started_total", model=…)``: how much a sample moved."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return value(self.after, name, **labels) - value(self.before, name, **labels)



async def test_metrics_count_a_run_of_tasks(communicator_for):
    before = await scrape()
    for _ in range(3):
        await run_to_end(await BurstTask.objects.acreate(count=5))
    await run_to_end(await ErrorTask.objects.acreate(kind="ValueError"))

    watched = await StepTask.objects.acreate()
    ws = await communicator_for(watched)  # subscribing starts it (AUTO_START)
    await receive_until(ws, lambda f: f.get("status") == "running")
    for n in (1, 2):
        await watched.send_signal("step")
        await receive_until(ws, lambda f, n=n: f.get("seq") == n)
    during = Change(before, await scrape())
    await coordinator.cancel_task(watched)
    frames, code = await receive_until_closed(ws)
    assert frames[-1]["status"] == "cancelled" and code == 1000
    await ws.disconnect()
    after = Change(before, await scrape())

    burst, error, step = "testapp.bursttask", "testapp.errortask", "testapp.steptask"
    assert after("streamapp_tasks_started_total", model=burst) == 3
    assert after("streamapp_tasks_finished_total", model=burst, status="completed") == 3
    assert after("streamapp_task_duration_seconds_count", model=burst, status="completed") == 3
    assert after("streamapp_events_sent_total", model=burst) == 15
    assert after("streamapp_tasks_started_total", model=error) == 1
    assert after("streamapp_tasks_finished_total", model=error, status="failed") == 1
    assert after("streamapp_events_sent_total", model=error) == 1
    assert after("streamapp_tasks_finished_total", model=step, status="cancelled") == 1
    assert after("streamapp_events_sent_total", model=step) == 2
    # the watched task while it ran, and after
    assert during("streamapp_tasks_running", model=step) == 1
    assert after("streamapp_tasks_running", model=step) == 0
    assert after("streamapp_tasks_running", model=burst) == 0
    assert during("streamapp_sockets_connected") == 1
    assert during("streamapp_subscriptions") == 1
    assert after("streamapp_sockets_connected") == 0
    assert after("streamapp_subscriptions") == 0
    assert after("streamapp_events_delivered_total", source="live") == 2
    assert after("streamapp_gap_repairs_total") == 0


async def test_a_dropped_layer_message_counts_a_gap_repair_and_log_deliveries(
    communicator_for, monkeypatch
):
    publish = broadcast.publish_events
    dropped = asyncio.Event()

    async def drop_first(key, events):
        if not dropped.is_set():
            dropped.set()
            return False
        return await publish(key, events)

    task = await StepTask.objects.acreate()
    assert await coordinator.start_task(task)
    ws = await communicator_for(task)
    await receive_until(ws, lambda f: f["type"] == "state")
    before = await scrape()
    monkeypatch.setattr(broadcast, "publish_events", drop_first)
    await task.send_signal("step")
    await asyncio.wait_for(dropped.wait(), timeout=5)  # seq 1 is logged, its news lost
    await task.send_signal("step")
    frames = await receive_until(ws, lambda f: f.get("seq") == 2)
    assert [f["seq"] for f in frames if f["type"] == "event"] == [1, 2]
    change = Change(before, await scrape())
    assert change("streamapp_gap_repairs_total") == 1
    # the repair reads the log up to the newest seq it knows of: the live copy of 2 included
    assert change("streamapp_events_delivered_total", source="log") == 2
    assert change("streamapp_events_delivered_total", source="live") == 0
    await task.send_signal("step", "stop")


@pytest.mark.parametrize("max_attempts, outcome, finished", [(1, "failed", 1), (2, "retry", 0)])
async def test_an_expired_lease_counts_a_worker_lost(monkeypatch, max_attempts, outcome, finished):
    monkeypatch.setattr(StepTask, "max_attempts", max_attempts)
    task = await StepTask.objects.acreate()
    assert await leases.claim(task, "a-worker-that-died", lease_seconds=-1)
    before = await scrape()
    assert await coordinator.sweep() == 1
    change = Change(before, await scrape())
    model = "testapp.steptask"
    assert change("streamapp_lease_expiries_total", model=model, outcome=outcome) == 1
    assert change("streamapp_tasks_finished_total", model=model, status="failed") == finished
    await task.arefresh_from_db()
    assert task.status == ("pending" if outcome == "retry" else "failed")


@override_settings(STREAMAPP={"OPEN_ACCESS": True, "MAX_SUBSCRIPTIONS": 1})
async def test_a_rate_limited_subscription_is_counted(communicator_for):
    first, second = await StepTask.objects.acreate(), await StepTask.objects.acreate()
    ws = await communicator_for("/ws/tasks/")
    before = await scrape()
    await ws.send_json_to({"action": "subscribe", "task": first.task_key})
    await receive_until(ws, lambda f: f["type"] == "state")
    await ws.send_json_to({"action": "subscribe", "task": second.task_key})
    await receive_until(ws, lambda f: f.get("code") == "rate_limited")
    change = Change(before, await scrape())
    assert change("streamapp_rate_limit_rejections_total", limit="subscriptions") == 1
    await coordinator.cancel_task(first)


def test_a_missing_multiprocess_directory_stops_start_up_with_a_clear_error(tmp_path):
    missing = tmp_path / "not-created"
    env = server_env(PROMETHEUS_MULTIPROC_DIR=str(missing))
    with pytest.raises(RuntimeError) as failed:
        manage(env, "check")
    expected = f"PROMETHEUS_MULTIPROC_DIR='{missing}' is not a directory: create it"
    assert expected in str(failed.value)


@pytest.mark.slow
def test_multiprocess_mode_serves_the_sum_of_every_process(process_db, tmp_path):
    """Two `starttask` processes run tasks; the daphne process's /metrics counts both."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {**process_db.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    for _ in range(2):
        manage(env, "starttask", "demo.ExampleTask", "steps=3", "delay=0")
    with Daphne(env) as server:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
            samples = parse(response.read().decode())
        live_files = sorted(path.name for path in metrics_dir.glob("gauge_live*"))
    model = "demo.exampletask"
    assert value(samples, "streamapp_tasks_started_total", model=model) == 2
    assert value(samples, "streamapp_tasks_finished_total", model=model, status="completed") == 2
    assert value(samples, "streamapp_events_sent_total", model=model) == 10  # 5 events each
    assert value(samples, "streamapp_tasks_running", model=model) == 0
    # the exited processes dropped their live gauges; only daphne's remain
    assert live_files and all(name.endswith(f"_{server.process.pid}.db") for name in live_files)
