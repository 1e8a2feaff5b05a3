"""Scalene profiles attached to perf failures, end to end."""

from __future__ import annotations

import json
import os
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_perfguard.profile import scalene_available
from pytest_perfguard.rerun import profile_command, rerun_args

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


RERUN_TAIL = ["--perf", "--perf-profile=never", "--perf-confirm=0"]


@pytest.mark.parametrize(
    ("args", "paths", "expected"),
    [
        (["suites", "--perf", "--perfcases-variant=naive", "-k", "counter"], ["suites"], ["--perfcases-variant=naive"]),
        (["--perfcases-variant", "naive", "suites/test_counter.py::test_x", "-n", "2"],
         ["suites/test_counter.py::test_x"], ["--perfcases-variant", "naive"]),
        (["-x", "-p", "no:randomly", "--perf-save", "--perf-json=o.json", "-n2", "-kcounter"], [], ["-p", "no:randomly"]),
        (["--perf-profile", "always", "--junitxml", "j.xml", "-v", "--cov", "--cov-report", "html"], [], []),
        (["--cov", "src", "tests", "--benchmark-histogram", "tests"], ["tests"], ["tests"]),  # "tests" is ambiguous: kept
        (["--cov", "--", "tests", "-odd-name.py"], ["tests", "-odd-name.py"], []),  # after "--": test paths
        (["@args.txt", "--perf"], ["tests", "suites"], ["@args.txt"]),  # pytest reads the file again
    ],
)
def test_rerun_args_keep_user_options_and_drop_selection(args, paths, expected):
    assert rerun_args(args, paths, xdist=False) == expected + RERUN_TAIL
    assert rerun_args(args, paths, xdist=True) == expected + RERUN_TAIL + ["-n", "0"]


def test_rerun_args_keep_a_separate_value_whatever_exists_on_disk():
    """What pytest's parser read decides: a value that names a folder stays with its option, even the
    same string given as a test path too."""
    assert rerun_args(["--perf-baselines", "baselines", "suites", "--perf"], ["suites"], xdist=False)[:2] == \
        ["--perf-baselines", "baselines"]
    assert rerun_args(["tests", "--perf-baselines", "tests"], ["tests"], xdist=False)[:3] == \
        ["tests", "--perf-baselines", "tests"]  # one of the two is a path: both stay, --perf-only selects
    assert rerun_args(["-c", "ci.ini", "--rootdir", "."], [], xdist=False)[:4] == ["-c", "ci.ini", "--rootdir", "."]


def test_profile_command_names_the_test_and_keeps_the_options():
    cmd = profile_command("tests/test_a.py::test_b[x y]", ["tests", "--perf", "--perf-baselines", "base", "-n", "2"],
                          ["tests"])
    assert cmd == "python -m pytest 'tests/test_a.py::test_b[x y]' --perf-baselines base --perf --perf-profile=always"
    ambiguous = profile_command("t.py::t", ["t.py", "--perf-baselines", "t.py"], ["t.py"])
    assert "--perf-only=t.py::t" in ambiguous


def test_perf_only_runs_the_named_test_whatever_else_is_collected(pytester):
    pytester.makepyfile(test_a="def test_x():\n    pass\n\ndef test_y():\n    pass\n",
                        test_b="def test_z():\n    pass\n")
    result = pytester.runpytest(".", "test_a.py::test_y", "--perf-only=test_a.py::test_y", "-v")
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(["*test_a.py::test_y PASSED*"])


def test_profile_region_outside_scalene_is_a_usage_error(pytester):
    pytester.makepyfile("def test_x():\n    pass\n")
    result = pytester.runpytest_subprocess("--perf", "--perf-profile-region=out.json")
    result.stderr.fnmatch_lines(["*--perf-profile-region is for the plugin's own profile re-run*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_bad_profile_limit_and_unknown_profile_path(pytester):
    make_project(pytester)
    bad = pytester.runpytest("--perf", "--perf-profile-limit=0")
    bad.stderr.fnmatch_lines(["*--perf-profile-limit must be >= 1*"])
    pytester.makeini("[pytest]\npythonpath = src\nperfguard_profile_paths = no_such_module_xyz\n")
    result = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.1", "tests")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*WARNING*test_too_slow*perfguard_profile_paths: 'no_such_module_xyz' is neither a "
                                 "path (from the rootdir *) nor an importable module*"])


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


LIBRARY = {
    "fastfilters/__init__.py": """
from .core import smooth

# Work at import time, as a large library does (kornia imports torch): a profile of the whole
# re-run would show this line; a profile of the measured region must not.
_TABLE = [i ** 0.5 for i in range(1_500_000)]
""",
    "fastfilters/core.py": """
def smooth(values):
    n = len(values)
    half = [v * 0.5 for v in values]
    prefix = [sum(half[: i + 1]) for i in range(n)]  # the slowed line: quadratic
    return prefix[-1]
""",
}


def _hot_rows(section: str) -> list[str]:
    """The file:line column of the profile section's table, in order."""
    lines = section.splitlines()
    head = next(i for i, ln in enumerate(lines) if "file:line" in ln and "CPU %" in ln)
    rows = []
    for ln in lines[head + 1:]:
        if ln.startswith("profile json:") or not ln.strip():
            break
        rows.append(ln.split()[0])
    return rows


@pytest.mark.skipif(not scalene_available(), reason="Scalene is not installed")
def test_a_library_named_by_module_shows_its_slowed_line_not_its_imports(pytester, tmp_path_factory, monkeypatch):
    """The code under test is a package outside the project, on PYTHONPATH (an installed library),
    named in perfguard_profile_paths by its module name; only the measured region is profiled."""
    site = tmp_path_factory.mktemp("site")
    for name, text in LIBRARY.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    pytester.makeini("[pytest]\nperfguard_profile_paths = fastfilters\n")
    pytester.makepyfile(test_filters="""
        import pytest
        from fastfilters import smooth

        VALUES = [float(i % 13) for i in range(2000)]

        @pytest.mark.perf_budget(latency="1us")
        def test_smooth_is_fast(perf):
            perf(smooth, VALUES)
    """)
    result = pytester.runpytest_subprocess("--perf", "--perf-max-time=0.2", "--perf-json=run.json")
    result.assert_outcomes(failed=1)
    doc = json.loads((pytester.path / "run.json").read_text())
    profile = doc["tests"][0]["profile"]
    assert "error" not in profile, profile
    hot = [(Path(h["file"]).relative_to(site).as_posix(), h["line"], h["cpu_percent"]) for h in profile["hot_lines"]]
    culprit = ("fastfilters/core.py", 5)
    assert culprit in [h[:2] for h in hot[:3]], hot
    assert not any(f == "fastfilters/__init__.py" for f, _, _ in hot), hot  # imports are not in the profile
    rows = _hot_rows(result.stdout.str().split("perfguard profile", 1)[1])
    assert any(row.endswith("fastfilters/core.py:5") for row in rows[:3]), rows


@pytest.mark.skipif(not scalene_available(), reason="Scalene is not installed")
def test_profile_limit_and_an_option_value_after_a_space(pytester):
    """``--perf-baselines DIR`` (space form, an existing folder) reaches the re-run; beyond
    --perf-profile-limit a failure says how to profile it, and that command does."""
    make_project(pytester)
    (pytester.path / "tests" / "test_slow2.py").write_text(
        "from slowlib import hot\nfrom pytest_perfguard import perf_budget\n\n"
        "@perf_budget(latency='1us')\ndef test_also_slow(perf):\n    perf(hot, 200_000)\n")
    (pytester.path / "base").mkdir()
    result = pytester.runpytest_subprocess("tests", "--perf", "--perf-max-time=0.2", "--perf-baselines", "base",
                                           "--perf-profile-limit", "1")
    result.assert_outcomes(failed=2, passed=1)
    out = result.stdout.str()
    assert out.count("Scalene re-run (") == 1, out
    result.stdout.fnmatch_lines(["*src/slowlib.py:* total += i * i % 7*"])
    (skipped,) = [ln for ln in result.stdout.lines if ln.startswith("not profiled: the run's 1 profile ")]
    command = skipped.split("to profile it: ", 1)[1]
    assert "--perf-baselines base" in command and "--perf-profile=always" in command, command
    argv = shlex.split(command)
    assert argv[:3] == ["python", "-m", "pytest"]
    again = pytester.run(sys.executable, *argv[1:])
    again.stdout.fnmatch_lines(["*- perfguard profile -*", "Scalene re-run (*", "*src/slowlib.py:* total += i * i % 7*"])
    assert "1 failed" in again.stdout.str()
