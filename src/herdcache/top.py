"""``python -m herdcache top NAME``: a live view of a cache, like ``top``.

Each frame shows what the cache holds (entries, memory used and free),
how it is doing (hit ratio, sets and evictions per second), the
no-stampede figures (computations, waits, takeovers, stale values served),
its queues' depths, one line per attached process that has used it,
and one for the processes gone.  Rates are
over the last interval.  The view only reads (see :mod:`herdcache.report`):
watching a cache changes nothing in it.  ``--once`` prints a single frame,
its rates measured over one interval, for scripts and tests.
"""

from __future__ import annotations

import sys
import time

from .report import Report, read
from .sizes import format_size

#: Clear the terminal and home the cursor (what top and watch do).
_CLEAR = "\x1b[H\x1b[2J"

#: Columns of the per-process table: (heading, counter).
_COLUMNS = (
    ("HITS", "hits"),
    ("MISSES", "misses"),
    ("SETS", "sets"),
    ("EVICT", "evictions"),
    ("COMPUTE", "computes"),
    ("WAITS", "waits"),
    ("TAKEOVER", "takeovers"),
    ("STALE", "stale_served"),
)


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "-"


def frame(rep: Report, earlier: Report) -> str:
    """One screen of the view: ``rep``, with rates since ``earlier``."""
    rates = rep.rates(earlier)
    c, u = rep.counters, rep.usage
    ratio = "-" if rep.hit_ratio is None else f"{100.0 * rep.hit_ratio:.1f}%"
    lines = [
        f"herdcache top - {rep.name}   {time.strftime('%H:%M:%S')}   "
        f"{rep.attached} processes attached (this one included)",
        f"entries {u['entries']:,}   memory used {format_size(u['bytes_used'])} "
        f"({_percent(u['bytes_used'], u['bytes_capacity'])}), free {format_size(u['bytes_free'])}",
        f"hit ratio {ratio}   hits/s {rates['hits']:,.1f}   misses/s {rates['misses']:,.1f}   "
        f"sets/s {rates['sets']:,.1f}   evictions/s {rates['evictions']:,.1f}",
        f"computations {c['computes']:,}   waits {c['waits']:,}   takeovers {c['takeovers']:,}   "
        f"stale served {c['stale_served']:,}   errors {c['compute_errors']:,}",
    ]
    lines += [f"queue {name}: {depth:,} waiting" for name, depth in rep.queues.items()]
    lines += ["", f"{'PID':>8} " + " ".join(f"{head:>9}" for head, _ in _COLUMNS)]
    live, gone = rep.by_process()
    for pid, counts in [*((str(row.pid), row.counters) for row in live), ("exited", gone)]:
        lines.append(f"{pid:>8} " + " ".join(f"{counts[key]:>9,}" for _, key in _COLUMNS))
    return "\n".join(lines) + "\n"


def run(name: str, *, dir: str | None = None, interval: float = 1.0, once: bool = False) -> int:
    """Show the named cache every ``interval`` seconds until Ctrl-C
    (or one frame if ``once``); return the exit status."""
    out = sys.stdout
    earlier = read(name, dir=dir)
    try:
        while True:
            time.sleep(interval)
            rep = read(name, dir=dir)
            out.write(frame(rep, earlier) if once else _CLEAR + frame(rep, earlier))
            out.flush()
            if once:
                return 0
            earlier = rep
    except KeyboardInterrupt:
        return 0
