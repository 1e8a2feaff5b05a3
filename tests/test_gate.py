"""Baselines, the regression gate, xdist and the CLI, end to end (deterministic samples)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from pytest_perfguard.cli import main as cli_main

TEST_FILE = """
import json, os
from pytest_perfguard import perf_budget

SCALE = float(os.environ.get("PG_SCALE", "1.0"))
BASE = [0.010 + 0.0001 * (i % 7) for i in range(60)]  # deterministic 'timings', ~10 ms

@perf_budget(latency="1s")
def test_a(perf):
    perf.record_latencies([x * SCALE for x in BASE])

{extra}
"""


def make(pytester, extra=""):
    pytester.makepyfile(test_gate_case=TEST_FILE.format(extra=extra))


@pytest.fixture(autouse=True)
def _scale_env(monkeypatch):
    monkeypatch.setenv("PG_SCALE", "1.0")  # restored after each test; run() changes it


def run(pytester, *args, scale="1.0"):
    os.environ["PG_SCALE"] = scale
    return pytester.runpytest("--perf", "--perf-machine=testbox", "--perf-profile=never", "-p", "no:randomly", *args)


def read(pytester):
    return json.loads((pytester.path / "baselines" / "testbox.json").read_text())


def test_save_then_gate_unchanged_regressed_improved(pytester):
    make(pytester)
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*no baseline for this machine (*testbox.json): absolute budgets only*--perf-save*"])

    run(pytester, "--perf-save").assert_outcomes(passed=1)
    doc = read(pytester)
    assert doc["format"] == 1 and list(doc["entries"]) == ["test_gate_case.py::test_a"]
    entry = doc["entries"]["test_gate_case.py::test_a"]
    assert len(entry["samples"]["latency"]) == 60 and entry["time"]

    same = run(pytester)
    same.assert_outcomes(passed=1)
    same.stdout.fnmatch_lines(["*latency vs baseline*unchanged*"])

    slower = run(pytester, scale="1.10")
    slower.assert_outcomes(failed=1)
    slower.stdout.re_match_lines([r"^latency vs baseline regressed: 11\.\d\d ms/call vs baseline 10\.\d\d ms/call "
                                  r"\(fastest rounds 1\.100x \(98 % CI 1\.\d+-1\.\d+, p=.*\): worse beyond the 5 % "
                                  r"tolerance; the baseline holds one run per test.*\)$"])

    faster = run(pytester, scale="0.8")
    faster.assert_outcomes(passed=1)
    faster.stdout.fnmatch_lines(["*improved*"])

    within = run(pytester, scale="1.03")  # a real but small change stays within the 5 % tolerance
    within.assert_outcomes(passed=1)


def test_per_test_tolerance_and_relative_budgets(pytester):
    extra = '''
@perf_budget(latency="+20%", accuracy="-1%")
def test_rel(perf):
    perf.record_latencies([x * SCALE for x in BASE])
    perf.record(accuracy=0.88 if SCALE >= 1.25 else 0.9)

@perf_budget(latency="1s", tolerance="30%")
def test_loose(perf):
    perf.record_latencies([x * SCALE for x in BASE])
'''
    make(pytester, extra)
    first = run(pytester)
    first.assert_outcomes(passed=3)
    first.stdout.fnmatch_lines(["*relative budgets were not checked*"])
    run(pytester, "--perf-save").assert_outcomes(passed=3)
    result = run(pytester, scale="1.10")
    result.assert_outcomes(failed=1, passed=2)  # test_a fails at 5 %; +20 % and 30 % tolerate 10 %
    result.stdout.fnmatch_lines(["*FAILED*test_a*"])
    result = run(pytester, scale="1.25")
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["accuracy regressed: 0.88 vs baseline 0.9 (0.98x), beyond 1.0%"])


def test_suspected_regression_is_measured_again_before_failing(pytester):
    pytester.makepyfile(
        test_confirm="""
        import os, time
        from pytest_perfguard import perf_budget

        CALLS = []
        MINE = set()  # the disturbances this process found

        def passing(name):
            # True during the first block of rounds of the process that found the file ``name`` names:
            # a disturbance of one process, gone in the fresh process that confirms
            path = os.environ.get(name)
            if path and os.path.exists(path) and len(CALLS) == 1:
                os.remove(path)
                MINE.add(name)
            return name in MINE and len(CALLS) <= 16

        def work():
            CALLS.append(1)
            slow = os.environ.get("SLOW") == "1" or passing("NOISY")
            time.sleep(0.004 if slow else 0.001 if passing("LUCKY") else 0.002)

        @perf_budget(latency="1s")
        def test_w(perf):
            perf(work)
        """
    )
    common = ["--perf-max-time=0", "--perf-min-rounds=15", "--perf-min-round-time=0", "--perf-json=o.json",
              "--perf-confirm-pause=0.2"]
    run(pytester, "--perf-save", *common).assert_outcomes(passed=1)
    (pytester.path / "noisy").write_text("")
    os.environ["NOISY"] = str(pytester.path / "noisy")  # the whole first block of this process is disturbed
    noisy = run(pytester, *common, "-v")  # progress lines are shown under -v only
    noisy.stdout.fnmatch_lines(["*latency looks regressed: measuring again in 0.2 s in a fresh process to confirm (1/2)*"])
    noisy.assert_outcomes(passed=1)
    assert json.loads((pytester.path / "o.json").read_text())["tests"][0]["measurement"]["remeasured"] == 1
    os.environ["SLOW"] = "1"  # a real regression persists, in every process, and fails after confirmation
    try:
        slow = run(pytester, *common, "-v")
        slow.assert_outcomes(failed=1)
        slow.stdout.fnmatch_lines(["*measuring again in 0.2 s in a fresh process to confirm (2/2)*"])
        assert json.loads((pytester.path / "o.json").read_text())["tests"][0]["measurement"]["remeasured"] == 2
        run(pytester, *common, "--perf-confirm=0").assert_outcomes(failed=1)
        doc = json.loads((pytester.path / "o.json").read_text())
        assert doc["tests"][0]["measurement"]["remeasured"] == 0
    finally:
        del os.environ["SLOW"], os.environ["NOISY"]
    # a save confirms an improvement before it starts the test's run history again: a lucky first block
    # (the neighbours quiet for a moment) must not replace the saved runs
    for _ in range(2):
        run(pytester, "--perf-save", *common).assert_outcomes(passed=1)
    runs = len(read(pytester)["entries"]["test_confirm.py::test_w"]["runs"])
    (pytester.path / "lucky").write_text("")
    os.environ["LUCKY"] = str(pytester.path / "lucky")
    try:
        lucky = run(pytester, "--perf-save", *common, "-v")
    finally:
        del os.environ["LUCKY"]
    lucky.assert_outcomes(passed=1)
    lucky.stdout.fnmatch_lines(["*latency looks improved: measuring again in 0.2 s in a fresh process to confirm (1/2)*"])
    assert len(read(pytester)["entries"]["test_confirm.py::test_w"]["runs"]) == runs + 1


def test_save_keeps_entries_of_tests_that_did_not_run(pytester):
    make(pytester, "def test_b(perf):\n    perf.record_latencies(BASE)\n")
    run(pytester, "--perf-save").assert_outcomes(passed=2)
    run(pytester, "--perf-save", "-k", "test_b", scale="2.0").assert_outcomes(passed=1)
    doc = read(pytester)
    assert set(doc["entries"]) == {"test_gate_case.py::test_a", "test_gate_case.py::test_b"}
    # test_a kept its first samples
    assert doc["entries"]["test_gate_case.py::test_a"]["summary"]["median"] < 0.011


def test_corrupt_baseline_is_reported_and_never_overwritten(pytester):
    make(pytester)
    path = pytester.path / "baselines" / "testbox.json"
    path.parent.mkdir()
    path.write_text('{"format": 1, "entries": {')  # truncated
    result = run(pytester, "--perf-save")
    result.stdout.fnmatch_lines(["*ERROR: baseline not saved*", "*ERROR*testbox.json*regression gate cannot judge*"])
    assert result.ret != 0  # a save that did not happen never passes silently
    assert path.read_text() == '{"format": 1, "entries": {'
    result.assert_outcomes(passed=1)


def test_baseline_of_another_format_version(pytester):
    make(pytester)
    path = pytester.path / "baselines" / "testbox.json"
    path.parent.mkdir()
    original = json.dumps({"format": 99, "machine": {}, "entries": {}})
    path.write_text(original)
    result = run(pytester)
    result.stdout.fnmatch_lines(["*ERROR*format*99*"])
    result.assert_outcomes(passed=1)  # budgets still run ...
    assert result.ret == 1  # ... but a gate that cannot read its baseline fails the run
    assert path.read_text() == original


def test_baseline_from_other_hardware_is_used_with_a_warning(pytester):
    make(pytester)
    run(pytester, "--perf-save").assert_outcomes(passed=1)
    path = pytester.path / "baselines" / "testbox.json"
    doc = json.loads(path.read_text())
    doc["machine"]["hardware"]["cpu_model"] = "Some Other CPU 9000"
    doc["machine"]["software"]["python"] = "3.99"
    path.write_text(json.dumps(doc))
    result = run(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*latency vs baseline*unchanged*",
                                 "*WARNING: the baseline was recorded on different hardware*Some Other CPU 9000*",
                                 "*software differs*3.99*"])


def test_unwritable_baselines_directory_is_a_clear_error(pytester):
    make(pytester)
    (pytester.path / "blocked").write_text("a file where the directory should be\n")
    result = run(pytester, "--perf-save", "--perf-baselines=blocked")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*ERROR*blocked*"])
    assert (pytester.path / "blocked").read_text() == "a file where the directory should be\n"


def test_xdist_workers_report_to_the_controller_which_writes_once(pytester):
    pytest.importorskip("xdist")
    extra = "\n".join(
        f"def test_x{i}(perf):\n    perf.record_latencies(BASE)\n\ndef test_plain{i}():\n    pass\n" for i in range(4)
    )
    make(pytester, extra)
    os.environ["PG_SCALE"] = "1.0"
    result = pytester.runpytest_subprocess("--perf", "--perf-machine=testbox", "-n", "2", "--perf-save", "--perf-json=run.json")
    result.assert_outcomes(passed=9)
    doc = read(pytester)
    assert len(doc["entries"]) == 5
    assert len(json.loads((pytester.path / "run.json").read_text())["tests"]) == 5
    result.stdout.fnmatch_lines(["*saved 5 test(s)*"])
    assert len([line for line in result.stdout.lines if "saved 5 test(s)" in line]) == 1


def test_xdist_measurements_never_overlap_other_tests(pytester):
    pytest.importorskip("xdist")
    pytester.makepyfile(
        """
        import fcntl, os, time

        LOG = os.path.join(os.path.dirname(__file__), "log.txt")

        def note(what):
            with open(LOG, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(f"{time.monotonic():.6f} {what}\\n")

        def measured():
            time.sleep(0.002)

        def test_perf(perf):
            note("perf-start")
            perf(measured)
            note("perf-end")

        def test_perf2(perf):
            note("perf-start")
            perf(measured)
            note("perf-end")
        """
        + "".join(
            f"""
        def test_plain{i}():
            note("plain-start")
            time.sleep(0.05)
            note("plain-end")
        """
            for i in range(8)
        )
    )
    result = pytester.runpytest_subprocess("--perf", "-n", "2", "--perf-max-time=0.2", "-p", "no:randomly")
    result.assert_outcomes(passed=10)
    events = sorted(line.split() for line in (pytester.path / "log.txt").read_text().splitlines())
    running = {"perf": 0, "plain": 0}
    for _, what in events:
        kind, edge = what.split("-")
        running[kind] += 1 if edge == "start" else -1
        assert not (running["perf"] and running["plain"]), "a measurement overlapped another test"
        assert running["perf"] <= 1


def _save_pair(tmp_path, scale_b, extra_b=None):
    base = [0.010 + 0.0001 * (i % 7) for i in range(60)]

    def doc(scale, names):
        return {"format": 1, "machine": {"hardware": {"cpu_model": "X", "cpu_logical": 2}, "software": {"python": "3.11"}},
                "speed": {"score": 100.0, "workload": "v1"}, "updated": "2026-11-23T00:00:00+00:00",
                "entries": {n: {"samples": {"latency": [x * scale for x in base]}, "summary": {"median": 0.0103 * scale, "n": 60},
                                "unit": "call", "metrics": {}} for n in names}}

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(doc(1.0, ["t::one", "t::two", "t::only_a"])))
    b.write_text(json.dumps(doc(scale_b, ["t::one", "t::two", "t::only_b"])))
    return str(a), str(b)


def test_cli_compare_reports_ratio_ci_geomean_and_exit_code(tmp_path, capsys):
    a, b = _save_pair(tmp_path, 1.25)
    assert cli_main(["compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "1.25x" in out and "regressed" in out and "geometric mean B/A over 2 tests: 1.250x" in out
    # the figures are the fastest rounds the verdict judged (10.00 ms; the medians are 10.30 ms), and it says why
    assert "A fastest" in out and "10.00 ms/call  12.50 ms/call  1.25x" in out and "10.30 ms" not in out
    assert "why: fastest rounds 1.250x" in out
    assert "only in A: t::only_a" in out and "only in B: t::only_b" in out
    assert "speed score 100.0" in out
    assert cli_main(["compare", a, b, "--fail-on-regression"]) == 1
    a, b = _save_pair(tmp_path, 1.0)
    assert cli_main(["compare", a, b, "--fail-on-regression"]) == 0


def test_cli_compare_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    a, b = _save_pair(tmp_path, 1.25)
    # `perfguard compare a b | head -1`: the reader closes the pipe after the first line
    proc = subprocess.run(f"{shlex.quote(sys.executable)} -m pytest_perfguard.cli compare {a} {b} | head -1",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert proc.stdout.count("\n") == 1
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr


def test_cli_show_and_errors(tmp_path, capsys):
    a, _ = _save_pair(tmp_path, 1.0)
    assert cli_main(["show", a]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()  # the tests of file t under its name
    assert "t" in lines and any(line.startswith("  one ") and "10.30 ms/call" in line for line in lines)
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert cli_main(["show", str(bad)]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert cli_main(["show", str(tmp_path / "missing.json")]) == 2


def test_cli_entry_point_is_installed(pytester):
    result = pytester.run("perfguard", "--help")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*compare*"])


def test_a_relative_p99_budget_is_judged_on_the_p99(pytester):
    # Same median, same best rounds; one round in 20 (none in the baseline) is 3x slower: the p99 grew 3x.
    pytester.makepyfile(test_tail="""
        import os
        from pytest_perfguard import perf_budget

        EVERY = int(os.environ.get("PG_EVERY", "0"))

        @perf_budget(latency={"p99": "+10%"})
        def test_tail(perf):
            perf.record_latencies([0.010 * (3 if EVERY and i % EVERY == 0 else 1) + 1e-6 * (i % 7) for i in range(400)])
    """)
    run(pytester, "--perf-save").assert_outcomes(passed=1)
    run(pytester).assert_outcomes(passed=1)
    os.environ["PG_EVERY"] = "20"
    try:
        result = run(pytester)
    finally:
        del os.environ["PG_EVERY"]
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*latency p99 regressed: 30.0* ms/call vs baseline 10.0* ms/call (p99 *x*worse beyond the 10 % tolerance*"])
    result.stdout.fnmatch_lines(["*latency vs baseline*unchanged*"])  # the median did not move
