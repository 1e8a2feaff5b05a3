"""Exact instruction counts of a measured region under valgrind's callgrind (no pytest import).

A count is not a clock: the same code on the same binary and inputs executes the same number of
instructions whatever else the machine does, so a 1 % change stands far above the noise (measured:
0.0004 % between processes for a pure-Python loop). ``pytest --perf --perf-instructions`` runs the
session under ``valgrind --tool=callgrind --instr-atstart=no`` (``command``), so nothing is counted
until a measured region starts; around each region this module issues callgrind's client requests
(start instrumentation, zero, dump with a label, stop) and reads the dump (``callgrind_dump``: the
allocator's work at a fixed price per call).

The client requests need no compiler and no patched valgrind: valgrind recognises a fixed sequence
of instructions (``valgrind.h``'s "special instruction preamble", four rotations of ``rdi`` that
cancel out, then ``xchg rbx, rbx``) with ``rax`` pointing at the request and its arguments. Those
few bytes are mapped executable and called through ctypes; run natively they do nothing and return
the default. x86_64 only (the preamble is per architecture).

Limits, by construction: threads are serialised under valgrind, syscalls and sleeps count nothing,
GPU work is invisible, and valgrind emulates no AVX-512 (BLAS and oneDNN take other code paths than
natively). The first count after instrumentation starts is dropped (it counts valgrind's warm-up of
the region: +2 % on a pure-Python loop); ``REPEATS`` counts follow, and counts that disagree by
more than ``SPREAD`` are reported, never averaged away.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import platform
import shutil
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .callgrind_dump import parse_dump

__all__ = ["DIR_ENV", "MISSING", "REPEATS", "SPREAD", "SPREAD_FLOOR", "TOLERANCE", "TUNABLES", "HASH_SEED", "disagree", "Count", "Counter",
           "available", "command", "counter", "environment", "spread"]

DIR_ENV = "PERFGUARD_CALLGRIND_DIR"  # where the session under callgrind writes its dumps
REPEATS = 3  # counts per region after the dropped first one
SPREAD = 0.001  # repeated counts of one call further apart than this (relative) ...
SPREAD_FLOOR = 10_000  # ... and than this many instructions are not one count: allocator free lists and the
# interpreter's caches move a short call's count by a few thousand from one call to the next (sorted() of
# 5,000 ints: 351,439, 351,802, 353,558, the same three in every process)
TOLERANCE = 0.005  # the default tolerance of "instructions vs baseline" (see the README's measurements)
MISSING = ("--perf-instructions counts instructions under valgrind's callgrind, and valgrind is not on PATH: "
           "install valgrind >= 3.19 (Debian/Ubuntu: apt-get install valgrind; Fedora: dnf install valgrind; "
           "conda: conda install -c conda-forge valgrind)")

# valgrind.h, amd64: mov rax, rdi; mov rdx, rsi; the preamble (rol rdi 3, 13, 61, 51); xchg rbx, rbx;
# mov rax, rdx; ret. Called as uint64 request(uint64 *args, uint64 default).
_CODE = bytes.fromhex("4889f8" "4889f2" "48c1c703" "48c1c70d" "48c1c73d" "48c1c733" "4887db" "4889d0" "c3")
_RUNNING_ON_VALGRIND = 0x1001
_BASE = (ord("C") << 24) | (ord("T") << 16)  # VG_USERREQ_TOOL_BASE('C', 'T'): callgrind's requests
_DUMP_AT, _ZERO, _START, _STOP = _BASE + 3, _BASE + 1, _BASE + 4, _BASE + 5


def command(out_dir: Path) -> list[str]:
    """The valgrind command line a session is run under (then the Python interpreter and its args)."""
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--quiet",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p"]


# glibc's memcpy/memset switch to ``rep movsb``/``rep stosb`` above a size, and only where the source and
# destination addresses do not alias within a page; valgrind counts each byte a ``rep`` instruction moves, the
# vector loop one instruction per 32-64 bytes. So a large copy counted 30,000 or 900 instructions by where
# the heap put its buffers, and a json round trip of 28 kB moved 0.5-1.7 % between processes. Above these
# thresholds (never, here) the counted session always takes the vector loop: measured, the same round trips
# then agree across processes to 0.01 % (README, "Instruction counts").
TUNABLES = "glibc.cpu.x86_rep_movsb_threshold=4294967295:glibc.cpu.x86_rep_stosb_threshold=4294967295"


# With string hashing randomised per process, the order of every set and dict of strings that pytest and the
# plugins build differs, and with it everything allocated before a region: Python's small-object allocator
# then hands the region's objects out from other pools, and a count moved with it (a pure-Python loop:
# 14.92 M or 15.81 M instructions; sorting floats 0.23 %). With one seed, the same four processes counted
# 0.00 % and 0.05 % apart (README, "Instruction counts").
HASH_SEED = "0"


def environment(env: Mapping[str, str], out_dir: Path) -> dict[str, str]:
    """The environment of a session under callgrind: ``env`` with the dump folder (``DIR_ENV``),
    glibc's tunables set so that copies count the same wherever their buffers lie (``TUNABLES``; any
    the user set are kept, after ours so that theirs win), and one string-hash seed (``HASH_SEED``,
    unless the user set ``PYTHONHASHSEED``)."""
    tunables = ":".join(t for t in (TUNABLES, env.get("GLIBC_TUNABLES", "")) if t)
    return {"PYTHONHASHSEED": HASH_SEED, **env, DIR_ENV: str(out_dir), "GLIBC_TUNABLES": tunables}


def available() -> bool:
    return shutil.which("valgrind") is not None


@dataclass(frozen=True)
class Count:
    """One region's instructions: per call (or per item), and each repeat's count of one call."""

    per: float
    counts: tuple[int, ...]

    @property
    def spread(self) -> float:
        return spread(self.counts)


def spread(counts: Sequence[int]) -> float:
    """(largest - smallest) / smallest of repeated counts of one region."""
    return (max(counts) - min(counts)) / min(counts) if counts and min(counts) > 0 else 0.0


def disagree(counts: Sequence[int]) -> bool:
    """Repeated counts of one call that are not one count (beyond ``SPREAD`` and ``SPREAD_FLOOR``)."""
    return bool(counts) and max(counts) - min(counts) > max(SPREAD * min(counts), SPREAD_FLOOR)


class Counter:
    """Callgrind's client requests, issued from a few mapped bytes (see the module docstring)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_CODE)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self._call = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)(address)
        self._dumps = 0

    def request(self, code: int, arg: int = 0) -> int:
        args = (ctypes.c_uint64 * 6)(code, arg, 0, 0, 0, 0)
        return int(self._call(ctypes.addressof(args), 0))

    @property
    def running(self) -> bool:
        return self.request(_RUNNING_ON_VALGRIND) > 0

    def _label(self) -> tuple[str, Any]:
        """A new dump label, and its C string for the dump request."""
        self._dumps += 1
        label = f"perfguard-{os.getpid()}-{self._dumps}"
        return label, ctypes.create_string_buffer(label.encode())

    def _read(self, labels: list[str]) -> list[int]:
        """The counts of the dumps with these labels (their files removed)."""
        found: dict[str, int] = {}
        for path in self.out_dir.glob(f"callgrind.out.{os.getpid()}.*"):
            got = parse_dump(path.read_text(errors="replace"))
            if got is not None and got[0] in labels:
                found[got[0]] = got[1]
                path.unlink()
        missing = [label for label in labels if label not in found]
        if missing:
            raise RuntimeError(f"callgrind wrote no dump labelled {missing[0]} in {self.out_dir}")
        return [found[label] for label in labels]

    def count(self, fn: Callable[[], Any], items: int | None = None, repeats: int = REPEATS) -> Count:
        """Instructions of one call of ``fn`` (per item with ``items``): ``repeats`` counts after a dropped
        one. The counters are zeroed right before each call, and the dumps are read only once
        instrumentation has stopped, so nothing but the call is counted."""
        labels = []
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()  # as the timed rounds: a collection would count another test's garbage
        self.request(_START)
        try:
            for _ in range(1 + repeats):  # the first: valgrind's warm-up of newly instrumented code, dropped
                label, buf = self._label()  # made before zeroing: the label's length (the pid's digits) is not counted
                self.request(_ZERO)
                fn()
                self.request(_DUMP_AT, ctypes.addressof(buf))
                labels.append(label)
        finally:
            self.request(_STOP)
            if gc_was_enabled:
                gc.enable()
        counts = self._read(labels[1:])
        self._read(labels[:1])
        return Count(statistics.median(counts) / (items or 1), tuple(counts))


def counter() -> Counter | None:
    """The counter of a session under callgrind (``DIR_ENV`` set and valgrind running us), else None."""
    out_dir = os.environ.get(DIR_ENV)
    if not out_dir or platform.machine() not in ("x86_64", "AMD64"):
        return None
    c = Counter(Path(out_dir))
    return c if c.running else None
