"""Draw the README's benchmark results as PNG charts.

    pip install 'herdcache[charts]'      # matplotlib
    python benchmarks/charts.py          # writes docs/img/*.png

The figures come from ``benchmarks/results.json``, transcribed from the
README's tables (the benchmarks themselves take minutes and need the
peers installed; this script only draws).  Three charts:

- ``cache-hit-latency.png``: get-hit latency of herdcache and its peers
  (log scale: the peers span three orders of magnitude);
- ``herd-wall-time.png``: time until the last of N callers has a value
  that takes 100 ms to compute, and how many computations ran;
- ``eviction-miss-ratio.png``: miss ratios of herdcache and libCacheSim's
  policies on one stream.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HERDCACHE = "#d95f02"
PEER = "#7570b3"
FLOOR = "#1b9e77"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit("charts.py needs matplotlib: pip install 'herdcache[charts]' (or pip install matplotlib)")
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def hit_latency(plt: Any, data: dict[str, Any], path: Path) -> None:
    """Horizontal bars, fastest on top, log-scaled ns with labels."""
    items = sorted(data["ns"].items(), key=lambda kv: kv[1], reverse=True)
    names, ns = [k for k, _ in items], [v for _, v in items]
    colors = [HERDCACHE if n == "herdcache" else FLOOR if "floor" in n else PEER for n in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = ax.barh(names, ns, color=colors)
    ax.set_xscale("log")
    ax.bar_label(bars, labels=[f"{v / 1000:,.1f} µs" for v in ns], padding=3, fontsize=9)
    ax.set_xlim(right=max(ns) * 6)
    ax.set_xlabel("get-hit latency, median (log scale; lower is better)")
    ax.set_title("One cache hit, one process", loc="left")
    _finish(fig, ax, path, data["command"])


def herd_wall_time(plt: Any, data: dict[str, Any], path: Path) -> None:
    """One line per contender: last caller served (ms) against callers,
    each point labelled with the computations that ran."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    # Colour, marker, and where each point's label goes (points, from it).
    styles = [(HERDCACHE, "o", (8, -12)), ("#666666", "s", (-34, 6)), (PEER, "^", (8, -4)), (FLOOR, "D", (8, -4))]
    for (name, run), (color, marker, offset) in zip(data["contenders"].items(), styles):
        ax.plot(run["callers"], run["last_served_ms"], marker=marker, label=name, color=color)
        for x, y, n in zip(run["callers"], run["last_served_ms"], run["computations"]):
            ax.annotate(f"{n}×", (x, y), textcoords="offset points", xytext=offset, fontsize=8, color=color)
    ax.axhline(data["compute_ms"], color="grey", linestyle=":", linewidth=1)
    ax.annotate("the computation alone: 100 ms", (256, data["compute_ms"]), textcoords="offset points",
                xytext=(0, 4), fontsize=8, color="grey", ha="right")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks([16, 64, 256], labels=["16", "64", "256"])
    ax.set_xlim(12, 340)
    ax.set_xlabel("callers (processes) asking at once for one missing key")
    ax.set_ylabel("ms until the last caller has it (log)")
    ax.set_title("The stampede (labels: how many computations ran)", loc="left")
    ax.legend(fontsize=8, loc="upper left")
    _finish(fig, ax, path, data["command"])


def eviction_miss_ratio(plt: Any, data: dict[str, Any], path: Path) -> None:
    """Bars of miss ratio; lower is better."""
    names = list(data["miss_ratio"])
    misses = [data["miss_ratio"][n] for n in names]
    colors = [HERDCACHE if n.startswith("herdcache") else PEER for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 3.5))
    bars = ax.bar(names, misses, color=colors, width=0.6)
    ax.bar_label(bars, labels=[f"{m:.4f}" for m in misses], padding=3, fontsize=9)
    ax.set_xticks(range(len(names)), [n.replace("herdcache ", "herdcache\n") for n in names])
    ax.set_ylim(0, max(misses) * 1.2)
    ax.set_ylabel("miss ratio (lower is better)")
    ax.set_title("Zipf(1.0), cache at 10 % of the keys", loc="left")
    ax.tick_params(axis="x", labelsize=8)
    _finish(fig, ax, path, data["command"])


def _finish(fig: Any, ax: Any, path: Path, command: str) -> None:
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.99, 0.01, command, ha="right", va="bottom", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=HERE / "results.json")
    parser.add_argument("--out", type=Path, default=HERE.parent / "docs" / "img")
    args = parser.parse_args()
    plt = _pyplot()
    results = json.loads(args.results.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    hit_latency(plt, results["cache_hit"], args.out / "cache-hit-latency.png")
    herd_wall_time(plt, results["herd"], args.out / "herd-wall-time.png")
    eviction_miss_ratio(plt, results["eviction"], args.out / "eviction-miss-ratio.png")


if __name__ == "__main__":
    main()
