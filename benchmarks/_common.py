"""Helpers shared by the benchmarks: the machine header, Markdown tables,
finding herdcache's cache API, and reporting a skipped peer."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from importlib import metadata


class PeerUnavailable(RuntimeError):
    """A peer cannot run here; the message says why (and what to install)."""


def machine_header(title: str, timed: bool = True) -> str:
    """A Markdown header naming the benchmark and the machine it ran on
    (with the noise caveat if the benchmark measures time)."""
    cpus = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return "\n".join(
        [
            f"# {title}",
            "",
            f"- machine: {cpus} CPUs usable (nproc), {cpu_model()}",
            f"- Python {platform.python_version()} ({platform.python_implementation()}), "
            f"Linux {platform.release()}",
            f"- load average before the run: {load}",
            f"- command: {' '.join([os.path.basename(sys.executable), *sys.argv])}",
            *(
                ["- numbers on a shared 2-core machine are noisy: compare ratios from one run"]
                if timed
                else []
            ),
            "",
        ]
    )


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = "| " + " | ".join(["-" * widths[0], *("-" * (w - 1) + ":" for w in widths[1:])]) + " |"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def load_herdcache(*cache_methods: str):
    """The ``herdcache`` module if its ``Cache`` (with ``cache_methods``) exists.

    Raises :class:`PeerUnavailable` saying what is missing otherwise, so the
    benchmarks run before the cache lands and pick it up once it does.
    """
    try:
        import herdcache
    except ImportError as exc:
        raise PeerUnavailable(
            f"herdcache is not importable ({exc}); install it with `pip install .`"
        ) from None
    cache_class = getattr(herdcache, "Cache", None)
    if cache_class is None:
        raise PeerUnavailable(
            f"herdcache {getattr(herdcache, '__version__', '?')} has no herdcache.Cache yet"
        )
    missing = [m for m in cache_methods if not hasattr(cache_class, m)]
    if missing:
        raise PeerUnavailable(f"herdcache.Cache has no {', '.join(missing)} yet")
    return herdcache


def skip(name: str, reason: object) -> None:
    print(f"- skipped {name}: {reason}", flush=True)


def run_each(classes, measure) -> dict:
    """``{name: measure(peer)}`` for an instance of each class that sets up.

    ``peer.setup()`` runs first; a peer whose setup raises PeerUnavailable is
    skipped with the reason printed. ``peer.teardown()`` always runs after.
    """
    results = {}
    for peer_class in classes:
        peer = peer_class()
        try:
            peer.setup()
        except PeerUnavailable as exc:
            skip(peer_class.name, exc)
            continue
        try:
            results[peer.name] = measure(peer)
        finally:
            peer.teardown()
    return results


def fmt_ns(ns: float | None) -> str:
    return "—" if ns is None else f"{ns:,.0f}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    """``numerator / denominator`` as ``×1.23`` (``×123`` from ×10 up)."""
    if numerator is None or not denominator:
        return "—"
    ratio = numerator / denominator
    return f"×{ratio:.2f}" if ratio < 10 else f"×{ratio:.0f}"
