"""benchmarks/results.json, which benchmarks/charts.py draws, holds the
same figures as the README's benchmark tables (so the charts and the
tables never tell two stories)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = json.loads((ROOT / "benchmarks" / "results.json").read_text())
README = (ROOT / "README.md").read_text()


def test_hit_latencies_match_the_readme() -> None:
    for peer, ns in RESULTS["cache_hit"]["ns"].items():
        assert f"| {peer} | {ns:,} |" in README, peer


def test_herd_figures_match_the_readme() -> None:
    for name, run in RESULTS["herd"]["contenders"].items():
        for callers, ms, computations in zip(run["callers"], run["last_served_ms"], run["computations"]):
            assert f"| {callers} | {name} | {computations} | {ms:,} |" in README, (name, callers)


def test_eviction_miss_ratios_match_the_readme() -> None:
    for ratio in RESULTS["eviction"]["miss_ratio"].values():
        assert f"{ratio:.4f}" in README


def test_the_readme_shows_every_chart() -> None:
    for chart in ("cache-hit-latency", "herd-wall-time", "eviction-miss-ratio"):
        assert f"(docs/img/{chart}.png)" in README
        assert (ROOT / "docs" / "img" / f"{chart}.png").is_file()
