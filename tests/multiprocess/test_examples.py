"""Every script in examples/ runs, as a user would run it, and prints what
its docstring promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(script: str, segdir: str) -> list[str]:
    """Run ``examples/<script>`` with its segments in ``segdir``; its output lines."""
    env = {**os.environ, "HERDCACHE_DIR": segdir}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], capture_output=True, text=True, timeout=90, env=env
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stderr}"
    assert os.listdir(segdir) == [], f"{script} left segments behind"
    return done.stdout.splitlines()


def test_the_pool_pipeline_computes_each_key_once_for_the_whole_pool(segdir: str) -> None:
    assert run_example("pool_pipeline.py", segdir) == ["tasks: 32", "computations: 4", "one lookup per city: True"]


def test_the_queue_pipeline_delivers_every_job_once(segdir: str) -> None:
    lines = run_example("queue_pipeline.py", segdir)
    assert lines[:3] == ["jobs: 10000", "results: 10000", "all correct: True"]
    consumers, each = lines[3].split(", jobs each: ")
    assert consumers == "consumers: 3"
    assert sum(int(n) for n in each.strip("[]").split(", ")) == 10000
