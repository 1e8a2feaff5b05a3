"""``perfguard report``: one self-contained HTML page from ``--perf-json`` runs (no pytest import).

The page has a header (date, machine, verdict counts), per-test latency distributions against the
baseline, accuracy vs latency with its Pareto front, latency projected to N sequential users,
memory per test, the cross-machine ratios of several baseline files, and every row of every run.
The numbers are computed here by small pure functions (tested without matplotlib); ``plots``
draws them as PNGs embedded in the page, so it opens offline and can be mailed as one file.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import plots
from .atomic import write_text
from .baseline import Baseline, BaselineError, load_baseline, machine_slug
from .check import FAILING, format_value
from .decide import geometric_mean
from .plots import Bar, Panel, format_duration

__all__ = ["USERS", "CrossMachine", "Point", "Projection", "ReportError", "Run", "cross_machine",
           "format_duration", "load_baselines", "load_runs", "pareto_front", "projections", "render_report",
           "write_report"]

USERS = (100, 10_000, 100_000)
INSTALL_HINT = "pip install 'pytest-perfguard[report]'"


class ReportError(Exception):
    """An input cannot be used; the message names the file and what is wrong with it."""


@dataclass
class Run:
    """One ``--perf-json`` document and the baseline file it names (when that can be read)."""

    path: Path
    label: str
    doc: dict[str, Any]
    tests: list[dict[str, Any]]
    baseline: Baseline | None = None
    note: str = ""  # why the run's own baseline is not used, if it is not


# ---------------------------------------------------------------- loading

def load_run(path: Path) -> Run:
    """Read and check one ``--perf-json`` document; ReportError says what is wrong."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (write one with pytest --perf --perf-json {path})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if isinstance(doc, dict) and "entries" in doc and "tests" not in doc:
        raise ReportError(f"{path}: this is a baseline file, not a run: pass it with --baseline")
    if not isinstance(doc, dict) or not isinstance(doc.get("tests"), list):
        raise ReportError(f"{path}: not a --perf-json document (expected an object with a \"tests\" list)")
    tests = [t for t in doc["tests"] if isinstance(t, dict) and isinstance(t.get("nodeid"), str)]
    run = Run(Path(path), Path(path).name, doc, tests)
    run.baseline, run.note = _own_baseline(run)
    return run


def _own_baseline(run: Run) -> tuple[Baseline | None, str]:
    """The baseline file the run names, as written or relative to the run file; never an error."""
    named = run.doc.get("baseline")
    if not isinstance(named, str) or not named:
        return None, "the run names no baseline file"
    for candidate in (Path(named), run.path.parent / named):
        try:
            found = load_baseline(candidate)
        except BaselineError as exc:
            return None, f"its baseline could not be read: {exc}"
        if found is not None:
            return found, ""
    return None, f"its baseline {named} does not exist here"


def load_runs(paths: Sequence[Path]) -> list[Run]:
    """Load every run; same-named files from different folders are labelled by their path."""
    runs = [load_run(Path(p)) for p in paths]
    names = Counter(r.label for r in runs)
    for r in runs:
        if names[r.label] > 1:
            r.label = str(r.path)
    return runs


def load_baselines(paths: Sequence[Path]) -> list[Baseline]:
    """Load the ``--baseline`` files the user named: each must exist and be readable."""
    out = []
    for p in paths:
        try:
            b = load_baseline(Path(p))
        except BaselineError as exc:
            raise ReportError(str(exc)) from None
        if b is None:
            raise ReportError(f"{p}: no such baseline file")
        out.append(b)
    return out


# ---------------------------------------------------------------- numbers

def numbers(values: Any) -> list[float]:
    """The finite numbers of a list (a hand-edited file may hold anything else)."""
    return [float(v) for v in values if _number(v) is not None] if isinstance(values, list) else []


def median(values: Sequence[float]) -> float | None:
    """Median of finite values, None when there are none."""
    xs = sorted(values)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def samples_of(test: dict[str, Any]) -> list[float]:
    """The run's latency samples of a test (seconds per call, or per item)."""
    return numbers(_dict(test.get("measurement")).get("samples"))


def unit_of(test: dict[str, Any]) -> str:
    return str(_dict(test.get("measurement")).get("unit") or "call")


def median_of(test: dict[str, Any]) -> float | None:
    """Median latency from the samples, else from the stored summary."""
    m = median(samples_of(test))
    return m if m is not None else _number(_dict(_dict(test.get("measurement")).get("summary")).get("median"))


def rows_of(test: dict[str, Any]) -> list[dict[str, Any]]:
    rows = test.get("rows")
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def entry_samples(entry: dict[str, Any]) -> list[float]:
    return numbers(_dict(entry.get("samples")).get("latency"))


def entry_median(entry: dict[str, Any]) -> float | None:
    m = median(entry_samples(entry))
    return m if m is not None else _number(_dict(entry.get("summary")).get("median"))


def plot_label(nodeid: str, run: str = "", width: int = 56) -> str:
    """A y-axis label: ``test_fn[params]`` (the function name shortened first), `` · run`` if given."""
    name, suffix = short_name(nodeid), f" · {Path(run).stem}" if run else ""
    room = width - len(suffix)
    if len(name) > room and "[" in name:
        fn, params = name.split("[", 1)
        keep = max(10, room - len(params) - 2)
        name = fn[:keep] + "…[" + params
    return (name if len(name) <= room else name[:room - 1] + "…") + suffix


def short_name(nodeid: str) -> str:
    """``test_fn[params]``: the part of a node id after its file, which names the variant."""
    return nodeid.rsplit("::", 1)[-1]


def variant_name(nodeid: str, run: str = "") -> str:
    """What tells a test's variants apart: its parameters, then the run file (``fp32 · naive``).

    Without parameters or a run to name, the test's own name.
    """
    name = short_name(nodeid)
    params = name[name.index("[") + 1:-1] if name.endswith("]") and "[" in name else ""
    return " · ".join(part for part in (params, Path(run).stem if run else "") if part) or name


def baseline_for(run: Run, nodeid: str, extra: Sequence[Baseline]) -> tuple[Baseline, dict[str, Any]] | None:
    """The run's own baseline entry for a test, else the first ``--baseline`` file that has it."""
    for b in ([run.baseline] if run.baseline else []) + list(extra):
        if nodeid in b.entries:
            return b, b.entries[nodeid]
    return None


def slug_of(b: Baseline) -> str:
    try:
        return machine_slug(b.machine)
    except (AttributeError, TypeError, ValueError):  # a hand-edited fingerprint: the file name is the slug
        return b.path.stem


@dataclass
class Point:
    """One test on the accuracy/latency plane."""

    label: str
    run: str
    nodeid: str
    latency: float
    accuracy: float
    unit: str

    @property
    def family(self) -> str:
        """The test function (node id without parameters): its variants share one plane."""
        return self.nodeid.split("[", 1)[0]


def accuracy_points(runs: Sequence[Run]) -> list[Point]:
    """Every test with a recorded ``accuracy`` and a median latency, from every run."""
    points = []
    for run in runs:
        for t in run.tests:
            acc, lat = _number(_dict(t.get("metrics")).get("accuracy")), median_of(t)
            if acc is not None and lat is not None and lat > 0:
                label = variant_name(t["nodeid"], run.label if len(runs) > 1 else "")
                points.append(Point(label, run.label, t["nodeid"], lat, acc, unit_of(t)))
    return points


def pareto_front(points: Sequence[Point]) -> list[Point]:
    """The points no other point beats on both latency (lower) and accuracy (higher), fastest first.

    Sorted by latency, a point is on the front when it is more accurate than every faster one;
    of equal points the first is kept.
    """
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.latency, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def pareto_planes(points: Sequence[Point]) -> dict[tuple[str, str], list[Point]]:
    """Points grouped by test function and latency unit: only variants of one task compete."""
    planes: dict[tuple[str, str], list[Point]] = {}
    for p in points:
        planes.setdefault((p.family, p.unit), []).append(p)
    return planes


def budget_ranges(front: Sequence[Point]) -> list[tuple[Point, float, float | None]]:
    """For each front point, the latency budgets [low, high) for which it is the best choice."""
    return [(p, p.latency, front[i + 1].latency if i + 1 < len(front) else None) for i, p in enumerate(front)]


@dataclass
class Projection:
    """Median latency times N: the time N users served one after another would take."""

    run: str
    nodeid: str
    unit: str
    median: float
    totals: dict[int, float]


def projections(runs: Sequence[Run], users: Sequence[int] = USERS) -> list[Projection]:
    out = []
    for run in runs:
        for t in run.tests:
            m = median_of(t)
            if m is not None and m > 0:
                out.append(Projection(run.label, t["nodeid"], unit_of(t), m, {n: m * n for n in users}))
    return out


@dataclass
class CrossMachine:
    """Per machine (after the first), per common test: median latency / the first machine's."""

    reference: str
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)

    def geomeans(self) -> dict[str, float]:
        return {m: geometric_mean(list(r.values())) for m, r in self.ratios.items() if r}


def machine_labels(baselines: Sequence[Baseline]) -> list[str]:
    """Machine slugs, with the file name added where two files share a slug."""
    slugs = [slug_of(b) for b in baselines]
    return [s if slugs.count(s) == 1 else f"{s} ({b.path.name})" for s, b in zip(slugs, baselines)]


def cross_machine(baselines: Sequence[Baseline]) -> CrossMachine | str:
    """Ratios vs the first baseline, or the one line that says why there are none."""
    if len(baselines) < 2:
        return (f"Needs baselines of at least two machines (--baseline a.json --baseline b.json); "
                f"got {len(baselines)}.")
    labels = machine_labels(baselines)
    ref = baselines[0]
    result = CrossMachine(labels[0])
    for label, b in zip(labels[1:], baselines[1:]):
        for nodeid in sorted(set(ref.entries) & set(b.entries)):
            e0, e1 = ref.entries[nodeid], b.entries[nodeid]
            m0, m1 = entry_median(e0), entry_median(e1)
            if m0 and m1 and m0 > 0 and m1 > 0 and (e0.get("unit") or "call") == (e1.get("unit") or "call"):
                result.ratios.setdefault(label, {})[nodeid] = m1 / m0
    if not result.ratios:
        return f"No test has a latency median in {labels[0]} and in another of the given baselines."
    return result


def verdict_counts(runs: Sequence[Run]) -> Counter[str]:
    return Counter(str(r.get("verdict")) for run in runs for t in run.tests for r in rows_of(t))


# ---------------------------------------------------------------- HTML

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], classes: Sequence[str] = ()) -> str:
    """An HTML table, every cell escaped; ``classes`` gives each row a class. Only the "test"
    column wraps (node ids are long), so numbers and verdicts stay on one line."""
    td = ["<td class=\"wrap\">" if h == "test" else "<td>" for h in header]
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        f"<tr class=\"{esc(classes[i]) if i < len(classes) else ''}\">"
        + "".join(f"{td[j]}{esc(c)}</td>" for j, c in enumerate(row)) + "</tr>"
        for i, row in enumerate(rows))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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


def distribution_panel(name: str, t: dict[str, Any], found: tuple[Baseline, dict[str, Any]] | None) -> Panel:
    """Boxes and a two-line title: the ratio of medians when the baseline measured the same unit."""
    unit, now = unit_of(t), samples_of(t)
    if found is None or not entry_samples(found[1]):
        return Panel(f"{name}\nno baseline", [("now", now)], unit)
    b, entry = found
    if (entry.get("unit") or "call") != unit:
        return Panel(f"{name}\nbaseline measured per {entry.get('unit')}: not compared", [("now", now)], unit)
    ratio = (median(now) or math.nan) / (median(entry_samples(entry)) or math.nan)
    return Panel(f"{name}\nmedians now/baseline {ratio:.2f}x  (baseline: {slug_of(b)})",
                 [("baseline", entry_samples(entry)), ("now", now)], unit)


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
    body = image(plots.pareto_png(scatters), "accuracy vs latency") + "<h3>The Pareto front</h3>" + table(
        ["variant", "run", "test", "median latency", "accuracy", "best choice for latency budgets"], rows)
    return section("pareto", "Accuracy vs latency", intro, body)


def projection_section(runs: Sequence[Run]) -> str:
    intro = ("Median latency per call (per item for tests measured per item) times N: the time N users "
             "served one after another would take in total. Concurrency divides it; queueing does not.")
    found = projections(runs)
    if not found:
        return section("users", "Latency at scale", intro, empty("No test in these runs has a median latency."))
    labels = [plot_label(p.nodeid, p.run if len(runs) > 1 else "") for p in found]
    png = plots.projection_png([(label, p.totals) for label, p in zip(labels, found)])
    header = (["run"] if len(runs) > 1 else []) + ["test", "median"] + [f"{n:,} users" for n in USERS]
    rows = [([p.run] if len(runs) > 1 else []) + [p.nodeid, f"{format_duration(p.median)}/{p.unit}"]
            + [format_duration(p.totals[n]) for n in USERS] for p in found]
    return section("users", "Latency at scale", intro, image(png, "latency at scale") + table(header, rows))


def memory_section(runs: Sequence[Run], extra: Sequence[Baseline]) -> str:
    intro = ("Growth of peak resident memory (RSS) over each test's measured region, native allocations "
             "included. vmhwm: the kernel's peak-RSS counter, reset before the region; sampling: a 1 ms poller.")
    bars = [bar for run in runs for t in run.tests for bar in memory_bars(label_in(run, runs, t["nodeid"]), t,
                                                                             baseline_for(run, t["nodeid"], extra))]
    if not bars:
        return section("memory", "Memory", intro, empty("No test in these runs measured memory."))
    return section("memory", "Memory", intro, image(plots.memory_png(bars), "memory per test"))


def memory_bars(name: str, t: dict[str, Any], found: tuple[Baseline, dict[str, Any]] | None) -> list[Bar]:
    """The baseline's bar (if it measured memory) and this run's, each noting its mechanism."""
    m = _dict(t.get("measurement"))
    now, gpu = _number(m.get("memory_growth")), _number(m.get("gpu_memory_growth"))
    if now is None:
        return []
    bars = []
    base = _number(found[1].get("memory_growth")) if found else None
    if found is not None and base is not None:
        bars.append(Bar(name, base, f"{format_value(base, 'B')} ({found[1].get('memory_mechanism') or '?'})", "baseline"))
    note = f"{format_value(now, 'B')} ({m.get('memory_mechanism') or 'mechanism not recorded'})"
    return bars + [Bar(name, now, note + (f", GPU {format_value(gpu, 'B')}" if gpu is not None else ""), "now")]


def cross_machine_section(baselines: Sequence[Baseline]) -> str:
    intro = ("Per test common to the first baseline file and another: its median latency there over its median "
             "on the first machine. The dashed lines are the geometric means, the fair average of ratios.")
    result = cross_machine(baselines)
    if isinstance(result, str):
        return section("machines", "Across machines", intro, empty(result))
    means = result.geomeans()
    bars = [Bar(plot_label(n), r, f"{r:.2f}x", m) for m, ratios in result.ratios.items() for n, r in ratios.items()]
    rows = [[m, len(result.ratios[m]), f"{g:.3f}x"] for m, g in means.items()]
    body = image(plots.cross_machine_png(bars, means, result.reference), "cross-machine ratios") + table(
        ["machine", f"tests in common with {result.reference}", "geometric mean of the ratios"], rows)
    return section("machines", "Across machines", intro, body)


def rows_section(runs: Sequence[Run]) -> str:
    header = (["run"] if len(runs) > 1 else []) + ["test", "metric", "budget", "baseline", "now", "ratio", "verdict"]
    rows, classes = [], []
    for run in runs:
        for t in run.tests:
            for i, r in enumerate(rows_of(t)):
                unit, ratio, base = str(r.get("unit") or ""), _number(r.get("ratio")), _number(r.get("baseline"))
                cells = [t["nodeid"] if i == 0 else "", r.get("metric", ""), r.get("budget", ""),
                         format_value(base, unit) if base is not None else "", format_value(_number(r.get("now")), unit),
                         f"{ratio:.2f}x" if ratio is not None else "", r.get("verdict", "")]
                rows.append(([run.label if i == 0 else ""] if len(runs) > 1 else []) + cells)
                classes.append("fail" if r.get("verdict") in FAILING else "")
    body = table(header, rows, classes) if rows else empty("These runs have no rows (no test had a budget).")
    failures = [f"{t['nodeid']}: {r.get('message', '')}" for run in runs for t in run.tests
                for r in rows_of(t) if r.get("verdict") in FAILING]
    if failures:
        body = "<ul class=\"failures\">" + "".join(f"<li>{esc(f)}</li>" for f in failures) + "</ul>" + body
    return section("rows", "All rows", "Every budget and baseline check of every test; failures in red.", body)


def header(runs: Sequence[Run], baselines: Sequence[Baseline], generated: str) -> str:
    counts = verdict_counts(runs)
    chips = " ".join(f"<span class=\"chip{' fail' if v in FAILING else ''}\">{esc(v)}: {n}</span>"
                     for v, n in sorted(counts.items(), key=lambda kv: (kv[0] not in FAILING, kv[0])))
    outcomes = Counter(str(t.get("outcome", "?")) for run in runs for t in run.tests)
    lines = [f"{len([t for run in runs for t in run.tests])} tests: "
             + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))]
    for run in runs:
        note = f"; baseline {run.baseline.path}" if run.baseline else f"; {run.note}"
        lines.append(f"run {run.label}: created {run.doc.get('created', '?')} on "
                     f"{run.doc.get('machine_slug') or 'an unknown machine'}, Python {run.doc.get('python', '?')}{note}")
    lines += [f"--baseline {b.path} ({label}, updated {b.updated})" for b, label in zip(baselines, machine_labels(baselines))]
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
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
.chip{display:inline-block;padding:2px 9px;margin:2px 4px 2px 0;border-radius:11px;background:#e3eef9;font-weight:600}
.chip.fail{background:#f9d4d2;color:#8a1c1c} .failures{color:#8a1c1c}
nav a{margin-right:12px}
"""


def render_report(runs: Sequence[Run], baselines: Sequence[Baseline], generated: str | None = None) -> str:
    """The whole page as one string: inline CSS, PNGs as data URIs, no script, no external link."""
    generated = generated or _dt.datetime.now(_dt.UTC).strftime("generated %Y-%m-%d %H:%M UTC")
    nav = "".join(f"<a href=\"#{a}\">{esc(t)}</a>" for a, t in (
        ("latency", "latency"), ("pareto", "accuracy vs latency"), ("users", "at scale"),
        ("memory", "memory"), ("machines", "machines"), ("rows", "all rows")))
    parts = [header(runs, baselines, generated), f"<nav>{nav}</nav>", distributions_section(runs, baselines),
             pareto_section(runs), projection_section(runs), memory_section(runs, baselines),
             cross_machine_section(baselines), rows_section(runs)]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>perfguard report</title>"
            f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n")


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReportError(f"perfguard report draws with matplotlib, which is not installed: {INSTALL_HINT}") from None


def write_report(run_paths: Sequence[Path], baseline_paths: Sequence[Path], out: Path) -> str:
    """Load, render and write the page atomically; returns a one-line summary."""
    require_matplotlib()
    runs = load_runs(run_paths)
    baselines = load_baselines(baseline_paths)
    page = render_report(runs, baselines)
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text(out, page)
    except OSError as exc:
        raise ReportError(f"cannot write {out} ({exc.strerror or exc})") from None
    n = sum(len(r.tests) for r in runs)
    return f"perfguard report: wrote {out} ({n} tests from {len(runs)} run(s), {len(page) // 1024} KiB)"
