"""Re-run one test under Scalene and summarise the profile of its measured region.

The plugin calls :func:`profile_test` when a perf test fails. It runs, in a subprocess and its
own process group, ``python -m scalene run --off -o <out>.json --memory|--cpu-only --program-path
<dir> --profile-only <paths> -m pytest --- <nodeid> <pytest_args> --perf-only=<nodeid>
--perf-profile-region=<out>.json -p no:cacheprovider -q``. Scalene starts with sampling off; the
plugin in the re-run turns it on around the measured region only (``region.ScaleneRegion``), so
imports, collection and fixtures are not in the profile, and renders the self-contained HTML page
(every script and stylesheet inlined, so it opens offline) once Scalene has written the JSON. When
that page is missing, ``scalene view --standalone`` renders it here. The hottest lines go to the
failure report.

Scalene re-executes itself once to set its environment (``scalene_preload.py``); the re-run starts
with that environment already set (:func:`preload_env`), which halves Scalene's start-up (it
imports torch and IPython when they are installed). Should a Scalene version want another
environment, it re-executes itself as before: slower, not wrong.

Scalene makes a ``scaleneXXXXXXXX`` directory in ``$TMPDIR`` for each run (its Python aliases)
and never removes it, so both Scalene commands run with ``TMPDIR`` set to a private directory
that is removed afterwards, however the re-run ends.

Nothing here imports pytest or scalene; Scalene is only ever run as a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import importlib.util
import json
import os
import re
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "HotLine",
    "ProfileError",
    "ProfileResult",
    "build_command",
    "format_section",
    "hot_lines",
    "preload_env",
    "profile_test",
    "sanitize_nodeid",
    "scalene_available",
]

_ALLOCATION_SAMPLING_WINDOW = 1048576  # Scalene's default (scalene_arguments.py)
MAX_NAME_LEN = 120  # file-name stem limit; ".json"/".html" are appended
HTML_TIMEOUT_S = 120.0
MIN_CPU_PERCENT = 0.1  # lines below these are "about zero" and never reported
MIN_MEMORY_MB = 0.1
# Scalene escapes these in the JSON's source text (see scalene_json.py).
_SCALENE_ESCAPES = (("\\u0026", "&"), ("\\u003c", "<"), ("\\u003e", ">"))
# Variables of the parent pytest run that must not leak into the re-run.
_DROPPED_ENV = ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
                "PYTEST_XDIST_TESTRUNUID")


@dataclass(frozen=True)
class HotLine:
    file: str
    line: int
    cpu_percent: float  # python + native + system, percent of the profiled time
    memory_mb: float  # peak memory attributed to the line (0.0 when memory was not profiled)
    source: str


@dataclass(frozen=True)
class ProfileResult:
    json_path: Path
    html_path: Path
    hot_lines: list[HotLine]
    elapsed_s: float  # wall time of the Scalene re-run
    memory: bool = True  # whether memory was profiled
    returncode: int = 0  # the re-run's exit status (1 is normal: the test failed)


class ProfileError(Exception):
    """The profile could not be produced; the message is one sentence saying why."""


def sanitize_nodeid(nodeid: str) -> str:
    """A readable, file-system-safe file-name stem for a pytest node id.

    ``"suites/test_counter.py::test_x[naive-1]"`` -> ``"suites_test_counter.py__test_x_naive-1_"``.
    Long ids are cut and get a hash suffix so that distinct ids stay distinct.
    """
    name = re.sub(r"[^A-Za-z0-9._-]", "_", nodeid)
    if not name or name.startswith("."):
        name = "_" + name
    if len(name) > MAX_NAME_LEN:
        digest = hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        name = f"{name[: MAX_NAME_LEN - len(digest) - 1]}-{digest}"
    return name


def scalene_available() -> bool:
    """True if this interpreter finds Scalene. Nothing is imported or run: a ``python -m scalene
    --version`` costs a whole Scalene start-up (it imports torch and IPython when installed), and a
    broken install shows as the re-run's own error."""
    try:
        return importlib.util.find_spec("scalene") is not None
    except Exception:  # a broken install must never break a test session
        return False


def _system_dirs() -> list[Path]:
    """Directories Scalene skips unless ``--profile-all`` (mirrors scalene_tracing.py)."""
    raw: set[str] = set(filter(None, (sys.prefix, sys.base_prefix, sys.exec_prefix)))
    raw.update(p for p in sysconfig.get_paths().values() if p)
    try:
        raw.update(site.getsitepackages())
        raw.add(site.getusersitepackages())
    except Exception:  # site may be stripped down in embedded interpreters
        pass
    return [Path(p).resolve() for p in raw]


def _patterns(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Substrings for ``--profile-only`` (both spelled and resolved forms; dirs end with a sep)."""
    out: list[str] = []
    for raw in paths:
        for p in dict.fromkeys((Path(os.path.abspath(raw)), Path(raw).resolve())):
            s = str(p) + (os.sep if p.is_dir() else "")
            if "," in s:
                raise ProfileError(f"Scalene cannot be restricted to a path containing a comma: {s}.")
            if s not in out:
                out.append(s)
    return out


def build_command(nodeid: str, *, json_path: Path, pytest_args: Sequence[str],
                  profile_paths: Sequence[str | os.PathLike[str]], memory: bool = True,
                  python: str = sys.executable, rootdir: Path | None = None) -> list[str]:
    """The Scalene command line that :func:`profile_test` runs (with cwd=rootdir)."""
    cmd = [python, "-m", "scalene", "run", "--off", "-o", str(json_path)]
    # Naming the metrics turns Scalene's library profilers off: with torch installed they wrap the
    # whole run in torch.profiler(with_stack=True), which made a 2 s pure-Python test take ~100 s.
    # GPU time is not what a perf-failure profile is for.
    cmd.append("--memory" if memory else "--cpu-only")
    resolved = [Path(p).resolve() for p in profile_paths]
    if resolved:
        dirs = [p if p.is_dir() else p.parent for p in resolved]
        system = _system_dirs()
        if any(d.is_relative_to(s) for d in dirs for s in system):
            cmd.append("--profile-all")  # code under test lives in site-packages or the stdlib
        cmd += ["--program-path", os.path.commonpath([str(d) for d in dirs])]
        cmd += ["--profile-only", ",".join(_patterns(profile_paths))]
    elif rootdir is not None:
        cmd += ["--program-path", str(Path(rootdir).resolve())]
    cmd += ["-m", "pytest", "---", nodeid, *pytest_args, f"--perf-only={nodeid}", f"--perf-profile-region={json_path}",
            "-p", "no:cacheprovider", "-q"]
    return cmd


def preload_env(memory: bool, environ: dict[str, str]) -> dict[str, str]:
    """The variables Scalene 2.x sets before re-executing itself (``ScalenePreload.get_preload_environ``
    on Linux, default options), so that it need not: ``environ`` overlaid with them."""
    env = {"SCALENE_ALLOCATION_SAMPLING_WINDOW": str(_ALLOCATION_SAMPLING_WINDOW)}
    spec = importlib.util.find_spec("scalene")
    if memory and sys.platform == "linux" and spec is not None and spec.submodule_search_locations:
        lib = list(spec.submodule_search_locations)[0]
        ld_path = environ.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = ld_path if ld_path and lib in ld_path else ":".join(filter(None, (lib, ld_path)))
        preload = environ.get("LD_PRELOAD")
        env["LD_PRELOAD"] = (preload if preload and "libscalene.so" in preload.split(":")
                             else ":".join(filter(None, ("libscalene.so", preload))))
        if "PYTHONMALLOC" in environ:
            env["PYTHONMALLOC"] = "default"
    return {**environ, **env}


def _last_line(stderr: str, stdout: str) -> str:
    """The most telling output line: the last stderr line that is not one of Scalene's hints."""
    err = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    own = ("scalene", "--profile-all", "--profile-only")
    for ln in reversed(err):
        if not any(tok in ln.lower() for tok in own):
            return ln[:300]
    out = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
    return (err or out or ["(no output)"])[-1][:300]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Run ``cmd`` in a new process group; on timeout (or Ctrl-C, or any other exception while
    waiting) kill the whole group, reap it and raise: no re-run outlives this call."""
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, errors="replace",
                          start_new_session=True) as proc:
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            # Its own session does not get the terminal's Ctrl-C, and Popen's exit would not
            # wait for it after a KeyboardInterrupt: kill it, or it runs on, orphaned.
            _kill_group(proc)
            proc.communicate()
            raise
        return proc.returncode, out, err


def _write_html(json_path: Path, html_path: Path, python: str, cwd: Path, env: dict[str, str],
                profile: dict[str, Any], hot: list[HotLine]) -> None:
    """``scalene view --standalone`` (it always writes ./scalene-profile.html), or a fallback."""
    html_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="perfguard-html-", dir=cwd) as tmp:
        try:
            rc, _, _ = _run([python, "-m", "scalene", "view", "--standalone", str(json_path)],
                            cwd=Path(tmp), env=env, timeout=HTML_TIMEOUT_S)
            produced = Path(tmp) / "scalene-profile.html"
            if rc == 0 and produced.is_file() and produced.stat().st_size > 0:
                shutil.move(str(produced), html_path)
                return
        except (OSError, subprocess.SubprocessError):
            pass
    html_path.write_text(_fallback_html(profile, hot), encoding="utf-8")


def _fallback_html(profile: dict[str, Any], hot: list[HotLine]) -> str:
    """A minimal self-contained page, used only when Scalene's own HTML could not be made."""
    rows = "".join(
        f"<tr><td>{html.escape(h.file)}:{h.line}</td><td>{h.cpu_percent:.1f}</td>"
        f"<td>{h.memory_mb:.1f}</td><td><code>{html.escape(h.source)}</code></td></tr>"
        for h in hot)
    return ("<!doctype html><meta charset='utf-8'><title>perfguard profile</title>"
            f"<h1>Scalene profile (fallback view)</h1><p>{html.escape(str(profile.get('program')))}"
            f" &mdash; {float(profile.get('elapsed_time_sec', 0.0)):.2f} s</p>"
            "<table border=1 cellpadding=4><tr><th>file:line</th><th>CPU %</th><th>MEM MB</th>"
            f"<th>source</th></tr>{rows}</table>")


def profile_test(nodeid: str, *, rootdir: Path, outdir: Path, pytest_args: list[str],
                 profile_paths: list[str], timeout: float = 300.0, memory: bool = True,
                 python: str = sys.executable, env: dict[str, str] | None = None,
                 command_prefix: list[str] | None = None) -> ProfileResult:
    """Re-run ``nodeid`` under Scalene; write ``outdir/<name>.json`` and ``.html``.

    ``env`` is overlaid on the current environment, in which ``TMPDIR`` names a private
    directory that is removed on return (an ``env`` naming its own ``TMPDIR`` keeps what is made
    there). ``command_prefix`` (a hook for tests) replaces the interpreter: the command run is
    ``command_prefix + cmd[1:]`` where ``cmd`` is :func:`build_command`'s list. A failing test
    (exit code 1) with a valid profile is a success.
    Memory profiling is on by default (the report shows memory hot lines); ``memory=False``
    (``--cpu-only``) is cheaper for allocation-heavy tests.
    Raises :class:`ProfileError` on any problem.
    """
    rootdir, outdir = Path(rootdir), Path(outdir)
    name = sanitize_nodeid(nodeid)
    if command_prefix is None and python == sys.executable and not scalene_available():
        raise ProfileError("Scalene is not installed for this interpreter (pip install scalene).")
    made = [d for d in (outdir, *outdir.parents) if not d.exists()]  # removed again if left empty
    outdir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = outdir / f"{name}.json", outdir / f"{name}.html"
    for stale in (json_path, html_path):  # never mistake an old profile for this run's
        stale.unlink(missing_ok=True)
    cmd = build_command(nodeid, json_path=json_path.resolve(), pytest_args=pytest_args,
                        profile_paths=profile_paths, memory=memory, python=python, rootdir=rootdir)
    if command_prefix is not None:
        cmd = [*command_prefix, *cmd[1:]]
    with tempfile.TemporaryDirectory(prefix="perfguard-scalene-", ignore_cleanup_errors=True) as tmp:
        full_env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        full_env["TMPDIR"] = tmp  # Scalene leaves a scaleneXXXXXXXX directory in it
        full_env.update(env or {})
        try:
            return _profile(nodeid, cmd, rootdir=rootdir, json_path=json_path, html_path=html_path,
                            full_env=full_env, timeout=timeout, memory=memory, python=python,
                            profile_paths=profile_paths, preload=command_prefix is None)
        except ProfileError:
            for d in made:  # innermost first; a folder something else wrote into stays
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise


def _profile(nodeid: str, cmd: list[str], *, rootdir: Path, json_path: Path, html_path: Path,
             full_env: dict[str, str], timeout: float, memory: bool, python: str,
             profile_paths: list[str], preload: bool) -> ProfileResult:
    """The body of :func:`profile_test` once the command and its environment are known."""
    start = time.perf_counter()
    try:
        rc, out, err = _run(cmd, cwd=rootdir, env=preload_env(memory, full_env) if preload else full_env,
                            timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ProfileError(f"The Scalene re-run of {nodeid} timed out after {timeout:g} s "
                           "and was killed.") from None
    except OSError as exc:
        raise ProfileError(f"The Scalene re-run of {nodeid} could not start: {exc}.") from exc
    elapsed = time.perf_counter() - start
    if re.search(r"No module named '?scalene'?\s*$", err, re.MULTILINE):
        raise ProfileError(f"Scalene is not installed for {cmd[0]} (pip install scalene).")
    try:
        profile = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        profile = None
    has_data = isinstance(profile, dict) and bool(profile.get("files"))
    # Scalene exits 1 both for a failing test and for a program that crashed before running it.
    crashed = rc not in (0, 1) or "Error in program being profiled" in err
    if not has_data:
        json_path.unlink(missing_ok=True)
    if not has_data and crashed:
        raise ProfileError(f"The Scalene re-run of {nodeid} exited with code {rc} and wrote no "
                           f"profile: {_last_line(err, out)}")
    if not has_data or not isinstance(profile, dict):
        where = ", ".join(str(p) for p in profile_paths) or str(rootdir)
        raise ProfileError(f"The Scalene re-run of {nodeid} produced no profile data for {where} "
                           f"(its measured region ran none of that code): {_last_line(err, out)}")
    hot = hot_lines(profile, paths=profile_paths or None)
    if not (html_path.is_file() and html_path.stat().st_size > 0):  # the re-run renders it at exit
        _write_html(json_path, html_path, python, json_path.parent, full_env, profile, hot)
    return ProfileResult(json_path=json_path, html_path=html_path, hot_lines=hot,
                         elapsed_s=elapsed, memory=bool(profile.get("memory", memory)),
                         returncode=rc)


def _in_paths(file: str, patterns: list[str]) -> bool:
    if not os.path.isabs(file):  # e.g. "<string>"; Scalene's own filter already applied
        return True
    return any(file.startswith(p) or file == p.rstrip(os.sep) for p in patterns)


def hot_lines(profile_json: dict[str, Any], top: int = 5, *, memory_top: int = 3,
              paths: Sequence[str | os.PathLike[str]] | None = None) -> list[HotLine]:
    """The ``top`` hottest lines by CPU (python + native + system), then up to ``memory_top``
    further lines by peak memory when memory was profiled. Lines of about zero are skipped;
    ``paths`` (if given) keeps only files under those paths.

    Scalene spreads a sample over all lines of a tight loop, so a loop's lines often tie.
    """
    patterns = _patterns(paths) if paths else []
    rows: list[HotLine] = []
    files = profile_json.get("files") or {}
    for fname, fdata in files.items():
        if patterns and not _in_paths(str(fname), patterns):
            continue
        for ln in (fdata or {}).get("lines") or []:
            cpu = sum(float(ln.get(k) or 0.0) for k in
                      ("n_cpu_percent_python", "n_cpu_percent_c", "n_sys_percent"))
            mem = float(ln.get("n_peak_mb") or 0.0)
            if cpu < MIN_CPU_PERCENT and mem < MIN_MEMORY_MB:
                continue
            source = str(ln.get("line", "")).strip()
            for esc, char in _SCALENE_ESCAPES:
                source = source.replace(esc, char)
            rows.append(HotLine(str(fname), int(ln.get("lineno", 0)), cpu, mem, source))
    by_cpu = sorted((r for r in rows if r.cpu_percent >= MIN_CPU_PERCENT),
                    key=lambda r: (-r.cpu_percent, r.file, r.line))[: max(top, 0)]
    chosen = list(by_cpu)
    if profile_json.get("memory") and memory_top > 0:
        seen = {(r.file, r.line) for r in chosen}
        by_mem = sorted((r for r in rows if r.memory_mb >= MIN_MEMORY_MB
                         and (r.file, r.line) not in seen),
                        key=lambda r: (-r.memory_mb, r.file, r.line))
        chosen += by_mem[:memory_top]
    return chosen


def _rel(path: str | Path, rootdir: Path | None) -> str:
    if rootdir is None:
        return str(path)
    try:
        return str(Path(path).resolve().relative_to(Path(rootdir).resolve()))
    except ValueError:
        return str(path)


def format_section(result: ProfileResult, rootdir: Path | None = None) -> str:
    """Text for the "perfguard profile" report section: a small table, then the two paths."""
    head = f"Scalene re-run ({result.elapsed_s:.1f} s, {'CPU+memory' if result.memory else 'CPU only'})"
    lines = [head + (":" if result.hot_lines else ": no line above the noise threshold.")]
    if result.hot_lines:
        locs = [f"{_rel(h.file, rootdir)}:{h.line}" for h in result.hot_lines]
        width = max(len("file:line"), *(len(loc) for loc in locs))
        lines.append(f"  {'file:line':<{width}}  {'CPU %':>6}  {'MEM MB':>7}  source")
        for loc, h in zip(locs, result.hot_lines):
            mem = f"{h.memory_mb:7.1f}" if result.memory else f"{'-':>7}"
            src = h.source if len(h.source) <= 60 else h.source[:57] + "..."
            lines.append(f"  {loc:<{width}}  {h.cpu_percent:6.1f}  {mem}  {src}")
    lines.append(f"profile json: {_rel(result.json_path, rootdir)}")
    lines.append(f"profile html: {_rel(result.html_path, rootdir)}")
    return "\n".join(lines)
