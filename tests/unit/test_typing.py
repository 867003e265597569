"""The public API's types, checked with ``mypy --strict`` over a user file
(``tests/typing/public_api.py``): decorated functions keep their
signatures, ``get_or_compute`` returns the callable's type, keys are
``str | bytes``, and misuse is reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

USER_FILE = Path(__file__).resolve().parents[1] / "typing" / "public_api.py"


def test_a_user_file_type_checks_with_the_types_it_expects() -> None:
    done = subprocess.run(
        # follow-imports=silent: judge the user's file, not herdcache's own
        # modules (the package is checked on its own in CI).
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--no-incremental", str(USER_FILE)],
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout + done.stderr
