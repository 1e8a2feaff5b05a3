"""Tests for pytest_perfguard.profile: the Scalene re-run and its summary."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_perfguard import profile as prof
from pytest_perfguard.profile import (
    HotLine,
    ProfileError,
    ProfileResult,
    build_command,
    format_section,
    hot_lines,
    profile_test,
    sanitize_nodeid,
    scalene_available,
)

# ---------------------------------------------------------------- sample data (Scalene 2.4.0)


def _line(lineno: int, src: str, py: float = 0.0, c: float = 0.0, sys_: float = 0.0,
          peak: float = 0.0) -> dict[str, Any]:
    """One entry of ``files[...]["lines"]`` with the key set of a real Scalene 2.4.0 profile."""
    return {
        "async_task_names": [], "cpu_samples_list": [2380.903291825] if py + c else [],
        "end_function_line": 5, "end_outermost_loop": 4, "end_region_line": 4,
        "is_coroutine": False, "line": src, "lineno": lineno,
        "memory_samples": [[1081967444, 1.0001678466796875]] if peak else [],
        "n_async_await_percent": 0.0, "n_async_concurrency_mean": 0.0,
        "n_async_concurrency_peak": 0.0, "n_avg_mb": peak, "n_copy_mb_s": 0.0,
        "n_core_utilization": 0.476, "n_cpu_percent_c": c, "n_cpu_percent_python": py,
        "n_gpu_avg_memory_mb": 0.0, "n_gpu_peak_memory_mb": 0.0, "n_gpu_percent": 0.0,
        "n_growth_mb": peak, "n_malloc_mb": peak, "n_mallocs": 1 if peak else 0,
        "n_peak_mb": peak, "n_python_fraction": 0.9998 if peak else 0, "n_sys_percent": sys_,
        "n_usage_fraction": 1.0 if peak else 0.0, "start_function_line": 1,
        "start_outermost_loop": 3, "start_region_line": 3,
    }


SLOWMOD = "/proj/src/slowmod.py"
PYTEST_MAIN = "/venv/lib/python3.11/site-packages/pytest/__main__.py"


def sample_profile(memory: bool = True) -> dict[str, Any]:
    """A trimmed copy of a real ``scalene run`` profile of ``tests/test_slow.py``."""
    return {
        "alloc_samples": 68, "args": ["-m", "pytest", "tests/test_slow.py::test_slow"],
        "async_profile": True, "combined_stacks": [], "combined_stacks_timeline": [],
        "elapsed_time_sec": 1.84, "entrypoint_dir": "", "filename": "/venv/.../pytest",
        "gpu": False, "gpu_device": "", "growth_rate": 0.0, "main_thread_id": 1,
        "max_footprint_fname": SLOWMOD, "max_footprint_lineno": 9, "max_footprint_mb": 16.0,
        "max_footprint_python_fraction": 0.99, "memory": memory, "memory_stacks": [],
        "native_allocations_mb": 0, "program": "/venv/.../pytest/__main__.py", "samples": [],
        "stacks": [[["/proj/src/slowmod.py slow_sum:4;"], {"c_time": 0.39, "count": 31,
                                                            "cpu_samples": 0.85,
                                                            "python_time": 0.46}]],
        "start_time_absolute": 1795463539.1, "start_time_perf": 1841.47,
        "files": {
            SLOWMOD: {
                "functions": [], "imports": [], "leaks": {}, "percent_cpu_time": 100.0,
                "lines": [
                    _line(1, "def slow_sum(n):\n"),
                    _line(2, "    total = 0\n"),
                    # Scalene spreads a tight loop's samples evenly over the loop's lines.
                    _line(3, "    for i in range(n):\n", 20.9, 20.8, 2.2),
                    _line(4, "        total += i * i % 7\n", 20.9, 20.8, 2.2),
                    _line(5, "    return total\n", 0.01),
                    _line(8, "def alloc(n):\n"),
                    _line(9, "    data = [list(range(100)) for _ in range(n)]\n", 0.7, 10.6,
                          1.1, 16.0 if memory else 0.0),
                    _line(10, "    return n \\u003c 3 \\u0026 True\n", 0.5, 0.0, 0.0,
                          2.5 if memory else 0.0),
                    _line(11, "    tiny = 1\n", 0.02, 0.0, 0.0, 0.01),
                ],
            },
            # Memory Scalene attributed to pytest's own frame (happens with --profile-all).
            PYTEST_MAIN: {
                "functions": [], "imports": [], "leaks": {}, "percent_cpu_time": 0.0,
                "lines": [_line(9, "    raise SystemExit(pytest.console_main())\n",
                                peak=38.0 if memory else 0.0)],
            },
        },
    }


# ---------------------------------------------------------------- sanitize_nodeid


@pytest.mark.parametrize(
    ("nodeid", "expected"),
    [
        ("suites/test_counter.py::test_x[naive-1]", "suites_test_counter.py__test_x_naive-1_"),
        ("test_a.py::test_b", "test_a.py__test_b"),
        ("tests/test_m.py::TestC::test_d[1.5-x y/z]", "tests_test_m.py__TestC__test_d_1.5-x_y_z_"),
        ("a\\b::c[é]", "a_b__c___"),
        ("..", "_.."),
        ("", "_"),
    ],
)
def test_sanitize_nodeid_examples(nodeid: str, expected: str) -> None:
    assert sanitize_nodeid(nodeid) == expected


def test_sanitize_nodeid_is_filesystem_safe_and_bounded() -> None:
    base = "suites/test_serving.py::test_latency[" + "x" * 300
    a, b = sanitize_nodeid(base + "a]"), sanitize_nodeid(base + "b]")
    assert a != b  # the hash suffix keeps long ids apart
    for name in (a, b):
        assert len(name) <= prof.MAX_NAME_LEN
        assert re.fullmatch(r"[A-Za-z0-9._-]+", name)
        assert name.startswith("suites_test_serving.py__test_latency_xxx")
    assert sanitize_nodeid(base + "a]") == a  # deterministic


# ---------------------------------------------------------------- hot_lines


def test_hot_lines_orders_by_cpu_then_adds_memory_lines() -> None:
    hot = hot_lines(sample_profile(), top=3)
    assert [(h.file, h.line) for h in hot] == [
        (SLOWMOD, 3), (SLOWMOD, 4), (SLOWMOD, 9),  # by CPU: python + native + system
        (PYTEST_MAIN, 9), (SLOWMOD, 10),  # then by peak memory, not already listed
    ]
    assert hot[0].cpu_percent == pytest.approx(20.9 + 20.8 + 2.2)
    assert hot[2].memory_mb == pytest.approx(16.0)
    assert hot[0].source == "for i in range(n):"
    assert hot[-1].source == "return n < 3 & True"  # Scalene's JSON escapes are undone
    assert all((h.line not in (1, 2, 11)) for h in hot if h.file == SLOWMOD)  # ~0 lines skipped


def test_hot_lines_filters_paths_and_handles_cpu_only() -> None:
    hot = hot_lines(sample_profile(), top=5, paths=["/proj/src"])
    assert {h.file for h in hot} == {SLOWMOD}
    cpu_only = hot_lines(sample_profile(memory=False), top=2)
    assert [(h.line, h.memory_mb) for h in cpu_only] == [(3, 0.0), (4, 0.0)]
    assert hot_lines({"files": {}}) == []
    assert hot_lines({}) == []


# ---------------------------------------------------------------- format_section


def test_format_section_shape(tmp_path: Path) -> None:
    long_src = "result = some_function(" + ", ".join(f"arg{i}" for i in range(30)) + ")"
    hot = [
        HotLine(str(tmp_path / "src" / "slowmod.py"), 4, 43.9, 0.0, "total += i * i % 7"),
        HotLine(str(tmp_path / "src" / "pkg" / "deep.py"), 120, 12.4, 16.0, long_src),
        HotLine("/elsewhere/other.py", 7, 0.0, 2.5, "x = [0] * 10"),
    ]
    outdir = tmp_path / ".perfguard" / "profiles"
    res = ProfileResult(outdir / "t.json", outdir / "t.html", hot, 4.83)
    text = format_section(res, tmp_path)
    lines = text.splitlines()
    assert len(lines) <= 12
    assert lines[0] == "Scalene re-run (4.8 s, CPU+memory):"
    assert lines[1].split() == ["file:line", "CPU", "%", "MEM", "MB", "source"]
    assert lines[2].split()[:3] == ["src/slowmod.py:4", "43.9", "0.0"]
    assert lines[3].split()[:3] == ["src/pkg/deep.py:120", "12.4", "16.0"]
    assert lines[3].endswith("...") and len(lines[3]) < 120
    assert lines[4].split()[:3] == ["/elsewhere/other.py:7", "0.0", "2.5"]
    # columns line up: every source starts under "source", every number ends under its header
    col = lines[1].index("source")
    assert [ln[col:col + 5] for ln in lines[2:5]] == ["total", "resul", "x = ["]
    cpu_end, mem_end = lines[1].index("CPU %") + 5, lines[1].index("MEM MB") + 6
    assert all(ln[cpu_end - 1].isdigit() and ln[mem_end - 1].isdigit() for ln in lines[2:5])
    assert lines[-2] == "profile json: .perfguard/profiles/t.json"
    assert lines[-1] == "profile html: .perfguard/profiles/t.html"

    cpu_only = format_section(ProfileResult(res.json_path, res.html_path, hot[:1], 2.0,
                                            memory=False))
    assert "CPU only" in cpu_only and str(res.json_path) in cpu_only
    assert cpu_only.splitlines()[2].split()[2] == "-"
    empty = format_section(ProfileResult(res.json_path, res.html_path, [], 2.0), tmp_path)
    assert len(empty.splitlines()) == 3 and "no line" in empty


# ---------------------------------------------------------------- command line


def test_build_command(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "suites").mkdir()
    paths = [str(tmp_path / "src"), str(tmp_path / "suites")]
    cmd = build_command("suites/test_a.py::test_b[x]", json_path=tmp_path / "o.json",
                        pytest_args=["--perf", "--perf-profile=never"], profile_paths=paths,
                        python="py")
    root = str(tmp_path.resolve())
    # --off: Scalene samples only where the plugin in the re-run turns it on (the measured region)
    assert cmd[:7] == ["py", "-m", "scalene", "run", "--off", "-o", str(tmp_path / "o.json")]
    assert "--cpu-only" not in cmd and "--profile-all" not in cmd
    assert cmd[cmd.index("--program-path") + 1] == root
    only = cmd[cmd.index("--profile-only") + 1].split(",")
    assert f"{root}/src/" in only and f"{root}/suites/" in only
    assert not any("pytest_perfguard" in p for p in only)
    tail = cmd[cmd.index("-m", 4):]
    assert tail == ["-m", "pytest", "---", "suites/test_a.py::test_b[x]", "--perf", "--perf-profile=never",
                    "--perf-only=suites/test_a.py::test_b[x]", f"--perf-profile-region={tmp_path / 'o.json'}",
                    "-p", "no:cacheprovider", "-q"]
    assert "--cpu-only" in build_command("t", json_path=tmp_path / "o.json", pytest_args=[],
                                         profile_paths=paths, memory=False)
    # code under test installed in site-packages: Scalene skips that unless --profile-all
    purelib = sysconfig.get_paths()["purelib"]
    assert "--profile-all" in build_command("t", json_path=tmp_path / "o.json", pytest_args=[],
                                            profile_paths=[purelib])
    with pytest.raises(ProfileError, match="comma"):
        build_command("t", json_path=tmp_path / "o.json", pytest_args=[],
                      profile_paths=[str(tmp_path / "a,b")])


def test_preload_env_is_what_scalene_would_set_before_re_executing(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = prof.preload_env(False, {"PATH": "/bin"})
    assert cpu == {"PATH": "/bin", "SCALENE_ALLOCATION_SAMPLING_WINDOW": "1048576"}
    if not scalene_available() or sys.platform != "linux":
        return
    mem = prof.preload_env(True, {"LD_PRELOAD": "libother.so", "PYTHONMALLOC": "malloc"})
    assert mem["LD_PRELOAD"] == "libscalene.so:libother.so" and mem["PYTHONMALLOC"] == "default"
    assert Path(mem["LD_LIBRARY_PATH"].split(":")[0], "libscalene.so").is_file()
    assert prof.preload_env(True, mem) == mem  # already set: unchanged
    # Scalene's own rule agrees: with this environment it does not re-execute itself
    code = ("import argparse, os, sys; from scalene.scalene_preload import ScalenePreload; "
            "from scalene.scalene_arguments import ScaleneArguments; "
            "env = ScalenePreload.get_preload_environ(argparse.Namespace(**{**vars(ScaleneArguments()), 'memory': True})); "
            "sys.exit(str(env) if any(os.environ.get(k) != v for k, v in env.items()) else 0)")
    proc = subprocess.run([sys.executable, "-c", code], env=prof.preload_env(True, dict(os.environ)),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_module_imports_neither_pytest_nor_scalene() -> None:
    code = ("import sys, pytest_perfguard.profile; "
            "bad = [m for m in ('pytest', '_pytest', 'scalene') if m in sys.modules]; "
            "sys.exit(str(bad) if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_scalene_available_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(scalene_available(), bool)

    def boom(name: str) -> None:
        raise ValueError("broken")

    monkeypatch.setattr("importlib.util.find_spec", boom)
    assert scalene_available() is False


# ---------------------------------------------------------------- profile_test failures (fast)


def _run_fake(tmp_path: Path, script: str, **kw: Any) -> ProfileResult:
    fake = tmp_path / "fake_scalene.py"
    fake.write_text(textwrap.dedent(script))
    kw.setdefault("timeout", 30.0)
    return profile_test("tests/test_x.py::test_y", rootdir=tmp_path, outdir=tmp_path / "out",
                        pytest_args=[], profile_paths=[str(tmp_path)],
                        command_prefix=[sys.executable, str(fake)], **kw)


def test_missing_scalene_via_fake_interpreter(tmp_path: Path) -> None:
    fake = tmp_path / "python-without-scalene"
    fake.write_text("#!/bin/sh\necho \"$0: No module named scalene\" >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(ProfileError, match=r"^Scalene is not installed for .*python-without"):
        profile_test("t.py::t", rootdir=tmp_path, outdir=tmp_path / "out", pytest_args=[],
                     profile_paths=[str(tmp_path)], python=str(fake))


def test_missing_scalene_in_this_interpreter(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prof, "scalene_available", lambda: False)
    with pytest.raises(ProfileError, match="not installed"):
        profile_test("t.py::t", rootdir=tmp_path, outdir=tmp_path / "out", pytest_args=[],
                     profile_paths=[str(tmp_path)])


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(120)
    """
    start = time.monotonic()
    with pytest.raises(ProfileError, match=r"timed out after 2 s"):
        _run_fake(tmp_path, script, timeout=2.0)
    assert time.monotonic() - start < 20
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            break
        if re.search(r"^State:\s+Z", state, re.MULTILINE):
            break  # a zombie waiting for init to reap it is dead
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the grandchild process survived the timeout")


def test_crash_reports_exit_code_and_last_line(tmp_path: Path) -> None:
    script = """
        import sys
        print("collected 1 item")
        sys.stderr.write("Traceback (most recent call last):\\nRuntimeError: boom\\n")
        sys.stderr.write("Scalene: The specified code did not run for long enough to profile.\\n")
        sys.exit(3)
    """
    with pytest.raises(ProfileError, match=r"exited with code 3 .*: RuntimeError: boom$"):
        _run_fake(tmp_path, script)


def test_program_error_with_exit_1_is_a_crash(tmp_path: Path) -> None:
    script = """
        import sys
        sys.stderr.write("Error in program being profiled:\\n ImportError: no plugin\\n")
        sys.exit(1)
    """
    with pytest.raises(ProfileError, match=r"exited with code 1 .*ImportError: no plugin"):
        _run_fake(tmp_path, script)


def test_empty_profile_is_an_error(tmp_path: Path) -> None:
    script = """
        import sys
        open(sys.argv[sys.argv.index("-o") + 1], "w").write("{}\\n")
        sys.exit(0)
    """
    with pytest.raises(ProfileError, match="produced no profile data"):
        _run_fake(tmp_path, script)
    assert not (tmp_path / "out" / "tests_test_x.py__test_y.json").exists()


def test_failing_test_with_profile_is_success(tmp_path: Path) -> None:
    script = f"""
        import json, sys
        profile = json.loads({json.dumps(json.dumps(sample_profile()))})
        open(sys.argv[sys.argv.index("-o") + 1], "w").write(json.dumps(profile))
        sys.exit(1)  # the re-run test failed: that is what we are profiling
    """
    res = _run_fake(tmp_path, script)
    assert res.returncode == 1
    assert res.json_path == tmp_path / "out" / "tests_test_x.py__test_y.json"
    assert json.loads(res.json_path.read_text())["files"]
    assert res.html_path.is_file() and res.html_path.stat().st_size > 0
    assert res.hot_lines == []  # sample files are outside profile_paths (tmp_path)


# ---------------------------------------------------------------- the real thing


@pytest.mark.skipif(not scalene_available(), reason="scalene is not installed (pip install scalene)")
def test_real_scalene_end_to_end(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "tests").mkdir()
    (proj / "pytest.ini").write_text("[pytest]\n")
    (proj / "src" / "slowmod.py").write_text(textwrap.dedent("""\
        def slow_sum(n):
            total = 0
            for i in range(n):
                total += i * i % 7
            return total


        def alloc(n):
            data = [list(range(100)) for _ in range(n)]
            return len(data)
    """))
    (proj / "tests" / "test_slow.py").write_text(textwrap.dedent("""\
        import pathlib, sys
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "src"))
        import pytest
        import slowmod

        def work():
            slowmod.alloc(4_000)
            return slowmod.slow_sum(4_000_000)

        @pytest.mark.perf_budget(latency="1us")
        def test_too_slow(perf):
            perf(work)
    """))
    outdir = proj / ".perfguard" / "profiles"
    res = profile_test("tests/test_slow.py::test_too_slow", rootdir=proj, outdir=outdir,
                       pytest_args=["--perf", "--perf-profile=never", "--perf-confirm=0"],
                       profile_paths=[str(proj / "src")], timeout=300.0)
    print(format_section(res, proj))
    assert res.returncode == 1  # the test fails; the profile is still a success
    assert res.json_path == outdir / "tests_test_slow.py__test_too_slow.json"
    data = json.loads(res.json_path.read_text())
    assert any(f.endswith("slowmod.py") for f in data["files"])
    html_text = res.html_path.read_text(encoding="utf-8")
    assert "<script src=" not in html_text  # standalone: works offline
    assert res.hot_lines
    top = res.hot_lines[0]
    assert top.file.endswith("slowmod.py") and top.line in (3, 4), res.hot_lines
    assert all(h.file.endswith("slowmod.py") for h in res.hot_lines)
    assert any(h.line == 9 and h.memory_mb > 1 for h in res.hot_lines), res.hot_lines
    section = format_section(res, proj)
    assert "src/slowmod.py:" in section and len(section.splitlines()) <= 12
