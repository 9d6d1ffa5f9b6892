"""``python -m bench.socketmem``: where the memory of an idle subscribed socket goes.

For each target (floor, baseline, streamapp), in a fresh daphne of its own: RSS per idle
subscribed socket (as the benchmark reads it), then the same sockets again under tracemalloc,
the difference per socket by allocation line, by the code responsible and by object type.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .cli import DEFAULT_OUT, scratch_run
from .clients import Audience
from .measure import WARM_UP_SOCKETS, settled_rss
from .server import BenchServer, ServerConfig, raise_fd_limit, wait_until_idle
from .sizes import LAYERS
from .targets import TARGETS, Target

ROWS = 15


async def breakdown(
    layer: str, config: ServerConfig, target: Target, sockets: int, traced: int
) -> dict[str, Any]:
    async with BenchServer(layer, config, label=f"-socketmem-{target.name}") as server:
        group = (await target.groups(server, 1, 0, 0))[0]
        urls = [target.url(server, group)]
        warm_up = Audience(urls * WARM_UP_SOCKETS, 0, target.stateful)
        await warm_up.open()
        await warm_up.close()
        before = await settled_rss(server)
        audience = Audience(urls * sockets, 0, target.stateful)
        await audience.open()
        after = await settled_rss(server)
        await audience.close()
        await wait_until_idle(server.pid)
        await server.post("memory", action="mark")
        # Traced sockets are slow to open (every allocation records its stack): fewer of them.
        # A handshake slowed down this much may time out: count the sockets that did open.
        audience = Audience(urls * traced, 0, target.stateful, at_once=5)
        await audience.open(tolerate=True)
        try:
            await wait_until_idle(server.pid)
            found = await server.post("memory", action="report", sockets=len(audience.sockets))
        finally:
            await audience.close()
    return {"target": target.name, "layer": layer, "rss_per_socket": (after - before) / sockets,
            "rss_sockets": sockets, **found}


def show(result: dict[str, Any], rows: int = ROWS) -> str:
    kib = 1024
    out = [
        f"## {result['target']} on {result['layer']}",
        "",
        f"RSS per idle subscribed socket {result['rss_per_socket'] / kib:.1f} KiB "
        f"({result['rss_sockets']:,} sockets) · traced by tracemalloc "
        f"{result['traced_per_socket'] / kib:.1f} KiB ({result['sockets']:,} sockets)",
        "",
        "bytes per socket by the code responsible (innermost frame of streamapp/consumers/bench, "
        "else the library):",
    ]
    out += [f"  {r['bytes']:8,.0f}  {r['where']}" for r in result["by_owner"][:rows]]
    out += ["", "bytes per socket by allocation line (blocks per socket):"]
    out += [f"  {r['bytes']:8,.0f}  ({r['blocks']:5.1f})  {r['where']}"
            for r in result["by_line"][:rows]]
    out += ["", "objects per socket by type (gc-tracked, shallow size):"]
    out += [f"  {r['bytes']:8,.0f}  ({r['count']:5.1f})  {r['type']}"
            for r in result["by_type"][:rows]]
    return "\n".join(out) + "\n"


def compare(result: dict[str, Any], floor: dict[str, Any], rows: int = ROWS) -> str:
    """What ``result`` allocates per socket beyond the floor, by allocation line."""
    mine = {r["where"]: r["bytes"] for r in result["all_lines"]}
    theirs = {r["where"]: r["bytes"] for r in floor["all_lines"]}
    extra = sorted(((mine.get(k, 0) - theirs.get(k, 0), k) for k in set(mine) | set(theirs)),
                   reverse=True)
    out = [f"## {result['target']} beyond the floor, by allocation line "
           f"({(result['traced_per_socket'] - floor['traced_per_socket']) / 1024:.1f} KiB "
           "traced per socket)", ""]
    out += [f"  {size:8,.0f}  {where}" for size, where in extra[:rows] if size > 0]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.socketmem", description=__doc__)
    parser.add_argument("--layer", choices=LAYERS, default="memory")
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--targets", default="floor,baseline,streamapp")
    parser.add_argument("--traced", type=int, default=200,
                        help="sockets opened under tracemalloc")
    parser.add_argument("--rows", type=int, default=ROWS)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    raise_fd_limit()
    wanted = args.targets.split(",")
    results = []
    with scratch_run(args.redis_url, DEFAULT_OUT / "logs", args.layer != "memory") as make:
        config = make()
        for target in TARGETS:
            if target.name in wanted:
                result = asyncio.run(
                    breakdown(args.layer, config, target, args.sockets, args.traced)
                )
                results.append(result)
                print(show(result, args.rows), flush=True)
                if target.name != "floor" and results[0]["target"] == "floor":
                    print(compare(result, results[0], args.rows), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
