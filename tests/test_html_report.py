"""``perfguard report``: the numbers behind the page on synthetic data, then end to end."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_perfguard.cli import main
from pytest_perfguard.html_report import render_report
from pytest_perfguard.plots import Bar, cross_machine_figure, memory_figure
from pytest_perfguard.units import format_duration
from pytest_perfguard.report_data import (
    Point,
    Reference,
    ReportError,
    Run,
    accuracy_points,
    baseline_for,
    budget_ranges,
    choose_reference,
    cross_machine,
    load_baselines,
    load_runs,
    pareto_front,
    projections,
    variant_name,
)

pytest.importorskip("matplotlib")

NODE = "suites/test_eval.py::test_eval[{}]"


def samples(median: float, n: int = 25, seed: int = 0) -> list[float]:
    """Deterministic latencies around ``median`` (seconds), up to 20 % either side."""
    rng = random.Random(seed)
    return [median * (0.8 + 0.4 * rng.random()) for _ in range(n)]


def result(nodeid: str, median: float, *, unit: str = "call", accuracy: float | None = None,
           memory: float | None = 3 * 2**20, rows: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One test of a ``--perf-json`` document, shaped as the plugin writes it."""
    xs = samples(median, seed=len(nodeid))
    return {"nodeid": nodeid, "outcome": "passed", "budget": {}, "rows": rows or [],
            "metrics": {} if accuracy is None else {"accuracy": accuracy},
            "measurement": {"samples": xs, "summary": {"median": sorted(xs)[len(xs) // 2]}, "unit": unit,
                            "items": None, "memory_growth": memory, "memory_mechanism": "vmhwm",
                            "gpu_memory_growth": None}}


def row(metric: str, verdict: str, now: float = 0.002, unit: str = "s/call") -> dict[str, Any]:
    return {"metric": metric, "budget": "1ms", "now": now, "unit": unit, "verdict": verdict,
            "message": f"{metric} {verdict}", "baseline": None, "ratio": None}


def write_run(path: Path, tests: list[Any], baseline: Path | None = None) -> Path:
    doc = {"format": 1, "created": "2026-01-02T03:04:05+00:00", "python": "3.11.7", "tests": tests,
           "machine_slug": "x86_64-test-cpu-2c-8gib", "baseline": str(baseline) if baseline else None}
    path.write_text(json.dumps(doc))
    return path


def write_baseline(path: Path, medians: dict[str, float], cpu: str = "Test CPU", unit: str = "call") -> Path:
    """A baseline file as ``--perf-save`` writes it, one entry per node id."""
    machine = {"hardware": {"arch": "x86_64", "cpu_model": cpu, "cpu_logical": 2, "cpu_physical": 2,
                            "cpu_affinity": 2, "memory_gib": 8, "gpus": []}, "software": {}}
    entries = {n: {"samples": {"latency": samples(m, seed=7)}, "summary": {"median": m}, "unit": unit,
                   "memory_growth": 2 * 2**20, "memory_mechanism": "vmhwm", "metrics": {}}
               for n, m in medians.items()}
    path.write_text(json.dumps({"format": 1, "machine": machine, "speed": None, "entries": entries,
                                "updated": "2026-01-01T00:00:00+00:00"}))
    return path


def point(label: str, latency: float, accuracy: float) -> Point:
    return Point(label, "run.json", label, latency, accuracy, "call")


def sections(page: str) -> dict[str, str]:
    """Section id -> its HTML."""
    return dict(re.findall(r'<section id="(\w+)">(.*?)</section>', page, re.DOTALL))


# ---------------------------------------------------------------- the numbers

def test_pareto_front_keeps_only_undominated_points_fastest_first() -> None:
    pts = [point("fp32", 1.0e-3, 0.899), point("int8", 0.59e-3, 0.900), point("slow", 2e-3, 0.85),
           point("tiny", 0.1e-3, 0.70), point("best", 3e-3, 0.95), point("same-speed-worse", 0.59e-3, 0.80)]
    front = pareto_front(pts)
    assert [p.label for p in front] == ["tiny", "int8", "best"]
    ranges = budget_ranges(front)
    assert [(p.label, lo, hi) for p, lo, hi in ranges] == [
        ("tiny", 0.1e-3, 0.59e-3), ("int8", 0.59e-3, 3e-3), ("best", 3e-3, None)]
    assert pareto_front([]) == []


def test_format_duration_picks_human_units() -> None:
    assert format_duration(4.6e-7) == "460 ns"
    assert format_duration(4.6e-5) == "46 µs"
    assert format_duration(0.0123) == "12.3 ms"
    assert format_duration(4.6) == "4.6 s"
    assert format_duration(90) == "1.5 min"
    assert format_duration(2 * 3600) == "2 h"


def test_projections_are_median_per_call_times_users(tmp_path: Path) -> None:
    """A call is what a user asks for; an item (a counter increment) is not: per-item tests are left out."""
    path = write_run(tmp_path / "run.json", [result(NODE.format("a"), 0.002),
                                             result("t.py::test_counter", 3e-7, unit="item")])
    (p,), per_item = projections(load_runs([path]))
    assert p.unit == "call" and per_item == ["t.py::test_counter"]
    assert p.totals[100] == pytest.approx(100 * p.median)
    assert p.totals[100_000] == pytest.approx(100_000 * p.median)
    assert 0.0016 <= p.median <= 0.0024
    found = sections(render_report(load_runs([path]), [], generated="fixed"))
    assert "Left out, timed per item: t.py::test_counter." in found["users"]
    assert "test_counter" not in found["users"].split("Left out")[0]  # not in the table of totals


def test_accuracy_points_are_labelled_by_variant_and_run(tmp_path: Path) -> None:
    a = write_run(tmp_path / "naive.json", [result(NODE.format("fp32"), 1e-3, accuracy=0.9), result("t.py::test_x", 1e-3)])
    b = write_run(tmp_path / "optimized.json", [result(NODE.format("int8"), 0.6e-3, accuracy=0.91)])
    pts = accuracy_points(load_runs([a, b]))
    assert [p.label for p in pts] == ["fp32 · naive", "int8 · optimized"]
    assert variant_name("t.py::test_x", "runs/naive.json") == "naive"
    assert {p.family for p in pts} == {"suites/test_eval.py::test_eval"}
    assert variant_name("t.py::test_x") == "test_x"


def test_cross_machine_ratios_are_vs_the_reference(tmp_path: Path) -> None:
    names = [NODE.format(v) for v in "abc"]
    first = write_baseline(tmp_path / "a.json", {names[0]: 1e-3, names[1]: 2e-3, names[2]: 1e-3}, cpu="Alpha")
    second = write_baseline(tmp_path / "b.json", {names[0]: 2e-3, names[1]: 1e-3}, cpu="Beta")
    baselines = load_baselines([first, second])
    result_ = cross_machine(baselines, choose_reference([], baselines, named=second))
    assert not isinstance(result_, str)
    assert result_.reference == "x86_64-beta-2c-8gib"  # the second file: named, not the first one listed
    ratios = result_.ratios["x86_64-alpha-2c-8gib"]
    assert set(ratios) == {names[0], names[1]}  # c is not in b
    assert ratios[names[0]] / ratios[names[1]] == pytest.approx(0.25)  # same samples shape, medians 0.5x and 2x
    assert result_.geomeans()["x86_64-alpha-2c-8gib"] == pytest.approx(1.0)


def test_the_reference_is_the_current_machines_file_never_the_first_listed(tmp_path: Path) -> None:
    """The pinned one-CPU file sorted first and became the reference, so the real machine read 1.44x."""
    pinned = write_baseline(tmp_path / "a-1cpu.json", {"t::a": 1e-3}, cpu="Alpha Pinned")
    real = write_baseline(tmp_path / "b.json", {"t::a": 1.44e-3}, cpu="Beta")
    baselines = load_baselines([pinned, real])
    gated = load_runs([write_run(tmp_path / "gated.json", [], baseline=real)])
    ref = choose_reference(gated, baselines)
    assert isinstance(ref, Reference) and ref.baseline.path == real and "gated against" in ref.why
    doc = {"tests": [], "machine_slug": "x86_64-beta-2c-8gib"}  # a run that names no baseline file
    by_slug = choose_reference([Run(tmp_path / "r.json", "r.json", doc, [])], baselines)
    assert isinstance(by_slug, Reference) and by_slug.baseline.path == real and "ran on" in by_slug.why
    here = choose_reference([], baselines, here="x86_64-beta-2c-8gib")
    assert isinstance(here, Reference) and here.baseline.path == real and "wrote this report" in here.why
    named = choose_reference(gated, baselines, named=pinned)  # --reference wins
    assert isinstance(named, Reference) and named.baseline.path == pinned and "--reference" in named.why
    unknown = choose_reference([], baselines, here="x86_64-gamma-4c-16gib")
    assert isinstance(unknown, str) and "--reference FILE" in unknown
    assert cross_machine(baselines, unknown) == unknown  # no silent pick
    with pytest.raises(ReportError, match="not one of the --baseline files"):
        choose_reference([], baselines, named=tmp_path / "other.json")


def test_cross_machine_needs_two_baselines_with_common_tests(tmp_path: Path) -> None:
    one, other = load_baselines([write_baseline(tmp_path / "a.json", {"t::a": 1e-3}),
                                 write_baseline(tmp_path / "b.json", {"t::b": 1e-3}, cpu="Beta")])
    assert "at least two machines" in str(cross_machine([one], Reference(one, "named")))
    assert "No test has a latency median" in str(cross_machine([one, other], Reference(one, "named")))


def test_ratio_bars_start_at_1x_on_a_log_axis_centred_on_1x() -> None:
    bars = [Bar("t::fast", 0.8, "0.80x", "beta"), Bar("t::slow", 1.44, "1.44x", "beta")]
    ax = cross_machine_figure(bars, {"beta": 1.07}, "alpha").axes[0]
    assert ax.get_xscale() == "log"
    lo, hi = ax.get_xlim()
    assert lo * hi == pytest.approx(1.0) and hi > 1.44  # centred on 1x, every bar inside
    spans = sorted((p.get_x(), p.get_x() + p.get_width()) for p in ax.patches if p.get_height() > 0)
    assert [(min(a, b), max(a, b)) for a, b in spans] == [pytest.approx((0.8, 1.0)), pytest.approx((1.0, 1.44))]


def test_a_few_kib_of_memory_stay_visible_beside_hundreds_of_mib() -> None:
    bars = [Bar("t::small", 4 * 2**10, "4 KiB", "now"), Bar("t::big", 286 * 2**20, "286 MiB", "now"),
            Bar("t::none", 0.0, "0 B", "now")]
    fig = memory_figure(bars)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    fig.canvas.draw()
    width = ax.get_window_extent().width
    drawn = {round(p.get_x() + p.get_width()): p.get_window_extent().width for p in ax.patches if p.get_height() > 0}
    assert drawn[4 * 2**10] > 0.1 * width  # on a linear axis it was 4 KiB / 386 MiB of the width: 0.001 %
    assert drawn[286 * 2**20] < width


def test_baseline_for_prefers_the_runs_own_file(tmp_path: Path) -> None:
    own = write_baseline(tmp_path / "own.json", {"t::a": 1e-3})
    (other,) = load_baselines([write_baseline(tmp_path / "other.json", {"t::a": 5e-3, "t::b": 1e-3}, cpu="Beta")])
    (run,) = load_runs([write_run(tmp_path / "run.json", [], baseline=own)])

    def source(nodeid: str) -> Path | None:
        found = baseline_for(run, nodeid, [other])
        return found[0].path if found else None

    assert run.baseline is not None
    assert (source("t::a"), source("t::b"), source("t::c")) == (own, other.path, None)


def test_a_run_naming_a_missing_baseline_still_renders(tmp_path: Path) -> None:
    (run,) = load_runs([write_run(tmp_path / "run.json", [], baseline=tmp_path / "gone.json")])
    assert run.baseline is None and "does not exist" in run.note


# ---------------------------------------------------------------- the page

def test_empty_sections_say_so_in_one_line(tmp_path: Path) -> None:
    run = Run(tmp_path / "run.json", "run.json", {"tests": []}, [])
    page = render_report([run], [], generated="fixed")
    found = sections(page)
    assert set(found) == {"latency", "pareto", "users", "memory", "machines", "rows"}
    for name, html_ in found.items():
        assert "<img" not in html_, name
        assert html_.count('class="empty"') == 1, name


def test_text_is_escaped_and_failures_highlighted(tmp_path: Path) -> None:
    nasty = "t.py::test_x[<script>alert(1)</script>]"
    path = write_run(tmp_path / "run.json", [result(nasty, 1e-3, accuracy=0.9, rows=[row("latency p50", "fail")])])
    page = render_report(load_runs([path]), [], generated="fixed")
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<tr class="fail">' in page
    assert "fail: 1" in page


def test_full_page_has_every_plot(tmp_path: Path) -> None:
    names = [NODE.format(v) for v in ("fp32", "int8", "pruned")]
    base_a = write_baseline(tmp_path / "a.json", {n: 1e-3 for n in names}, cpu="Alpha")
    base_b = write_baseline(tmp_path / "b.json", {n: 1.5e-3 for n in names}, cpu="Beta")
    why = dict(row("latency vs baseline", "unchanged", now=1.57e-3), baseline=1e-3, ratio=1.57, against="baseline",
               stat="p10", reason="p10 level 1.570x: worse beyond the 5% tolerance but not significant")
    tests = [result(n, m, accuracy=acc, rows=[row("latency p50", "pass"), why])
             for n, m, acc in zip(names, (1e-3, 0.6e-3, 0.5e-3), (0.90, 0.90, 0.85))]
    run = write_run(tmp_path / "run.json", tests, baseline=base_a)
    out = tmp_path / "out" / "report.html"
    # --baseline takes several files at once too (a shell glob: --baseline baselines/*.json)
    assert main(["report", str(run), "--baseline", str(base_a), str(base_b), "-o", str(out)]) == 0
    found = sections(out.read_text())
    for name in ("latency", "pareto", "users", "memory", "machines"):
        assert "data:image/png;base64," in found[name], name
    assert "x86_64-beta-2c-8gib" in found["machines"]
    # the reference is the file the run was gated against (a.json), and the page says so
    assert "Reference: x86_64-alpha-2c-8gib (" in found["machines"] and "gated against" in found["machines"]
    assert "the reference across machines" in out.read_text().split("<nav>")[0]
    assert "int8" in found["pareto"] and "pruned" in found["pareto"]
    # every "unchanged" row says why, under it, beside figures of the statistic it judged
    assert "<td>latency vs baseline (p10)</td><td>1ms</td><td>1.00 ms/call</td><td>1.57 ms/call</td><td>1.57x</td>" \
        in found["rows"]
    assert found["rows"].count("why: p10 level 1.570x: worse beyond the 5% tolerance but not significant</td>") == 3
    assert "min" in found["users"]  # 0.6 ms x 100,000 users = 1 min


def test_malformed_fields_are_skipped_not_fatal(tmp_path: Path) -> None:
    odd = result("t.py::test_odd", 1e-3, accuracy=0.9)
    odd["measurement"]["samples"] = [None, "x", 0.001, 0.002, True]
    odd["rows"] = ["not a row", {"metric": "latency", "now": "fast", "verdict": "fail"}]
    odd["metrics"] = ["accuracy"]
    junk: list[Any] = [odd, {"nodeid": 3}, "junk", {"nodeid": "t.py::test_bare"}]
    path = write_run(tmp_path / "run.json", junk)
    found = sections(render_report(load_runs([path]), [], generated="fixed"))
    assert "data:image/png;base64," in found["latency"]
    assert "No test recorded an accuracy metric" in found["pareto"]  # metrics was not an object
    assert "n/a" in found["rows"] and '<tr class="fail">' in found["rows"]


# ---------------------------------------------------------------- the command

def test_missing_or_bad_run_file_exits_2_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    wrong = tmp_path / "wrong.json"
    wrong.write_text("[1, 2]")
    baseline = write_baseline(tmp_path / "base.json", {"t::a": 1e-3})
    for path, words in ((tmp_path / "missing.json", "no such file"), (bad, "not valid JSON"),
                        (wrong, "not a --perf-json document"), (baseline, "pass it with --baseline")):
        assert main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 2
        err = capsys.readouterr().err
        assert words in err and "Traceback" not in err
    run = write_run(tmp_path / "run.json", [])
    assert main(["report", str(run), "--baseline", str(tmp_path / "nope.json"), "-o", str(tmp_path / "r.html")]) == 2
    assert "no such baseline file" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()


def test_without_matplotlib_the_command_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["report", str(write_run(tmp_path / "run.json", [])), "-o", str(tmp_path / "r.html")]) == 2
    assert "pip install 'pytest-perfguard[report]'" in capsys.readouterr().err


TEST_FILE = """
from pytest_perfguard import perf_budget

@perf_budget(latency="1s", memory="1GiB")
def test_sum(perf):
    perf(sum, range(2000))

@perf_budget(latency="1s", accuracy=0.5)
def test_model(perf):
    perf(sorted, list(range(500, 0, -1)))
    perf.record(accuracy=0.75)

@perf_budget(latency="1ns")
def test_too_slow(perf):
    perf(sum, range(20000))
"""


def test_end_to_end_from_a_real_run(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makepyfile(test_budgets=TEST_FILE)
    run = pytester.runpytest("--perf", "--perf-json", "run.json", "--perf-max-time=0.02", "--perf-min-rounds=3",
                             "--perf-profile=never", "-p", "no:cacheprovider")
    run.assert_outcomes(passed=2, failed=1)
    doc = json.loads((pytester.path / "run.json").read_text())
    assert doc["baseline"] == f"baselines/{doc['machine_slug']}.json"  # relative: no checkout path in reports
    out = pytester.path / "report.html"
    assert main(["report", str(pytester.path / "run.json"), "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text()
    found = sections(page)
    assert set(found) == {"latency", "pareto", "users", "memory", "machines", "rows"}
    for name in ("latency", "pareto", "users", "memory"):
        assert "data:image/png;base64," in found[name], name
    assert "at least two machines" in found["machines"]
    assert "test_budgets.py::test_too_slow" in found["rows"] and '<tr class="fail">' in found["rows"]
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.IGNORECASE)
    assert "<script" not in page.lower()
