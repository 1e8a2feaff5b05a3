"""The two sides of ``perfguard ab`` as processes: REV's git worktree, one ``pytest --perf`` run of
a side in its own process group, interruption, and the check that each side imported its own
checkout's code (``ab_side`` records it).

No pytest import here: this module only runs subprocesses and reads their JSON.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ab_turns import SIDES, TURNS_ENV, Turns
from .model import TestResult

SIDE_ENV = "PERFGUARD_AB_SIDE"
IMPORTS_ENV = "PERFGUARD_AB_IMPORTS"  # where a side writes which files its modules came from (ab_side)
SIDE_PLUGIN = f"{__package__}.ab_side"

# Arguments perfguard ab sets itself, or that would mix the two sides' measurements.
REFUSED_ARGS = {
    "-n": "xdist workers would measure tests in parallel; the A/B gate alternates whole runs on one runner",
    "--numprocesses": "see -n",
    "--dist": "see -n",
    "-d": "see -n",
    "--tx": "see -n",
    "--perf-json": "perfguard ab writes one JSON per run itself (use --json for the verdicts)",
    "--perf-save": "perfguard ab never writes the stored baselines",
    "--perf-baselines": "perfguard ab compares with the base measured in this job, not a stored baseline",
    "--perf-machine": "see --perf-baselines",
}


class ABError(Exception):
    """A problem that stops the A/B run before anything is measured (exit status 2)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP stopped the A/B run; ``cleanup`` says what was left behind."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.cleanup = ""

    @property
    def name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"


@dataclass
class SideRun:
    side: str  # "base" or "head"
    round: int
    returncode: int
    seconds: float
    log: Path
    results: dict[str, TestResult]  # nodeid -> the test in its --perf-json report
    reported: bool = True  # False: pytest died before writing its --perf-json report
    imports: dict[str, Any] | None = None  # what ab_side recorded: {"modules": {name: file}, ...}


def ab_pythonpath(rootdir: Path, configured: Sequence[str]) -> list[Path]:
    """The folders one side puts first on ``sys.path``: the ini's, or ``src`` when it exists."""
    if configured:
        return [Path(rootdir, p) for p in configured]
    src = Path(rootdir, "src")
    return [src] if src.is_dir() else []


def git(args: Sequence[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise ABError(f"git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def check_args(pytest_args: Sequence[str]) -> None:
    """Refuse arguments that would mix the sides or that perfguard ab sets itself."""
    for arg in pytest_args:
        name = arg.split("=", 1)[0]
        if name.startswith("-n") and name not in ("-n", "--numprocesses") and not name.startswith("--"):
            name = "-n"  # -n4, -nauto
        if name in REFUSED_ARGS:
            raise ABError(f"{arg!r} is not allowed after --: {REFUSED_ARGS[name]}")


def resolve(rev: str, repo: Path) -> str:
    """REV's commit sha, or an error that says how to get it (shallow clones lack history)."""
    proc = git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo, check=False)
    if proc.returncode == 0:
        return proc.stdout.strip()
    shallow = git(["rev-parse", "--is-shallow-repository"], repo, check=False).stdout.strip() == "true"
    if shallow:
        raise ABError(
            f"{rev!r} is not in this clone, which is shallow: fetch it first, e.g. "
            f"`git fetch --unshallow` or `git fetch --depth=50 origin {rev.split('/')[-1]}` "
            "(GitHub Actions: actions/checkout with fetch-depth: 0)"
        )
    raise ABError(f"{rev!r} is not a commit in this repository (try `git fetch` if it is a remote branch)")


def base_name(tmp: Path, repo: Path) -> str:
    """The worktree's folder name: "base", padded so that its path is as long as the checkout's.

    A path's length shifts the memory layout of a process (its argv, environment and cwd sit on the
    stack), enough to move native code's timings by a few percent (Mytkowicz et al. 2009, "Producing
    wrong data without doing anything obviously wrong!"): both sides get equal lengths where the
    temporary folder is short enough."""
    pad = len(str(repo)) - len(str(tmp)) - 1 - len("base")
    return "base" + "-" * pad if 0 <= pad <= 250 else "base"


@contextmanager
def worktree(repo: Path, sha: str, made: list[Path] | None = None) -> Iterator[Path]:
    """A detached worktree of ``sha`` in a temporary folder, always removed (crash, interruption).

    The temporary folder is appended to ``made`` as soon as it exists."""
    tmp = Path(tempfile.mkdtemp(prefix="perfguard-ab-"))
    if made is not None:
        made.append(tmp)
    path = tmp / base_name(tmp, repo)
    try:
        git(["worktree", "add", "--detach", "--quiet", str(path), sha], repo)
        yield path
    finally:
        git(["worktree", "remove", "--force", str(path)], repo, check=False)
        shutil.rmtree(tmp, ignore_errors=True)
        git(["worktree", "prune"], repo, check=False)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise ``Interrupted`` (once: later ones are ignored, so that the
    cleanup they started can finish). A signal that is ignored (``nohup``) stays ignored. Only the
    main thread can catch signals; elsewhere this does nothing."""
    if not _in_main_thread():
        yield
        return
    caught: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if caught:
            return
        caught.append(signum)
        raise Interrupted(signum)

    previous = {}
    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is not signal.SIG_IGN:
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """End a side's pytest and whatever it started in its process group: SIGTERM, then SIGKILL."""
    if not hasattr(os, "killpg"):  # pragma: no cover - no process groups (Windows)
        proc.kill()
        proc.wait()
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers that ignored SIGTERM, the pytest included
    except ProcessLookupError:
        pass
    proc.wait()


def _read_results(path: Path) -> dict[str, TestResult] | None:
    """The tests of a --perf-json report; None when there is no readable report."""
    try:
        doc = json.loads(path.read_text())
        return {t["nodeid"]: TestResult.from_json(t) for t in doc.get("tests", []) if isinstance(t, dict) and "nodeid" in t}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _read_imports(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("modules"), dict) else None


def usable_cpus() -> frozenset[int] | None:
    """The CPUs this process may use (None where the platform cannot pin processes)."""
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter is not None and hasattr(os, "sched_setaffinity") else None


def lockstep_cpus() -> frozenset[int] | None:
    """Lockstep's CPUs when ``--cpus`` is not given: the first this process may use."""
    usable = usable_cpus()
    return frozenset({min(usable)}) if usable else None


def cpu_set(spec: str) -> frozenset[int]:
    """The CPUs ``--cpus`` names: ``all`` (every CPU this process may use) or a list such as
    ``0``, ``0,2`` or ``0-3``, each one this process may use. Raises ``ABError``."""
    usable = usable_cpus()
    if usable is None:
        raise ABError("--cpus pins both sides to CPUs, which this platform cannot do (it needs Linux)")
    if spec.strip() == "all":
        return usable
    cpus: set[int] = set()
    for part in spec.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ABError(f"--cpus {spec!r}: expected all or CPU numbers such as 0, 0,2 or 0-3") from None
        if first > last:
            raise ABError(f"--cpus {spec!r}: the range {part.strip()} runs backwards")
        cpus.update(range(first, last + 1))
    outside = sorted(cpus - usable)
    if outside:
        raise ABError(f"--cpus {spec!r}: CPU {', '.join(map(str, outside))} is not one this process may use "
                      f"(it may use {cpu_list(usable)})")
    return frozenset(cpus)


def cpu_list(cpus: frozenset[int]) -> str:
    """``0-3,6``: the CPUs as ``--cpus`` takes them."""
    spans = []
    for _, span in itertools.groupby(enumerate(sorted(cpus)), key=lambda ic: ic[1] - ic[0]):
        first, *rest = [cpu for _, cpu in span]
        spans.append(f"{first}-{rest[-1]}" if rest else str(first))
    return ",".join(spans)


@contextmanager
def _pinned(cpus: frozenset[int] | None) -> Iterator[None]:
    """Processes started inside run on ``cpus`` from their first instruction (so a library that sizes
    its thread pool when imported sees them): Linux keeps the affinity per thread and a child
    inherits its parent thread's, so only the calling thread is pinned, for the while."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def run_side(side: str, rnd: int, cwd: Path, pytest_args: Sequence[str], workdir: Path,
             python: str = sys.executable, deselect: Sequence[str] = (),
             cpus: frozenset[int] | None = None) -> SideRun:
    """One ``pytest --perf`` run of one side, on ``cpus`` (None: unpinned); its JSON, log and
    imports record go to ``workdir``.

    The pytest runs in its own process group; if this process is interrupted meanwhile, that
    group is terminated before the interruption goes on."""
    proc, start = _launch(side, rnd, cwd, pytest_args, workdir, python, deselect, cpus=cpus)
    try:
        returncode = proc.wait()
    except BaseException:
        _stop(proc)
        raise
    return _finished(side, rnd, workdir, returncode, start)


def run_pair(rnd: int, cwds: dict[str, Path], pytest_args: Sequence[str], workdir: Path, rng: random.Random,
             python: str = sys.executable, deselect: Sequence[str] = (),
             cpus: frozenset[int] | None = None) -> tuple[list[SideRun], Turns]:
    """Both sides' runs of a round at once, on the same ``cpus``, in lockstep (``ab_turns``): a test's
    rounds alternating, who starts each test drawn from ``rng``. Returns the runs (base, head) and the
    turns (how many tests both sides measured together). Interrupted: both process groups are terminated."""
    turns = Turns(rng)
    env = {TURNS_ENV: turns.address}
    server = threading.Thread(target=turns.serve, daemon=True)
    server.start()
    procs: dict[str, tuple[subprocess.Popen[Any], float]] = {}
    try:
        for side in SIDES:
            procs[side] = _launch(side, rnd, cwds[side], pytest_args, workdir, python, deselect, env, cpus)
            threading.Thread(target=lambda p=procs[side][0], s=side: (p.wait(), turns.ended(s)), daemon=True).start()
        codes = {side: proc.wait() for side, (proc, _) in procs.items()}
    except BaseException:
        for proc, _ in procs.values():
            _stop(proc)
        for side in SIDES:
            turns.ended(side)
        raise
    finally:
        server.join(timeout=5)
        turns.close()
    if turns.error is not None:
        raise ABError(f"the lockstep of round {rnd} failed ({turns.error}): its runs were not measured in turns")
    return [_finished(side, rnd, workdir, codes[side], procs[side][1]) for side in SIDES], turns


def _launch(side: str, rnd: int, cwd: Path, pytest_args: Sequence[str], workdir: Path, python: str,
            deselect: Sequence[str], env: dict[str, str] | None = None,
            cpus: frozenset[int] | None = None) -> tuple[subprocess.Popen[Any], float]:
    out = workdir / f"{side}-{rnd}.json"
    cmd = [python, "-P", "-m", "pytest", *pytest_args, "--perf", f"--perf-json={out}",
           f"--perf-baselines={workdir / 'no-baselines'}", "--perf-profile=never", "--perf-confirm=0",
           "-p", "no:cacheprovider", "-p", SIDE_PLUGIN, "-q", "-rN", "--color=no",
           *(f"--deselect={nodeid}" for nodeid in deselect)]
    full_env = dict(os.environ, **{SIDE_ENV: side, IMPORTS_ENV: str(workdir / f"{side}-{rnd}.imports.json")},
                    **(env or {}))
    full_env.pop("PYTEST_XDIST_AUTO_NUM_WORKERS", None)
    start = time.perf_counter()
    with (workdir / f"{side}-{rnd}.log").open("w") as fh, _pinned(cpus):
        group = {"process_group": 0} if hasattr(os, "killpg") else {}
        proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=fh,
                                stderr=subprocess.STDOUT, **group)
    return proc, start


def _finished(side: str, rnd: int, workdir: Path, returncode: int, start: float) -> SideRun:
    results = _read_results(workdir / f"{side}-{rnd}.json")
    return SideRun(side, rnd, returncode, time.perf_counter() - start, workdir / f"{side}-{rnd}.log",
                   results or {}, reported=results is not None,
                   imports=_read_imports(workdir / f"{side}-{rnd}.imports.json"))


WAY_OUT = ("set the ini option perfguard_ab_pythonpath to the folders, relative to the rootdir, that "
            "hold the code (\".\" for a package next to pyproject.toml; default: src when it exists), "
            "so that each side puts its own copy first on sys.path; for a base that lacks the "
            "option, pass it to both sides: perfguard ab REV -- -o perfguard_ab_pythonpath=.")


def _owner(file: str, roots: dict[str, str]) -> str | None:
    """The side whose checkout holds ``file``: the deepest root that contains it."""
    best = None
    for side, root in roots.items():
        if (file == root or file.startswith(root.rstrip(os.sep) + os.sep)) and (
                best is None or len(root) > len(roots[best])):
            best = side
    return best


def _listing(pairs: Sequence[tuple[str, str]], most: int = 3) -> str:
    shown = ", ".join(f"{name} from {file}" for name, file in pairs[:most])
    return shown + (f" and {len(pairs) - most} more" if len(pairs) > most else "")


def check_imports(base: dict[str, Any] | None, head: dict[str, Any] | None, base_root: Path,
                  head_root: Path) -> str | None:
    """Why the sides did not each measure their own checkout's code, or None.

    ``base``/``head``: the sides' ``ab_side`` records (None: not known yet). A side that imported
    files from the other side's checkout, or both sides importing a module of the project from
    the same file outside both checkouts, means both sides measured the same code."""
    roots = {"base": os.path.realpath(base_root), "head": os.path.realpath(head_root)}
    for side, other, doc in (("base", "head", base), ("head", "base", head)):
        if doc is None:
            continue
        foreign = sorted((name, file) for name, file in doc["modules"].items() if _owner(file, roots) == other)
        if foreign:
            return (f"the {side} imported the {other}'s files, so both sides would measure the "
                    f"{other}'s code and no change could show: {_listing(foreign)}. The project is "
                    f"importable from the {other}'s checkout on every side (an editable install, "
                    f"`pip install -e .`, or PYTHONPATH): {WAY_OUT}")
    if base is None or head is None:
        return None
    own = set(base.get("own_names") or []) | set(head.get("own_names") or [])
    shared = sorted((name, file) for name, file in base["modules"].items()
                    if name.split(".")[0] in own and head["modules"].get(name) == file
                    and _owner(file, roots) is None)
    if shared:
        return (f"both sides imported the project's code from the same files, outside both checkouts, so "
                f"both measured the same code and no change could show: {_listing(shared)}. The "
                f"project is installed (not from either checkout): {WAY_OUT}")
    return None


_IMPORT_ERROR = re.compile(r"\b(?:ModuleNotFoundError|ImportError): .*")  # the exception's own line
_IMPORT_MENTION = re.compile(r"\b(?:ModuleNotFoundError|ImportError)\b.*")  # e.g. pytest's own summary


def import_failure(log: Path) -> str | None:
    """The first ``ImportError``/``ModuleNotFoundError`` of a run's log, or None."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for pattern in (_IMPORT_ERROR, _IMPORT_MENTION):
        for line in lines:
            found = pattern.search(line)
            if found:
                return found.group(0).strip()
    return None
