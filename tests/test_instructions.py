"""Exact instruction counts under callgrind: the dump parser and budgets without valgrind, the whole
path end to end with pytester where valgrind is installed (it is on the CI machine kind; elsewhere
those tests skip saying so)."""

from __future__ import annotations

import json
import platform
import shutil

import pytest

from pytest_perfguard import callgrind
from pytest_perfguard.budget import BudgetError, parse_budget
from pytest_perfguard.callgrind import SPREAD_FLOOR, disagree
from pytest_perfguard.callgrind_dump import ALLOCATOR_PRICE, parse_dump
from pytest_perfguard.check import evaluate
from pytest_perfguard.measure import Measurement

needs_valgrind = pytest.mark.skipif(shutil.which("valgrind") is None or platform.machine() != "x86_64",
                                    reason="needs valgrind (>= 3.19) on x86_64: apt-get install valgrind")

DUMP = """# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python -m pytest
part: 2

desc: I1 cache:
desc: Trigger: Client Request: perfguard-4242-2

positions: line
events: Ir
summary: 0
totals: 22751085
"""


def test_a_dump_gives_its_label_and_total():
    assert parse_dump(DUMP) == ("perfguard-4242-2", 22751085)
    assert parse_dump(DUMP.replace("totals: 22751085\n", "")) is None
    assert parse_dump("desc: Trigger: Program termination\ntotals: 5\n") is None


# the same loop's dump from two processes whose heaps were in other states (cut from real dumps): the
# allocator executed 41 or 44 instructions a free, 21 or 25 a malloc; the calls were the same. A stub
# (malloc@plt, no symbol) is called from inside the allocator twice and from numpy once
ALLOCATING = """positions: line
events: Ir
desc: Trigger: Client Request: perfguard-1-6
ob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6
fn=(30) __errno_location
26 2
fn=(72) long_dealloc
3 100
cfn=(82) _PyObject_Free
calls=59611 0
3 {free}
fn=(160) _PyObject_Malloc
5 {malloc_self}
cfn=(166) 0x0000000004936730
calls=2 0
5 300
fn=(166)
cfn=(164) malloc
calls=3 0
0 450
fn=(200) PyLong_FromLong
7 400
cfn=(160)
calls=59612 0
7 {malloc}
fn=(202) npy_alloc
9 50
cfn=(166)
calls=1 0
9 150
totals: {total}
"""


def test_a_dump_prices_each_call_into_the_allocator_the_same_whatever_the_heaps_state():
    low = dict(free=2_444_062, malloc=1_251_870, malloc_self=1_251_570)
    high = dict(free=2_642_321, malloc=1_490_328, malloc_self=1_490_028)
    counts = []
    for heap in (low, high):
        total = 2 + 100 + heap["free"] + 400 + heap["malloc"] + 50 + 150
        got = parse_dump(ALLOCATING.format(total=total, **heap))
        assert got is not None and got[0] == "perfguard-1-6"
        counts.append(got[1])
    # the calls from outside (59,611 frees, 59,612 mallocs, npy_alloc's malloc through the stub) at the price;
    # _PyObject_Malloc's own calls of malloc, through the same stub, are inside
    assert counts == [2 + 100 + 400 + 50 + (59_611 + 59_612 + 1) * ALLOCATOR_PRICE] * 2


def test_repeated_counts_disagree_only_beyond_the_relative_spread_and_the_floor():
    assert not disagree([22_751_085, 22_751_027, 22_751_090])
    assert not disagree([351_439, 351_802, 351_439 + SPREAD_FLOOR])  # a short call's allocator noise
    assert disagree([41_133_380, 80_246_625, 69_629_519])


def test_instructions_budget_forms():
    assert parse_budget({"instructions": "25M"}).limits[0].threshold == 25e6
    assert parse_budget({"instructions": 2.5e7}).limits[0].threshold == 25e6
    rel = parse_budget({"instructions": "+1%"}).limits[0]
    assert rel.relative and rel.threshold == pytest.approx(0.01)
    for bad in ("25MiB", "-3", "lots", 0):
        with pytest.raises(BudgetError, match="instructions=.* is not a valid budget"):
            parse_budget({"instructions": bad})
    with pytest.raises(BudgetError, match="has its own kwarg"):
        parse_budget({"metrics": {"instructions": "<=5"}})


def test_a_timed_run_does_not_judge_instruction_budgets_and_a_counted_run_no_timing_budgets():
    budget = parse_budget({"latency": "1ms", "memory": "1MiB", "instructions": "25M", "metrics": {"x": 1}})
    assert [lim.metric for lim in budget.for_run(instructions=False).limits] == ["latency", "memory", "x"]
    assert [lim.metric for lim in budget.for_run(instructions=True).limits] == ["instructions", "x"]


def test_counts_that_disagree_fail_the_test_and_are_never_averaged():
    m = Measurement(instructions=60e6, instruction_counts=[41_133_380, 80_246_625, 69_629_519], source="callgrind")
    rows = evaluate(parse_budget({"instructions": "100M"}).for_run(instructions=True), m, {})
    bad = [r for r in rows if r.failed]
    assert len(bad) == 1 and "3 counts of the same call disagree by 95.089%" in bad[0].message


def test_without_valgrind_the_option_fails_with_one_line_saying_how_to_install_it(pytester, monkeypatch):
    pytester.makepyfile(test_x="def test_x(perf):\n    perf(sum, [1, 2])\n")
    monkeypatch.setenv("PATH", str(pytester.path))  # no valgrind here
    result = pytester.runpytest("--perf-instructions")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-instructions counts instructions under valgrind's callgrind, and "
                                 "valgrind is not on PATH: install valgrind >= 3.19 (Debian/Ubuntu: apt-get install "
                                 "valgrind*"])


SUITE = """
import os
from pytest_perfguard import perf_budget

WORK = float(os.environ.get("PG_WORK", "1"))

def loop(n):
    s = 0
    for i in range(n):
        s += i * i % 7
    return s

@perf_budget(latency="1ns", memory="1B")  # timing budgets: not judged under callgrind
def test_loop(perf):
    perf(loop, int(20_000 * WORK))

@perf_budget(instructions="1k")
def test_budgeted(perf):
    perf(loop, 2_000)
"""


def _count(pytester, monkeypatch, *args, work=1.0):
    monkeypatch.setenv("PG_WORK", str(work))
    return pytester.runpytest_subprocess("--perf-instructions", "--perf-machine=box", "-p", "no:cacheprovider",
                                         "--perf-json=out.json", *args)


@needs_valgrind
def test_instruction_gate_end_to_end(pytester, monkeypatch):
    pytester.makepyfile(test_count=SUITE)
    saved = _count(pytester, monkeypatch, "--perf-save")
    saved.assert_outcomes(passed=1, failed=1)  # test_budgeted's 1k budget: a loop of 2,000 costs more
    saved.stdout.fnmatch_lines(["*instructions 1.* instr > budget 1k instr*"])
    doc = json.loads((pytester.path / "out.json").read_text())
    m = {t["nodeid"]: t["measurement"] for t in doc["tests"]}["test_count.py::test_loop"]
    assert m["source"] == "callgrind" and m["samples"] == [] and len(m["instruction_counts"]) == 3
    assert 5e6 < m["instructions"] < 100e6  # ~15 M on CPython 3.11 x86_64
    entry = json.loads((pytester.path / "baselines" / "box-callgrind.json").read_text())["entries"]["test_count.py::test_loop"]
    assert entry["instructions"] == m["instructions"]
    # unchanged in a new process: the same count within the default 0.5 % tolerance
    again = _count(pytester, monkeypatch, "-k", "test_loop")
    again.assert_outcomes(passed=1)
    row = next(r for r in json.loads((pytester.path / "out.json").read_text())["tests"][0]["rows"]
               if r["metric"] == "instructions vs baseline")
    assert row["verdict"] == "unchanged" and abs(row["ratio"] - 1) < 0.001, row["message"]
    # 1 % more work is caught
    more = _count(pytester, monkeypatch, "-k", "test_loop", work=1.01)
    more.assert_outcomes(failed=1)
    more.stdout.fnmatch_lines(["*instructions vs baseline regressed: * instr vs baseline * instr (+1.0*%), beyond 0.5%*"])


def test_the_counted_session_keeps_glibc_off_rep_movsb_fixes_the_hash_seed_and_keeps_the_users_settings(tmp_path):
    env = callgrind.environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=1", "HOME": "/h"}, tmp_path)
    assert env["GLIBC_TUNABLES"] == callgrind.TUNABLES + ":glibc.malloc.arena_max=1"  # the user's last: theirs win
    assert env[callgrind.DIR_ENV] == str(tmp_path) and env["HOME"] == "/h" and env["PYTHONHASHSEED"] == "0"
    assert callgrind.environment({}, tmp_path)["GLIBC_TUNABLES"] == callgrind.TUNABLES
    assert callgrind.environment({"PYTHONHASHSEED": "7"}, tmp_path)["PYTHONHASHSEED"] == "7"  # the user's seed wins


@needs_valgrind
def test_a_large_copy_is_counted_by_the_vector_loop_not_byte_by_byte(pytester, monkeypatch):
    """glibc copies 32 kB with ``rep movsb`` where the CPU has ERMS, which callgrind counts once per byte
    (655,360 for these 20 copies), and takes it or not by where the buffers lie: counts then moved with the
    heap's layout from one process to the next. The counted session keeps glibc on its vector loop."""
    pytester.makepyfile(test_copy="""
        DATA = bytes(range(256)) * 128  # 32 kB

        def test_copy(perf):
            perf(lambda: [bytearray(DATA) for _ in range(20)])
        """)
    _count(pytester, monkeypatch).assert_outcomes(passed=1)
    m = json.loads((pytester.path / "out.json").read_text())["tests"][0]["measurement"]
    assert m["instructions"] < 300_000, m  # ~114,000 here; one per byte would be over 655,360


@needs_valgrind
def test_the_option_refuses_xdist_in_one_line(pytester):
    pytester.makepyfile(test_x="def test_x(perf):\n    perf(sum, [1, 2])\n")
    result = pytester.runpytest("--perf-instructions", "-n", "2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--perf-instructions runs the session under callgrind, which runs one thread at a "
                                 "time: drop -n / --dist (pytest-xdist)*"])
