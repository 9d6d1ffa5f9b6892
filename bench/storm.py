"""``python -m bench.storm``: a reconnect storm. Thousands of sockets stream one task that a
``runtasks`` worker runs; the web server restarts; how soon is every one back and streaming?

One worker process runs the task (``runtasks``); daphne serves the sockets only
(``STREAMAPP_RUN_TASKS=0``), on ``RedisChannelLayer``. The sockets come from several
load-generator processes (bench/crowd.py). Once all stream, daphne gets SIGTERM (it closes every
socket with 4012, service restart) and a new daphne starts on the same port; every client
reconnects at once, with ``since`` = the last seq it has, retrying every 50 ms while refused,
as streamapp.js does. Measured from the SIGTERM and from the moment the new daphne listens: when
the last socket had its ``state`` frame again ("back") and its first live event after it
("streaming"). The task then runs to its end: every socket must have had every event once, in
order (each asks for the whole stream, ``since=0``: the worker starts the task as soon as it
exists, before the last socket is in), and the final state.

The storm's own measure is the time back once a server listens: the old daphne's exit (it closes
its sockets at once, then waits for their consumers to end) and the new one's start-up count in
the figures from the SIGTERM, and a rolling deployment would not wait for them.

daphne listens with Twisted's backlog of 50 unless told otherwise: thousands of SYNs at once
overflow it and the kernel makes the rest retry after 1 s, 3 s, 7 s. ``--backlog`` (default
4096: ``daphne -e tcp:port=…:backlog=4096``) is what a deployment expecting storms sets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .cli import DEFAULT_OUT, scratch_run
from .crowd import Crowd
from .server import ROOT, BenchServer, ServerConfig, raise_fd_limit, wait_until_idle
from .targets import BASELINE, STREAMAPP


async def storm(args: argparse.Namespace, config: ServerConfig) -> dict[str, Any]:
    config.log_dir.mkdir(parents=True, exist_ok=True)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "runtasks"], cwd=ROOT,
        env={**config.env("redis"), "STREAMAPP_RUN_TASKS": "1"},
        stdout=(config.log_dir / "storm-worker.log").open("ab"), stderr=subprocess.STDOUT,
    )
    server = BenchServer("redis", config, label="-storm", env={"STREAMAPP_RUN_TASKS": "0"},
                         backlog=args.backlog)
    result: dict[str, Any] = {"sockets": args.sockets, "processes": args.processes,
                              "backlog": args.backlog, "rate": args.rate}
    try:
        await server.start()
        result["baseline_connect_seconds"] = await baseline_connect(server, args)
        events = round(args.rate * args.seconds)
        [path] = (await server.post("create", count=1, events=events, rate=args.rate))["groups"]
        # The worker takes the task as soon as it exists, before every socket is in: each asks
        # for the whole stream (``since=0``), as a page that must show every event does.
        url = STREAMAPP.url(server, path) + "?since=0"
        crowd = Crowd([url] * args.sockets, events, args.processes,
                      stateful=True, reconnect=True)
        try:
            result["connect_seconds"] = await crowd.open()
            await server.post("start", keys=[path])
            await streaming_everywhere(crowd, timeout=60)
            restarted_at = time.time()
            server.terminate()
            await asyncio.to_thread(server.process.wait, 30)
            down_at = time.time()
            await server.start()
            up_at = time.time()
            back, streaming = await everyone_back(crowd, restarted_at, timeout=args.give_up)
            result.update(
                down_seconds=down_at - restarted_at, up_seconds=up_at - restarted_at,
                back_seconds=max(back) if back and None not in back else None,
                back_after_up_seconds=(max(back) - (up_at - restarted_at)
                                       if back and None not in back else None),
                streaming_seconds=(max(streaming) if streaming and None not in streaming
                                   else None),
                back_p50=sorted(back)[len(back) // 2] if None not in back else None,
                not_back=sum(b is None for b in back),
                not_streaming=sum(s is None for s in streaming),
            )
            complete = await crowd.wait(5, args.seconds + 60)  # to the task's end
            result.update(
                complete=complete, expected=crowd.expected, received=crowd.received,
                seq_errors=crowd.seq_errors, failures=crowd.failures[:5],
                reconnects=sum(r["reconnects"] for r in crowd.results),
            )
        finally:
            await crowd.close()
    finally:
        if server.process is not None:
            await server.stop()
        worker.terminate()
        await asyncio.to_thread(worker.wait, 30)
    return result


async def baseline_connect(server: BenchServer, args: argparse.Namespace) -> float:
    """The raw Channels consumer's time for as many sockets, on the same server."""
    group = (await BASELINE.groups(server, 1, 0, 0))[0]
    crowd = Crowd([BASELINE.url(server, group)] * args.sockets, 0, args.processes,
                  stateful=False)
    try:
        return await crowd.open()
    finally:
        await crowd.close()
        await wait_until_idle(server.pid, timeout=30)


async def streaming_everywhere(crowd: Crowd, timeout: float) -> None:
    """Until every socket has had an event."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        reports = await crowd.report()
        if all(r["received"] >= len(r["back_at"]) for r in reports) and all(
            r["received"] for r in reports
        ):
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("the sockets did not all get events before the restart")


async def everyone_back(
    crowd: Crowd, since: float, timeout: float
) -> tuple[list[float | None], list[float | None]]:
    """Seconds from ``since`` until each socket was back, and streaming again."""
    deadline = time.time() + timeout
    while True:
        reports = await crowd.report()
        back = [b - since if b else None for r in reports for b in r["back_at"]]
        streaming = [s - since if s else None for r in reports for s in r["streaming_at"]]
        if None not in streaming or time.time() > deadline:
            return back, streaming
        await asyncio.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sockets", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=4, help="load-generator processes")
    parser.add_argument("--rate", type=float, default=1, help="the task's events per second")
    parser.add_argument("--seconds", type=float, default=60,
                        help="the task's length: the storm is over long before it ends")
    parser.add_argument("--backlog", type=int, default=4096)
    parser.add_argument("--give-up", type=float, default=60)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL")
                        or "redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="PostgreSQL (default: SQLite in a temp dir)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    raise_fd_limit()
    with scratch_run(args.redis_url, args.out / "logs") as config:
        result = asyncio.run(storm(args, config(args.database_url)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "storm.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    whole = result["complete"] and not result["seq_errors"] and not result["not_back"]
    return 0 if whole else 1


if __name__ == "__main__":
    sys.exit(main())
