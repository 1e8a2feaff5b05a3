"""Fuzzing the budget parser and the baseline loader: only the project's own errors may escape.

The suite runs a bounded number of examples; ``PERFGUARD_FUZZ_EXAMPLES=20000 pytest tests/test_fuzz.py``
runs a long campaign.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pytest_perfguard.baseline import BaselineError, load_baseline  # noqa: E402
from pytest_perfguard.budget import FORMS, BudgetError, parse_budget  # noqa: E402
from pytest_perfguard.model import Check, TestResult  # noqa: E402
from pytest_perfguard.gate import baseline_rows  # noqa: E402

EXAMPLES = int(os.environ.get("PERFGUARD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Budget-like text: numbers, units, signs, percent, comparison operators, and junk around them.
_pieces = st.sampled_from(["1", "0", "-", "+", ".", "e", "E", "999", "1e400", "%", "ms", "us", "µs", "s", "MiB",
                           "KB", "kB", "GB", "/s", "k", ">=", "<=", "==", "<", ">", " ", "nan", "inf", "x"])
_text = st.one_of(st.text(max_size=40), st.lists(_pieces, max_size=12).map("".join),
                  st.integers(1, 20000).map(lambda n: "1" * n + "x"))
_number = st.one_of(st.integers(min_value=-(10**500), max_value=10**500), st.floats(allow_nan=True, allow_infinity=True),
                    st.booleans())
_scalar = st.one_of(_text, _number, st.none())
_value = st.one_of(_scalar, st.dictionaries(st.one_of(_text, st.sampled_from(["p50", "p99", "median", "p0", "p100"])),
                                             _scalar, max_size=4), st.lists(_scalar, max_size=3))
_kwargs = st.dictionaries(st.one_of(st.sampled_from(sorted(FORMS)), _text), _value, max_size=4)


@FUZZ
@given(_kwargs)
def test_the_budget_parser_raises_only_budget_errors(kwargs: dict[str, Any]) -> None:
    try:
        budget = parse_budget(kwargs)
    except BudgetError as exc:
        assert len(str(exc)) < 2000  # the message quotes the value, shortened
        return
    for limit in budget.limits:
        assert limit.threshold == limit.threshold and abs(limit.threshold) != float("inf")


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(10**30), 10**30),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
_json = st.recursive(_json_scalar, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                           st.dictionaries(st.text(max_size=8), inner, max_size=6)),
                     max_leaves=30)
_samples = st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=12),
                     st.lists(st.floats(1e-6, 1.0), min_size=5, max_size=12), _json)
_entry = st.fixed_dictionaries({}, optional={
    "samples": st.one_of(st.fixed_dictionaries({"latency": _samples}), _json),
    "unit": st.one_of(st.sampled_from(["call", "item"]), _json),
    "items": _json, "memory_growth": st.one_of(st.floats(0, 1e9), _json),
    "gpu_memory_growth": _json, "metrics": st.one_of(st.dictionaries(st.sampled_from(["accuracy", "n"]), _json_scalar),
                                                     _json),
    "summary": _json, "budget": _json,
})
_document = st.one_of(
    _json,
    st.fixed_dictionaries({"format": st.one_of(st.just(1), _json),
                           "entries": st.one_of(st.dictionaries(st.sampled_from(["t.py::a", "t.py::b"]), _entry,
                                                                max_size=2), _json)},
                          optional={"machine": _json, "speed": st.one_of(st.fixed_dictionaries({"score": _json}), _json),
                                    "updated": _json}),
)
_raw = st.one_of(_document.map(lambda d: json.dumps(d).encode()),
                 _document.map(lambda d: json.dumps(d)[: len(json.dumps(d)) // 2].encode()), st.binary(max_size=64))

HEAD = [0.01 + 0.0001 * (i % 7) for i in range(20)]


@FUZZ
@given(raw=_raw)
def test_the_baseline_loader_raises_only_baseline_errors_and_the_gate_judges_what_it_loads(
        tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "b.json"
    path.write_bytes(raw)
    try:
        baseline = load_baseline(path)
    except BaselineError as exc:
        assert str(path) in str(exc)
        return
    assert baseline is not None
    result = TestResult.from_json({"nodeid": "t", "rows": [], "metrics": {},
                                   "measurement": {"samples": HEAD, "unit": "call", "memory_growth": 1e6}})
    for nodeid in baseline.entries:
        entry = baseline.entry(nodeid)
        if entry is None:
            assert baseline.problems[nodeid]
            continue
        rows = baseline_rows(result, parse_budget({"memory": "+10%"}), entry, 0.05)
        assert rows and all(isinstance(r, Check) for r in rows)
        assert all(r.verdict != "unchanged" for r in rows if "not judged" in r.message)
