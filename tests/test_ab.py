"""``perfguard ab REV``, end to end on throw-away git repositories made by each test."""

from __future__ import annotations

import json
import os
import signal
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pytest_perfguard.model import TestResult
from pytest_perfguard.ab_process import (ABError, ab_pythonpath, base_name, check_args, check_imports, cpu_list,
                                         cpu_set)

FAST = ["--perf-max-time=0.05", "--perf-min-rounds=6", "--perf-min-round-time=0.002"]

LIB = '''
VERSION = "{version}"

def work():
    return sum(i * i for i in range({n}))
'''

TEST = '''
import os
import mylib
from pytest_perfguard import perf_budget

@perf_budget(latency="{latency}")
def test_work(perf):
    perf(mylib.work)
    perf.record(is_head=float(mylib.VERSION == "head"), cwd_length=float(len(os.getcwd())))
'''


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def commit(repo: Path, message: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)


def init(root: Path) -> None:
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")


# The head's work is 1/1000 of the base's (sum over 30 vs 30000 squares: a few us vs a few ms a call),
# so that the tests that need a verdict in the right direction get it from 1 or 2 rounds on a busy
# machine: with both cores of a 2-core runner kept busy, 10 runs of 2 rounds measured head/base
# between 0.0003 and 0.0022; the former 3x gap (0.33) came out as high as 0.96 on a busy machine.
BASE_N, HEAD_N = 30000, 30


@pytest.fixture
def repo(pytester: pytest.Pytester) -> Path:
    """A repo whose base commit does 1000x the work of its head commit; code in src/, tests in tests/."""
    root = pytester.path
    init(root)
    commit(root, "base", {
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
        "src/mylib/__init__.py": LIB.format(version="base", n=BASE_N),
        "tests/test_work.py": TEST.format(latency="1s"),
    })
    commit(root, "head", {"src/mylib/__init__.py": LIB.format(version="head", n=HEAD_N)})
    return root


@pytest.fixture
def flat_repo(pytester: pytest.Pytester) -> Path:
    """tomli's layout problem: the package next to pyproject.toml, not under src/."""
    root = pytester.path
    init(root)
    commit(root, "base", {
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n',
        "mylib/__init__.py": LIB.format(version="base", n=BASE_N),
        "tests/test_work.py": TEST.format(latency="1s"),
    })
    commit(root, "head", {"mylib/__init__.py": LIB.format(version="head", n=HEAD_N)})
    return root


def ab(repo: Path, *args: str, timeout: float = 120, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "pytest_perfguard.cli", "ab", *args], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=timeout)


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def test_each_side_measures_its_own_code_and_the_faster_head_is_an_improvement(repo: Path) -> None:
    # 7 rounds: one test holds the whole 1 % error budget, and 2^-7 is the least p-value that is below it
    proc = ab(repo, "HEAD~1", "--rounds", "7", "--seed", "7", "--json", "ab.json", "--markdown", "ab.md", "--", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round 7/7 head" in proc.stdout
    assert "improved" in proc.stdout
    doc = json.loads((repo / "ab.json").read_text())
    (test,) = doc["tests"]
    assert test["nodeid"] == "tests/test_work.py::test_work"
    assert test["metrics"]["is_head"] == 1.0  # the head imported the head's mylib ...
    assert test["base_metrics"]["is_head"] == 0.0  # ... and the base its own
    assert test["base_metrics"]["cwd_length"] == test["metrics"]["cwd_length"]  # from equally long paths
    assert test["comparison"]["ratio"] < 0.1  # 1/1000 of the work; 45x above the worst measured: see BASE_N
    assert test["verdict"] == "improved"
    assert sorted((r["round"], r["side"]) for r in doc["ab"]["runs"]) == [(k, s) for k in range(1, 8) for s in ("base", "head")]
    assert doc["ab"]["seed"] == 7 and "in random order (--seed 7)" in proc.stdout
    assert "**PASSED**" in (repo / "ab.md").read_text()
    assert len(worktrees(repo)) == 1  # the base worktree is gone


def test_a_slower_head_fails_with_a_regression_and_markdown(repo: Path) -> None:
    git(repo, "checkout", "-q", "HEAD~1")  # head = the slow commit, base = the fast one
    proc = ab(repo, "main" if "main" in git(repo, "branch") else "master", "--rounds", "12",
              "--markdown", "ab.md", "--", *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "latency vs baseline regressed" in proc.stdout
    assert "fastest third of the per-run best rounds" in proc.stdout  # the runs decide
    assert "slower beyond the 5 % tolerance" in proc.stdout
    # one test, the whole 1 % budget: efficacy looks at rounds 10 and 11 (runs.efficacy_looks), and
    # 1/2^10 is below a look's level: a clear slowdown stops at the first, and so do the runs
    assert "round 10/12 head" in proc.stdout and "round 11/12" not in proc.stdout
    assert "stopped after 10 rounds, at an efficacy look (level 0.0017)" in proc.stdout
    assert "0 stopped early, unchanged (their rounds ruled out a slowdown beyond the tolerance); 1 stopped early, " \
           "regressed" in proc.stdout
    md = (repo / "ab.md").read_text()
    assert "**FAILED**: 1 regression" in md and "### Regressions" in md


def test_relative_budget_resolves_against_the_base_measured_in_this_job(repo: Path) -> None:
    commit(repo, "tighter budget, slower code", {
        "tests/test_work.py": TEST.format(latency="+10%"),
        "src/mylib/__init__.py": LIB.format(version="head", n=2 * BASE_N),
    })
    proc = ab(repo, "HEAD~1", "--rounds", "7", "--", *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "slower beyond the 10 % tolerance" in proc.stdout  # the "+10%" row, judged against HEAD~1's runs


def test_uncommitted_changes_are_measured_as_they_are_and_said(repo: Path) -> None:
    (repo / "src/mylib/__init__.py").write_text(LIB.format(version="head", n=3 * BASE_N))  # 3x the base's work
    proc = ab(repo, "HEAD~1", "--rounds", "1", "--json", "ab.json", "--", *FAST)
    assert "uncommitted changes" in proc.stdout
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the dirty tree is slower than the base
    assert json.loads((repo / "ab.json").read_text())["ab"]["dirty"] is True


def test_tests_on_one_side_only_are_listed_never_failed(repo: Path) -> None:
    commit(repo, "new test", {"tests/test_new.py": TEST.replace("test_work", "test_new").format(latency="1s")})
    # test_work is unchanged (A/A): a huge tolerance keeps this test about listing, not timing
    proc = ab(repo, "HEAD~1", "--rounds", "1", "--tolerance", "99%", "--json", "ab.json", "--", *FAST)
    assert "only on the head (budgets only): `tests/test_new.py::test_new`" in proc.stdout, proc.stdout + proc.stderr
    verdicts = {t["nodeid"]: t["verdict"] for t in json.loads((repo / "ab.json").read_text())["tests"]}
    assert verdicts["tests/test_new.py::test_new"] == "head only"
    assert "FAILED tests/test_new.py" not in proc.stdout


def test_a_broken_base_is_reported_not_gated_on(repo: Path) -> None:
    git(repo, "checkout", "-q", "HEAD~1")
    commit(repo, "broken", {"tests/test_work.py": "def test_work(:\n"})
    git(repo, "checkout", "-q", "-")
    proc = ab(repo, "HEAD@{1}", "--rounds", "1", "--", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "base broken" in proc.stdout and "interrupted or collection errors" in proc.stdout


CRASH = "import os\n\ndef pytest_collection_finish(session):\n    os._exit(1)\n"


def test_a_head_whose_pytest_dies_without_a_report_fails_the_gate(repo: Path) -> None:
    # exit 1 looks like "tests failed", but no report means nothing was measured: never a pass
    commit(repo, "crash", {"tests/conftest.py": CRASH})
    proc = ab(repo, "HEAD~2", "--rounds", "1", "--", *FAST)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "on the head; nothing was compared" in proc.stderr
    assert "wrote no --perf-json report" in proc.stderr
    assert len(worktrees(repo)) == 1


def test_a_base_whose_pytest_dies_without_a_report_is_base_broken(repo: Path) -> None:
    git(repo, "checkout", "-q", "HEAD~1")
    commit(repo, "crash", {"tests/conftest.py": CRASH})
    git(repo, "checkout", "-q", "-")
    proc = ab(repo, "HEAD@{1}", "--rounds", "1", "--", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "base broken" in proc.stdout and "wrote no --perf-json report" in proc.stdout


def test_a_rev_that_does_not_exist_is_a_clear_error(repo: Path) -> None:
    proc = ab(repo, "no-such-branch", "--", *FAST)
    assert proc.returncode == 2
    assert "'no-such-branch' is not a commit in this repository" in proc.stderr
    assert len(worktrees(repo)) == 1


def test_a_shallow_clone_says_how_to_fetch_the_base(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    proc = ab(clone, "HEAD~1", "--", *FAST)
    assert proc.returncode == 2
    assert "shallow" in proc.stderr and "git fetch --unshallow" in proc.stderr


@pytest.mark.parametrize("args", [["-n", "2"], ["-n4"], ["--dist=load"], ["--perf-save"]])
def test_arguments_that_would_mix_the_sides_are_refused(repo: Path, args: list[str]) -> None:
    proc = ab(repo, "HEAD~1", "--", *args)
    assert proc.returncode == 2
    assert "is not allowed after --" in proc.stderr
    with pytest.raises(ABError):
        check_args(args)


def test_pytest_arguments_need_the_ab_command(repo: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest_perfguard.cli", "show", "x.json", "--", "-k", "x"],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 2 and "only `perfguard ab` takes pytest arguments" in proc.stderr


SLOW = """
import os, subprocess, sys, time

def test_slow():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open({pids!r} + ".tmp", "w") as f:
        f.write(f"{{os.getpid()}} {{child.pid}}")
    os.replace({pids!r} + ".tmp", {pids!r})
    time.sleep(120)
"""


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig, lockstep", [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGHUP, False),
                                           (signal.SIGINT, True)])
def test_an_interruption_stops_the_child_pytest_cleans_up_and_says_so_in_one_line(
        repo: Path, tmp_path: Path, sig: signal.Signals, lockstep: bool) -> None:
    pids = tmp_path / "pids"
    commit(repo, "slow test", {"tests/test_slow.py": SLOW.format(pids=str(pids))})
    tmp = tmp_path / "tmp"  # a private TMPDIR: whatever perfguard ab leaves there is its own
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TMPDIR"] = str(tmp)
    proc = subprocess.Popen([sys.executable, "-m", "pytest_perfguard.cli", "ab", "HEAD~1",
                             "--lockstep" if lockstep else "--no-lockstep", "--", *FAST], cwd=repo,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a background job of a non-interactive shell (CI
                            # steps, `cmd &`) starts with SIGINT ignored, and ab keeps an ignored signal ignored
                            preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 90
        while not pids.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert pids.exists(), "the head's pytest never reached test_slow"
        pytest_pid, sleeper_pid = map(int, pids.read_text().split())
        assert len(worktrees(repo)) == 2 and running(pytest_pid) and running(sleeper_pid)
        assert {p.name[:len("perfguard-ab-")] for p in tmp.iterdir()} == {"perfguard-ab-"}
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + sig, out + err
    assert err.splitlines() == [f"perfguard ab: interrupted ({sig.name}): base worktree removed"], err
    assert "Traceback" not in out + err
    assert len(worktrees(repo)) == 1
    assert list(tmp.iterdir()) == []  # the worktree's folder and the runs' folder
    deadline = time.monotonic() + 10  # killed, not necessarily reaped by init yet
    while (running(pytest_pid) or running(sleeper_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not running(pytest_pid), "the side's pytest is still running"
    assert not running(sleeper_pid), "a process the side's test started is still running"


def test_an_editable_install_outside_src_is_caught_not_compared_with_itself(flat_repo: Path) -> None:
    """``pip install -e .`` of a flat layout puts the head's checkout on sys.path of every side (here
    PYTHONPATH does what the install's .pth or finder does): the base would measure the head's code."""
    proc = ab(flat_repo, "HEAD~1", "--rounds", "1", "--json", "ab.json", "--", *FAST, pythonpath=flat_repo)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (first, *_) = proc.stderr.splitlines()
    assert first.startswith("perfguard ab: error: the base imported the head's files"), proc.stderr
    assert f"mylib from {os.path.realpath(flat_repo / 'mylib' / '__init__.py')}" in proc.stderr
    assert "editable install" in proc.stderr and "perfguard_ab_pythonpath" in proc.stderr
    assert not (flat_repo / "ab.json").exists()  # no verdict at all
    assert len(worktrees(flat_repo)) == 1


def test_the_way_out_the_error_names_makes_each_side_import_its_own_code(flat_repo: Path) -> None:
    proc = ab(flat_repo, "HEAD~1", "--rounds", "7", "--json", "ab.json", "--", *FAST,
              "-o", "perfguard_ab_pythonpath=.", pythonpath=flat_repo)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (test,) = json.loads((flat_repo / "ab.json").read_text())["tests"]
    assert (test["base_metrics"]["is_head"], test["metrics"]["is_head"]) == (0.0, 1.0)


def test_a_regular_install_that_both_sides_import_is_caught(flat_repo: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"  # the head's package copied out, as `pip install .` does
    (site / "mylib").mkdir(parents=True)
    (site / "mylib" / "__init__.py").write_text((flat_repo / "mylib" / "__init__.py").read_text())
    proc = ab(flat_repo, "HEAD~1", "--rounds", "1", "--", *FAST, pythonpath=site)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "both sides imported the project's code from the same files, outside both checkouts" in proc.stderr
    assert f"mylib from {os.path.realpath(site / 'mylib' / '__init__.py')}" in proc.stderr
    assert "perfguard_ab_pythonpath" in proc.stderr


def test_a_side_that_records_no_imports_proves_nothing_and_stops_ab(repo: Path) -> None:
    commit(repo, "hide the record", {"tests/conftest.py": "import os\n\nos.environ.pop('PERFGUARD_AB_IMPORTS', None)\n"})
    proc = ab(repo, "HEAD~2", "--rounds", "1", "--", *FAST)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "the head's pytest (round 1) did not record which files its code came from" in proc.stderr


def test_a_base_that_cannot_import_its_code_hints_at_the_pythonpath_option(repo: Path) -> None:
    git(repo, "checkout", "-q", "HEAD~1")
    git(repo, "mv", "src", "lib")  # the base's code is not where its sys.path looks (no ini)
    commit(repo, "code in lib", {})
    git(repo, "checkout", "-q", "-")
    proc = ab(repo, "HEAD@{1}", "--rounds", "1", "--", *FAST)
    lines = proc.stdout.splitlines()
    hint = "perfguard ab: hint: the base could not import its code (ModuleNotFoundError: No module named 'mylib'"
    assert lines[-2].startswith(hint), proc.stdout + proc.stderr  # next to the verdict
    assert "perfguard_ab_pythonpath" in lines[-2] and "editable install" in lines[-2]


def records(base: dict[str, str], head: dict[str, str], own: list[str] = ["mylib"]) -> tuple[dict, dict]:
    return ({"modules": base, "own_names": own}, {"modules": head, "own_names": own})


def test_check_imports_needs_each_side_to_import_from_its_own_checkout() -> None:
    base_root, head_root = Path("/tmp/perfguard-ab-x/base"), Path("/home/u/proj")
    own = records({"mylib": "/tmp/perfguard-ab-x/base/mylib/__init__.py", "json": "/usr/lib/python3/json/__init__.py"},
                  {"mylib": "/home/u/proj/mylib/__init__.py", "json": "/usr/lib/python3/json/__init__.py"})
    assert check_imports(*own, base_root, head_root) is None
    assert check_imports(own[0], None, base_root, head_root) is None  # the head not run yet
    same = records({"mylib": "/home/u/proj/mylib/__init__.py"}, {"mylib": "/home/u/proj/mylib/__init__.py"})
    assert check_imports(same[0], None, base_root, head_root).startswith("the base imported the head's files")
    swapped = records({}, {"mylib": "/tmp/perfguard-ab-x/base/mylib/__init__.py"})
    assert check_imports(*swapped, base_root, head_root).startswith("the head imported the base's files")
    installed = records({"mylib": "/venv/site-packages/mylib/__init__.py"},
                        {"mylib": "/venv/site-packages/mylib/__init__.py"})
    assert "outside both checkouts" in check_imports(*installed, base_root, head_root)
    not_ours = records({"other": "/venv/site-packages/other.py"}, {"other": "/venv/site-packages/other.py"})
    assert check_imports(*not_ours, base_root, head_root) is None  # not a module of the project
    inside = Path("/home/u/proj/.tmp/perfguard-ab-x/base")  # TMPDIR inside the checkout: the deepest root owns
    nested = records({"mylib": f"{inside}/mylib/__init__.py"}, {"mylib": "/home/u/proj/mylib/__init__.py"})
    assert check_imports(*nested, inside, head_root) is None


def test_ab_pythonpath_defaults_to_src_when_it_exists(tmp_path: Path) -> None:
    assert ab_pythonpath(tmp_path, []) == []
    (tmp_path / "src").mkdir()
    assert ab_pythonpath(tmp_path, []) == [tmp_path / "src"]
    assert ab_pythonpath(tmp_path, ["lib", "other"]) == [tmp_path / "lib", tmp_path / "other"]


def test_ab_pythonpath_ini_is_honoured_on_each_side(repo: Path) -> None:
    """A project whose code lives in lib/ says so with perfguard_ab_pythonpath."""
    git(repo, "mv", "src", "lib")
    commit(repo, "move to lib", {
        "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\nperfguard_ab_pythonpath = ["lib"]\n'})
    git(repo, "checkout", "-q", "-b", "base-lib", "HEAD")
    commit(repo, "base version in lib", {"lib/mylib/__init__.py": LIB.format(version="base", n=BASE_N)})
    git(repo, "checkout", "-q", "-")
    proc = ab(repo, "base-lib", "--rounds", "7", "--json", "ab.json", "--", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (test,) = json.loads((repo / "ab.json").read_text())["tests"]
    assert (test["base_metrics"]["is_head"], test["metrics"]["is_head"]) == (0.0, 1.0)


def test_the_seed_draws_the_order_of_the_sides_in_each_round(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_perfguard import ab as ab_module

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        level = 1e-3 if side == "base" else 2e-3  # a clear slowdown: no futility stop, no efficacy look in 9 rounds
        results = {"t::x": {"nodeid": "t::x", "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                            "measurement": {"samples": [level * (1 + 0.01 * i) for i in range(10)], "unit": "call"}}}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)

    def order(seed: int | None) -> list[tuple[int, str]]:
        result = ab_module.run_ab("HEAD~1", [], rounds=9, cwd=repo, lockstep=False, seed=seed, say=lambda _: None)
        return [(r.round, r.side) for r in result.runs]

    seven = order(7)
    assert sorted(seven) == [(k, side) for k in range(1, 10) for side in ("base", "head")]  # one of each a round
    assert seven == order(7)  # the seed repeats the order
    firsts = {seven[2 * i][1] for i in range(9)}
    assert firsts == {"base", "head"}  # not base first in every round
    assert order(8) != seven
    assert len(worktrees(repo)) == 1


def test_from_eight_rounds_on_the_runs_decide_the_latency_rows() -> None:
    from pytest_perfguard.gate import baseline_rows
    from pytest_perfguard.model import BaselineEntry, TestResult

    def rounds(level: float) -> list[float]:  # 20 rounds with a sharp floor at ``level``
        return [level * (1 + 0.001 * i) for i in range(20)]

    base_bests = [1.00e-3, 1.12e-3, 1.00e-3, 1.08e-3, 1.02e-3, 1.01e-3, 1.15e-3, 1.03e-3]
    entry = BaselineEntry.from_json({"samples": {"latency": [x for b in base_bests for x in rounds(b)]},
                                     "unit": "call", "memory_growth": 1e8})

    def latency(head_bests: list[float], base_runs: list[float] | None) -> dict:
        result = TestResult.from_json({"nodeid": "t", "rows": [], "measurement": {
            "samples": [x for h in head_bests for x in rounds(h)], "unit": "call", "run_bests": head_bests,
            "memory_growth": 2e8}})
        return {r.label: r for r in baseline_rows(result, None, entry, 0.05, base_runs)}

    noisy = [1.06e-3, 1.10e-3, 1.09e-3, 1.07e-3, 1.12e-3, 1.08e-3, 1.06e-3, 1.09e-3]  # the base has the fastest runs
    assert latency(noisy, None)["latency vs baseline"].verdict == "regressed"  # pooled rounds alone
    rows = latency(noisy, base_bests)
    assert rows["latency vs baseline"].verdict == "unchanged", rows["latency vs baseline"].message
    assert "fastest third of the per-run best rounds" in rows["latency vs baseline"].message
    assert rows["memory vs baseline"].verdict == "regressed"  # one number per run: not decided by runs
    steady = latency([1.30e-3, 1.32e-3, 1.31e-3, 1.29e-3, 1.33e-3, 1.30e-3, 1.34e-3, 1.31e-3],
                     base_bests)["latency vs baseline"]
    assert steady.verdict == "regressed"
    assert steady.ratio == pytest.approx((1.29 * 1.30 * 1.30) ** (1 / 3) / (1.00 * 1.00 * 1.01) ** (1 / 3))  # 3 of 8
    few = latency(noisy[:7], base_bests[:7])["latency vs baseline"]  # < 8 rounds: never the pooled rounds
    assert few.verdict == "unjudged" and "too few rounds to judge across runs (7 with both sides; need 8)" in few.message


def test_sequential_rounds_stop_unchanged_tests_and_deselect_them(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From round 3 a test whose rounds rule out a slowdown beyond the tolerance stops, "unchanged",
    and later runs deselect it (all but the few that each run's speed is estimated from); a slower
    test runs on to the last round and is judged at its share of the budget; each run's own speed
    is taken out; the runs' speed never stops early and is judged on every round."""
    from pytest_perfguard import ab as ab_module
    from pytest_perfguard.runs import KEEP_MEASURED, SPEED_WEIGHT

    calls: list[tuple[str, int, tuple[str, ...]]] = []
    same = [f"t::same{i}" for i in range(8)]

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        calls.append((side, rnd, tuple(deselect)))
        speed = 1 + 0.15 * ((5 * rnd + 2 * (side == "head")) % 4) / 3  # each process up to 15 % slower
        level = {**{n: 1e-3 * (i + 1) for i, n in enumerate(same)}, "t::slow": 1e-3 * (1.3 if side == "head" else 1)}
        results = {n: {"nodeid": n, "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                       "measurement": {"samples": [v * speed * (1 + 0.01 * i) for i in range(10)], "unit": "call"}}
                   for n, v in level.items() if n not in deselect}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    said: list[str] = []
    result = ab_module.run_ab("HEAD~1", [], rounds=12, cwd=repo, lockstep=False, seed=1, say=said.append)
    assert set(result.stopped) == set(same)
    assert all("stopped after 3 rounds" in result.stopped[n].reason for n in same)
    assert KEEP_MEASURED == 6
    assert {d for _, rnd, d in calls if rnd > 3} == {tuple(same[5:])}  # 5 stopped tests go on, with the slow one
    assert {d for _, rnd, d in calls if rnd <= 3} == {()}
    assert max(rnd for _, rnd, _ in calls) == 12
    verdicts = {t.nodeid: t.verdict for t in result.tests}
    assert verdicts == {**{n: "unchanged" for n in same}, "t::slow": "regressed", ab_module.SPEED: "unchanged"}
    slow = next(t for t in result.tests if t.nodeid == "t::slow")
    share = 0.01 * (1 - SPEED_WEIGHT) / 9
    assert next(r for r in slow.result.checks if r.label == "latency vs baseline").alpha == pytest.approx(share)
    speed = next(t for t in result.tests if t.nodeid == ab_module.SPEED)
    assert speed.result.checks[0].alpha == pytest.approx(0.01 * SPEED_WEIGHT)
    assert slow.comparison.ratio == pytest.approx(1.3, rel=0.02)  # the runs' speeds taken out
    assert any(line.endswith("8 test(s) stopped unchanged, 1 still measured") for line in said)


def test_the_runs_end_when_every_test_stopped_and_the_runs_speed_has_its_rounds(
        repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing changed: every test stops at round 3, and the runs go on only until the runs' speed
    can be significant at its share (9 rounds at 1 %: ``runs.min_pairs``), measuring only the
    tests that the runs' speed is estimated from."""
    from pytest_perfguard import ab as ab_module
    from pytest_perfguard.runs import SPEED_WEIGHT, min_pairs

    calls: list[tuple[str, int, tuple[str, ...]]] = []
    names = [f"t::{i:02d}" for i in range(10)]

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        calls.append((side, rnd, tuple(deselect)))
        speed = 1 + 0.1 * ((7 * rnd + 3 * (side == "head")) % 5) / 4
        results = {n: {"nodeid": n, "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                       "measurement": {"samples": [1e-3 * (i + 1) * speed * (1 + 0.01 * k) for k in range(10)],
                                       "unit": "call"}}
                   for i, n in enumerate(names) if n not in deselect}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    said: list[str] = []
    result = ab_module.run_ab("HEAD~1", [], rounds=20, cwd=repo, lockstep=False, seed=3, say=said.append)
    need = min_pairs(1 - 2 * 0.01 * SPEED_WEIGHT)
    assert need == 9 and max(rnd for _, rnd, _ in calls) == need
    assert set(result.stopped) == set(names)
    assert {d for _, rnd, d in calls if rnd > 3} == {tuple(names[6:])}
    assert all("stopped after 3 rounds" in result.stopped[n].reason for n in names)
    assert any(line.endswith("(and the runs' speed, until it has enough rounds)") for line in said)
    assert {t.verdict for t in result.tests} == {"unchanged"} and not result.failed


def test_a_test_clearly_slower_stops_regressed_at_its_first_efficacy_look(repo: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A test slower beyond the tolerance in every round stops "regressed" at its first efficacy look,
    at that look's level; the unchanged ones stop at round 3, so the runs end there, not at --rounds."""
    from pytest_perfguard import ab as ab_module
    from pytest_perfguard.cli import ab_lines
    from pytest_perfguard.runs import efficacy_looks, shares

    calls: list[tuple[str, int]] = []
    names = ["t::a", "t::b", "t::c", "t::slow"]

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        calls.append((side, rnd))
        speed = 1 + 0.1 * ((7 * rnd + 3 * (side == "head")) % 5) / 4
        results = {n: {"nodeid": n, "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                       "measurement": {"samples": [1e-3 * (i + 1) * speed * (1.3 if side == "head" and n == "t::slow"
                                                                              else 1) * (1 + 0.01 * k)
                                                   for k in range(10)], "unit": "call"}}
                   for i, n in enumerate(names) if n not in deselect}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    said: list[str] = []
    result = ab_module.run_ab("HEAD~1", [], rounds=20, cwd=repo, lockstep=False, seed=3, say=said.append)
    looks = efficacy_looks(shares(0.01, 4, True)[0], 20)
    first = min(looks)
    assert first == 12 and max(rnd for _, rnd in calls) == first
    stop = result.stopped["t::slow"]
    assert stop.verdict == "regressed" and stop.reason.startswith(f"stopped after {first} rounds, at an efficacy look")
    slow = next(t for t in result.tests if t.nodeid == "t::slow")
    row = next(r for r in slow.result.checks if r.label == "latency vs baseline")
    assert slow.verdict == "regressed" and row.alpha == pytest.approx(looks[first])
    assert [t.nodeid for t in result.failed] == ["t::slow"]
    assert any(line.endswith("3 test(s) stopped unchanged, 1 stopped regressed, 0 still measured") for line in said)
    assert any("1 stopped early, regressed (significant at an efficacy look" in line for line in ab_lines(result))


def test_a_change_that_slows_every_test_alike_is_caught_by_the_runs_speed(repo: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_perfguard import ab as ab_module

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        speed = (1.25 if side == "head" else 1.0) * (1 + 0.01 * (rnd % 3))
        results = {f"t::{i}": {"nodeid": f"t::{i}", "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                               "measurement": {"samples": [1e-3 * (i + 1) * speed] * 10, "unit": "call"}}
                   for i in range(4)}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    result = ab_module.run_ab("HEAD~1", [], rounds=10, cwd=repo, lockstep=False, seed=1, say=lambda _: None)
    verdicts = {t.nodeid: t.verdict for t in result.tests}
    assert verdicts[ab_module.SPEED] == "regressed" and [t.nodeid for t in result.failed] == [ab_module.SPEED]


def test_too_few_rounds_for_the_error_budget_are_said_before_measuring_on(repo: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_perfguard import ab as ab_module

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        results = {f"t::{i}": {"nodeid": f"t::{i}", "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                               "measurement": {"samples": [1e-3] * 10, "unit": "call"}} for i in range(20)}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    said: list[str] = []
    result = ab_module.run_ab("HEAD~1", [], rounds=3, cwd=repo, lockstep=False, seed=1, say=said.append)
    assert any("20 tests and the runs' speed share a 1.00% error budget, so a slowdown needs 12 rounds" in line for line in said)
    assert {t.verdict for t in result.tests} == {"failed"}  # insufficient, never a fallback to pooled rounds


def test_the_base_worktree_path_is_as_long_as_the_checkout_where_it_can_be() -> None:
    tmp, checkout = Path("/tmp/perfguard-ab-x1"), Path("/home/someone/src/project")
    assert len(str(tmp / base_name(tmp, checkout))) == len(str(checkout))
    assert base_name(tmp, Path("/src")) == "base"  # a checkout path shorter than the temporary folder


def test_counted_regions_take_one_round_and_are_judged_on_their_counts(repo: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``-- --perf-instructions`` nothing is timed: a count is the same in every process, so one
    round measures it, and the instruction row judges it (1 % more instructions: beyond the 0.5 %)."""
    from pytest_perfguard import ab as ab_module

    def fake_run(side, rnd, cwd, pytest_args, workdir, python=sys.executable, deselect=(), cpus=None):
        count = 1_000_000 if side == "base" else 1_010_000
        results = {"t::x": {"nodeid": "t::x", "rows": [], "metrics": {}, "budget": {}, "body_passed": True,
                            "measurement": {"samples": [], "unit": "call", "source": "callgrind",
                                            "instructions": count, "instruction_counts": [count] * 3}}}
        return ab_module.SideRun(side, rnd, 0, 0.0, Path(os.devnull), {k: TestResult.from_json(r) for k, r in results.items()}, imports={"modules": {}})

    monkeypatch.setattr(ab_module, "run_side", fake_run)
    said: list[str] = []
    result = ab_module.run_ab("HEAD~1", ["--perf-instructions"], cwd=repo, lockstep=False, seed=1, say=said.append)
    assert sorted((r.round, r.side) for r in result.runs) == [(1, "base"), (1, "head")]
    assert any("one round is the measurement" in line for line in said)
    (test,) = result.tests
    row = next(r for r in test.result.checks if r.label == "instructions vs baseline")
    assert test.verdict == "regressed" and row.ratio == pytest.approx(1.01)
    from pytest_perfguard.cli import ab_lines
    assert any("t::x" in line and "1.0100x" in line and "regressed" in line for line in ab_lines(result))


TRACED = '''
import json, os
import pytest
import mylib
from pytest_perfguard import perf_budget

def trace(nodeid, what):
    with open({path!r}, "a") as fh:  # one short O_APPEND write: calls that overlapped would interleave
        fh.write(json.dumps([os.environ["PERFGUARD_AB_SIDE"], nodeid, what, sorted(os.sched_getaffinity(0))]) + "\\n")

@perf_budget(latency="1s")
@pytest.mark.parametrize("i", range(2))  # under runs.MIN_TESTS: no row for the runs' speed
def test_work(perf, request, i):
    trace(request.node.nodeid, "start")
    perf(mylib.work)
    trace(request.node.nodeid, "end")
'''


def test_lockstep_alternates_a_tests_base_and_head_rounds_on_one_cpu(repo: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    commit(repo, "traced tests", {"tests/test_work.py": TRACED.format(path=str(trace))})
    commit(repo, "base code", {"src/mylib/__init__.py": LIB.format(version="base", n=BASE_N)})
    commit(repo, "head code", {"src/mylib/__init__.py": LIB.format(version="head", n=HEAD_N)})
    # 8 rounds: two tests share the 1 % error budget, and 2^-8 is the least p-value below a half of it
    proc = ab(repo, "HEAD~1", "--lockstep", "--rounds", "8", "--seed", "7", "--json", "ab.json", "--", *FAST)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((repo / "ab.json").read_text())
    assert [t["verdict"] for t in doc["tests"]] == ["improved", "improved"]
    assert doc["ab"]["lockstep"] is True and doc["ab"]["turns"] == [{"paired": 2, "alone": 0}] * 8
    assert "in lockstep: 16 test calls paired, 0 alone" in proc.stdout
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(events) == 64  # 2 tests, 8 rounds, 2 sides, a start and an end
    for k in range(0, 64, 4):  # a test's two calls run together, rounds alternating, and nothing else meanwhile
        quad = events[k:k + 4]
        assert len({e[1] for e in quad}) == 1 and [e[2] for e in quad] == ["start", "start", "end", "end"], quad
        assert {e[0] for e in quad[:2]} == {e[0] for e in quad[2:]} == {"base", "head"}
    assert {events[k][0] for k in range(0, 64, 4)} == {"base", "head"}  # who starts is drawn per test
    cpus = {tuple(e[3]) for e in events}
    assert len(cpus) == 1 and len(next(iter(cpus))) == 1  # both sides pinned to the same single CPU
    assert len(worktrees(repo)) == 1


AFFINITY = """
import json, os
with open({path!r}, "a") as fh:  # at import, before any plugin hook: the pin must already hold
    fh.write(json.dumps([os.environ["PERFGUARD_AB_SIDE"], sorted(os.sched_getaffinity(0))]) + "\\n")
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two CPUs this process may use")
@pytest.mark.parametrize("args, pinned", [
    (["--lockstep"], "first"),
    (["--lockstep", "--cpus", "all"], "all"),
    (["--no-lockstep", "--cpus", "1"], "second"),
    (["--no-lockstep"], None),
])
def test_cpus_pin_both_sides_from_their_first_instruction(repo: Path, tmp_path: Path, args: list[str],
                                                          pinned: str | None) -> None:
    seen = tmp_path / "affinity.jsonl"
    commit(repo, "record the CPUs", {"tests/conftest.py": AFFINITY.format(path=str(seen))})
    proc = ab(repo, "HEAD", *args, "--rounds", "1", "--json", "ab.json", "--", *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one round: the latency verdict is insufficient
    usable = sorted(os.sched_getaffinity(0))
    want = {"first": usable[:1], "all": usable, "second": [1], None: usable}[pinned]
    assert sorted(json.loads(line)[0] for line in seen.read_text().splitlines()) == ["base", "head"]
    assert {tuple(json.loads(line)[1]) for line in seen.read_text().splitlines()} == {tuple(want)}
    assert json.loads((repo / "ab.json").read_text())["ab"]["cpus"] == (want if pinned else None)
    shown = re.findall(r", on CPU ([0-9,-]+)$", proc.stdout, re.M)
    assert shown == ([cpu_list(frozenset(want))] if pinned else []), proc.stdout
    assert ("each side ran on one CPU: a test that uses several threads" in proc.stdout) == (len(want) == 1)


def test_cpu_lists_read_and_print_as_taskset_writes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: None, raising=False)
    assert cpu_set("0,2-3, 6") == {0, 2, 3, 6} and cpu_set("all") == set(range(8)) and cpu_set("5-5") == {5}
    assert [cpu_list(frozenset(c)) for c in ({0, 2, 3, 6}, {0, 1, 2, 3, 4, 5, 6, 7}, {7}, {1, 3})] == [
        "0,2-3,6", "0-7", "7", "1,3"]


@pytest.mark.parametrize("spec, error", [
    ("9999", "--cpus '9999': CPU 9999 is not one this process may use (it may use "),
    ("1-0", "--cpus '1-0': the range 1-0 runs backwards"),
    ("one", "--cpus 'one': expected all or CPU numbers such as 0, 0,2 or 0-3"),
])
def test_cpus_that_cannot_be_used_are_refused_before_anything_runs(repo: Path, spec: str, error: str) -> None:
    if not hasattr(os, "sched_setaffinity"):
        error = "which this platform cannot do"
    proc = ab(repo, "HEAD", "--cpus", spec, "--", *FAST)
    assert proc.returncode == 2 and error in proc.stderr, proc.stdout + proc.stderr
    assert "round 1" not in proc.stdout and len(worktrees(repo)) == 1


def test_lockstep_gives_a_test_only_the_head_has_a_turn_alone(repo: Path) -> None:
    commit(repo, "a new test", {"tests/test_new.py": TEST.format(latency="1s").replace("test_work", "test_new")})
    proc = ab(repo, "HEAD~1", "--lockstep", "--rounds", "1", "--json", "ab.json", "--", *FAST)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one round: every latency verdict is insufficient
    doc = json.loads((repo / "ab.json").read_text())
    assert doc["ab"]["only_head"] == ["tests/test_new.py::test_new"]
    assert doc["ab"]["turns"] == [{"paired": 1, "alone": 1}]


def test_lockstep_with_a_head_whose_pytest_dies_fails_the_gate_and_never_waits_for_it(repo: Path) -> None:
    commit(repo, "crash", {"tests/conftest.py": CRASH})
    proc = ab(repo, "HEAD~2", "--lockstep", "--rounds", "1", "--", *FAST, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "on the head; nothing was compared" in proc.stderr
    assert "1 call(s) alone" in proc.stdout  # the base's call, once the head had gone
