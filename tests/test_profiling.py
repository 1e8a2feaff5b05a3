"""Scalene profiles attached to perf failures, end to end."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_perfguard.profile import scalene_available
from pytest_perfguard.rerun import rerun_args

SLOW_PROJECT = {
    "src/slowlib.py": """
def hot(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
""",
    "tests/test_slow.py": """
from slowlib import hot
from pytest_perfguard import perf_budget

@perf_budget(latency="1us")
def test_too_slow(perf):
    perf(hot, 200_000)

@perf_budget(latency="10s")
def test_fine(perf):
    perf(hot, 10)
""",
}


def make_project(pytester: pytest.Pytester) -> None:
    for name, text in SLOW_PROJECT.items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    pytester.makeini("[pytest]\npythonpath = src\n")


@pytest.mark.skipif(not scalene_available(), reason="Scalene is not installed")
def test_failure_gets_a_profile_naming_the_slow_line(pytester):
    make_project(pytester)
    result = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.2", "--junitxml=junit.xml",
                                           "--perf-json=run.json", "tests")
    result.assert_outcomes(failed=1, passed=1)
    out = result.stdout.str()
    # the budget breach is still the first line of the failure
    result.stdout.re_match_lines([r"^latency p50 \d+\.\d\d ms/call > budget 1\.00 us/call"])
    result.stdout.fnmatch_lines(["*- perfguard profile -*", "*file:line*CPU %*MEM MB*source*",
                                 "*src/slowlib.py:* total += i * i % 7*"])
    profiles = pytester.path / ".perfguard" / "profiles"
    (json_file,) = profiles.glob("*test_too_slow*.json")
    (html_file,) = profiles.glob("*test_too_slow*.html")
    json.loads(json_file.read_text())
    page = html_file.read_text()
    assert "<html" in page.lower() and "<script src=" not in page  # self-contained, opens offline
    assert not list(profiles.glob("*test_fine*")), "passing tests are not profiled"
    assert "profile json:" in out and "profile html:" in out
    props = {p.get("name"): p.get("value") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert props["perfguard_profile_json"].endswith(".json") and Path(props["perfguard_profile_html"]).exists()
    doc = json.loads((pytester.path / "run.json").read_text())
    slow = next(t for t in doc["tests"] if "too_slow" in t["nodeid"])
    assert slow["profile"]["json"] == props["perfguard_profile_json"]
    assert any("slowlib.py" in h["file"] for h in slow["profile"]["hot_lines"])


def test_scalene_missing_gives_a_warning_and_the_breach_stands(pytester):
    make_project(pytester)
    fake = pytester.path / "fake_site" / "scalene"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'scalene'\")\n")
    (fake / "__main__.py").write_text("raise SystemExit(\"No module named 'scalene'\")\n")
    pytester.makeini("[pytest]\npythonpath = fake_site src\n")
    import os

    env_path = os.pathsep.join([str(pytester.path / "fake_site"), os.environ.get("PYTHONPATH", "")])
    pytester._monkeypatch.setenv("PYTHONPATH", env_path)  # the profiler's subprocess sees the fake too
    result = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.1", "tests")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.re_match_lines([r"^latency p50 \d+\.\d\d ms/call > budget 1\.00 us/call"])
    result.stdout.fnmatch_lines(["*WARNING*test_too_slow*Scalene is not installed*"])
    assert not (pytester.path / ".perfguard").exists()


def test_profile_never_and_timeout(pytester):
    make_project(pytester)
    never = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.1", "--perf-profile=never", "tests")
    never.assert_outcomes(failed=1, passed=1)
    never.stdout.no_fnmatch_line("*perfguard profile*")
    if scalene_available():
        slow = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.1", "--perf-profile-timeout=0.5", "tests")
        slow.assert_outcomes(failed=1, passed=1)
        slow.stdout.fnmatch_lines(["*WARNING*test_too_slow*timed out*"])


def test_bad_profile_mode_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest("--perf-profile=sometimes")
    result.stderr.fnmatch_lines(["*--perf-profile*must be one of on-failure, always, never*"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["suites", "--perf", "--perfcases-variant=naive", "-k", "counter"], ["--perfcases-variant=naive"]),
        (["--perfcases-variant", "naive", "suites/test_counter.py::test_x", "-n", "2"], ["--perfcases-variant", "naive"]),
        (["-x", "-p", "no:randomly", "--perf-save", "--perf-json=o.json", "-n2", "-kcounter"], ["-p", "no:randomly"]),
        (["--perf-profile", "always", "--junitxml", "j.xml", "-v"], []),
    ],
)
def test_rerun_args_keep_user_options_and_drop_selection(tmp_path, args, expected):
    (tmp_path / "suites").mkdir()
    got = rerun_args(args, tmp_path, xdist=True)
    assert got == expected + ["--perf", "--perf-profile=never", "--perf-min-rounds=3", "--perf-max-time=0.5",
                              "-p", "no:xdist"]


def test_rerun_args_keep_a_separate_value_that_is_an_existing_path(tmp_path):
    (tmp_path / "baselines").mkdir()
    (tmp_path / "suites").mkdir()
    args = ["--perf-baselines", "baselines", "suites", "--perf"]
    got = rerun_args(args, tmp_path, xdist=False, targets=["suites"])
    assert got[:2] == ["--perf-baselines", "baselines"] and "suites" not in got


@pytest.mark.skipif(not scalene_available(), reason="Scalene is not installed")
def test_under_xdist_the_worker_profiles_and_the_controller_reports(pytester):
    pytest.importorskip("xdist")
    make_project(pytester)
    result = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.2", "-n", "2", "--junitxml=junit.xml", "tests")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*- perfguard profile -*", "*src/slowlib.py:*total += i * i % 7*"])
    assert len(list((pytester.path / ".perfguard" / "profiles").glob("*test_too_slow*.json"))) == 1
    props = {p.get("name") for p in ET.parse(pytester.path / "junit.xml").iter("property")}
    assert {"perfguard_profile_json", "perfguard_profile_html"} <= props
