"""The numbers behind ``perfguard report`` (no pytest, no matplotlib): loading runs and baselines,
Pareto fronts, projections to N users and cross-machine ratios, as small pure functions.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .baseline import Baseline, BaselineError, load_baseline
from .machine import machine_slug
from .decide import geometric_mean
from .model import BaselineEntry, Check

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
    return [float(v) for v in values if as_number(v) is not None] if isinstance(values, list) else []


def median(values: Sequence[float]) -> float | None:
    """Median of finite values, None when there are none."""
    return float(np.median(values)) if len(values) else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def samples_of(test: dict[str, Any]) -> list[float]:
    """The run's latency samples of a test (seconds per call, or per item)."""
    return numbers(as_dict(test.get("measurement")).get("samples"))


def unit_of(test: dict[str, Any]) -> str:
    return str(as_dict(test.get("measurement")).get("unit") or "call")


def median_of(test: dict[str, Any]) -> float | None:
    """Median latency from the samples, else from the stored summary."""
    m = median(samples_of(test))
    return m if m is not None else as_number(as_dict(as_dict(test.get("measurement")).get("summary")).get("median"))


def rows_of(test: dict[str, Any]) -> list[Check]:
    """A test's checks; a row this version cannot read (a hand-edited verdict) is left out."""
    rows = test.get("rows")
    checks = []
    for r in rows if isinstance(rows, list) else []:
        try:
            checks.append(Check.from_json(r))
        except (AttributeError, TypeError, ValueError):
            continue
    return checks


def entry_median(entry: BaselineEntry) -> float | None:
    m = median(entry.samples)
    return m if m is not None else as_number(entry.summary.get("median"))


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


def baseline_for(run: Run, nodeid: str, extra: Sequence[Baseline]) -> tuple[Baseline, BaselineEntry] | None:
    """The run's own baseline entry for a test, else the first ``--baseline`` file that has it."""
    for b in ([run.baseline] if run.baseline else []) + list(extra):
        entry = b.entry(nodeid)
        if entry is not None:
            return b, entry
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
            acc, lat = as_number(as_dict(t.get("metrics")).get("accuracy")), median_of(t)
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
    """Median latency per call times N: the time N users served one after another would take."""

    run: str
    nodeid: str
    unit: str
    median: float
    totals: dict[int, float]


def projections(runs: Sequence[Run], users: Sequence[int] = USERS) -> tuple[list[Projection], list[str]]:
    """The projections of the tests timed per call, and the node ids of those timed per item, left out:
    a call is what one user asks for, an item (a counter increment, one image of a batch) is not."""
    out, per_item = [], []
    for run in runs:
        for t in run.tests:
            m = median_of(t)
            if m is None or m <= 0:
                continue
            if unit_of(t) != "call":
                per_item.append(t["nodeid"])
                continue
            out.append(Projection(run.label, t["nodeid"], unit_of(t), m, {n: m * n for n in users}))
    return out, list(dict.fromkeys(per_item))


@dataclass
class CrossMachine:
    """Per other machine, per test it shares with the reference: median latency / the reference's."""

    reference: str
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)

    def geomeans(self) -> dict[str, float]:
        return {m: geometric_mean(list(r.values())) for m, r in self.ratios.items() if r}


@dataclass(frozen=True)
class Reference:
    """The baseline file the other machines are compared with, and why it is that one."""

    baseline: Baseline
    why: str


def machine_labels(baselines: Sequence[Baseline]) -> list[str]:
    """Machine slugs, with the file name added where two files share a slug."""
    slugs = [slug_of(b) for b in baselines]
    return [s if slugs.count(s) == 1 else f"{s} ({b.path.name})" for s, b in zip(slugs, baselines)]


def same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


def _names(b: Baseline) -> set[str]:
    """What a run or a machine may call a baseline file: its machine slug, or its file name's stem
    (``--perf-machine NAME`` names the file)."""
    return {slug_of(b), b.path.stem}


def choose_reference(runs: Sequence[Run], baselines: Sequence[Baseline], named: Path | None = None,
                     here: str | None = None) -> Reference | str:
    """The reference of the cross-machine ratios, never the alphabetically first file: the file named by
    ``--reference``; else the current machine's: the file a run was gated against, else the one of a
    run's machine, else the one of the machine writing the report (``here``, its slug). Else the one
    line that says to name one."""
    if named is not None:
        for b in baselines:
            if same_file(b.path, named):
                return Reference(b, "named with --reference")
        raise ReportError(f"--reference {named}: not one of the --baseline files")
    for run in runs:
        for b in baselines:
            if run.baseline is not None and same_file(b.path, run.baseline.path):
                return Reference(b, f"the baseline {run.label} was gated against (its machine)")
    for run in runs:
        slug = run.doc.get("machine_slug")
        for b in baselines:
            if isinstance(slug, str) and slug in _names(b):
                return Reference(b, f"the machine {run.label} ran on")
    for b in baselines:
        if here is not None and here in _names(b):
            return Reference(b, "the machine that wrote this report")
    return ("None of the --baseline files is this machine's or the runs' machine's, so no reference is implied: "
            "name one with --reference FILE.")


def cross_machine(baselines: Sequence[Baseline], reference: Reference | str) -> CrossMachine | str:
    """Ratios vs the reference, or the one line that says why there are none."""
    if len(baselines) < 2:
        return (f"Needs baselines of at least two machines (--baseline a.json --baseline b.json); "
                f"got {len(baselines)}.")
    if isinstance(reference, str):
        return reference
    labels = machine_labels(baselines)
    ref = reference.baseline
    at = next(i for i, b in enumerate(baselines) if b is ref)
    result = CrossMachine(labels[at])
    for label, b in zip(labels, baselines):
        if b is ref:
            continue
        for nodeid in sorted(set(ref.entries) & set(b.entries)):
            e0, e1 = ref.entry(nodeid), b.entry(nodeid)
            if e0 is None or e1 is None:
                continue  # a malformed entry is not compared
            m0, m1 = entry_median(e0), entry_median(e1)
            if m0 and m1 and m0 > 0 and m1 > 0 and e0.unit == e1.unit:
                result.ratios.setdefault(label, {})[nodeid] = m1 / m0
    if not result.ratios:
        return f"No test has a latency median in {labels[at]} and in another of the given baselines."
    return result


def verdict_counts(runs: Sequence[Run]) -> Counter[str]:
    return Counter(str(c.verdict) for run in runs for t in run.tests for c in rows_of(t))


# ---------------------------------------------------------------- HTML

