"""``perfguard show`` fits the terminal: long node ids and metric lists wrap instead of running on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_perfguard.cli import main as cli_main

LONG_NAME = "test_a_long_name_that_says_which_claim_it_checks"  # with its id: wider than its column at 80
LONG_TEST = f'''
import pytest


@pytest.mark.perf_budget(latency="1s")
@pytest.mark.parametrize("size", ["a_wide_parameter_id"])
def {LONG_NAME}(perf, size):
    perf(sum, range(10))
    perf.record(**{{f"metric_number_{{i}}": i / 7 for i in range(30)}})


@pytest.mark.perf_budget(latency="1s")
def test_short(perf):
    perf(sum, range(10))
'''


def _show(path: Path, *args: str, columns: int) -> list[str]:
    env = {**os.environ, "COLUMNS": str(columns)}
    proc = subprocess.run([sys.executable, "-m", "pytest_perfguard.cli", "show", str(path), *args],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_show_fits_a_saved_baseline_in_the_terminal_width(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_wide=LONG_TEST)
    result = pytester.runpytest("--perf", "--perf-save", "--perf-min-rounds=5", "--perf-max-time=0.02",
                                "--perf-profile=never", "--perf-baselines=baselines")
    result.assert_outcomes(passed=2)
    (saved,) = (pytester.path / "baselines").glob("*.json")

    lines = _show(saved, columns=80)
    assert max(map(len, lines)) <= 80, "\n".join(lines)
    text = "\n".join(lines)
    # the file once, then each test under it by its whole name; a name wider than its column on a
    # line of its own, its figures on the next
    assert lines.count("test_wide.py") == 1
    at = lines.index(f"  {LONG_NAME}[a_wide_parameter_id]")
    assert "s/call" in lines[at + 1] and not lines[at + 1].startswith("  test")
    assert any(line.startswith("  test_short ") and "s/call" in line for line in lines)
    # every metric, wrapped under its test and indented
    metrics = " ".join(line.strip() for line in lines[at + 2:] if line.startswith("    "))
    assert metrics.startswith("metrics: metric_number_0=0, ")
    for i in range(30):
        assert f"metric_number_{i}=" in metrics
    assert text.count("metric_number_") == 30

    wide = _show(saved, "--width", "250", columns=80)
    assert any(line.startswith(f"  {LONG_NAME}[a_wide_parameter_id]") and "s/call" in line for line in wide)
    assert max(map(len, wide)) <= 250


def test_show_wraps_a_malformed_entry_and_keeps_a_minimum_width(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    nodeid = "tests/" + "deep/" * 12 + "test_x.py::test_y"
    doc = {"format": 1, "machine": {"hardware": {"cpu_model": "A CPU model with a very long marketing name " * 3,
                                                 "cpu_logical": 2}, "software": {"python": "3.11"}},
           "speed": {"score": 100.0, "workload": "v1"}, "updated": "2026-11-23T00:00:00+00:00",
           "entries": {nodeid: {"samples": {"latency": [-1.0] * 40}, "summary": {"median": 0.01, "n": 40},
                                "unit": "call", "metrics": {}}}}
    path = tmp_path / "x.json"
    path.write_text(json.dumps(doc))
    assert cli_main(["show", str(path), "--width", "20"]) == 0  # narrower than the least width: 60
    lines = capsys.readouterr().out.splitlines()
    assert max(map(len, lines)) <= 60, "\n".join(lines)
    assert lines[0].startswith("machine: ") and lines[1].startswith("  ")  # the machine line wrapped
    assert ("..." + nodeid.partition("::")[0][-57:]) in lines  # a path wider than the line keeps its end
    assert any(line.startswith("  test_y ") and "malformed" in line for line in lines)
    note = " ".join(line.strip() for line in lines if line.startswith("    "))
    assert note.startswith("malformed: ") and "not finite positive seconds" in note
