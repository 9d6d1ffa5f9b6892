"""The benchmark keeps working: its smoke size runs end to end and reports every figure.

Not a timed test: the figures themselves vary by machine; what must hold is that each exists
and that streamapp lost nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.report import TABLE_HEAD
from tests.support.processes import ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("REDIS_URL"),
                       reason="the smoke benchmark needs Redis: it runs in the services pass"),
]

TARGETS = ("floor", "baseline", "streamapp")
FAN_OUT_FIGURES = ("frames_per_s", "cpu_us_per_frame", "p50_ms", "p99_ms", "lost")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out),
         "--redis-url", os.environ["REDIS_URL"]],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out, json.loads((out / "latest.json").read_text()), result.stdout


def test_every_figure_is_measured_for_every_target_on_both_layers(smoke):
    _, results, _ = smoke
    assert list(results["layers"]) == ["memory", "redis"]
    for layer, figures in results["layers"].items():
        runs = figures["fanout"]
        for mode in ("max", "fixed"):
            for subscribers in (1, 10):
                by_target = {r["target"]: r for r in runs
                             if r["mode"] == mode and r["subscribers"] == subscribers}
                assert set(by_target) == set(TARGETS), (layer, mode, subscribers)
                for target, run in by_target.items():
                    assert run["received"] > 0, (layer, target, mode)
                    for figure in FAN_OUT_FIGURES:
                        assert isinstance(run[figure], (int, float)), (layer, target, figure)
                    assert run["frames_per_s"] > 0 and run["p99_ms"] >= run["p50_ms"] > 0
        assert {r["tasks"] for r in runs} == {1, 3}, "the many-tasks scenario ran"
        memory = {m["target"]: m for m in figures["memory"]}
        assert set(memory) == set(TARGETS)
        assert all(m["rss_after"] > m["rss_before"] > 0 for m in memory.values())
        short = {s["target"]: s for s in figures["short"]}
        # streamapp twice: tasks created through the coordinator, and saved by the caller first
        assert set(short) == {"baseline", "streamapp", "streamapp_saved_first"}
        assert all(s["completed"] == s["count"] and s["tasks_per_s"] > 0 for s in short.values())


def test_streamapp_lost_no_frame_and_kept_every_seq_in_order(smoke):
    _, results, _ = smoke
    streamapp_runs = [run for figures in results["layers"].values() for run in figures["fanout"]
                      if run["target"] == "streamapp"]
    assert len(streamapp_runs) == 2 * 2 * 3  # layers × modes × fan-outs
    for run in streamapp_runs:
        assert run["expected"] > 0
        assert (run["lost"], run["seq_errors"], run["failures"]) == (0, 0, 0), run
        assert run["complete"]


def test_the_table_and_the_plot_are_written(smoke):
    out, _, printed = smoke
    table = (out / "latest.md").read_text()
    assert printed.strip() == table.strip()
    for heading in ("## InMemoryChannelLayer", "## channels_redis RedisChannelLayer"):
        assert heading in table
    for label in ("frames/s (max rate)", "server CPU µs per frame", "latency p50 ms",
                  "latency p99 ms", "frames lost", "RSS per idle connection",
                  "short tasks started and finished per second",
                  TABLE_HEAD):
        assert label in table
    assert (out / "latest.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_short_tasks_run_embedded_and_by_one_and_two_workers_each_with_its_events(tmp_path):
    """``python -m bench.workers --smoke``: every task of every run completed, its log whole."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.workers", "--smoke", "--out", str(tmp_path),
         "--redis-url", os.environ["REDIS_URL"]],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads((tmp_path / "workers.json").read_text())
    runs = {run["label"]: run for run in results["runs"] if "check" in run}
    assert list(runs) == ["embedded", "1 worker", "2 workers"]
    assert [run["label"] for run in results["runs"]].count("baseline") == 2
    for label, run in runs.items():
        count = results["tasks"]
        assert run["count"] == run["completed"] == count > 0, label
        check = run["check"]
        assert check["tasks"] == check["whole"] == check["statuses"]["completed"] == count, label
        assert (check["missing"], check["doubled"]) == (0, 0), label
    assert all(run["tasks_per_s"] > 0 for run in results["runs"])
    assert results["whole"] is True
    assert result.stdout.strip() == (tmp_path / "workers.md").read_text().strip()


def test_a_small_reconnect_storm_brings_every_socket_back_with_its_whole_stream(tmp_path):
    """``python -m bench.storm`` at a small size: daphne restarts under streaming sockets."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.storm", "--sockets", "40", "--processes", "2",
         "--rate", "5", "--seconds", "8", "--give-up", "30", "--out", str(tmp_path),
         "--redis-url", os.environ["REDIS_URL"]],
        cwd=ROOT, capture_output=True, text=True, timeout=110,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    storm = json.loads((tmp_path / "storm.json").read_text())
    assert storm["reconnects"] == 40  # every socket was closed by the restart, and came back
    assert (storm["not_back"], storm["not_streaming"], storm["seq_errors"]) == (0, 0, 0)
    assert storm["received"] == storm["expected"] == 40 * 40 and storm["complete"] is True
    assert storm["up_seconds"] <= storm["back_seconds"] <= storm["streaming_seconds"]
