"""``pytest --perf --perf-instructions``: the session runs again under valgrind's callgrind, where each
measured region is counted in instructions (``callgrind``) instead of timed.

The process the user started only starts the session under callgrind, with the same arguments, and
exits with its exit status; nothing of it is collected or reported here."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from . import callgrind

__all__ = ["SUFFIX", "run_under_callgrind"]

SUFFIX = "-callgrind"  # counts live in their own baseline file: baselines/<machine>-callgrind.json


def run_under_callgrind(config: pytest.Config) -> int:
    """Run this pytest invocation under callgrind; its exit status. ``pytest.UsageError`` when it cannot."""
    if not callgrind.available():
        raise pytest.UsageError(callgrind.MISSING)
    if config.getoption("numprocesses", None) or config.getoption("dist", "no") != "no":
        raise pytest.UsageError("--perf-instructions runs the session under callgrind, which runs one thread at a "
                                "time: drop -n / --dist (pytest-xdist)")
    with tempfile.TemporaryDirectory(prefix="perfguard-callgrind-") as out:
        command = [*callgrind.command(Path(out)), sys.executable, "-m", "pytest", *config.invocation_params.args]
        env = callgrind.environment(os.environ, Path(out))
        return subprocess.run(command, cwd=config.invocation_params.dir, env=env).returncode
