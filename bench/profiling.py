"""A py-spy profile of the server during one delivery window, and its costliest functions."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


@asynccontextmanager
async def py_spy(pid: int, output: Path, rate: int = 500) -> AsyncIterator[None]:
    """Sample ``pid`` with ``py-spy record`` while the block runs; collapsed stacks to ``output``.

    ``--nonblocking``: the server is never paused, so the profile costs it almost nothing.
    """
    # next to this Python (a venv's bin), else on PATH
    executable = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}"
                              f"{os.environ.get('PATH', '')}")
    if executable is None:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    recorder = subprocess.Popen(
        [executable, "record", "--pid", str(pid), "--rate", str(rate), "--nonblocking",
         "--format", "raw", "--output", str(output)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
        _, errors = recorder.communicate(timeout=60)
        if not output.exists():
            raise RuntimeError(f"py-spy wrote no profile: {errors.decode()[-500:]}")


# Leaf frames of a thread waiting, not working. py-spy's own idle detection misses them in some
# containers, so the summary leaves them out itself.
IDLE_LEAVES = (
    "EpollSelector.select ",  # the event loop waiting for sockets
    "_worker (concurrent/futures/thread.py:",  # a pool thread as leaf: waiting for work
    "Condition.wait ",
)


def top_functions(collapsed: Path, limit: int = 25) -> str:
    """The functions with the most samples: own time (the stack's leaf) and in total.

    Shares are of the samples where a thread was working (waiting leaves excluded).
    """
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = idle = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")
        if frames[-1].startswith(IDLE_LEAVES):
            idle += int(count)
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    lines = [f"{samples} samples working ({idle} waiting, left out)", "", "own time:"]
    lines += [f"{n / samples:6.1%}  {frame}" for frame, n in own.most_common(limit)]
    lines += ["", "in total (the function and what it calls):"]
    lines += [f"{n / samples:6.1%}  {frame}" for frame, n in total.most_common(limit)]
    return "\n".join(lines) + "\n"
