"""The benchmark's output: a markdown table per layer, the raw figures as JSON, and a plot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .plot import plot
from .sizes import FanOut
from .targets import TARGET_NAMES

LAYER_NAMES = {
    "memory": "InMemoryChannelLayer",
    "redis": "channels_redis RedisChannelLayer",
    "pubsub": "channels_redis RedisPubSubChannelLayer",
}
CLIENT_BOUND = 0.9  # a load generator this busy may be what limits a run
TABLE_HEAD = "| figure | floor | baseline | streamapp | streamapp/baseline | streamapp/floor |"
FEW_TICKS = 20  # CPU read in clock ticks (10 ms): fewer than this in a window is imprecise

METHOD = """\
One server process (daphne; uvicorn with `--server uvicorn`) serves all three on each layer:
**floor** (a bare ASGI app sending each event's frame, encoded once, to its sockets),
**baseline** (the textbook Channels consumer: one `AsyncJsonWebsocketConsumer` per socket joins a
group, `group_send` per event, `send_json` per socket) and **streamapp** (a `StreamTask` watched
through the real consumers on `ws/tasks/<app>/<model>/<pk>/`, event log on SQLite). The load
generator is one separate process of `websockets` clients. Every layer keeps its default
configuration (in-memory and `RedisChannelLayer`: capacity 100 messages per channel, expiry 60 s,
so `group_send` drops silently into a full channel; pub/sub: unbounded local queues), and the
server its defaults.
Producers yield to the event loop once per event. Max-rate runs give frames/s and CPU; fixed-rate
runs give latency, from the event's creation (`time.time()` in the producer) to the frame's
arrival. Ratios are streamapp ÷ the other: above 1 is better for frames/s and tasks/s, below 1
for CPU, latency and memory."""


def number(value: float | None, spec: str = ",.0f") -> str:
    return "–" if value is None else format(value, spec)


def write(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path, Path]:
    """latest.json, latest.md and latest.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data, table, chart = out_dir / "latest.json", out_dir / "latest.md", out_dir / "latest.png"
    data.write_text(json.dumps(results, indent=1))
    table.write_text(markdown(results))
    plot(results, chart)
    return data, table, chart


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    packages = ", ".join(f"{name} {v}" for name, v in machine["packages"].items())
    lines = [
        f"# Fan-out benchmark ({results['sizes']})",
        "",
        f"{results['started']} · {machine['cpu']}, {machine['cores']} cores · "
        f"{machine['system']} · Python {machine['python']} · {packages}",
        "",
        f"Load average before {_load(machine['load_average_before'])}, after "
        f"{_load(machine.get('load_average_after'))} · `{results['command']}` · "
        f"{results.get('seconds', 0):.0f} s",
        "",
        METHOD,
    ]
    for layer, figures in results["layers"].items():
        lines += ["", f"## {LAYER_NAMES[layer]}", "", TABLE_HEAD, "| --- |" + " ---: |" * 5]
        lines += [_row(label, values, spec, ratio) for label, values, spec, ratio in rows(figures)]
        lines += [f"- {note}" for note in notes(figures)]
    return "\n".join(lines) + "\n"


def rows(figures: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str, bool]]:
    """(label, value per target, format, has a ratio) for every figure of one layer."""
    runs = figures["fanout"]
    for fanout in fanouts_of(runs):
        fast = _by_target(runs, fanout, "max")
        fixed = _by_target(runs, fanout, "fixed")
        rate = next(iter(fixed.values()))["rate"]
        label = fanout.label
        yield f"{label}: frames/s (max rate)", _pick(fast, "frames_per_s"), ",.0f", True
        yield f"{label}: server CPU µs per frame", _pick(fast, "cpu_us_per_frame"), ",.1f", True
        yield f"{label}: latency p50 ms ({rate:.3g} events/s)", _pick(fixed, "p50_ms"), ",.1f", True
        yield f"{label}: latency p99 ms ({rate:.3g} events/s)", _pick(fixed, "p99_ms"), ",.1f", True
        lost = {name: f"{fast[name]['lost']:,} / {fixed[name]['lost']:,}" for name in fast}
        yield f"{label}: frames lost (max rate / fixed rate)", lost, "", False
    scale = {run["target"]: run for run in figures.get("scale") or ()}
    if scale:
        run = next(iter(scale.values()))
        label = f"1 task × {run['subscribers']:,} at {run['rate']:g} events/s"
        yield f"{label}: latency p50 ms", _pick(scale, "p50_ms"), ",.1f", True
        yield f"{label}: latency p99 ms", _pick(scale, "p99_ms"), ",.1f", True
        yield f"{label}: server CPU µs per frame", _pick(scale, "cpu_us_per_frame"), ",.1f", True
        yield f"{label}: frames lost", _pick(scale, "lost"), ",", False
        busy = {name: r["client_busy"] * 100 for name, r in scale.items()}
        yield (f"{label}: busiest of {run['processes']} load generators, % of a core", busy,
               ",.0f", False)
    idle = figures.get("idle")
    if idle:
        yield (f"{idle['subscriptions']:,} idle subscriptions ({idle['sockets']:,} sockets): "
               "server CPU, % of a core", {"streamapp": idle["core_share"] * 100}, ",.1f", False)
    if figures.get("memory"):
        memory = {run["target"]: run["bytes_per_socket"] / 1024 for run in figures["memory"]}
        sockets = figures["memory"][0]["sockets"]
        yield f"RSS per idle connection, KiB ({sockets:,} sockets)", memory, ",.1f", True
    connects = figures.get("connect") or []
    if connects:
        count = connects[0]["sockets"]
        yield (f"{count:,} sockets connected and subscribed, s",
               {run["target"]: run["seconds"] for run in connects}, ",.2f", True)
        yield ("server CPU µs per socket connected",
               {run["target"]: run["cpu_us_per_socket"] for run in connects}, ",.0f", True)
    if figures.get("short"):
        short = {run["target"]: run["tasks_per_s"] for run in figures["short"]}
        yield "short tasks started and finished per second", short, ",.0f", True
        if "streamapp_saved_first" in short:
            yield ("short tasks per second, saved by the caller first (acreate)",
                   {"streamapp": short["streamapp_saved_first"],
                    "baseline": short.get("baseline")}, ",.0f", True)


def notes(figures: dict[str, Any]) -> Iterator[str]:
    """What a reader must know to trust (or not) the table."""
    for run in figures["fanout"]:
        where = f"{run['target']} {FanOut(run['tasks'], run['subscribers']).label} {run['mode']}"
        if run["target"] == "streamapp" and (run["lost"] or run["seq_errors"]):
            yield (f"**streamapp lost {run['lost']} frames, {run['seq_errors']} seq errors** "
                   f"({where})")
        if run["failures"]:
            yield f"{where}: {run['failures']} failures, e.g. {run['failure_examples'][0]}"
        if run["mode"] == "max" and run["cpu_ticks"] < FEW_TICKS:
            yield (f"{where}: its CPU figure rests on {run['cpu_ticks']} clock ticks "
                   "(imprecise; a bigger size gives longer windows)")
        if (run["client_busy"] or 0) > CLIENT_BOUND:
            yield (f"{where}: the load generator was {run['client_busy']:.0%} busy: the "
                   "client may be what limits this run")
    yield from _scale_notes(figures)
    for run in figures.get("short", ()):
        if run["completed"] != run["count"]:
            yield (f"short tasks, {run['target']}: only {run['completed']} of {run['count']} "
                   "completed")


def _scale_notes(figures: dict[str, Any]) -> Iterator[str]:
    for run in figures.get("scale") or ():
        if run["target"] == "streamapp" and (run["lost"] or run["seq_errors"]):
            yield (f"**streamapp lost {run['lost']} frames, {run['seq_errors']} seq errors** "
                   "(fixed rate at scale)")
        if run["failures"]:
            yield (f"{run['target']} at scale: {run['failures']} failures, e.g. "
                   f"{run['failure_examples'][0]}")
        if run["client_busy"] > CLIENT_BOUND:
            yield (f"{run['target']} at scale: a load generator was {run['client_busy']:.0%} "
                   "busy: the client may be what limits this run")


def fanouts_of(runs: list[dict[str, Any]]) -> list[FanOut]:
    return list(dict.fromkeys(FanOut(run["tasks"], run["subscribers"]) for run in runs))


def _by_target(runs: list[dict[str, Any]], fanout: FanOut, mode: str) -> dict[str, dict[str, Any]]:
    return {
        run["target"]: run for run in runs
        if run["mode"] == mode and FanOut(run["tasks"], run["subscribers"]) == fanout
    }


def _pick(runs: dict[str, dict[str, Any]], key: str) -> dict[str, Any]:
    return {name: run[key] for name, run in runs.items()}


def _row(label: str, values: dict[str, Any], spec: str, ratio: bool) -> str:
    cells = [values.get(name) for name in TARGET_NAMES]
    shown = [cell if isinstance(cell, str) else number(cell, spec) for cell in cells]
    floor, baseline, streamapp = cells
    ratios = [_ratio(streamapp, baseline), _ratio(streamapp, floor)] if ratio else ["", ""]
    return f"| {label} | " + " | ".join(shown + ratios) + " |"


def _ratio(value: Any, other: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(other, (int, float)) or not other:
        return "–"
    return f"{value / other:.2f}×"


def _load(load: Any) -> str:
    return "–" if not load else " ".join(f"{value:.1f}" for value in load)
