"""Nothing is left behind: atomic-write temp files, lock files, Scalene's temp directories."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_perfguard import atomic, serial
from pytest_perfguard import profile as prof
from pytest_perfguard.atomic import write_text
from pytest_perfguard.baseline import load_baseline, save_entries
from pytest_perfguard.profile import ProfileError, profile_test

MACHINE: dict[str, Any] = {"hardware": {"arch": "x86_64"}, "software": {"python": "3.11"}}
ENTRY: dict[str, Any] = {"samples": {"latency": [1.0] * 5}, "unit": "call"}
REPO = Path(__file__).resolve().parents[1]
TEMP_NAME = re.compile(r"\.m\.json\.[a-z0-9_]{8}\.tmp")


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".lock")))


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _child(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` (after a common prelude) in a fresh interpreter with a private TMPDIR."""
    prelude = textwrap.dedent(f"""\
        import os, signal, sys
        from pathlib import Path
        from pytest_perfguard.baseline import save_entries
        path = Path({str(tmp_path / "m.json")!r})
        MACHINE = {MACHINE!r}
        ENTRY = {ENTRY!r}
    """)
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=60)


# --- a save killed half-way ------------------------------------------------------------------


def test_save_killed_by_sigkill_is_cleaned_up_by_the_next_save(tmp_path: Path) -> None:
    save_entries(tmp_path / "m.json", {"a": ENTRY}, MACHINE, None)
    proc = _child("""
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies with the temp file written
        save_entries(path, {"b": ENTRY}, MACHINE, None)
    """, tmp_path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = leftovers(tmp_path)
    assert len(left) == 2 and "m.json.lock" in left and any(TEMP_NAME.fullmatch(n) for n in left)
    for name in left:
        _age(tmp_path / name, 2 * atomic.STALE_AFTER_S)

    save_entries(tmp_path / "m.json", {"c": ENTRY}, MACHINE, None)
    assert leftovers(tmp_path) == []
    assert set(load_baseline(tmp_path / "m.json").entries) == {"a", "c"}  # type: ignore[union-attr]


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_save_killed_by_sigterm_or_sighup_removes_its_temp_file_and_lock(
    tmp_path: Path, signame: str
) -> None:
    save_entries(tmp_path / "m.json", {"a": ENTRY}, MACHINE, None)
    before = (tmp_path / "m.json").read_bytes()
    proc = _child(f"""
        real_fsync = os.fsync
        def fsync(fd):
            real_fsync(fd)
            os.kill(os.getpid(), signal.{signame})
        os.fsync = fsync
        save_entries(path, {{"b": ENTRY}}, MACHINE, None)
        print("survived")
    """, tmp_path)
    sig = getattr(signal, signame)
    assert proc.returncode == -sig, (proc.returncode, proc.stderr)  # still dies of the signal
    assert "survived" not in proc.stdout
    assert leftovers(tmp_path) == []
    assert (tmp_path / "m.json").read_bytes() == before


def test_a_sigterm_handler_of_the_program_is_left_in_charge(tmp_path: Path) -> None:
    proc = _child("""
        def handler(signum, frame):
            raise SystemExit(7)
        signal.signal(signal.SIGTERM, handler)
        real_fsync = os.fsync
        def fsync(fd):
            real_fsync(fd)
            os.kill(os.getpid(), signal.SIGTERM)
        os.fsync = fsync
        try:
            save_entries(path, {"b": ENTRY}, MACHINE, None)
        finally:
            assert signal.getsignal(signal.SIGTERM) is handler
    """, tmp_path)
    assert proc.returncode == 7, proc.stderr
    assert leftovers(tmp_path) == []


def test_write_text_restores_the_default_handlers(tmp_path: Path) -> None:
    proc = _child("""
        from pytest_perfguard.atomic import write_text
        write_text(path, "x")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        print("survived")
    """, tmp_path)
    assert proc.returncode == -signal.SIGTERM and "survived" not in proc.stdout, proc.stderr


# --- which temp files count as stale ---------------------------------------------------------


def test_only_old_unheld_temp_files_of_the_same_name_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    names = {
        "stale": ".m.json.abcd_123.tmp",
        "fresh": ".m.json.fresh000.tmp",  # could be a writer that has not locked it yet
        "held": ".m.json.held0000.tmp",  # a live writer holds its flock
        "other_file": ".n.json.abcd_123.tmp",
        "not_mkstemp": ".m.json.my-notes.tmp",
        "visible": "m.json.abcd_123.tmp",
    }
    for key, name in names.items():
        (tmp_path / name).write_text(key)
        if key != "fresh":
            _age(tmp_path / name, 2 * atomic.STALE_AFTER_S)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x").write_text("keep")
    os.symlink(tmp_path / "elsewhere" / "x", tmp_path / ".m.json.link0000.tmp")
    os.utime(tmp_path / ".m.json.link0000.tmp", (0, 0), follow_symlinks=False)

    fd = os.open(tmp_path / names["held"], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts like a process
        assert atomic.remove_stale_temps(target) == [names["stale"]]
        write_text(target, "{}")
        assert (tmp_path / names["held"]).read_text() == "held"
    finally:
        os.close(fd)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([*(n for k, n in names.items() if k != "stale"), ".m.json.link0000.tmp",
                           "elsewhere", "m.json"])
    assert (tmp_path / "elsewhere" / "x").read_text() == "keep"
    assert atomic.remove_stale_temps(target) == [names["held"]]  # its writer is gone now


def test_a_writer_holds_its_temp_file_locked_until_it_is_renamed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        _age(Path(src), 2 * atomic.STALE_AFTER_S)  # as old as it gets: only the lock protects it
        seen.extend(atomic.remove_stale_temps(Path(dst)))  # a concurrent writer's sweep
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_text(tmp_path / "m.json", "data")
    assert seen == []
    assert (tmp_path / "m.json").read_text() == "data" and leftovers(tmp_path) == []


def test_gitignore_covers_the_temp_file_and_the_lock(tmp_path: Path) -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the project's git checkout")
    for name in ("baselines/.linux-x86_64.json.abcd1234.tmp", "baselines/linux-x86_64.json.lock"):
        proc = subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=REPO)
        assert proc.returncode == 0, f"{name} is not ignored"


# --- the xdist lock file ---------------------------------------------------------------------


def test_remove_lock_removes_a_free_lock_and_keeps_a_held_one(tmp_path: Path) -> None:
    lock = tmp_path / "perfguard-run.lock"
    assert serial.remove_lock(lock) is True  # nothing to remove
    with serial.held(lock, exclusive=False):
        assert serial.remove_lock(lock) is False  # a test is running: keep it
        assert lock.exists()
    assert serial.remove_lock(lock) is True
    assert not lock.exists()


def test_lock_path_is_in_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    lock = serial.lock_path("abc")
    with serial.held(lock, exclusive=True):
        pass
    assert os.listdir(tmp_path) == ["perfguard-abc.lock"]
    serial.remove_lock(lock)
    assert os.listdir(tmp_path) == []


def test_held_relocks_when_the_file_was_removed_while_it_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "perfguard-run.lock"
    real_flock = fcntl.flock
    calls = []

    def flock(fd: int, op: int) -> None:
        calls.append(op)
        if len(calls) == 1:
            os.unlink(lock)  # the controller removed it while this worker waited
        real_flock(fd, op)

    monkeypatch.setattr(serial.fcntl, "flock", flock)
    with serial.held(lock, exclusive=True):
        monkeypatch.undo()
        assert lock.exists(), "holding a lock on a file nobody else can open"
        fd = os.open(lock, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):  # the file at the path is the one held
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert len(calls) == 2


# --- Scalene's temp directory ----------------------------------------------------------------

FAKE_SCALENE = """\
#!{python}
# Stands in for "python -m scalene run|view ...": makes a directory in $TMPDIR as Scalene does.
import json, os, sys, tempfile, time
made = tempfile.mkdtemp(prefix="scalene")
with open({record!r}, "a") as f:
    f.write(json.dumps({{"tmpdir": os.environ.get("TMPDIR"), "made": made, "pid": os.getpid(),
                        "argv": sys.argv[1:4]}}) + "\\n")
if sys.argv[3] == "view":
    open("scalene-profile.html", "w").write("<html>profile</html>")
    sys.exit(0)
mode = {mode!r}
if mode == "sleep":
    time.sleep(120)
if mode == "crash":
    sys.stderr.write("RuntimeError: boom\\n")
    sys.exit(3)
out = sys.argv[sys.argv.index("-o") + 1]
json.dump({{"memory": False, "files": {{"/x.py": {{"lines": []}}}}}}, open(out, "w"))
sys.exit(1)
"""


@pytest.fixture
def private_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmpdir


def _fake(tmp_path: Path, mode: str) -> tuple[Path, Path]:
    record = tmp_path / "record.jsonl"
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_SCALENE.format(python=sys.executable, record=str(record), mode=mode))
    fake.chmod(0o755)
    return fake, record


def _records(record: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def _profile(tmp_path: Path, fake: Path, **kw: Any) -> Any:
    return profile_test("tests/test_x.py::test_y", rootdir=tmp_path, outdir=tmp_path / "out",
                        pytest_args=[], profile_paths=[str(tmp_path)], python=str(fake), **kw)


def test_scalene_runs_leave_nothing_in_tmpdir(tmp_path: Path, private_tmpdir: Path) -> None:
    fake, record = _fake(tmp_path, "ok")
    res = _profile(tmp_path, fake, timeout=30.0)
    assert res.html_path.read_text() == "<html>profile</html>"
    runs = _records(record)
    assert [r["argv"][2] for r in runs] == ["run", "view"]
    for r in runs:
        child_tmp = Path(r["tmpdir"])
        assert child_tmp.parent == private_tmpdir and child_tmp.name.startswith("perfguard-scalene-")
        assert not Path(r["made"]).exists()
    assert os.listdir(private_tmpdir) == []


def test_a_failed_scalene_run_leaves_nothing_in_tmpdir(tmp_path: Path, private_tmpdir: Path) -> None:
    fake, record = _fake(tmp_path, "crash")
    with pytest.raises(ProfileError, match="exited with code 3"):
        _profile(tmp_path, fake, timeout=30.0)
    assert len(_records(record)) == 1
    assert os.listdir(private_tmpdir) == []


def test_a_timed_out_scalene_run_leaves_nothing_in_tmpdir(tmp_path: Path, private_tmpdir: Path) -> None:
    fake, record = _fake(tmp_path, "sleep")
    with pytest.raises(ProfileError, match="timed out"):
        _profile(tmp_path, fake, timeout=3.0)
    assert len(_records(record)) == 1
    assert os.listdir(private_tmpdir) == []


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return re.search(r"^State:\s+Z", state, re.MULTILINE) is not None


def test_ctrl_c_kills_the_scalene_run_and_leaves_nothing(
    tmp_path: Path, private_tmpdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    fake, record = _fake(tmp_path, "sleep")
    real_communicate = subprocess.Popen.communicate
    calls = []

    def communicate(self: subprocess.Popen[str], *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the Ctrl-C arrives while the re-run is under way
            deadline = time.monotonic() + 30
            while not (record.exists() and record.read_text().endswith("\n")):
                assert time.monotonic() < deadline, "the fake re-run never started"
                time.sleep(0.05)
            raise KeyboardInterrupt
        return real_communicate(self, *args, **kwargs)

    monkeypatch.setattr(prof.subprocess.Popen, "communicate", communicate)
    with pytest.raises(KeyboardInterrupt):
        _profile(tmp_path, fake, timeout=60.0)
    monkeypatch.undo()
    pid = _records(record)[0]["pid"]
    try:
        assert _gone(pid), "the re-run outlived Ctrl-C"
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
    assert os.listdir(private_tmpdir) == []


def test_an_xdist_perf_run_leaves_no_lock_file_in_tmpdir(pytester: pytest.Pytester, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("xdist")
    private = tmp_path / "tmpdir"
    private.mkdir()
    monkeypatch.setenv("TMPDIR", str(private))
    pytester.makepyfile(test_x="def test_a(perf):\n    perf(sum, [1])\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest_subprocess("--perf", "-n", "2", "--perf-max-time=0.01", "--perf-profile=never",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert not list(private.glob("perfguard-*.lock"))
