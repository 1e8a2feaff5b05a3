"""``perfguard show FILE``, ``compare A B``, ``ab REV`` and ``report RUN.json`` (no pytest import)."""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .baseline import Baseline, BaselineError, load_baseline
from .decide import compare_samples, geometric_mean
from .machine import compare_fingerprints, machine_slug
from .table import Table
from .units import format_value

__all__ = ["main"]

MIN_WIDTH = 60  # narrower terminals get lines of this width


def _load(path: str) -> Baseline:
    b = load_baseline(Path(path))
    if b is None:
        raise BaselineError(f"{path}: no such baseline file")
    return b


def _machine_line(label: str, b: Baseline) -> str:
    hw = b.machine.get("hardware", {}) if isinstance(b.machine, dict) else {}
    speed = (b.speed or {}).get("score")
    speed_s = f", speed score {speed:.1f}" if isinstance(speed, (int, float)) else ""
    try:
        slug = machine_slug(b.machine)
    except Exception:
        slug = "?"
    cores = f"{hw.get('cpu_physical', '?')} cores/{hw.get('cpu_logical', '?')} threads, {hw.get('cpu_affinity', '?')} usable"
    return f"{label}: {b.path} [{slug}] {hw.get('cpu_model', '?')}, {cores}{speed_s}"


def _width(asked: int | None) -> int:
    """The columns ``show`` fits its lines in: ``--width``, else the terminal's (100 when piped)."""
    return max(asked if asked is not None else shutil.get_terminal_size((100, 24)).columns, MIN_WIDTH)


def show(args: argparse.Namespace) -> int:
    """One row per test under its file's path, its metrics wrapped under it; a name wider than its
    column goes on a line of its own above its figures. Lines fit ``--width`` or the terminal."""
    b = _load(args.file)
    width = _width(args.width)
    print(_wrapped(_machine_line("machine", b), width, "", "  "))
    print(f"updated {b.updated}, {len(b.entries)} tests")
    tests: list[tuple[str, str, list[str], str]] = []  # (file, test, figures, note)
    for nodeid in sorted(b.entries):
        path, sep, name = nodeid.partition("::")
        if nodeid in b.problems:
            tests.append((path if sep else "", name if sep else nodeid, ["malformed", "", "", ""],
                          f"malformed: {b.problems[nodeid]}"))
            continue
        e = b.entry(nodeid)
        assert e is not None
        mem = e.memory_growth
        metrics = ", ".join(f"{k}={format_value(v, '')}" for k, v in sorted(e.metrics.items()))
        tests.append((path if sep else "", name if sep else nodeid,
                      [format_value(e.summary.get("median"), f"s/{e.unit}"), str(e.summary.get("n", 0)),
                       format_value(mem, "B") if mem is not None else "", str(e.commit or "")[:12]],
                      f"metrics: {metrics}" if metrics else ""))
    header = ["test", "median", "n", "memory", "commit"]
    others = sum(max(len(c) for c in [h, *(t[2][i] for t in tests)]) + 2 for i, h in enumerate(header[1:]))
    name_width = width - others
    cells = [("  " if path else "") + name for path, name, _, _ in tests]
    rows = [["" if len(cell) > name_width else cell, *figures] for cell, (_, _, figures, _) in zip(cells, tests)]
    lines = Table(header, rows).text()
    print("\n".join(lines[:2]))
    heading = ""
    for cell, row, line, (path, _, _, note) in zip(cells, rows, lines[2:], tests):
        if path and path != heading:
            print(_shortened(path, width))
            heading = path
        if not row[0]:
            print(_shortened(cell, width))
        print(line)
        if note:
            print(_wrapped(note, width, "    ", "      "))
    return 0


def _wrapped(text: str, width: int, indent: str, more: str) -> str:
    return "\n".join(textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=more,
                                   break_on_hyphens=False))


def _shortened(text: str, width: int) -> str:
    """``text``, or its end after "..." when it is wider than ``width``."""
    return text if len(text) <= width else "..." + text[-(width - 3):]


def compare(args: argparse.Namespace) -> int:
    a, b = _load(args.a), _load(args.b)
    print(_machine_line("A", a))
    print(_machine_line("B", b))
    hw, sw = compare_fingerprints(a.machine, b.machine)
    for diff in hw:
        print(f"  hardware: {diff}")
    for diff in sw:
        print(f"  software: {diff}")
    rows: list[list[str]] = []
    notes: list[str] = []
    ratios: list[float] = []
    regressed = 0
    unjudged: list[str] = []
    for nodeid in sorted(set(a.entries) & set(b.entries)):
        ea, eb = a.entry(nodeid), b.entry(nodeid)  # None where the entry is malformed
        problem = next((f"{f.path}: {f.problems[nodeid]}" for f in (a, b) if nodeid in f.problems), None)
        if ea is not None and eb is not None and ea.unit != eb.unit:
            problem = f"seconds per {ea.unit} in A, per {eb.unit} in B"
        if problem is None and ea is not None and eb is not None and not ea.samples and not eb.samples:
            continue  # a metrics-only test: nothing to compare
        c = None if problem or ea is None or eb is None else compare_samples(list(ea.samples), list(eb.samples),
                                                                              tolerance=args.tolerance)
        if c is None or c.verdict == "insufficient" or eb is None:
            unjudged.append(f"{nodeid}: {problem if c is None else c.reason}")
            rows.append([nodeid, "", "", "", "", "unjudged"])
            notes.append("")
            continue
        unit = f"s/{eb.unit}"
        # the figures of the statistic the verdict judged (the fastest rounds), never the medians beside it
        ratios.append(c.best_ratio)
        regressed += c.verdict == "regressed"
        rows.append([nodeid, format_value(c.base_best, unit), format_value(c.head_best, unit),
                     f"{c.best_ratio:.2f}x", f"[{c.best_ci_low:.2f}, {c.best_ci_high:.2f}]", c.verdict])
        notes.append(c.reason)
    if rows:
        for line in Table(["test", "A fastest", "B fastest", "B/A", "99% CI", "verdict"], rows, notes=notes).text():
            print(line)
        print("A fastest, B fastest: each file's fastest 5 % of rounds (its best round under 40 rounds), the "
              "statistic the verdict judges")
        if ratios:
            print(f"geometric mean B/A over {len(ratios)} tests: {geometric_mean(ratios):.3f}x "
                  "(< 1: B is faster)")
    else:
        print("no test has latency samples in both files")
    for label, only in (("A", sorted(set(a.entries) - set(b.entries))), ("B", sorted(set(b.entries) - set(a.entries)))):
        for nodeid in only:
            print(f"only in {label}: {nodeid}")
    for why in unjudged:
        print(f"not judged: {why}")
    if args.fail_on_regression and (regressed or unjudged):
        print(f"{regressed} test(s) regressed in B vs A, {len(unjudged)} could not be compared (a gate that "
              "cannot judge fails)", file=sys.stderr)
        return 1
    return 0


def ab(args: argparse.Namespace) -> int:
    import signal

    from .ab import ABError, run_ab
    from .ab_process import cpu_set

    try:
        result = run_ab(args.rev, args.pytest_args, rounds=args.rounds, tolerance=args.tolerance,
                        alpha=args.alpha, seed=args.seed, lockstep=args.lockstep,
                        cpus=cpu_set(args.cpus) if args.cpus else None)
    except ABError as exc:
        print(f"perfguard ab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # ab.Interrupted: SIGINT, SIGTERM or SIGHUP, cleaned up
        signum = getattr(exc, "signum", signal.SIGINT)
        name = getattr(exc, "name", "SIGINT")
        cleanup = getattr(exc, "cleanup", "")
        print(f"perfguard ab: interrupted ({name}){': ' + cleanup if cleanup else ''}", file=sys.stderr)
        return 128 + int(signum)
    for line in ab_lines(result):
        print(line)
    if args.markdown:
        from .markdown import markdown_summary, write_markdown

        write_markdown(Path(args.markdown), markdown_summary(
            [t.result for t in result.tests],
            title="perfguard ab", context=ab_context(result), messages={t.nodeid: t.messages for t in result.tests}))
        print(f"perfguard ab: wrote {args.markdown}")
    if args.json:
        from .report import write_json

        write_json(Path(args.json), ab_document(result))
        print(f"perfguard ab: wrote {args.json}")
    return 1 if result.failed else 0


def ab_context(result: Any, hints: bool = True) -> list[str]:
    """The lines that say what was compared (markdown context and the terminal header)."""
    from .ab_process import cpu_list, usable_cpus

    ran = max((r.round for r in result.runs), default=0)
    lines = [f"base `{result.rev}` ({result.sha[:12]}) vs head (working tree"
             f"{', with uncommitted changes' if result.dirty else ''}), {ran} of at most {result.rounds} "
             f"round{'' if result.rounds == 1 else 's'}, "
             f"the sides in random order (--seed {result.seed})"
             + (f", in lockstep: {sum(p for p, _ in result.turns)} test calls paired, "
                f"{sum(a for _, a in result.turns)} alone" if result.lockstep else "")
             + (f", on CPU {cpu_list(result.cpus)}" if result.cpus else "")]
    if result.cpus is not None and len(result.cpus) == 1 and len(usable_cpus() or ()) > 1:
        lines.append("each side ran on one CPU: a test that uses several threads (torch, OpenMP, BLAS) was "
                     "measured on one core, its absolute budgets too; --cpus all keeps its threads")
    if result.tests:
        regressed = result.stopped_regressed
        lines.append(f"{len(result.tests)} test(s) shared a {result.alpha:.2%} error budget (--alpha); "
                     f"{len(result.stopped) - regressed} stopped early, unchanged (their rounds ruled out a slowdown "
                     "beyond the tolerance)" + (f"; {regressed} stopped early, regressed (significant at an efficacy "
                                                "look, which spends part of the test's share)" if regressed else ""))
    if result.geomean is not None:
        lines.append(f"geometric mean head/base: {result.geomean:.3f}x (< 1: head is faster)")
    lines += [f"base broken, not gated on: {why.splitlines()[0]}" for why in result.base_broken]
    lines += [f"only on the base (not gated): `{n}`" for n in result.only_base]
    lines += [f"only on the head (budgets only): `{n}`" for n in result.only_head]
    if hints:
        lines += [f"hint: {hint}" for hint in result.hints]
    return lines


def ab_lines(result: Any) -> list[str]:
    rows = []
    for t in result.tests:
        c = t.comparison
        unit = f"s/{t.result.measurement.unit}" if t.result.measurement is not None else ""
        if c is not None:
            rows.append([t.nodeid, format_value(c.base, unit), format_value(c.head, unit),
                         f"{c.ratio:.2f}x", _interval(c.ci_low, c.ci_high), t.verdict])
        else:
            counted = next((r for r in t.result.checks if r.kind == "instructions" and r.against == "baseline"
                            and r.baseline is not None and r.now is not None), None)
            shown = (format_value(counted.baseline, "instr"), format_value(counted.now, "instr"), f"{counted.ratio:.4f}x"
                     ) if counted is not None and counted.ratio is not None else ("", "", "")
            rows.append([t.nodeid, *shown, "", t.verdict])
    lines = [f"perfguard ab: {line}" for line in ab_context(result, hints=False)]
    if rows:
        lines += Table(["test", "base", "head", "head/base", "CI", "verdict"], rows).text()
        lines.append("base, head: the fastest third of the per-run best rounds (geometric mean), or the instructions "
                     "counted (--perf-instructions); CI: at the test's share of the error budget (none for a test "
                     "stopped unchanged; for one stopped regressed, at its efficacy look's level)")
    for why in result.base_broken:
        lines.append(f"base broken: {why}")
    for t in result.failed:
        for message in t.messages:
            lines.append(f"FAILED {t.nodeid}: {message}")
    lines += [f"perfguard ab: hint: {hint}" for hint in result.hints]  # next to the verdict it explains
    n = len(result.failed)
    lines.append(f"perfguard ab: {n} test(s) regressed or over budget on the head" if n
                 else "perfguard ab: no regression, no budget breach on the head")
    return lines


def _interval(low: Any, high: Any) -> str:
    finite = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (low, high))
    return f"[{low:.2f}, {high:.2f}]" if finite else ""


def ab_document(result: Any) -> dict[str, Any]:
    from .report import json_document

    runs = [{"side": r.side, "round": r.round, "returncode": r.returncode, "seconds": r.seconds}
            for r in result.runs]
    return json_document(result.tests, {"ab": {
        "rev": result.rev, "sha": result.sha, "rounds": result.rounds, "seed": result.seed, "dirty": result.dirty,
        "alpha": result.alpha, "stopped": sorted(result.stopped), "lockstep": result.lockstep,
        "cpus": sorted(result.cpus) if result.cpus else None,
        "turns": [{"paired": p, "alone": a} for p, a in result.turns],
        "geomean": result.geomean, "base_broken": result.base_broken, "only_base": result.only_base,
        "only_head": result.only_head, "hints": result.hints, "runs": runs}})


def report(args: argparse.Namespace) -> int:
    """``perfguard report RUN.json ... -o report.html``: exit 2 with one line on bad input."""
    from .html_report import ReportError, write_report

    try:
        print(write_report([Path(p) for p in args.runs], [Path(p) for p in args.baseline], Path(args.output),
                           Path(args.reference) if args.reference else None))
    except ReportError as exc:
        print(f"perfguard report: error: {exc}", file=sys.stderr)
        return 2
    return 0


def _tolerance(text: str) -> float:
    from .budget import BudgetError, parse_ratio

    try:
        return parse_ratio(text)
    except BudgetError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perfguard", description="pytest-perfguard: show and compare baselines, A/B merge gate, HTML report")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="table of one baseline file")
    s.add_argument("file")
    s.add_argument("--width", type=int, default=None,
                   help=f"fit lines in this many columns (default: the terminal's, 100 when piped; at least {MIN_WIDTH})")
    s.set_defaults(func=show)
    c = sub.add_parser("compare", help="per-test ratio of B to A with a confidence interval and verdict")
    c.add_argument("a", help="baseline file A (e.g. baselines/x.json, or `git show REV:baselines/x.json > old.json`)")
    c.add_argument("b", help="baseline file B")
    c.add_argument("--tolerance", type=_tolerance, default=0.05, help="regression tolerance (default 5%%)")
    c.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a test regressed in B vs A")
    c.set_defaults(func=compare)
    from .ab import DEFAULT_ROUNDS

    a = sub.add_parser(
        "ab", help="merge gate: measure REV and the working tree side by side on this runner",
        description="Check REV out into a temporary worktree and run `pytest --perf PYTEST_ARGS` "
                    "there and here, once each per round (at once, a test's base and head rounds "
                    "alternating; --no-lockstep: one after the other in a random order), then judge "
                    "every test against the base measured in this job. Exit 1 on a regression or "
                    "budget breach of the head.")
    a.add_argument("rev", help="the base revision, e.g. origin/main or HEAD~1")
    a.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"the most rounds, one run of each side per round; a test stops earlier when its rounds "
                        f"rule out a slowdown beyond the tolerance, or at an efficacy look show one (default {DEFAULT_ROUNDS}: see the README's "
                        "reliability table)")
    a.add_argument("--alpha", type=_tolerance, default=0.01,
                   help="the chance that an unchanged head fails anywhere, shared by every test (default 1%%)")
    a.add_argument("--seed", type=int, help="draws which side goes first in each round, in lockstep in each "
                                            "test (default: a fresh seed, printed, so that a run can be repeated)")
    a.add_argument("--tolerance", type=_tolerance, default=0.05, help="regression tolerance (default 5%%)")
    a.add_argument("--lockstep", action=argparse.BooleanOptionalAction, default=True,
                   help="run both sides of a round at once on the same CPUs (--cpus), a test's base and head "
                        "rounds alternating, so that a slow spell of a shared machine hits both alike "
                        "(default); --no-lockstep: the sides' whole runs one after the other")
    a.add_argument("--cpus", metavar="LIST",
                   help="the CPUs both sides run on, e.g. 0, 0-3 or all (default: in lockstep, the first CPU "
                        "this process may use; in turn, unpinned). A multi-threaded suite (torch's "
                        "intra-op threads) keeps its threads on as many CPUs as it is given")
    a.add_argument("--markdown", help="write a markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")
    a.add_argument("--json", help="write the verdicts and pooled samples here")
    a.set_defaults(func=ab, pytest_args=[])
    a.epilog = "Pytest arguments follow a `--`: perfguard ab origin/main -- suites -k serving"
    r = sub.add_parser(
        "report", help="one self-contained HTML page with plots from --perf-json runs",
        description="Latency distributions vs the baseline, accuracy vs latency (Pareto), latency at "
                    "100 / 10k / 100k users, memory, cross-machine ratios and every row, in one HTML "
                    "file that opens offline. Needs matplotlib: pip install 'pytest-perfguard[report]'.")
    r.add_argument("runs", nargs="+", metavar="RUN.json", help="documents written by pytest --perf --perf-json")
    r.add_argument("--baseline", action="extend", nargs="+", default=[], metavar="FILE",
                   help="baseline files, one per machine (repeat the option or list several, e.g. "
                        "--baseline baselines/*.json after the RUN files)")
    r.add_argument("--reference", metavar="FILE",
                   help="the baseline file the other machines are compared with (default: the current machine's: "
                        "the file the runs were gated against, else their machine's, else this machine's)")
    r.add_argument("-o", "--output", default="perfguard-report.html", help="the page (default perfguard-report.html)")
    r.set_defaults(func=report)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:  # everything after it goes to pytest (perfguard ab)
        at = argv.index("--")
        argv, rest = argv[:at], argv[at + 1:]
    args = build_parser().parse_args(argv)
    if rest and args.command != "ab":
        build_parser().error("only `perfguard ab` takes pytest arguments after --")
    args.pytest_args = rest
    try:
        return int(args.func(args))
    except BaselineError as exc:
        print(f"perfguard: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `perfguard compare ... | head -1`: the reader left; no traceback
        # Python's own recipe (docs: signal, "Note on SIGPIPE"): point stdout at devnull so that
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
