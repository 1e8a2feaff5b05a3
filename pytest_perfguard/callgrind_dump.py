"""One callgrind dump read into one count, with the memory allocator's work at a fixed price per call.

What ``malloc`` and ``free`` execute depends on the heap's history, not on the code that calls them:
whether a pymalloc pool is about to fill or empty, which glibc bin has a chunk. That history is
everything the process did before the region (the tests that ran, the baseline file it read, the
environment it got), so the same loop counted 14.92 M, 15.16 M or 15.60 M instructions in three
pytest processes, the whole difference inside ``_PyObject_Malloc`` and ``_PyObject_Free`` (their
calls were the same: 59,612 and 59,611). So a call from outside the allocator into it (``ALLOCATOR``)
counts ``ALLOCATOR_PRICE`` instructions instead of what it executed: a change that allocates more
still counts more, and a heap in another state counts the same. Measured: the processes that
counted 15.16 M and 15.60 M above then counted 14,564,093 each (README, "Instruction counts").

The format: https://valgrind.org/docs/manual/cl-format.html. Names may be compressed (``fn=(12) name``
the first time, ``fn=(12)`` after); the cost line after ``calls=`` is the inclusive cost of those calls.
"""

from __future__ import annotations

import re

__all__ = ["ALLOCATOR", "ALLOCATOR_PRICE", "parse_dump"]

# CPython's allocator API (the public functions and the default allocators behind them: ``_PyObject_Malloc``
# itself calls ``PyMem_RawMalloc`` above 512 bytes) and glibc's entry points; what they call (``_int_malloc``,
# ``mmap``) is inside their inclusive cost
ALLOCATOR = frozenset({
    *(f"{api}{op}" for api in ("PyObject_", "PyMem_", "PyMem_Raw") for op in ("Malloc", "Calloc", "Realloc", "Free")),
    "_PyObject_Malloc", "_PyObject_Calloc", "_PyObject_Realloc", "_PyObject_Free",
    "_PyMem_RawMalloc", "_PyMem_RawCalloc", "_PyMem_RawRealloc", "_PyMem_RawFree",
    "malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "memalign",
})
# about what pymalloc's fast paths execute on CPython 3.11, x86_64 (measured: 21 a malloc, 40 a free, and
# a few more in the public wrapper)
ALLOCATOR_PRICE = 30

_NAME = re.compile(r"\((\d+)\)(?: (.*))?$")
_RECURSION = re.compile(r"'\d+$")  # callgrind's suffix for a recursion level: free'2
_STUB = re.compile(r"0x[0-9a-f]+$")  # code without a symbol: a PLT stub (``malloc@plt``) that jumps on


def parse_dump(text: str) -> tuple[str, int] | None:
    """(the client request's label, the count) of one callgrind dump, or None: the count is the
    ``totals:`` line with every call into ``ALLOCATOR`` from outside it at ``ALLOCATOR_PRICE``."""
    label, total = None, None
    names: dict[str, str] = {}
    caller = callee = ""
    calls: int | None = None
    edges: list[tuple[str, str, float, float]] = []  # caller, callee, calls, their inclusive cost
    for line in text.splitlines():
        if line.startswith(("fn=", "cfn=")):
            kind, _, name = line.partition("=")
            if m := _NAME.match(name):
                name = names.setdefault(m.group(1), m.group(2) or "")
            name = _RECURSION.sub("", name)
            caller, callee = (name, callee) if kind == "fn" else (caller, name)
        elif line.startswith("calls="):
            calls = int(line[6:].split()[0])
        elif calls is not None and line[:1] in "0123456789+-*":
            edges.append((caller, callee, calls, int(line.split()[-1])))
            calls = None
        elif line.startswith("desc: Trigger: Client Request: "):
            label = line.split(": ", 3)[3]
        elif line.startswith("totals:"):
            total = int(line.split()[1])
    if label is None or total is None:
        return None
    priced = sum(n * ALLOCATOR_PRICE - cost for a, b, n, cost in _through_stubs(edges)
                 if b in ALLOCATOR and a not in ALLOCATOR)
    return label, total + round(priced)


def _through_stubs(edges: list[tuple[str, str, float, float]]) -> list[tuple[str, str, float, float]]:
    """The call edges with each stub's calls handed to its callers, in proportion to their calls into it:
    ``_PyMem_RawMalloc`` calls ``malloc`` through a stub, and that call is inside the allocator."""
    for stub in {a for a, b, _, _ in edges if b in ALLOCATOR and _STUB.match(a)}:
        into = [(a, n) for a, b, n, _ in edges if b == stub and a != stub]
        ways = sum(n for _, n in into)
        if not ways:
            continue
        out = [(b, n, cost) for a, b, n, cost in edges if a == stub and b != stub]
        edges = [e for e in edges if stub not in (e[0], e[1])]
        edges += [(a, b, n * share / ways, cost * share / ways) for a, share in into for b, n, cost in out]
    return edges
