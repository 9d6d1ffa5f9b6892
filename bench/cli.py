"""``python -m bench``: run the fan-out benchmark and write its table, figures and plot."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import redis

from . import report
from .run import run_benchmark
from .server import ROOT, SERVERS, ServerConfig, raise_fd_limit
from .sizes import LAYERS, PARTS, SIZES, FanOut

DEFAULT_OUT = ROOT / "bench" / "results"
DOCS = ROOT / "docs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__,
        epilog="Full size takes several minutes; --smoke well under one.",
    )
    parser.add_argument("--size", choices=list(SIZES), default="full")
    parser.add_argument("--smoke", action="store_const", dest="size", const="smoke",
                        help="tiny sizes, in-memory and Redis layers only (for CI)")
    parser.add_argument("--layers", type=lambda text: tuple(text.split(",")),
                        help=f"comma-separated subset of {','.join(LAYERS)}")
    parser.add_argument("--fanout", action="append", type=fan_out, metavar="TASKSxSUBSCRIBERS",
                        help="only these fan-outs, e.g. --fanout 1x100 (repeatable)")
    parser.add_argument("--parts", type=lambda text: tuple(text.split(",")),
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL")
                        or "redis://127.0.0.1:6379/0")
    parser.add_argument("--database-url", help="PostgreSQL for the event log (default: SQLite "
                        "in a temporary directory); it is migrated")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory")
    parser.add_argument("--profile", type=int, metavar="SUBSCRIBERS",
                        help="py-spy the server during streamapp's max-rate run at one task × "
                        "SUBSCRIBERS")
    parser.add_argument("--profile-parts", type=lambda text: tuple(text.split(",")), default=(),
                        metavar="PARTS", help="py-spy the server during streamapp's run of these "
                        "parts (connect, short, scale)")
    parser.add_argument("--server", choices=SERVERS, default="daphne",
                        help="the ASGI server of every target (uvicorn: its websockets protocol)")
    parser.add_argument("--publish", action="store_true",
                        help="also copy the table and plot to docs/bench.md and docs/bench.png")
    args = parser.parse_args(argv)
    unknown = set(args.layers or ()) - set(LAYERS)
    if set(args.parts or ()) - set(PARTS):
        parser.error(f"unknown parts; choose from {', '.join(PARTS)}")
    if unknown:
        parser.error(f"unknown layers {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(LAYERS)}")
    return args


def fan_out(text: str) -> FanOut:
    tasks, _, subscribers = text.partition("x")
    try:
        return FanOut(int(tasks), int(subscribers))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected TASKSxSUBSCRIBERS like 1x100, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = SIZES[args.size]
    if args.layers:
        sizes = replace(sizes, layers=args.layers)
    if args.fanout:
        sizes = replace(sizes, fanouts=tuple(args.fanout))
    if args.parts:
        sizes = replace(sizes, parts=args.parts)
    raise_fd_limit()  # the daphne subprocesses inherit it
    uses_redis = any(layer != "memory" for layer in sizes.layers)
    with scratch_run(args.redis_url, args.out / "logs", uses_redis) as config:
        results = asyncio.run(run_benchmark(
            sizes, replace(config(args.database_url), server=args.server), args.out,
            progress=lambda line: print(line, file=sys.stderr),
            profile_subscribers=args.profile, profile_parts=args.profile_parts,
        ))
    data, table, chart = report.write(results, args.out)
    print(table.read_text())
    print(f"written: {data}, {table}, {chart}", file=sys.stderr)
    if args.publish:
        shutil.copyfile(chart, DOCS / "bench.png")
        shutil.copyfile(table, DOCS / "bench.md")
        print(f"published: {DOCS / 'bench.md'}, {DOCS / 'bench.png'}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def scratch_run(
    redis_url: str, log_dir: Path, uses_redis: bool = True
) -> Iterator[Callable[..., ServerConfig]]:
    """One benchmark command's servers: a Redis key prefix of their own (deleted afterwards:
    the Redis server is shared) and a scratch folder for SQLite. Yields ``config(database_url,
    name)``, which makes a migrated ServerConfig."""
    if uses_redis:
        check_redis(redis_url)
    prefix = f"bench{uuid.uuid4().hex[:10]}"  # every Redis key of this run starts with it
    with tempfile.TemporaryDirectory(prefix="streamapp-bench-") as scratch:

        def config(database_url: str | None = None, name: str = "bench.sqlite3") -> ServerConfig:
            made = ServerConfig(redis_url=redis_url, layer_prefix=prefix,
                                database_url=database_url, sqlite_path=Path(scratch) / name,
                                log_dir=log_dir)
            made.migrate()
            return made

        try:
            yield config
        finally:
            if uses_redis:
                forget_keys(redis_url, prefix)


def check_redis(url: str) -> None:
    try:
        redis.Redis.from_url(url, socket_timeout=5).ping()
    except redis.RedisError as exc:
        sys.exit(f"Redis at {url} does not answer ({exc}); start it (scripts/services.sh) or "
                 "run --layers memory")


def forget_keys(url: str, prefix: str) -> None:
    """Delete this run's own keys (its prefix only): the Redis server is shared."""
    client = redis.Redis.from_url(url, socket_timeout=5)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
