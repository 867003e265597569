"""Plain get/set of this checkout against another build of herdcache, in one run.

The question it answers: did a change slow down the paths every user takes
(issue 10 allows plain get/set at most 5 % more time with no snapshot open).
Each round measures both builds, one after the other in fresh processes,
alternating which goes first; the figures are the medians over the rounds
of each build's ns per operation, and of the per-round ratios
(this / base: above 1 = this checkout is slower).

The workload is benchmarks/cache.py's: ``--keys`` keys of ~100-byte
msgpack'd dicts (get-hit, get-miss, set overwriting a key), plus the same
with 8-byte ``bytes`` values, where serialisation hides less of the core.

Run (from the repository root; the base is any older checkout with its
extension built in place):

    git worktree add /tmp/hc-base <commit>
    (cd /tmp/hc-base && python setup.py build_ext --inplace -q)
    python setup.py build_ext --inplace -q
    python benchmarks/regression.py --base /tmp/hc-base --rounds 11

Each build is imported from its own ``src`` (PYTHONPATH), which the child
checks and prints. ``--core`` times the core's own get and set instead
(benchmarks/core_loop.c, compiled with -O2 against each tree's C sources;
no build of the extension needed), where a change to the C paths is not
diluted by the interpreter and msgpack. On a shared machine single rounds vary by up to 2x;
read the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import machine_header
from _timing import median, ns_per_op

HERE = Path(__file__).resolve().parent
OPS = ("get_hit", "get_miss", "set", "get_hit_bytes", "set_bytes")
CORE_OPS = ("core_get_hit", "core_set")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="the other checkout (built in place)")
    parser.add_argument(
        "--this", type=Path, default=HERE.parent,
        help="the checkout measured against it (default: this one, built in place)",
    )
    parser.add_argument("--rounds", type=int, default=11, help="alternations (11)")
    parser.add_argument("--keys", type=int, default=10_000, help="number of keys (10000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed passes per figure (5)")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu",
        help="cpu: the thread's CPU time (default; steadier on a busy machine); wall",
    )
    parser.add_argument(
        "--core", action="store_true",
        help="time the C core's own loop (benchmarks/core_loop.c, -O2) instead of Python",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """Measure the herdcache on sys.path; print one JSON line."""
    import time

    import herdcache
    from cache import make_value

    clock = time.thread_time_ns if args.clock == "cpu" else time.perf_counter_ns

    keys = [f"key:{i:08d}" for i in range(args.keys)]
    misses = [f"miss:{i:08d}" for i in range(args.keys)]
    values = [make_value(i) for i in range(args.keys)]
    small = [i.to_bytes(8, "little") for i in range(args.keys)]
    cache = herdcache.Cache(size="256MiB")
    try:
        for key, value in zip(keys, values):
            cache.set(key, value)
        figures = {
            "get_hit": ns_per_op(cache.get, keys, args.repeat, clock=clock),
            "get_miss": ns_per_op(cache.get, misses, args.repeat, clock=clock),
            "set": ns_per_op(cache.set, keys, args.repeat, values, clock=clock),
        }
        for key, value in zip(keys, small):
            cache.set(key, value)
        figures["set_bytes"] = ns_per_op(cache.set, keys, args.repeat, small, clock=clock)
        figures["get_hit_bytes"] = ns_per_op(cache.get, keys, args.repeat, clock=clock)
    finally:
        cache.close()
    print(json.dumps({"module": herdcache.__file__, **figures}))


def build_core_loop(tree: Path, into: Path) -> Path:
    """core_loop.c compiled with -O2 against tree's core (no binding)."""
    core = tree / "src" / "herdcache" / "_core"
    sources = sorted(str(p) for p in core.glob("*.c") if not p.name.startswith("py_"))
    binary = into / f"core_loop-{len(list(into.iterdir()))}"
    subprocess.run(
        [os.environ.get("CC", "gcc"), "-std=c11", "-D_GNU_SOURCE", "-O2", "-DNDEBUG",
         "-pthread", f"-I{core}", "-o", str(binary), str(HERE / "core_loop.c"), *sources],
        check=True,
    )
    return binary


def run_core(binary: Path, args: argparse.Namespace) -> dict:
    out = subprocess.run([str(binary), str(args.keys)], check=True, capture_output=True,
                         text=True, timeout=300).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_child(tree: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'src'}{os.pathsep}{HERE}")
    out = subprocess.run(
        [sys.executable, __file__, "--child", "--keys", str(args.keys),
         "--repeat", str(args.repeat), "--clock", args.clock],
        env=env, check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    if not figures.pop("module").startswith(str(tree / "src")):
        raise SystemExit(f"the child did not import herdcache from {tree}/src")
    return figures


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    if args.base is None:
        raise SystemExit("--base: the checkout to compare against is required")
    trees = {"this": args.this.resolve(), "base": args.base.resolve()}
    runs: dict[str, list[dict]] = {"this": [], "base": []}
    with tempfile.TemporaryDirectory() as tmp:
        if args.core:
            binaries = {name: build_core_loop(tree, Path(tmp)) for name, tree in trees.items()}
        for i in range(args.rounds):
            order = ("this", "base") if i % 2 == 0 else ("base", "this")
            for name in order:
                runs[name].append(
                    run_core(binaries[name], args) if args.core else run_child(trees[name], args)
                )
    print(machine_header("Plain get/set: this checkout against a base build"))
    print(f"this: {trees['this']}  base: {trees['base']}  rounds: {args.rounds}, "
          f"keys: {args.keys}, passes: {7 if args.core else args.repeat}, "
          f"clock: {'cpu' if args.core else args.clock}{', the C core alone' if args.core else ''}\n")
    print("| op | base ns (median) | this ns (median) | ratio of medians "
          "| median of round ratios | round ratios min-max |")
    print("|---|---|---|---|---|---|")
    for op in CORE_OPS if args.core else OPS:
        base = [r[op] for r in runs["base"]]
        this = [r[op] for r in runs["this"]]
        ratios = [t / b for t, b in zip(this, base)]
        print(f"| {op} | {median(base):.0f} | {median(this):.0f} "
              f"| {median(this) / median(base):.3f} | {median(ratios):.3f} "
              f"| {min(ratios):.2f}-{max(ratios):.2f} |")


if __name__ == "__main__":
    main()
