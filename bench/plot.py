"""The benchmark's picture: frames/s and p99 latency by subscriber count (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from .targets import TARGET_NAMES  # noqa: E402

COLORS = {"floor": "tab:gray", "baseline": "tab:red", "streamapp": "tab:blue"}
STYLES = {"memory": "-", "redis": "--", "pubsub": ":"}


def plot(results: dict[str, Any], path: Path) -> None:
    """Frames/s and p99 latency by subscriber count (one task), per target and layer."""
    figure, (rate_axes, latency_axes) = plt.subplots(1, 2, figsize=(12, 4.8))
    for layer, figures in results["layers"].items():
        for target in TARGET_NAMES:
            for axes, mode, key in ((rate_axes, "max", "frames_per_s"),
                                    (latency_axes, "fixed", "p99_ms")):
                points = sorted(
                    (run["subscribers"], run[key]) for run in figures["fanout"]
                    if run["tasks"] == 1 and run["target"] == target and run["mode"] == mode
                    and run[key] is not None
                )
                if points:
                    axes.plot(*zip(*points, strict=True), STYLES.get(layer, "-"), marker="o",
                              color=COLORS[target], label=f"{target} · {layer}")
    rate_axes.set(xscale="log", yscale="log", xlabel="subscribers (one task)",
                  ylabel="delivered frames/s (max rate)", title="Throughput")
    latency_axes.set(xscale="log", yscale="log", xlabel="subscribers (one task)",
                     ylabel="p99 latency, ms (fixed rate)", title="Latency")
    for axes in (rate_axes, latency_axes):
        axes.grid(True, which="both", alpha=0.3)
    rate_axes.legend(fontsize="small", ncol=1)
    machine = results["machine"]
    figure.suptitle(f"streamapp fan-out ({results['sizes']}) · {machine['cpu']}, "
                    f"{machine['cores']} cores", fontsize="medium")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
