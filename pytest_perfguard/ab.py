"""``perfguard ab REV``: measure REV (base) and the working tree (head) in turn on one runner.

REV is checked out into a temporary git worktree. The same pytest command then runs with
``--perf --perf-json`` in the base worktree and in the current checkout, one run of each side per
round, for ``rounds`` rounds, so that drift on a shared runner hits both sides alike. Which side
goes first in a round is drawn at random (``seed``), so that nothing periodic or drifting on the
machine can line up with one side. Each test's samples are pooled per side and judged by the same
rules as a stored baseline (``gate.baseline_rows``: the base pool plays the baseline entry), so
budgets, relative budgets and the latency decision mean exactly what they mean in a ``--perf``
run. One difference: each run is its own process, and a whole run can be a few percent (in a noisy
hour, tens of percent) faster or slower than the next, so with enough rounds (``runs.min_pairs``)
the latency verdict is taken across runs, each run's best round one observation and each round a
pair (``runs.compare_runs``, a randomization test that matches the random order).

The measuring instrument is the installed plugin (the current checkout's, in an editable install)
for both sides: pytest runs as ``python -P -m pytest`` so that the base worktree's own copy of a
plugin is never picked up from the working directory. The code under test on each side is that
side's: with ``PERFGUARD_AB_SIDE`` set, the plugin prepends the ini ``perfguard_ab_pythonpath``
folders (default ``src`` when it exists) of that side's root to ``sys.path`` before conftests load.
Each side also records where its modules came from (``ab_side``), and ``check_imports`` stops the
comparison when the base imported the head's files (an editable install or ``PYTHONPATH`` that
points at the head's checkout) or both sides imported the project from the same files outside
both checkouts: then both sides measure the same code and every change would look unchanged.

Interruption (Ctrl-C, SIGTERM, SIGHUP) stops the running pytest and its process group, removes
the base worktree and the temporary folders, and raises ``Interrupted`` for the command to report
in one line.

No pytest import here: this module only runs subprocesses and reads their JSON.
"""

from __future__ import annotations

import math
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .ab_process import (WAY_OUT, ABError, Interrupted, SideRun, check_args, check_imports, git, import_failure,
                         interruptible, lockstep_cpus, resolve, run_pair, run_side, worktree)
from .budget import BudgetError, parse_budget
from .decide import Comparison, geometric_mean
from .gate import ABRuns, LatencyDecision, baseline_rows, latency_decision
from .judge import JudgeSettings, judge as judge_budget
from .model import LATENCY_KINDS, BaselineEntry, Check, TestResult, Verdict
from .runs import (MIN_TESTS, RunComparison, compare_runs, deselected, efficacy_looks, final_share, look, min_pairs,
                   shares, without_run_speeds)
from .sampled import Sampled
from .units import format_duration

__all__ = ["ABError", "ABResult", "Interrupted", "run_ab", "DEFAULT_ROUNDS", "pool_runs"]

DEFAULT_ROUNDS = 20  # the most rounds a test is measured for (README, "How reliable is the gate")
FUTILITY_FROM = 3  # from this round on, a test that cannot be slower beyond the tolerance stops (the
# fewest rounds whose most extreme swap pattern, p = 1/8, is below runs.FUTILITY_BETA)

@dataclass(frozen=True)
class ABComparison:
    """A test's latency decision as the A/B table shows it: base, head, head/base and its interval, of
    whatever decided (``basis``: the pooled rounds' ``median``, or the ``runs``)."""

    basis: str
    base: float
    head: float
    ratio: float
    ci_low: float
    ci_high: float
    pooled: Comparison | None = None
    runs: RunComparison | None = None

    @classmethod
    def of(cls, d: LatencyDecision) -> ABComparison:
        return cls(d.basis, d.base, d.head, d.ratio, d.ci_low, d.ci_high, d.pooled, d.runs)

    @classmethod
    def of_runs(cls, c: RunComparison) -> ABComparison:
        return cls("runs", c.base_value, c.head_value, c.ratio, c.ci_low, c.ci_high, runs=c)

    def to_json(self) -> dict[str, Any]:
        decided = self.pooled if self.pooled is not None else self.runs
        assert decided is not None
        out = dict(decided.to_dict(), basis=self.basis, base=self.base, head=self.head, ratio=self.ratio,
                   ci_low=self.ci_low, ci_high=self.ci_high)
        out = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}
        if self.pooled is not None and self.runs is not None:
            out["runs"] = self.runs.to_dict()
        return out


@dataclass(frozen=True)
class ABTest:
    """One test's A/B verdict: the head's pooled result with its checks against the base's pool.
    ``verdict``: regressed | failed | improved | unchanged | head only; ``comparison``: the latency
    decision as shown (base, head, ratio, interval, basis) and written to ``--json``."""

    result: TestResult
    verdict: str
    comparison: ABComparison | None = None
    messages: tuple[str, ...] = ()  # why it failed, a check's message or one that has no check
    base_metrics: dict[str, float] | None = None
    base_run_bests: list[float | None] | None = None  # by round, each run's speed taken out, as the head's

    @property
    def nodeid(self) -> str:
        return self.result.nodeid

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "verdict": self.verdict,
                "comparison": self.comparison.to_json() if self.comparison is not None else None,
                "messages": list(self.messages), "base_metrics": self.base_metrics,
                "base_run_bests": self.base_run_bests}


@dataclass
class ABResult:
    rev: str
    sha: str
    rounds: int
    dirty: bool
    seed: int = 0  # draws the order of the sides in each round
    lockstep: bool = True  # both sides at once, a test's rounds alternating (ab_turns); else runs in turn
    turns: list[tuple[int, int]] = field(default_factory=list)  # lockstep, per round: (tests paired, calls alone)
    cpus: frozenset[int] | None = None  # the CPUs both sides ran on (None: unpinned)
    alpha: float = 0.01  # the chance that an unchanged head fails anywhere: shared by every test
    runs: list[SideRun] = field(default_factory=list)
    stopped: dict[str, RunComparison] = field(default_factory=dict)  # tests stopped early: unchanged or regressed
    tests: list[ABTest] = field(default_factory=list)  # one per test: see ``judge``
    base_broken: list[str] = field(default_factory=list)  # why the base cannot be gated on
    only_base: list[str] = field(default_factory=list)
    only_head: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)  # likely causes of a broken base, with the way out
    geomean: float | None = None

    @property
    def failed(self) -> list[ABTest]:
        return [t for t in self.tests if t.verdict in ("regressed", "failed")]

    @property
    def stopped_regressed(self) -> int:
        """How many tests an efficacy look stopped, regressed (the others in ``stopped`` are unchanged)."""
        return sum(c.verdict == "regressed" for c in self.stopped.values())


def pool_runs(runs: list[SideRun]) -> dict[str, TestResult]:
    """Per test: one result whose samples are all rounds' samples, in time order, with each run's best
    round (``run_bests``, by round, None where a run has none) and the median memory growth; metrics
    recorded from items pool every run's items, the others are the latest run's; ``body_passed`` is
    False when the test failed in any run."""
    last = max((run.round for run in runs), default=0)
    by_test: dict[str, list[tuple[int, TestResult]]] = {}
    for run in runs:
        for nodeid, res in run.results.items():
            by_test.setdefault(nodeid, []).append((run.round, res))
    return {nodeid: _pooled(results, last) for nodeid, results in by_test.items()}


def _pooled(results: list[tuple[int, TestResult]], last: int) -> TestResult:
    first = results[0][1]
    metrics = dict(results[-1][1].metrics)
    items: dict[str, list[Sampled]] = {}
    for _, res in results:
        for name, got in res.metric_items.items():
            items.setdefault(name, []).append(Sampled(res.metrics.get(name, got.mean), got.sd, got.n))
    whole = {name: Sampled.pooled(parts) for name, parts in items.items()}
    metrics.update({name: w.mean for name, w in whole.items()})
    measurement = None
    measured = [(rnd, r.measurement) for rnd, r in results if r.measurement is not None]
    if first.measurement is not None:
        bests = {rnd: float(np.min(m.samples_on(m.clock))) for rnd, m in measured if m.samples_on(m.clock)}
        memory = [m.memory_growth for _, m in measured if m.memory_growth is not None]
        measurement = replace(first.measurement, samples=[x for _, m in measured for x in m.samples],
                              cpu_samples=[x for _, m in measured for x in m.cpu_samples],
                              run_bests=[bests.get(r) for r in range(1, last + 1)] if bests else [],
                              memory_growth=float(np.median(memory)) if memory else None,
                              summary=None)  # of the pooled samples, computed when written
    broken = any(r.body_passed is False for _, r in results)
    return replace(first, measurement=measurement, metrics=metrics, metric_items=whole,
                   body_passed=False if broken else first.body_passed)


def judge(nodeid: str, base: TestResult | None, head: TestResult, tolerance: float,
          sha: str, alpha: float | None = None, stopped: RunComparison | None = None) -> ABTest:
    """One test's A/B verdict: head budgets on the pooled head, plus the gate against the base pool.
    ``alpha``: the test's share of the run's error budget; ``stopped``: its futility stop, if any."""
    try:
        budget = parse_budget(dict(head.budget)) if head.budget else None
    except BudgetError as exc:
        return ABTest(TestResult(nodeid), "failed", messages=(f"budget no longer parses: {exc}",))
    hm = head.measurement
    judged = judge_budget(nodeid, budget, hm, head.metrics, head.metric_items,
                          JudgeSettings(measured=True, clock=hm.clock if hm is not None else "wall"))
    result = replace(head, checks=judged.checks if judged is not None else ())
    entry = BaselineEntry.from_result(base, sha) if base is not None and base.body_passed is not False else None
    base_runs = base.measurement.run_bests if base is not None and base.measurement is not None else None
    rows = baseline_rows(result, budget, entry, tolerance, base_runs, alpha=alpha, stopped=stopped)
    comparison = None
    head_samples = hm.samples_on(hm.clock) if hm is not None else []
    base_samples = entry.samples_on(hm.clock) if entry is not None and hm is not None else []
    if entry is not None and hm is not None and head_samples and base_samples and entry.unit == hm.unit \
            and entry.clock == hm.clock:
        shares = [r.alpha for r in rows if r.alpha is not None and r.kind in LATENCY_KINDS]
        d = latency_decision(base_samples, head_samples, tolerance, ABRuns(base_runs or [], hm.run_bests, stopped),
                             1 - 2 * min(shares) if shares else 0.99)
        comparison = ABComparison.of(d)
    failing = [r for r in rows if r.failed]
    broken = head.body_passed is False
    if broken:
        verdict = "failed"
    elif any(r.verdict == Verdict.REGRESSED for r in failing):
        verdict = "regressed"
    elif failing:
        verdict = "failed"
    elif any(r.verdict == Verdict.IMPROVED for r in rows):
        verdict = "improved"
    else:
        verdict = "unchanged" if entry is not None else "head only"
    messages = [r.message for r in failing] + (["the test itself failed on the head"] if broken else [])
    # the verdict is the checks and the messages: not the outcome of whichever run reported first
    return ABTest(replace(result, checks=tuple(rows), outcome=None), verdict, comparison, tuple(messages),
                  dict(base.metrics) if base is not None else None, list(base_runs) if base_runs else None)


def run_ab(rev: str, pytest_args: Sequence[str], *, rounds: int = DEFAULT_ROUNDS, tolerance: float = 0.05,
           alpha: float = 0.01, cwd: Path | None = None, python: str = sys.executable, seed: int | None = None,
           lockstep: bool = True, cpus: frozenset[int] | None = None,
           on_run: Callable[[str, int, int], None] | None = None,
           say: Callable[[str], None] = print) -> ABResult:
    """Run base and head once each per round, up to ``rounds`` times, and judge every test.

    Sequential: from round ``FUTILITY_FROM`` on, a test whose rounds so far rule out a slowdown
    beyond the tolerance (``runs.futile``) is stopped, "unchanged", and deselected from later runs;
    so is, at its efficacy looks (``runs.efficacy_looks``), a test significantly slower beyond the
    tolerance, "regressed". The runs end when every test has stopped and the runs' speed has
    enough rounds, or after ``rounds`` rounds. The others are judged at the end, each at its share
    of ``alpha`` (a weighted Bonferroni split over the tests and the runs' speed: ``runs.shares``)
    less what its efficacy looks spent (``runs.final_share``). Raises ``ABError`` on bad input.

    ``lockstep``: both sides' runs of a round start together and a test's base and head rounds
    alternate (``ab_turns``), so that a slow spell of the machine hits both alike. ``cpus``: the CPUs
    both sides run on (None: in lockstep, ``lockstep_cpus()``; in turn, unpinned).

    ``on_run(side, round, rounds)`` is called before each run (progress, or a test harness that
    wants to disturb one side; in lockstep, for both sides before the round). ``seed`` draws the
    order of the sides in each round (None: a fresh one, kept in the result so that the order can
    be repeated).
    """
    if rounds < 1:
        raise ABError(f"--rounds must be >= 1, not {rounds}")
    if not 0 < alpha < 0.5:
        raise ABError(f"--alpha must be above 0 and below 0.5, not {alpha}")
    check_args(pytest_args)
    here = (cwd or Path.cwd()).resolve()
    top = git(["rev-parse", "--show-toplevel"], here, check=False)
    if top.returncode != 0:
        raise ABError(f"{here} is not inside a git repository: perfguard ab needs REV's history")
    repo = Path(top.stdout.strip())
    sha = resolve(rev, repo)
    dirty = bool(git(["status", "--porcelain", "--untracked-files=no"], repo).stdout.strip())
    if seed is None:
        seed = random.SystemRandom().randrange(2**32)
    order = random.Random(seed)
    if cpus is None and lockstep:
        cpus = lockstep_cpus()
    result = ABResult(rev=rev, sha=sha, rounds=rounds, dirty=dirty, seed=seed, alpha=alpha, lockstep=lockstep,
                      cpus=cpus)
    if dirty:
        say("perfguard ab: the working tree has uncommitted changes: the head is measured as it is on disk")
    made: list[Path] = []  # the temporary folders, to say whether an interruption left any
    with interruptible():
        try:
            with worktree(repo, sha, made) as base_root, \
                    tempfile.TemporaryDirectory(prefix="perfguard-ab-runs-") as work:
                made.append(Path(work))
                _rounds(result, base_root, repo, here, pytest_args, Path(work), order, python, on_run, say, tolerance)
                _decide(result, tolerance)
        except Interrupted as exc:
            left = [str(p) for p in made if p.exists()]
            exc.cleanup = (f"could not remove {', '.join(left)}" if left
                           else "base worktree removed" if made else "nothing to clean up")
            raise
    return result


def _rounds(result: ABResult, base_root: Path, repo: Path, here: Path, pytest_args: Sequence[str], work: Path,
            order: random.Random, python: str, on_run: Callable[[str, int, int], None] | None,
            say: Callable[[str], None], tolerance: float) -> None:
    rev, rounds = result.rev, result.rounds
    base_cwd = base_root / here.relative_to(repo)
    if not base_cwd.is_dir():
        raise ABError(f"{here.relative_to(repo)} does not exist at {rev}")
    imports: dict[str, dict[str, Any] | None] = {"base": None, "head": None}
    cwds = {"base": base_cwd, "head": here}
    for rnd in range(1, rounds + 1):
        for run in _round(result, rnd, cwds, pytest_args, work, order, python, on_run, say):
            side = run.side
            say(f"perfguard ab: round {rnd}/{rounds} {side}: exit {run.returncode}, "
                f"{len(run.results)} perf tests, {format_duration(run.seconds)}")
            crashed = run.returncode in (0, 1) and not run.reported
            if run.reported and run.imports is None:
                raise ABError(f"the {side}'s pytest (round {rnd}) did not record which files its code came from, "
                              "so nothing proves that it measured its own checkout:\n" + _tail(run.log))
            if run.imports is not None:
                imports[side] = run.imports
                wrong = check_imports(imports["base"], imports["head"], base_root, repo)
                if wrong:
                    raise ABError(wrong)
            if side == "head" and (run.returncode in (3, 4) or crashed):
                why = _NO_REPORT if crashed else _RC[run.returncode]
                raise ABError(f"pytest stopped with exit {run.returncode} ({why}) on the "
                              f"head; nothing was compared:\n{_tail(run.log)}")
            if side == "base" and run.returncode != 0:
                failure = import_failure(run.log)
                if failure and not result.hints:
                    result.hints.append(
                        f"the base could not import its code ({failure}, round {rnd}): if the project is "
                        f"importable only from the head's checkout (an editable install, PYTHONPATH) or "
                        f"its code is not where the base expects it, {WAY_OUT}")
            if side == "base" and (run.returncode not in (0, 1) or crashed):
                why = f"pytest exit {run.returncode} ({_NO_REPORT if crashed else _RC.get(run.returncode, 'error')})"
                if not any(b.startswith(why) for b in result.base_broken):
                    result.base_broken.append(f"{why} (round {rnd}):\n{_tail(run.log)}")
            result.runs.append(run)
        if rnd == 1 and _counted_only(result):
            say("perfguard ab: every region was counted in instructions (--perf-instructions), which a "
                "second process counts the same: one round is the measurement")
            break
        if rnd == 1:
            _enough_rounds(result, say)
        if FUTILITY_FROM <= rnd < result.rounds and not _look(result, rnd, tolerance, say):
            break


def _round(result: ABResult, rnd: int, cwds: dict[str, Path], pytest_args: Sequence[str], work: Path,
           order: random.Random, python: str, on_run: Callable[[str, int, int], None] | None,
           say: Callable[[str], None]) -> Iterator[SideRun]:
    """One round's two runs: in turn, in an order drawn from ``order``, or at once in lockstep."""
    sides = ["base", "head"]
    order.shuffle(sides)
    if not result.lockstep:
        for side in sides:
            if on_run is not None:
                on_run(side, rnd, result.rounds)
            yield run_side(side, rnd, cwds[side], pytest_args, work, python, deselect=_deselected(result),
                           cpus=result.cpus)
        return
    for side in sides:
        if on_run is not None:
            on_run(side, rnd, result.rounds)
    runs, turns = run_pair(rnd, cwds, pytest_args, work, random.Random(order.random()), python,
                           deselect=_deselected(result), cpus=result.cpus)
    result.turns.append((turns.paired, turns.alone))
    say(f"perfguard ab: round {rnd}/{result.rounds} in lockstep: {turns.paired} test(s) measured on both "
        f"sides in alternating rounds, {turns.alone} call(s) alone")
    yield from runs


def _counted_only(result: ABResult) -> bool:
    """True when the head's measurements are all instruction counts (nothing timed, so no rounds to pair)."""
    measured = [t.measurement for r in result.runs if r.side == "head" for t in r.results.values()
                if t.measurement is not None]
    return bool(measured) and all(m.instructions is not None and not m.samples for m in measured)


def _enough_rounds(result: ABResult, say: Callable[[str], None]) -> None:
    """Say when ``rounds`` is too few for any test to be significant at its share of the error budget."""
    tests = len({n for r in result.runs if r.side == "head" for n in r.results})
    share, _ = shares(result.alpha, tests, tests >= MIN_TESTS)
    need = min_pairs(1 - 2 * final_share(share, result.rounds))
    if result.rounds < need:
        speed = " and the runs' speed" if tests >= MIN_TESTS else ""
        say(f"perfguard ab: WARNING: {tests} tests{speed} share a {result.alpha:.2%} error budget, so a slowdown needs "
            f"{need} rounds to be significant: with --rounds {result.rounds} every latency verdict will be "
            "'insufficient' (a failure)")


def _pools(result: ABResult) -> tuple[dict[str, TestResult], dict[str, TestResult], dict[str, tuple[list, list]],
                                      tuple[list, list]]:
    """Both sides' pooled results, each holding the test's per-run best rounds with the runs' own
    speeds taken out (``runs.without_run_speeds``); those corrected bests (base, head) of the tests
    both sides measured and the base passed; and the runs' speeds (base, head)."""
    base = pool_runs([r for r in result.runs if r.side == "base"])
    head = pool_runs([r for r in result.runs if r.side == "head" and r.returncode in (0, 1)])
    paired = {n: (_bests(base[n]), _bests(head[n])) for n in head
              if n in base and base[n].body_passed is not False and _bests(base[n]) and _bests(head[n])}
    corrected, speeds = without_run_speeds(paired)
    for n, (b, h) in corrected.items():
        base[n], head[n] = _with_bests(base[n], b), _with_bests(head[n], h)
    return base, head, corrected, speeds


def _bests(result: TestResult | None) -> list[float | None]:
    return result.measurement.run_bests if result is not None and result.measurement is not None else []


def _with_bests(result: TestResult, bests: list[float | None]) -> TestResult:
    assert result.measurement is not None
    return replace(result, measurement=replace(result.measurement, run_bests=list(bests)))


def _look(result: ABResult, rnd: int, tolerance: float, say: Callable[[str], None]) -> bool:
    """Stop the tests whose rounds rule out a slowdown beyond the tolerance, and at an efficacy look
    those significantly slower beyond it; False when the runs can end (``runs.look``). Stopped
    tests go on being measured while fewer than ``KEEP_MEASURED`` others are, so that every run
    still has the tests its speed is estimated from (``runs.deselected``)."""
    _, head, corrected, speeds = _pools(result)
    share, speed_share = shares(result.alpha, len(head), _speed_row(speeds, tolerance) is not None)
    new, go_on = look(corrected, speeds, result.stopped, tolerance=tolerance, speed_share=speed_share,
                      efficacy=efficacy_looks(share, result.rounds).get(rnd, 0.0))
    result.stopped.update(new)
    left = len([n for n in head if n not in result.stopped])
    regressed = result.stopped_regressed
    say(f"perfguard ab: {len(result.stopped) - regressed} test(s) stopped unchanged, "
        + (f"{regressed} stopped regressed, " if regressed else "") + f"{left} still measured"
        + (" (and the runs' speed, until it has enough rounds)" if go_on and not left else ""))
    return go_on


def _deselected(result: ABResult) -> list[str]:
    """The stopped tests that later runs skip: all but enough to estimate each run's speed."""
    measured = {n for r in result.runs for n in r.results}
    return deselected(sorted(result.stopped), len(measured - set(result.stopped)))


SPEED = "(every test: the speed of the runs)"


def _speed_row(speeds: tuple[list, list], tolerance: float) -> Callable[[float], ABTest] | None:
    """The judgement of the runs' speeds themselves (None when they are not known): a change that
    slows every test alike shows only there, the tests being judged with each run's speed taken out."""
    if not any(s is not None for s in speeds[0]) or not any(s is not None for s in speeds[1]):
        return None

    def judged(share: float) -> ABTest:
        c = compare_runs(*speeds, tolerance=tolerance, confidence=1 - 2 * share)
        verdict = "failed" if c.verdict == "insufficient" else c.verdict
        row = Check("speed of every test", f"±{tolerance:.0%}", c.head_value, "",
                    Verdict(verdict) if verdict != "failed" else Verdict.UNJUDGED, f"speed of every test {c.verdict}: {c.reason}", kind="speed",
                    against="baseline", stat="run speed", baseline=c.base_value, ratio=c.ratio, p_value=c.p_slower,
                    alpha=share, reason=c.reason)
        return ABTest(TestResult(SPEED, (row,)), verdict, ABComparison.of_runs(c), (row.message,) if row.failed else ())

    return judged


_NO_REPORT = "it wrote no --perf-json report: it crashed, or the plugin could not be loaded"
_RC = {2: "interrupted or collection errors", 3: "internal error", 4: "usage error", 5: "no tests collected"}


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def _decide(result: ABResult, tolerance: float) -> None:
    base, head, _, speeds = _pools(result)
    errors = [r for r in result.runs if r.side == "head" and r.returncode not in (0, 1)]
    for run in errors:
        result.tests.append(ABTest(TestResult(f"(head run, round {run.round})"), "failed", messages=(
            f"pytest exit {run.returncode} ({_RC.get(run.returncode, 'error')}):\n{_tail(run.log)}",)))
    base_ok = not result.base_broken
    suite = _speed_row(speeds, tolerance) if base_ok else None
    share, speed_share = shares(result.alpha, len(head), suite is not None)
    for nodeid in sorted(head):
        b = base.get(nodeid) if base_ok else None
        if b is not None and b.body_passed is False:
            result.base_broken.append(f"{nodeid}: the test failed on the base")
            b = None
        t = judge(nodeid, b, head[nodeid], tolerance, result.sha, final_share(share, result.rounds),
                  result.stopped.get(nodeid))
        if nodeid not in base:
            result.only_head.append(nodeid)
        result.tests.append(t)
    if suite is not None:
        result.tests.append(suite(speed_share))
    result.only_base = sorted(set(base) - set(head))
    ratios = [t.comparison.ratio for t in result.tests
              if t.comparison is not None and math.isfinite(t.comparison.ratio) and t.comparison.ratio
              and t.nodeid != SPEED]
    result.geomean = geometric_mean(ratios) if ratios else None
