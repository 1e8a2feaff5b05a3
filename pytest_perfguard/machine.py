"""Machine fingerprint and reference speed score (no pytest import).

The fingerprint keys a baseline file: ``{"hardware": {...}, "software": {...}}``.
Hardware decides which file a run reads and writes (see :func:`machine_slug`);
software differences are only shown next to the comparison.

Never recorded: the hostname and the current clock frequency. CI runners change
both between runs of the same machine type, and tools that keyed on them (asv,
pytest-benchmark) told their users "different machine" when it was not.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import psutil

__all__ = [
    "REFERENCE_CONSTANT",
    "SPEED_WORKLOAD",
    "compare_fingerprints",
    "machine_fingerprint",
    "machine_slug",
    "speed_score",
    "torch_threads",
]

# Packages whose versions change timings; recorded when installed (never imported).
# Each name maps to the distributions that provide it.
_PACKAGES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "torch": ("torch",),
}

_LABELS = {
    "arch": "architecture",
    "cpu_model": "CPU model",
    "cpu_isa": "CPU vector instructions",
    "cpu_physical": "physical cores",
    "cpu_logical": "logical cores",
    "cpu_affinity": "CPUs available to the process",
    "memory_gib": "memory GiB",
    "gpus": "GPUs",
    "gpu_count": "GPU count",
    "os": "OS",
    "python": "Python",
    "torch_threads": "torch threads",
}


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return " ".join(platform.processor().split()) or "unknown"


# The vector instructions that pick different kernels in numpy, torch and onnxruntime, best first:
# one CPU model name (a VM's "AMD EPYC") covers generations with and without them, and a baseline
# taken with AVX-512 VNNI int8 kernels says nothing about an AVX2-only host (measured: 4-6x).
_ISA_LEVELS = (("amx", ("amx_int8",)), ("avx512vnni", ("avx512_vnni",)), ("avxvnni", ("avx_vnni",)),
               ("avx512", ("avx512f",)), ("avx2", ("avx2",)), ("neon", ("asimd", "neon")))


def _cpu_isa(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The best level of ``_ISA_LEVELS`` in the CPU's flags; None where /proc/cpuinfo cannot tell."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = {flag for line in text.splitlines() if line.split(":", 1)[0].strip() in ("flags", "Features")
             for flag in line.partition(":")[2].split()}
    if not flags:
        return None
    return next((level for level, names in _ISA_LEVELS if flags & set(names)), "base")


def _cpu_affinity(logical: int | None) -> int | None:
    getaffinity = getattr(os, "sched_getaffinity", None)
    if getaffinity is None:
        return logical
    try:
        return len(getaffinity(0))
    except OSError:
        return logical


def _gpus() -> list[str] | None:
    """GPU names as torch sees them; None (unknown) until the process imports torch (never import it here)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return []
        return [str(torch.cuda.get_device_name(i)) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken CUDA setup must not break fingerprinting
        return []


def torch_threads() -> int | None:
    """torch's intra-op thread count, only when the process has already imported torch (None otherwise:
    never imported here)."""
    torch = sys.modules.get("torch")
    try:
        return int(torch.get_num_threads()) if torch is not None else None
    except Exception:
        return None


def _package_versions() -> dict[str, str]:
    versions: dict[str, str] = {}
    for name, dists in _PACKAGES.items():
        for dist in dists:
            try:
                versions[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


def machine_fingerprint(threads: int | None = None) -> dict[str, Any]:
    """Return ``{"hardware": {...}, "software": {...}}`` for this process on this machine.

    ``threads`` is the torch intra-op thread count the measurements ran with (``--perf-threads``);
    when not given it is read from torch if the process has imported torch by then. ``gpus`` (and
    ``gpu_count``) are left out until then: unknown, which is not the same as none.
    """
    logical = psutil.cpu_count(logical=True)
    gpus = _gpus()
    hardware: dict[str, Any] = {
        "arch": platform.machine() or "unknown",
        "cpu_model": _cpu_model(),
        "cpu_isa": _cpu_isa(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_logical": logical,
        "cpu_affinity": _cpu_affinity(logical),
        "memory_gib": round(psutil.virtual_memory().total / 2**30),
    }
    if gpus is not None:
        hardware.update(gpus=gpus, gpu_count=len(gpus))
    software: dict[str, Any] = {
        "os": platform.system() or "unknown",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "packages": _package_versions(),
    }
    if threads is None:
        threads = torch_threads()
    if threads is not None:
        software["torch_threads"] = int(threads)
    return {"hardware": hardware, "software": software}


def _slugify(text: str, limit: int = 40) -> str:
    text = text.lower()
    text = re.sub(r"\((r|tm|c)\)", " ", text)
    text = re.sub(r"\b(cpu|processor)\b|@", " ", text)
    text = re.sub(r"[^a-z0-9._]+", "-", text).strip("-._")
    return text[:limit].rstrip("-.") or "unknown"


def machine_slug(fp: dict[str, Any]) -> str:
    """A readable, filesystem-safe name for the hardware in ``fp`` (software is ignored).

    e.g. ``x86_64-amd-epyc-7b13-avx2-2c-24gib``, ``...-1cpu-affinity``, ``...-1x-nvidia-h100``.
    """
    hw = fp.get("hardware", {}) if isinstance(fp, dict) else {}
    logical, physical = hw.get("cpu_logical"), hw.get("cpu_physical")
    affinity = hw.get("cpu_affinity")
    if logical is None:
        cores = "unknown-cores"
    elif physical in (None, logical):
        cores = f"{logical}c"
    else:
        cores = f"{physical}c{logical}t"
    parts = [
        _slugify(str(hw.get("arch", "unknown")), 16),
        _slugify(str(hw.get("cpu_model", "unknown"))),
        *([_slugify(str(hw["cpu_isa"]), 16)] if hw.get("cpu_isa") else []),
        cores,
        f"{hw.get('memory_gib', 'unknown')}gib",
    ]
    if isinstance(affinity, int) and isinstance(logical, int) and affinity < logical:
        parts.append(f"{affinity}cpu-affinity")
    counts: dict[str, int] = {}
    for name in hw.get("gpus") or []:
        counts[str(name)] = counts.get(str(name), 0) + 1
    for name in sorted(counts):
        parts.append(f"{counts[name]}x-{_slugify(name, 32)}")
    return "-".join(parts)


def _show(value: Any) -> str:
    if value is None:
        return "unknown"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


def _diff(old: dict[str, Any], new: dict[str, Any], absent: str) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, absent), new.get(key, absent)
        if a != b:
            a_s = absent if key not in old else _show(a)
            b_s = absent if key not in new else _show(b)
            out.append(f"{_LABELS.get(key, key)} {a_s} -> {b_s}")
    return out


def _part(fp: Any, name: str) -> dict[str, Any]:
    part = fp.get(name) if isinstance(fp, dict) else None
    return part if isinstance(part, dict) else {}


def _known(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in old.items() if key in new}


def compare_fingerprints(saved: dict[str, Any], current: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(hardware differences, software differences) as lines like ``numpy 2.4.6 -> 2.5.0``.

    A field ``current`` leaves out is one it could not know (GPUs and torch threads before torch
    is imported), not a difference. A package it lists as absent is not installed.
    """
    old_hw, new_hw = _part(saved, "hardware"), _part(current, "hardware")
    hardware = _diff(_known(old_hw, new_hw), new_hw, "absent")
    old_sw, new_sw = dict(_part(saved, "software")), dict(_part(current, "software"))
    old_pk, new_pk = old_sw.pop("packages", {}), new_sw.pop("packages", {})
    software = _diff(_known(old_sw, new_sw), new_sw, "unset")
    software += _diff(
        old_pk if isinstance(old_pk, dict) else {},
        new_pk if isinstance(new_pk, dict) else {},
        "not installed",
    )
    return hardware, software


# Speed score. Bump SPEED_WORKLOAD whenever _reference_workload changes: scores of
# different workload versions are never compared.
SPEED_WORKLOAD = "v1"
# Median seconds of one v1 workload on the reference machine (2-core AMD EPYC VM,
# Python 3.11, numpy 2.4): that machine scores about 100.
REFERENCE_CONSTANT = 1.4
# Orthogonal, so repeated products keep their scale (no overflow, no slow denormals).
_MATRIX = np.linalg.qr(np.random.default_rng(20240601).standard_normal((48, 48)))[0]
_TO_SORT = np.random.default_rng(20240602).standard_normal(80_000)


def _reference_workload() -> float:
    acc = 0
    for i in range(150_000):  # interpreter speed
        acc += (i * i) % 7
    m = _MATRIX
    for _ in range(300):  # BLAS speed; 48x48 stays single-threaded in OpenBLAS
        m = m @ _MATRIX
    s = np.sort(_TO_SORT)  # memory / branchy numpy speed
    return float(acc) + float(m[0, 0]) + float(s[0])


def speed_score(repeat: int = 5, timer: Callable[[], float] = time.perf_counter) -> dict[str, Any]:
    """Time a fixed reference workload ``repeat`` times; a higher ``score`` is a faster machine."""
    if repeat < 1:
        raise ValueError(f"speed_score needs repeat >= 1, got {repeat}")
    _reference_workload()  # warm-up, untimed
    times = []
    for _ in range(repeat):
        start = timer()
        _reference_workload()
        times.append(timer() - start)
    median = statistics.median(times)
    return {
        "workload": SPEED_WORKLOAD,
        "repeat": repeat,
        "reference_s": median,
        "score": REFERENCE_CONSTANT / max(median, 1e-9),
    }
