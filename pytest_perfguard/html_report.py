"""``perfguard report``: one self-contained HTML page from ``--perf-json`` runs (no pytest import).

The page has a header (date, machine, verdict counts), per-test latency distributions against the
baseline, accuracy vs latency with its Pareto front, latency projected to N sequential users,
memory per test, the cross-machine ratios of several baseline files, and every row of every run.
The numbers come from ``report_data`` (small pure functions, tested without matplotlib); ``plots``
draws them as PNGs embedded in the page, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import plots
from .atomic import write_text
from .baseline import Baseline
from .model import BaselineEntry, Verdict
from .plots import Bar, Panel
from .report import checks_table
from .table import Table
from .units import format_duration, format_value
from .report_data import (
    INSTALL_HINT,
    USERS,
    ReportError,
    Run,
    accuracy_points,
    as_dict,
    as_number,
    baseline_for,
    Reference,
    same_file,
    budget_ranges,
    choose_reference,
    cross_machine,
    load_baselines,
    load_runs,
    machine_labels,
    median,
    pareto_front,
    pareto_planes,
    plot_label,
    projections,
    rows_of,
    samples_of,
    short_name,
    slug_of,
    unit_of,
    verdict_counts,
)

__all__ = ["render_report", "write_report"]

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def image(uri: str, alt: str) -> str:
    return f"<img src=\"{esc(uri)}\" alt=\"{esc(alt)}\">"


def section(anchor: str, title: str, intro: str, body: str) -> str:
    return f"<section id=\"{anchor}\"><h2>{esc(title)}</h2><p class=\"intro\">{esc(intro)}</p>{body}</section>"


def empty(message: str) -> str:
    return f"<p class=\"empty\">{esc(message)}</p>"


def label_in(run: Run, runs: Sequence[Run], nodeid: str, width: int = 56) -> str:
    """The plot label of a test, naming its run when there are several."""
    return plot_label(nodeid, run.label if len(runs) > 1 else "", width)


def distributions_section(runs: Sequence[Run], extra: Sequence[Baseline]) -> str:
    panels = [distribution_panel(label_in(run, runs, t["nodeid"], 70), t, baseline_for(run, t["nodeid"], extra))
              for run in runs for t in run.tests if samples_of(t)]
    body = image(plots.distributions_png(panels), "latency distributions") if panels else empty(
        "No test in these runs has latency samples.")
    intro = ("Per test, the rounds of the baseline and of this run (box: quartiles, line: median, whiskers: "
             "1.5 IQR). The baseline is the run's own file, else the first --baseline file with the test.")
    return section("latency", "Latency: baseline vs now", intro, body)


def distribution_panel(name: str, t: dict[str, Any], found: tuple[Baseline, BaselineEntry] | None) -> Panel:
    """Boxes and a two-line title: the ratio of medians when the baseline measured the same unit."""
    unit, now = unit_of(t), samples_of(t)
    if found is None or not found[1].samples:
        return Panel(f"{name}\nno baseline", [("now", now)], unit)
    b, entry = found
    if entry.unit != unit:
        return Panel(f"{name}\nbaseline measured per {entry.unit}: not compared", [("now", now)], unit)
    ratio = (median(now) or math.nan) / (median(entry.samples) or math.nan)
    return Panel(f"{name}\nmedians now/baseline {ratio:.2f}x  (baseline: {slug_of(b)})",
                 [("baseline", list(entry.samples)), ("now", now)], unit)


def pareto_section(runs: Sequence[Run]) -> str:
    intro = ("Tests that recorded an accuracy metric, by median latency, one plane per test function (its "
             "variants: parameters and run files). A variant is on the Pareto front when no other is both faster "
             "and more accurate; the step line is the best accuracy within a latency budget.")
    points = accuracy_points(runs)
    if not points:
        return section("pareto", "Accuracy vs latency", intro,
                       empty("No test recorded an accuracy metric together with latency samples."))
    planes, scatters, rows = pareto_planes(points), [], []
    for (family, unit), mine in planes.items():
        front = pareto_front(mine)
        scatters.append(plots.Scatter(f"{short_name(family)} (latency per {unit})",
                                      [(p.label, p.latency, p.accuracy, p in front) for p in mine]))
        rows += [[p.label, p.run, p.nodeid, f"{format_duration(p.latency)}/{p.unit}", f"{p.accuracy:.4g}",
                  f"{format_duration(lo)} to {format_duration(hi)}" if hi else f"{format_duration(lo)} or more"]
                 for p, lo, hi in budget_ranges(front)]
    body = image(plots.pareto_png(scatters), "accuracy vs latency") + "<h3>The Pareto front</h3>" + Table(
        ["variant", "run", "test", "median latency", "accuracy", "best choice for latency budgets"], rows).html()
    return section("pareto", "Accuracy vs latency", intro, body)


def projection_section(runs: Sequence[Run]) -> str:
    intro = ("Median latency per call times N: the time N users served one after another would take in total, "
             "one call per user. Concurrency divides it; queueing does not. Tests timed per item are left out: "
             "an item (a counter increment, one image of a batch) is not what a user asks for.")
    found, per_item = projections(runs)
    left_out = empty(f"Left out, timed per item: {', '.join(per_item)}.") if per_item else ""
    if not found:
        return section("users", "Latency at scale", intro,
                       empty("No test in these runs has a median latency per call.") + left_out)
    labels = [plot_label(p.nodeid, p.run if len(runs) > 1 else "") for p in found]
    png = plots.projection_png([(label, p.totals) for label, p in zip(labels, found)])
    header = (["run"] if len(runs) > 1 else []) + ["test", "median"] + [f"{n:,} users" for n in USERS]
    rows = [([p.run] if len(runs) > 1 else []) + [p.nodeid, f"{format_duration(p.median)}/{p.unit}"]
            + [format_duration(p.totals[n]) for n in USERS] for p in found]
    return section("users", "Latency at scale", intro,
                   image(png, "latency at scale") + Table(header, rows).html() + left_out)


def memory_section(runs: Sequence[Run], extra: Sequence[Baseline]) -> str:
    intro = ("Growth of peak resident memory (RSS) over each test's measured region, native allocations "
             "included, on a log scale so that a few KiB stay visible beside hundreds of MiB; each bar notes its "
             "value. vmhwm: the kernel's peak-RSS counter, reset before the region; sampling: a 1 ms poller.")
    bars = [bar for run in runs for t in run.tests for bar in memory_bars(label_in(run, runs, t["nodeid"]), t,
                                                                             baseline_for(run, t["nodeid"], extra))]
    if not bars:
        return section("memory", "Memory", intro, empty("No test in these runs measured memory."))
    return section("memory", "Memory", intro, image(plots.memory_png(bars), "memory per test"))


def memory_bars(name: str, t: dict[str, Any], found: tuple[Baseline, BaselineEntry] | None) -> list[Bar]:
    """The baseline's bar (if it measured memory) and this run's, each noting its mechanism."""
    m = as_dict(t.get("measurement"))
    now, gpu = as_number(m.get("memory_growth")), as_number(m.get("gpu_memory_growth"))
    if now is None:
        return []
    bars = []
    base = found[1].memory_growth if found else None
    if found is not None and base is not None:
        bars.append(Bar(name, base, f"{format_value(base, 'B')} ({found[1].memory_mechanism or '?'})", "baseline"))
    note = f"{format_value(now, 'B')} ({m.get('memory_mechanism') or 'mechanism not recorded'})"
    return bars + [Bar(name, now, note + (f", GPU {format_value(gpu, 'B')}" if gpu is not None else ""), "now")]


def cross_machine_section(baselines: Sequence[Baseline], reference: Reference | str) -> str:
    intro = ("Per test common to the reference baseline file and another: its median latency there over its "
             "median on the reference machine; each bar runs from 1x. The dashed lines are the geometric means, "
             "the fair average of ratios.")
    result = cross_machine(baselines, reference)
    if isinstance(result, str):
        return section("machines", "Across machines", intro, empty(result))
    assert isinstance(reference, Reference)
    intro += f" Reference: {result.reference} ({reference.baseline.path}), {reference.why}."
    means = result.geomeans()
    bars = [Bar(plot_label(n), r, f"{r:.2f}x", m) for m, ratios in result.ratios.items() for n, r in ratios.items()]
    rows = [[m, str(len(result.ratios[m])), f"{g:.3f}x"] for m, g in means.items()]
    body = image(plots.cross_machine_png(bars, means, result.reference), "cross-machine ratios") + Table(
        ["machine", f"tests in common with {result.reference}", "geometric mean of the ratios"], rows).html()
    return section("machines", "Across machines", intro, body)


def rows_section(runs: Sequence[Run]) -> str:
    tests = [(run, t["nodeid"], rows_of(t)) for run in runs for t in run.tests]
    rows = checks_table(((nodeid, checks) for _, nodeid, checks in tests), _ROW_KEYS)
    if len(runs) > 1:  # the run's name beside each test's first row
        labels = [run.label if i == 0 else "" for run, _, checks in tests for i in range(len(checks))]
        rows = Table(["run", *rows.header], [[label, *row] for label, row in zip(labels, rows.rows)], rows.marks,
                     rows.notes)
    body = rows.html() if rows else empty("These runs have no rows (no test had a budget).")
    failures = [f"{nodeid}: {c.message}" for _, nodeid, checks in tests for c in checks if c.failed]
    if failures:
        body = "<ul class=\"failures\">" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>" + body
    return section("rows", "All rows", "Every budget and baseline check of every test; failures in red.", body)


_ROW_KEYS = ["metric", "budget", "baseline", "now", "ratio", "verdict"]
_FAILING = {str(v) for v in Verdict if v.failed}


def header(runs: Sequence[Run], baselines: Sequence[Baseline], generated: str,
           reference: Reference | str | None = None) -> str:
    counts = verdict_counts(runs)
    chips = " ".join(f"<span class=\"chip{' fail' if v in _FAILING else ''}\">{esc(v)}: {n}</span>"
                     for v, n in sorted(counts.items(), key=lambda kv: (kv[0] not in _FAILING, kv[0])))
    outcomes = Counter(str(t.get("outcome", "?")) for run in runs for t in run.tests)
    lines = [f"{len([t for run in runs for t in run.tests])} tests: "
             + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))]
    for run in runs:
        note = f"; baseline {run.baseline.path}" if run.baseline else f"; {run.note}"
        lines.append(f"run {run.label}: created {run.doc.get('created', '?')} on "
                     f"{run.doc.get('machine_slug') or 'an unknown machine'}, Python {run.doc.get('python', '?')}{note}")
    ref = reference.baseline if isinstance(reference, Reference) else None
    lines += [f"--baseline {b.path} ({label}, updated {b.updated}"
              + (f"; the reference across machines: {reference.why})" if b is ref and isinstance(reference, Reference)
                 else ")") for b, label in zip(baselines, machine_labels(baselines))]
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    # what the gate could not judge comes first: such a run failed, whatever the rows say
    problems = [f"{kind}: {text}" for run in runs for kind, key in (("ERROR", "gate_errors"), ("WARNING", "gate_warnings"))
                for text in run.doc.get(key) or [] if isinstance(text, str)]
    if problems:
        items = "".join(f"<li class=\"failures\">{esc(p)}</li>" for p in problems) + items
    slugs = ", ".join(dict.fromkeys(str(r.doc.get("machine_slug") or "unknown machine") for r in runs))
    return (f"<header><h1>perfguard report</h1><p class=\"meta\">{esc(generated)} &middot; {esc(slugs)}</p>"
            f"<p>{chips or esc('no rows')}</p><ul>{items}</ul></header>")


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1100px;margin:0 auto;padding:16px 24px 48px}
header h1{margin:8px 0 0;font-size:26px} .meta{color:#5b6475;margin:2px 0 8px}
header ul{margin:6px 0;padding-left:18px;color:#3b4456;font-size:13px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 18px;margin:16px 0}
h2{font-size:19px;margin:4px 0} h3{font-size:15px;margin:12px 0 4px} .intro{color:#5b6475;margin:2px 0 10px}
img{max-width:100%;display:block} .empty{font-style:italic;color:#5b6475}
table{border-collapse:collapse;width:100%;font-size:12.5px;margin-top:8px}
th,td{border-bottom:1px solid #e3e6ec;padding:3px 6px;text-align:left;vertical-align:top;word-break:break-word}
th{background:#eef1f5} td,th{white-space:nowrap} td.wrap{white-space:normal} tr.fail td{background:#fde2e1;color:#8a1c1c;font-weight:600}
tr.note td{color:#5b6475;font-size:12px;padding-top:0;border-top:0} tr:has(+ tr.note) td{border-bottom:0} tr.note.fail td{font-weight:400}
.chip{display:inline-block;padding:2px 9px;margin:2px 4px 2px 0;border-radius:11px;background:#e3eef9;font-weight:600}
.chip.fail{background:#f9d4d2;color:#8a1c1c} .failures{color:#8a1c1c}
nav a{margin-right:12px}
"""


def render_report(runs: Sequence[Run], baselines: Sequence[Baseline], generated: str | None = None,
                  reference: Reference | str | None = None) -> str:
    """The whole page as one string: inline CSS, PNGs as data URIs, no script, no external link.
    ``reference``: of the cross-machine ratios (``report_data.choose_reference``; by default chosen
    without a ``--reference`` and without this machine)."""
    if reference is None:
        reference = choose_reference(runs, baselines)
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("generated %Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href=\"#{a}\">{esc(t)}</a>" for a, t in (
        ("latency", "latency"), ("pareto", "accuracy vs latency"), ("users", "at scale"),
        ("memory", "memory"), ("machines", "machines"), ("rows", "all rows")))
    parts = [header(runs, baselines, generated, reference), f"<nav>{nav}</nav>", distributions_section(runs, baselines),
             pareto_section(runs), projection_section(runs), memory_section(runs, baselines),
             cross_machine_section(baselines, reference), rows_section(runs)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>perfguard report</title>"
            f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def this_machine() -> str | None:
    """The slug of the machine writing the report (None when it cannot be fingerprinted)."""
    from .machine import machine_fingerprint, machine_slug

    try:
        return machine_slug(machine_fingerprint())
    except (OSError, ValueError, RuntimeError):
        return None


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(f"perfguard report draws with matplotlib, which is not installed: {INSTALL_HINT}") from None


def write_report(run_paths: Sequence[Path], baseline_paths: Sequence[Path], out: Path,
                 reference: Path | None = None) -> str:
    """Load, render and write the page atomically; returns a one-line summary. ``reference``: the baseline
    file the other machines are compared with (added to the baselines when not among them); by default
    the current machine's (``report_data.choose_reference``)."""
    require_matplotlib()
    runs = load_runs(run_paths)
    paths = list(baseline_paths)
    if reference is not None and not any(same_file(p, reference) for p in paths):
        paths.append(reference)
    baselines = load_baselines(paths)
    page = render_report(runs, baselines, reference=choose_reference(runs, baselines, reference, this_machine()))
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, page)
    except OSError as exc:
        raise ReportError(f"cannot write {out} ({exc.strerror or exc})") from None
    n = sum(len(r.tests) for r in runs)
    return f"perfguard report: wrote {out} ({n} tests from {len(runs)} run(s), {len(page) // 1024} KiB)"
