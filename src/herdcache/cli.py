"""The ``herdcache`` command line (also ``python -m herdcache``).

Subcommands::

    herdcache ls                 list the segments in the directory
    herdcache info NAME          a segment's identity, usage and structures
    herdcache rm NAME [NAME...]  remove segments (processes that map them keep them)
    herdcache stats NAME         a cache's statistics (--format text|json|prometheus)
    herdcache top NAME           a live view of a cache, refreshed like top (--once: one frame)
    herdcache gc [--prefix P]    remove segments no live process is attached to
    herdcache demo               a herd of processes shares one cache
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Callable, Sequence

from .errors import HerdcacheError
from .segment import Segment, default_dir, gc, is_orphan, list_segments, remove
from .sizes import format_size

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register a subcommand handler under ``name``."""

    def register(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        _COMMANDS[name] = func
        return func

    return register


@command("ls")
def _ls(args: argparse.Namespace) -> int:
    for name in list_segments(args.dir):
        try:
            state = "orphan" if is_orphan(name, dir=args.dir) else "in use"
        except HerdcacheError as exc:
            state = f"error: {exc}"
        print(f"{name}\t{state}")
    return 0


@command("info")
def _info(args: argparse.Namespace) -> int:
    with Segment.attach(args.name, dir=args.dir, allow_shared=True) as seg:
        info = seg.info()
        print(f"segment   {args.name}  ({info['path']})")
        print(f"size      {format_size(info['size'])}, used {format_size(info['used'])}, free {format_size(info['free'])}")
        print(f"creator   pid {info['creator_pid']}, uid {info['creator_uid']}, at {time.ctime(info['created'])}")
        print(f"processes {info['attached']} attached (this one included), at most {info['max_processes']}")
        print(f"layout    version {info['layout_version']}{'  (segment outlived a reboot)' if info['rebooted'] else ''}")
        for struct in seg.structs():
            print(f"  {struct.kind:<10} {struct.name:<40} {format_size(struct.size):>10} @ {struct.offset}")
    return 0


@command("stats")
def _stats(args: argparse.Namespace) -> int:
    from . import report

    rep = report.read(args.name, dir=args.dir)
    if args.format == "json":
        print(rep.to_json())
    elif args.format == "prometheus":
        print(_exposition(rep), end="")
    else:
        _print_stats(rep)
    return 0


def _exposition(rep: Any) -> str:
    try:
        from .metrics import exposition
    except ImportError as exc:  # prometheus_client is an optional extra
        raise HerdcacheError(str(exc)) from exc
    return exposition([rep])


def _print_stats(rep: Any) -> None:
    figures = {**rep.counters, **rep.usage, "attached": rep.attached}
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")
    for queue, depth in rep.queues.items():
        print(f"queue {queue}: {depth} messages waiting")
    print("per process (pid 0: processes that have exited):")
    for row in rep.processes:
        busy = {k: v for k, v in row.counters.items() if v}
        print(f"  pid {row.pid}{'' if row.alive or not row.pid else ' (gone)'}: {busy}")


@command("top")
def _top(args: argparse.Namespace) -> int:
    from .top import run

    return run(args.name, dir=args.dir, interval=args.interval, once=args.once)


@command("rm")
def _rm(args: argparse.Namespace) -> int:
    for name in args.names:
        remove(name, dir=args.dir)
        print(f"removed {name}")
    return 0


@command("gc")
def _gc(args: argparse.Namespace) -> int:
    for name in gc(args.dir, prefix=args.prefix):
        print(f"removed {name}")
    return 0


@command("demo")
def _demo(args: argparse.Namespace) -> int:
    from .demo import run

    run(workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the command line."""
    parser = argparse.ArgumentParser(prog="herdcache", description="Inspect and manage herdcache shared memory segments.")
    parser.add_argument("--dir", default=None, help=f"directory of named segments (default: {default_dir()})")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("ls", help="list segments")
    sub.add_parser("info", help="show a segment").add_argument("name")
    sub.add_parser("rm", help="remove segments").add_argument("names", nargs="+")
    stats = sub.add_parser("stats", help="a cache's statistics, summed and per process (read-only)")
    stats.add_argument("name")
    stats.add_argument("--format", choices=("text", "json", "prometheus"), default="text")
    top = sub.add_parser("top", help="a live view of a cache, refreshed like top (read-only)")
    top.add_argument("name")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between frames (default 1)")
    top.add_argument("--once", action="store_true", help="print one frame (rates over one interval) and exit")
    sub.add_parser("gc", help="remove segments no live process is attached to (every application's)").add_argument(
        "--prefix", default="", help="only segments whose name starts with this (your application's prefix)"
    )
    sub.add_parser("demo", help="a herd of processes shares one cache").add_argument("--workers", type=int, default=8)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except HerdcacheError as exc:
        print(f"herdcache: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
