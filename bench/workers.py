"""``python -m bench.workers``: short tasks per second, in the web process and in workers.

The same work every time: ``--tasks`` short tasks (BenchTask, SHORT_EVENTS events each), at most
``--concurrency`` in flight, each created, started, run and finished through the coordinator,
counted once its final status is recorded:

- **embedded**: the default deployment: SQLite, ``InMemoryChannelLayer``, tasks run inside
  daphne (bench's own short-task run, ``streamapp`` target);
- **1 worker**, **2 workers**: the event log on ``--database-url`` (PostgreSQL; SQLite without
  it), ``RedisChannelLayer``; daphne runs no task (``STREAMAPP_RUN_TASKS=0``): it saves each task,
  hands it to the ``manage.py runtasks`` workers and waits for its final status.

Afterwards every task of a run is checked in the database: completed, its log exactly seqs
1..SHORT_EVENTS (nothing missing, nothing twice). Beside each server's runs, its baseline: bench's
short task done the plain Channels way (an asyncio task that ``group_send``s a start, the events
and an end). Results: ``workers.json`` and ``workers.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from .cli import DEFAULT_OUT, scratch_run
from .measure import short_tasks
from .profiling import py_spy, top_functions
from .report import number
from .run import machine
from .server import ROOT, BenchServer, ServerConfig, cpu_seconds
from .sizes import SIZES, Sizes
from .targets import BASELINE, STREAMAPP, Target

SMOKE = {"tasks": 40, "concurrency": 10}
READY = b"worker ready"


class Workers:
    """``async with Workers(count, config, concurrency)``: ``manage.py runtasks`` processes,
    each running up to ``concurrency`` tasks at once, ready (joined their wake-up group)."""

    def __init__(self, count: int, config: ServerConfig, concurrency: int) -> None:
        self.logs = [config.log_dir / f"runtasks-{count}-{n}.log" for n in range(count)]
        self.config = config
        self.concurrency = concurrency
        self.processes: list[subprocess.Popen[bytes]] = []

    def cpu(self) -> float:
        return sum(cpu_seconds(process.pid) for process in self.processes)

    async def __aenter__(self) -> Workers:
        for log in self.logs:
            with log.open("wb") as output:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "manage.py", "runtasks", "--concurrency",
                     str(self.concurrency)],
                    cwd=ROOT, env={**self.config.env("redis"), "STREAMAPP_RUN_TASKS": "1"},
                    stdout=output, stderr=subprocess.STDOUT,
                ))
        deadline = time.monotonic() + 60
        for process, log in zip(self.processes, self.logs, strict=True):
            while READY not in log.read_bytes():  # a process coming up: no event to wait on
                if process.poll() is not None or time.monotonic() > deadline:
                    await self.__aexit__()
                    raise RuntimeError(f"runtasks did not start; see {log}")
                await asyncio.sleep(0.1)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for process in self.processes:
            process.terminate()  # SIGTERM: stop claiming, drain, exit
        for process in self.processes:
            try:
                await asyncio.to_thread(process.wait, 30)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)


def machine_ticks() -> tuple[int, int]:
    """(busy, all) clock ticks of every core since boot (``/proc/stat``): the database and
    Redis share the cores, so the machine's share busy says whether the run had CPU to spare."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values) - idle, sum(values)


@asynccontextmanager
async def profiles(pids: dict[str, int], out: Path | None) -> AsyncIterator[None]:
    """py-spy each of ``pids`` (name: pid) while the block runs, when ``out`` is a directory;
    each one's costliest functions to ``out/profile-workers-<name>.txt``."""
    if out is None:
        yield
        return
    stems = {name: out / f"profile-workers-{name}" for name in pids}
    async with AsyncExitStack() as stack:
        for name, pid in pids.items():
            await stack.enter_async_context(py_spy(pid, stems[name].with_suffix(".collapsed")))
        yield
    for stem in stems.values():
        stem.with_suffix(".txt").write_text(top_functions(stem.with_suffix(".collapsed")))


async def short_run(
    server: BenchServer, target: Target, sizes: Sizes, label: str, setup: str,
    variant: str = "", workers: Workers | None = None, profile: Path | None = None,
) -> dict[str, Any]:
    """bench's short-task run, then (streamapp) the check of every task it made; ``profile``:
    py-spy the server and the workers during the streamapp run, into that directory."""
    if target is STREAMAPP:
        await server.post("forget")
    before = (await server.post("tally", after=2**62))["last_pk"]
    worker_cpu = workers.cpu() if workers else 0.0
    busy, ticks = machine_ticks()
    pids = {label.replace(" ", "-"): server.pid}
    for n, process in enumerate(workers.processes if workers else ()):
        pids[f"{label.replace(' ', '-')}-worker{n}"] = process.pid
    around = partial(profiles, pids, profile if target is STREAMAPP else None)
    run = await short_tasks(server, target, sizes, around, variant=variant)
    worker_cpu = workers.cpu() - worker_cpu if workers else 0.0
    busy_after, ticks_after = machine_ticks()
    ticks = ticks_after - ticks  # none in a run shorter than a clock tick (a smoke baseline)
    run.update(label=label, setup=setup,
               machine_busy=(busy_after - busy) / ticks if ticks else None,
               worker_cpu_us_per_task=worker_cpu / sizes.short_tasks * 1e6)
    if target is STREAMAPP:
        run["check"] = await server.post("tally", after=before)
    return run


async def measure(
    sizes: Sizes, embedded: ServerConfig, split: ServerConfig, database: str, progress: Any,
    profile: Path | None = None,
) -> list[dict[str, Any]]:
    """Every run, in order: embedded and its baseline, then the worker runs and theirs."""
    runs: list[dict[str, Any]] = []
    async with BenchServer("memory", embedded, label="-workers") as server:
        runs.append(await short_run(server, BASELINE, sizes, "baseline", "in-memory layer"))
        progress(runs[-1])
        runs.append(await short_run(server, STREAMAPP, sizes, "embedded",
                                    "SQLite, in-memory layer, tasks in daphne", profile=profile))
        progress(runs[-1])
    async with BenchServer("redis", split, label="-split",
                           env={"STREAMAPP_RUN_TASKS": "0"}) as server:
        runs.append(await short_run(server, BASELINE, sizes, "baseline", "Redis layer"))
        progress(runs[-1])
        for count in (1, 2):
            async with Workers(count, split, sizes.short_concurrency) as workers:
                label = f"{count} worker{'s' if count > 1 else ''}"
                runs.append(await short_run(
                    server, STREAMAPP, sizes, label, f"{database}, Redis layer, daphne "
                    f"hands to {label}", variant="_handed", workers=workers, profile=profile,
                ))
            progress(runs[-1])
    return runs


def whole(run: dict[str, Any]) -> bool:
    """Every task of the run completed, each with exactly its events logged."""
    check = run["check"]
    return (run["completed"] == run["count"] == check["tasks"] == check["whole"]
            == check["statuses"].get("completed", 0)
            and check["missing"] == check["doubled"] == 0)


def line(run: dict[str, Any]) -> str:
    check = run.get("check")
    verdict = "" if check is None else (
        f"  {check['whole']}/{run['count']} whole, missing {check['missing']}, "
        f"doubled {check['doubled']}"
    )
    return (f"{run['label']:10} {run['tasks_per_s']:8,.0f} tasks/s  "
            f"machine {number(run['machine_busy'], '.0%')} busy  ({run['setup']}){verdict}")


def markdown(results: dict[str, Any]) -> str:
    info = results["machine"]
    lines = [
        f"# Short tasks and workers ({results['tasks']:,} tasks, {results['concurrency']} at a "
        "time)", "",
        f"{results['started']} · {info['cpu']}, {info['cores']} cores · Python {info['python']}"
        f" · load average before {fmt_load(info['load_average_before'])}, after "
        f"{fmt_load(info['load_average_after'])} · `{results['command']}`", "",
        "| run | setup | tasks/s | ÷ baseline | completed, log whole | events missing / doubled"
        " | CPU µs per task: daphne + workers | machine busy |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    baseline = None
    for run in results["runs"]:
        if run["label"] == "baseline":
            baseline = run
        check = run.get("check")
        ratio = "" if run is baseline else f"{run['tasks_per_s'] / baseline['tasks_per_s']:.2f}×"
        lines.append(" | ".join([
            f"| {run['label']}", run["setup"], f"{run['tasks_per_s']:,.0f}", ratio,
            f"{check['whole']:,} / {run['count']:,}" if check else "–",
            f"{check['missing']} / {check['doubled']}" if check else "–",
            f"{run['cpu_us_per_task']:,.0f} + {run['worker_cpu_us_per_task']:,.0f}",
            f"{number(run['machine_busy'], '.0%')} |",
        ]))
    lines += ["", "Ratios are against the baseline row above them (same server, same layer). "
              "Machine busy: the share of all cores' time not idle during the run (daphne, "
              "workers, the database, Redis and anything else on the machine)."]
    return "\n".join(lines) + "\n"


def fmt_load(load: Any) -> str:
    return " ".join(f"{value:.2f}" for value in load) if load else "–"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=SIZES["full"].short_tasks)
    parser.add_argument("--concurrency", type=int, default=SIZES["full"].short_concurrency,
                        help="tasks in flight at once; also each worker's --concurrency")
    parser.add_argument("--smoke", action="store_true",
                        help=f"{SMOKE['tasks']} tasks, {SMOKE['concurrency']} at a time (for CI)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL")
                        or "redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="PostgreSQL for the worker runs (default: "
                        "SQLite in a temporary directory): the bench's own; it is migrated and "
                        "its BenchTasks deleted before each run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--profile", action="store_true",
                        help="py-spy daphne and the workers during streamapp's runs "
                        "(profile-workers-*.txt in --out)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.tasks, args.concurrency = SMOKE["tasks"], SMOKE["concurrency"]
    sizes = replace(SIZES["smoke"], short_tasks=args.tasks, short_concurrency=args.concurrency)
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.workers", *sys.argv[1:]]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
        "tasks": args.tasks, "concurrency": args.concurrency,
    }
    with scratch_run(args.redis_url, args.out / "logs") as config:
        embedded = config(None, "embedded.sqlite3")
        split = config(args.database_url, "split.sqlite3")
        results["runs"] = asyncio.run(measure(
            sizes, embedded, split, "PostgreSQL" if args.database_url else "SQLite",
            lambda run: print(line(run), file=sys.stderr), args.out if args.profile else None,
        ))
    results["machine"]["load_average_after"] = os.getloadavg()
    results["whole"] = all(whole(run) for run in results["runs"] if "check" in run)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "workers.json").write_text(json.dumps(results, indent=1))
    table = markdown(results)
    (args.out / "workers.md").write_text(table)
    print(table)
    if not results["whole"]:
        print("some task did not complete with exactly its events: see workers.json",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
