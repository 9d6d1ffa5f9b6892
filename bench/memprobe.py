"""Inside the server: where the bytes of the sockets opened between two marks went.

``mark()`` starts tracemalloc (if it is not running) and takes a snapshot and a census of the
objects the garbage collector tracks; ``report(sockets)`` takes them again and answers the
difference per socket: by allocation line, by the code responsible (the innermost frame of
streamapp, consumers or bench, else of the library that allocated), and by object type.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

FRAMES = 12  # enough to climb from asyncio or a dict out to the code that asked for it
TOP = 30
STACKS = 200

_marked: dict[str, Any] = {}


def census() -> tuple[Counter[str], Counter[str]]:
    """(count, shallow bytes) of every gc-tracked object, by type name."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        module = type(obj).__module__
        if module not in ("builtins", None):
            name = f"{module}.{name}"
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    return counts, sizes


def mark() -> dict[str, Any]:
    gc.collect()
    if not tracemalloc.is_tracing():
        tracemalloc.start(FRAMES)
    _marked["snapshot"] = tracemalloc.take_snapshot()
    _marked["census"] = census()
    return {"traced_bytes": tracemalloc.get_traced_memory()[0]}


def report(sockets: int) -> dict[str, Any]:
    gc.collect()
    after = tracemalloc.take_snapshot()
    counts, sizes = census()
    before_counts, before_sizes = _marked["census"]
    stats = after.compare_to(_marked["snapshot"], "traceback")
    tracemalloc.stop()
    lines: Counter[str] = Counter()
    owners: Counter[str] = Counter()
    blocks: Counter[str] = Counter()
    total = 0
    for stat in stats:
        if not stat.size_diff:
            continue
        total += stat.size_diff
        frames = list(reversed(stat.traceback))  # most recent call first
        lines[_where(frames[0])] += stat.size_diff
        blocks[_where(frames[0])] += stat.count_diff
        owners[_owner(frames)] += stat.size_diff
    types = [
        {"type": name, "count": (counts[name] - before_counts[name]) / sockets,
         "bytes": (sizes[name] - before_sizes[name]) / sockets}
        for name in set(counts) | set(before_counts)
    ]
    types = [t for t in types if abs(t["bytes"]) >= 1 or abs(t["count"]) >= 0.5]
    types.sort(key=lambda t: -t["bytes"])
    return {
        "sockets": sockets,
        "traced_per_socket": total / sockets,
        "by_line": [{"where": k, "bytes": v / sockets, "blocks": blocks[k] / sockets}
                    for k, v in lines.most_common(TOP)],
        "all_lines": [{"where": k, "bytes": v / sockets} for k, v in lines.items()
                      if abs(v) >= sockets],
        "stacks": [{"bytes": stat.size_diff / sockets,
                    "frames": [_where(f) for f in reversed(stat.traceback)]}
                   for stat in stats[:STACKS] if stat.size_diff > 0],
        "by_owner": [{"where": k, "bytes": v / sockets} for k, v in owners.most_common(TOP)],
        "by_type": types[:TOP],
    }


OWN_CODE = ("/streamapp/", "/consumers/", "/bench/")


def _short(filename: str) -> str:
    """A path from its package down: ``…/site-packages/twisted/x.py`` -> ``twisted/x.py``."""
    for marker in ("site-packages/", "/lib/python3"):
        if marker in filename:
            tail = filename.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("/lib") else tail
    root = str(Path(__file__).resolve().parent.parent) + "/"
    return filename.removeprefix(root)


def _where(frame: tracemalloc.Frame) -> str:
    return f"{_short(frame.filename)}:{frame.lineno}"


def _owner(frames: list[tracemalloc.Frame]) -> str:
    """The innermost frame of our own code, else of the first library outside the stdlib."""
    for frame in frames:
        mine = any(part in frame.filename for part in OWN_CODE)
        if mine and "site-packages" not in frame.filename:
            return _where(frame)
    for frame in frames:
        if "site-packages" in frame.filename:
            return _short(frame.filename).split("/", 1)[0] + " (" + _where(frame) + ")"
    return _where(frames[0])
