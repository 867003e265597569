"""Run the mutant catalogue: does each plausible bug fail the tests meant for it?

    python tests/mutation/run.py [--only ID[,ID...]] [--jobs N] [--list]

Each mutant of :mod:`catalogue` is applied to a scratch copy of this
working tree (tracked and untracked files, plus the built extension), the
copy is rebuilt if the mutant is in C (``ccache gcc`` when ccache is
installed, so that only the mutated file compiles), and the mutant's tests
run there: C test programs (``c:test_table``) first, then pytest.  The
first failing one kills it.  Each result is one of

- ``assertion``: a test failed (or a C test's CHECK or deadline fired);
- ``crash``: the test process died of a signal (a segfault, say);
- ``timeout``: only pytest-timeout, or this runner's own limit, stopped it;
- ``survived``: every test passed;
- ``error``: the mutant does not build (or pytest could not run): fix the
  catalogue, it tested nothing.

The last line is ``mutants: K of N killed (T by timeout)``.  A snippet that
no longer occurs exactly once in its file stops the run before anything is
built: update the catalogue, do not let a mutant silently test nothing.
The run is CPU-heavy (a rebuild per C mutant): on demand, not in CI.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from catalogue import MUTANTS, Mutant  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
#: This runner's own limit on one mutant's build or tests, above pytest-timeout's 120 s.
LIMIT = 300


@dataclass
class Result:
    mutant: Mutant
    outcome: str  # assertion, crash, timeout, survived
    killer: str  # the test that failed, or ""
    seconds: float


class CatalogueError(Exception):
    """A mutant's snippet does not occur exactly once in its file."""


def check(mutants: list[Mutant]) -> None:
    """Every snippet occurs exactly once, and every test it names exists."""
    problems = []
    for m in mutants:
        count = (ROOT / m.path).read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.id}: the snippet occurs {count} times in {m.path} (the code moved: update it)")
        for test in m.tests:
            target = f"tests/c/{test[2:]}.c" if test.startswith("c:") else test.split("::")[0]
            if not (ROOT / target).exists():
                problems.append(f"{m.id}: no {target}")
    if problems:
        raise CatalogueError("\n".join(problems))


def scratch_copy(dest: Path) -> None:
    """Copy the working tree (not .git, not build products) and the built extension."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    built = sorted((ROOT / "src/herdcache").glob("_core*.so"))
    if not built:
        raise SystemExit("build the extension first: pip install -e '.[test]'")
    for so in built:
        shutil.copy2(so, dest / "src/herdcache" / so.name)


def run(cmd: list[str], cwd: Path, limit: float = LIMIT, env: dict | None = None) -> tuple[int | None, str]:
    """(exit code or None if it ran past ``limit``, output)."""
    with subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # and whatever the tests started
            out, _ = proc.communicate()
            return None, out
    return proc.returncode, out


class Scratch:
    """One scratch copy of the tree, where one mutant at a time is tried."""

    def __init__(self, base: Path, index: int):
        self.dir = base / f"job{index}"
        scratch_copy(self.dir)
        self.pristine_so = {so: so.read_bytes() for so in (self.dir / "src/herdcache").glob("_core*.so")}
        self.env = dict(os.environ, PYTHONPATH=str(self.dir / "src"))
        if shutil.which("ccache"):
            self.env["CC"] = "ccache gcc"
        code, out = run([sys.executable, "-c", "import herdcache; print(herdcache.__file__)"], self.dir, 60, self.env)
        if code != 0 or not out.strip().startswith(str(self.dir)):
            raise SystemExit(f"the scratch copy does not import its own herdcache: {out.strip()}")

    def build(self) -> str | None:
        """Rebuild the extension; the compiler's complaint if the mutant does not build."""
        code, out = run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], self.dir, LIMIT, self.env)
        return None if code == 0 else out[-2000:]

    def c_test(self, name: str) -> tuple[str, str]:
        """(outcome, killer) of one C test program, built with ASan+UBSan."""
        env = dict(self.env, CC="gcc")  # one gcc call per program: nothing for ccache to reuse
        code, out = run(["make", "-s", "-C", "tests/c", f"build/asan/{name}"], self.dir, LIMIT, env)
        if code != 0:
            return "error", f"c:{name} does not build: {out.strip().splitlines()[:3]}"
        code, out = run([f"tests/c/build/asan/{name}"], self.dir, LIMIT, self.env)
        if code == 0:
            return "survived", ""
        if code is None:
            return "timeout", f"c:{name}"
        ran = re.findall(r"^    (test_\w+)$", out, re.M)
        where = f"c:{name}::{ran[-1]}" if ran else f"c:{name}"
        return ("crash" if code < 0 else "assertion"), where

    def pytest(self, targets: list[str]) -> tuple[str, str]:
        """(outcome, killer) of the mutant's pytest targets, stopping at the first failure."""
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *targets]
        code, out = run(cmd, self.dir, LIMIT, self.env)
        if code == 0:
            return "survived", ""
        failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
        killer = failed[0] if failed else " ".join(targets)
        if code is None or "+++ Timeout +++" in out:
            return "timeout", killer
        if code < 0 or "Fatal Python error" in out:
            return "crash", killer
        if code != 1:
            return "error", f"pytest exit {code}: {out.strip().splitlines()[-1:]}"
        return "assertion", killer

    def try_mutant(self, m: Mutant) -> Result:
        path = self.dir / m.path
        original = path.read_text()
        started = time.monotonic()
        path.write_text(original.replace(m.original, m.replacement, 1))
        try:
            outcome, killer = self.tests_of(m)
        finally:
            path.write_text(original)
            for so, data in self.pristine_so.items():
                so.write_bytes(data)
        return Result(m, outcome, killer, time.monotonic() - started)

    def tests_of(self, m: Mutant) -> tuple[str, str]:
        if m.path.endswith((".c", ".h")) and any(not t.startswith("c:") for t in m.tests):
            failure = self.build()
            if failure is not None:
                return "error", f"does not build: {failure.strip().splitlines()[-1:]}"
        for test in (t for t in m.tests if t.startswith("c:")):
            outcome, killer = self.c_test(test[2:])
            if outcome != "survived":
                return outcome, killer
        targets = [t for t in m.tests if not t.startswith("c:")]
        return self.pytest(targets) if targets else ("survived", "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="mutant ids (comma-separated, repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tried at once, each in its own copy")
    parser.add_argument("--list", action="store_true", help="list the catalogue and stop")
    args = parser.parse_args()
    wanted = {i for group in args.only for i in group.split(",") if i}
    unknown = wanted - {m.id for m in MUTANTS}
    if unknown:
        parser.error(f"no mutants {sorted(unknown)}")
    mutants = [m for m in MUTANTS if not wanted or m.id in wanted]
    check(mutants)
    if args.list:
        for m in mutants:
            print(f"{m.id:32} {m.path:40} {m.why}")
        return 0
    base = Path(tempfile.mkdtemp(prefix="hc-mutants-"))
    try:
        results = try_all(mutants, base, max(1, args.jobs))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return report(results)


def try_all(mutants: list[Mutant], base: Path, jobs: int) -> list[Result]:
    """Each mutant in one of ``jobs`` scratch copies; results in catalogue order."""
    free: list[Scratch] = [Scratch(base, i) for i in range(min(jobs, len(mutants)))]
    lock = threading.Lock()

    def one(m: Mutant) -> Result:
        with lock:
            scratch = free.pop()
        try:
            result = scratch.try_mutant(m)
        finally:
            with lock:
                free.append(scratch)
        print(f"{m.id:32} {result.outcome:10} {result.seconds:6.0f} s  {result.killer}", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(len(free)) as pool:
        return list(pool.map(one, mutants))


def report(results: list[Result]) -> int:
    """The table, then the score line; exit 1 if a mutant survived or did not build."""
    print("\n| mutant | file | result | killed by | s |\n|---|---|---|---|--:|")
    for r in results:
        print(f"| {r.mutant.id} | {r.mutant.path.split('/')[-1]} | {r.outcome} | {r.killer} | {r.seconds:.0f} |")
    killed = [r for r in results if r.outcome in ("assertion", "crash", "timeout")]
    by_timeout = sum(r.outcome == "timeout" for r in results)
    print(f"\nmutants: {len(killed)} of {len(results)} killed ({by_timeout} by timeout)")
    return 0 if len(killed) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
