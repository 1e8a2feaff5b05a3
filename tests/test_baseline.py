"""Unit tests for the machine fingerprint and the baseline store (pytest_perfguard.baseline)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import types
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import pytest

from pytest_perfguard import baseline as bl
from pytest_perfguard import machine
from pytest_perfguard.baseline import (
    FORMAT_VERSION,
    Baseline,
    BaselineError,
    baseline_path,
    git_commit,
    load_baseline,
    save_entries,
)
from pytest_perfguard.machine import compare_fingerprints, machine_fingerprint, machine_slug, speed_score
from pytest_perfguard.model import thin as thin_samples

MACHINE: dict[str, Any] = {
    "hardware": {
        "arch": "x86_64",
        "cpu_model": "AMD EPYC 7B13",
        "cpu_physical": 2,
        "cpu_logical": 2,
        "cpu_affinity": 2,
        "memory_gib": 24,
        "gpus": [],
        "gpu_count": 0,
    },
    "software": {"os": "Linux", "python": "3.11", "packages": {"numpy": "2.4.6"}},
}


def entry(value: float = 1.0, n: int = 5) -> dict[str, Any]:
    return {
        "samples": {"latency": [value] * n},
        "summary": {"median": value, "n": n},
        "unit": "call",
        "commit": "abc123",
        "time": "2025-01-01T00:00:00+00:00",
    }


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".lock")))


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable_and_has_no_hostname() -> None:
    first, second = machine_fingerprint(), machine_fingerprint()
    assert first == second
    assert set(first) == {"hardware", "software"}
    text = json.dumps(first).lower()
    for name in {socket.gethostname(), platform.node()} - {""}:
        assert f'"{name.lower()}"' not in text
    assert not re.search(r"host|node|freq|mhz|time", " ".join(first["hardware"]))
    assert machine_slug(first) == machine_slug(second)


def test_fingerprint_records_cores_memory_and_software() -> None:
    fp = machine_fingerprint(threads=3)
    hw, sw = fp["hardware"], fp["software"]
    assert hw["cpu_logical"] >= 1 and 1 <= hw["cpu_affinity"] <= hw["cpu_logical"]
    assert isinstance(hw["memory_gib"], int) and hw["cpu_model"]
    assert sw["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"
    assert sw["packages"]["numpy"] == metadata.version("numpy")
    assert sw["torch_threads"] == 3  # without threads=, see tests/test_threads.py


def test_fingerprint_never_imports_torch_and_lists_gpus_of_imported_torch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    hardware = machine_fingerprint()["hardware"]
    assert "gpus" not in hardware and "gpu_count" not in hardware  # unknown until torch is imported
    assert "torch" not in sys.modules

    no_cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=no_cuda))
    assert machine_fingerprint()["hardware"]["gpus"] == []
    assert machine_fingerprint()["hardware"]["gpu_count"] == 0

    cuda = types.SimpleNamespace(
        is_available=lambda: True, device_count=lambda: 2, get_device_name=lambda i: "NVIDIA H100"
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    fp = machine_fingerprint()
    assert fp["hardware"]["gpus"] == ["NVIDIA H100", "NVIDIA H100"]
    assert fp["hardware"]["gpu_count"] == 2
    assert machine_slug(fp).endswith("-2x-nvidia-h100")


def test_slug_changes_when_affinity_is_restricted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 4 if logical else 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    full = machine_slug(machine_fingerprint())
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    pinned_fp = machine_fingerprint()
    pinned = machine_slug(pinned_fp)
    assert pinned_fp["hardware"]["cpu_affinity"] == 1
    assert pinned != full and pinned == full + "-1cpu-affinity"
    assert "-2c4t-" in full


def test_slug_is_readable_safe_and_ignores_software() -> None:
    assert machine_slug(MACHINE) == "x86_64-amd-epyc-7b13-2c-24gib"
    other_software = {**MACHINE, "software": {"os": "Linux", "python": "3.12", "packages": {}}}
    assert machine_slug(other_software) == machine_slug(MACHINE)
    intel = {"hardware": {**MACHINE["hardware"], "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz"}}
    slug = machine_slug(intel)
    assert slug == "x86_64-intel-xeon-2.20ghz-2c-24gib"
    assert re.fullmatch(r"[a-z0-9._-]+", slug)
    assert baseline_path(Path("baselines"), slug) == Path("baselines") / f"{slug}.json"


def test_baseline_path_rejects_path_like_names() -> None:
    for bad in ("", "..", "a/b", "../x"):
        with pytest.raises(ValueError):
            baseline_path(Path("baselines"), bad)


def test_compare_fingerprints_separates_hardware_and_software() -> None:
    current = json.loads(json.dumps(MACHINE))
    current["software"]["packages"] = {"numpy": "2.5.0", "torch": "2.13.0"}
    current["software"]["torch_threads"] = 2
    hardware, software = compare_fingerprints(MACHINE, current)
    assert hardware == []
    assert "numpy 2.4.6 -> 2.5.0" in software
    assert "torch not installed -> 2.13.0" in software
    assert "torch threads unset -> 2" in software
    assert len(software) == 3

    current["hardware"]["cpu_affinity"] = 1
    hardware, _ = compare_fingerprints(MACHINE, current)
    assert hardware == ["CPUs available to the process 2 -> 1"]
    assert compare_fingerprints(MACHINE, MACHINE) == ([], [])
    assert compare_fingerprints({}, MACHINE)[0]  # a fingerprint-less file differs, no crash


def test_fields_the_current_run_cannot_know_are_not_differences() -> None:
    saved = json.loads(json.dumps(MACHINE))
    saved["hardware"].update(gpus=["NVIDIA H100"], gpu_count=1)
    saved["software"]["torch_threads"] = 2
    before_torch = json.loads(json.dumps(MACHINE))  # no gpus, gpu_count, torch_threads: unknown
    del before_torch["hardware"]["gpus"], before_torch["hardware"]["gpu_count"]
    assert compare_fingerprints(saved, before_torch) == ([], [])

    no_gpu = json.loads(json.dumps(MACHINE))
    no_gpu["hardware"]["gpu_count"] = 0
    no_gpu["software"]["torch_threads"] = 1
    hardware, software = compare_fingerprints(saved, no_gpu)
    assert hardware == ["GPU count 1 -> 0", "GPUs NVIDIA H100 -> none"]
    assert software == ["torch threads 2 -> 1"]

    gone = json.loads(json.dumps(MACHINE))
    gone["software"]["packages"] = {}
    assert compare_fingerprints(MACHINE, gone)[1] == ["numpy 2.4.6 -> not installed"]


# --- speed score -----------------------------------------------------------------------------


def test_speed_score_uses_the_median_of_the_injected_timer() -> None:
    ticks = iter([0.0, 0.05, 1.0, 1.01, 2.0, 2.03, 3.0, 3.02, 4.0, 4.04])
    result = speed_score(repeat=5, timer=lambda: next(ticks))
    assert result["workload"] == machine.SPEED_WORKLOAD == "v1"
    assert result["reference_s"] == pytest.approx(0.03)
    assert result["score"] == pytest.approx(machine.REFERENCE_CONSTANT / 0.03)
    with pytest.raises(ValueError):
        speed_score(repeat=0)


def test_speed_score_is_positive_and_json_safe() -> None:
    result = speed_score(repeat=1)
    assert result["reference_s"] > 0 and result["score"] > 0
    assert json.loads(json.dumps(result)) == result


# --- storage ---------------------------------------------------------------------------------


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    path = baseline_path(tmp_path / "baselines", machine_slug(MACHINE))
    assert load_baseline(path) is None
    speed = {"workload": "v1", "reference_s": 0.013, "score": 107.0}
    saved = save_entries(path, {"tests/t.py::test_a": entry(2.0)}, MACHINE, speed)
    loaded = load_baseline(path)
    assert isinstance(loaded, Baseline)
    assert loaded == saved
    assert loaded.entries == {"tests/t.py::test_a": entry(2.0)}
    assert loaded.machine == MACHINE and loaded.speed == speed and loaded.updated
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and '\n "entries": {' in text
    data = json.loads(text)
    assert data["format"] == FORMAT_VERSION
    assert list(data) == sorted(data)
    assert leftovers(path.parent) == []


def test_save_merges_and_keeps_entries_of_tests_that_did_not_run(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    speed = {"workload": "v1", "reference_s": 0.01, "score": 140.0}
    save_entries(path, {"a": entry(1.0), "b": entry(2.0)}, MACHINE, speed)
    merged = save_entries(path, {"b": entry(3.0), "c": entry(4.0)}, MACHINE, None)
    assert set(merged.entries) == {"a", "b", "c"}
    assert merged.entries["a"] == entry(1.0) and merged.entries["b"] == entry(3.0)
    assert merged.speed == speed  # kept when this save has no new score
    assert load_baseline(path) == merged


def test_samples_are_bounded_by_even_thinning(tmp_path: Path) -> None:
    raw = entry(1.0)
    raw["samples"] = {"latency_s": [float(i) for i in range(5000)], "rss": [1.0, 2.0]}
    saved = save_entries(tmp_path / "m.json", {"t": raw}, MACHINE, None, max_samples=1000)
    kept = saved.entries["t"]["samples"]["latency_s"]
    assert len(kept) == 1000 and kept[0] == 0.0 and kept[-1] == 4999.0
    assert kept == sorted(set(kept))
    assert saved.entries["t"]["samples"]["rss"] == [1.0, 2.0]
    assert saved.entries["t"]["summary"] == raw["summary"]
    assert len(raw["samples"]["latency_s"]) == 5000  # the caller's dict is not modified
    for n in range(1, 60):
        for m in range(1, 12):
            out = thin_samples(list(range(n)), m)
            assert len(out) == min(n, m) and out == sorted(set(out))


def test_corrupt_file_raises_and_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_entries(path, {"a": entry()}, MACHINE, None)
    truncated = path.read_bytes()[:-40]
    path.write_bytes(truncated)
    with pytest.raises(BaselineError, match=re.escape(str(path)) + ".*not valid JSON"):
        load_baseline(path)
    with pytest.raises(BaselineError, match="move it aside"):
        save_entries(path, {"b": entry()}, MACHINE, None)
    assert path.read_bytes() == truncated
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"format": 2, "machine": {}, "entries": {}}, "format 2.*upgrade pytest-perfguard"),
        ({"format": 0, "machine": {}, "entries": {}}, "format 0"),
        ({"format": "1", "machine": {}, "entries": {}}, "format '1'"),
        ({"machine": {}, "entries": {}}, "no \"format\" key"),
        ([1, 2], "list, not an object"),
        ({"format": 1, "machine": {}, "entries": []}, "malformed \"entries\""),
        ({"format": 1, "machine": {}, "entries": {"a": 3}}, "malformed \"entries\""),
        ({"format": 1, "machine": [], "entries": {}}, "malformed \"machine\""),
    ],
)
def test_unusable_files_raise_and_are_kept(tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(BaselineError, match=message):
        load_baseline(path)
    with pytest.raises(BaselineError):
        save_entries(path, {"a": entry()}, MACHINE, None)
    assert path.read_bytes() == before


def test_read_only_directory_raises_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_entries(path, {"a": entry()}, MACHINE, None)
    before = path.read_bytes()
    tmp_path.chmod(0o555)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("chmod does not block writes here (running as root)")
        with pytest.raises(BaselineError, match="Cannot write baseline file"):
            save_entries(path, {"b": entry()}, MACHINE, None)
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == before


@pytest.mark.parametrize("target", ["open", "mkstemp", "fsync", "replace"])
def test_permission_error_raises_keeps_data_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    path = tmp_path / "m.json"
    save_entries(path, {"a": entry()}, MACHINE, None)
    before = path.read_bytes()

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile if target == "mkstemp" else os, target, deny)
    with pytest.raises(BaselineError, match=r"m\.json \(Permission denied\).*unchanged"):
        save_entries(path, {"b": entry()}, MACHINE, None)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert leftovers(tmp_path) == []
    assert set(load_baseline(path).entries) == {"a"}  # type: ignore[union-attr]


def test_unserializable_entry_raises_before_touching_the_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    save_entries(path, {"a": entry()}, MACHINE, None)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_entries(path, {"b": {"x": object()}}, MACHINE, None)
    with pytest.raises(TypeError):
        save_entries(path, {"b": [1]}, MACHINE, None)  # type: ignore[dict-item]
    assert path.read_bytes() == before and leftovers(tmp_path) == []


def _save_many(path: str, worker: int, rounds: int) -> None:
    for i in range(rounds):
        save_entries(Path(path), {f"w{worker}::test_{i}": entry(float(i))}, MACHINE, None)


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_concurrent_saves_from_two_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_save_many, args=(str(path), w, 20)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    loaded = load_baseline(path)
    assert loaded is not None
    assert set(loaded.entries) == {f"w{w}::test_{i}" for w in range(2) for i in range(20)}
    assert leftovers(tmp_path) == []


# --- git -------------------------------------------------------------------------------------


def test_git_commit_is_none_outside_git_or_without_git(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) is None
    assert git_commit(tmp_path / "does-not-exist") is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_commit(tmp_path) is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_commit_reports_head_and_dirty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{key}_NAME", "t")
        monkeypatch.setenv(f"GIT_{key}_EMAIL", "t@example.com")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=tmp_path, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    assert git_commit(tmp_path) is None  # no commit yet
    (tmp_path / "f.txt").write_text("1")
    git("add", "f.txt")
    git("commit", "-q", "-m", "one")
    head = git("rev-parse", "HEAD")
    assert git_commit(tmp_path) == head
    (tmp_path / "untracked.json").write_text("{}")
    assert git_commit(tmp_path) == head  # a new, uncommitted baseline file is not "dirty"
    (tmp_path / "f.txt").write_text("2")
    assert git_commit(tmp_path) == head + "-dirty"


def test_storage_module_does_not_import_pytest() -> None:
    code = (
        "import sys, pytest_perfguard.baseline; "
        "sys.exit(1 if 'pytest' in sys.modules or '_pytest' in sys.modules else 0)"
    )
    root = Path(bl.__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_the_cpu_vector_instructions_name_the_machine(tmp_path: Path) -> None:
    from pytest_perfguard.machine import _cpu_isa

    cpuinfo = tmp_path / "cpuinfo"
    for flags, level in (("fpu sse2 avx avx2 fma", "avx2"), ("avx2 avx512f avx512_vnni", "avx512vnni"),
                         ("avx2 avx512f amx_int8", "amx"), ("fpu sse2", "base")):
        cpuinfo.write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n")
        assert _cpu_isa(cpuinfo) == level
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm\n")  # aarch64
    assert _cpu_isa(cpuinfo) == "neon"
    assert _cpu_isa(tmp_path / "missing") is None
    vnni = {"hardware": {**MACHINE["hardware"], "cpu_isa": "avx512vnni"}}
    avx2 = {"hardware": {**MACHINE["hardware"], "cpu_isa": "avx2"}}
    assert machine_slug(vnni) == "x86_64-amd-epyc-7b13-avx512vnni-2c-24gib"
    assert machine_slug(avx2) != machine_slug(vnni)  # one host never reads the other's baseline


def test_a_baseline_larger_than_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from pytest_perfguard.baseline import MAX_FILE_BYTES, BaselineError

    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(BaselineError, match="more than the .* a baseline can be"):
        load_baseline(path)
