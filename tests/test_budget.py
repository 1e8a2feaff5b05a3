"""The unit parser and budget forms, exhaustively (no pytest plugin involved)."""

from __future__ import annotations

import pytest

from pytest_perfguard.budget import (
    BudgetError,
    parse_budget,
    parse_duration,
    parse_ratio,
    parse_size,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15ms", 0.015), ("800us", 800e-6), ("800µs", 800e-6), ("800μs", 800e-6), ("250ns", 250e-9),
        ("2s", 2.0), ("1.5 s", 1.5), ("0.5min", 30.0), (".5ms", 0.0005), ("1e-3s", 1e-3),
        (1.5, 1.5), (2, 2.0), (" 3 ms ", 0.003),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds, rel=1e-12)


@pytest.mark.parametrize("text", ["15", "15 mss", "ms", "-1ms", "0ms", 0, -2, "1.5h", "fast", None, [], True, "1,5ms"])
def test_bad_durations(text):
    with pytest.raises(BudgetError, match="latency="):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "nbytes"),
    [
        ("512MiB", 512 * 2**20), ("1.5GB", 1.5e9), ("1GiB", 2**30), ("1GB", 10**9), ("10kB", 10_000),
        ("10KiB", 10_240), ("3TB", 3e12), ("1TiB", 2**40), ("100B", 100), ("2 MB", 2e6), (1048576, 1048576),
        (0, 0),
    ],
)
def test_sizes_follow_si_and_iec_exactly(text, nbytes):
    assert parse_size(text) == nbytes


@pytest.mark.parametrize(
    ("text", "hint"),
    [("10KB", "kB .1000 B. or KiB"), ("10M", "MB or MiB"), ("10mb", "MB or MiB"), ("5Mb", "bits"),
     ("10", "unit is required"), ("10 parsecs", "unknown size unit"), ("-1MiB", "memory="), ("big", "accepted forms")],
)
def test_bad_sizes_say_why(text, hint):
    with pytest.raises(BudgetError, match=hint):
        parse_size(text)


@pytest.mark.parametrize(("text", "frac"), [("5%", 0.05), ("0.5 %", 0.005), (0.05, 0.05), (0, 0.0)])
def test_ratios(text, frac):
    assert parse_ratio(text) == pytest.approx(frac)


@pytest.mark.parametrize("text", ["5", "-5%", "five", None, 11])
def test_bad_ratios(text):
    with pytest.raises(BudgetError, match="tolerance="):
        parse_ratio(text)


def test_latency_forms():
    b = parse_budget({"latency": "15ms"})
    (lim,) = b.limits
    assert (lim.metric, lim.stat, lim.op, lim.threshold, lim.relative) == ("latency", "p50", "<=", 0.015, False)
    b = parse_budget({"latency": {"p50": "10ms", "p99": "40ms", "median": 0.02, "mean": "1ms", "max": "1s", "p99.9": "2s"}})
    assert [(lim.stat, lim.threshold) for lim in b.limits] == [
        ("p50", 0.01), ("p99", 0.04), ("p50", 0.02), ("mean", 0.001), ("max", 1.0), ("p99.9", 2.0)]
    assert b.percentiles == [50.0, 99.0, 50.0, 99.9]
    (rel,) = parse_budget({"latency": "+10%"}).limits
    assert rel.relative and rel.threshold == pytest.approx(0.10)


@pytest.mark.parametrize(
    ("kwargs", "hint"),
    [
        ({"latency": "-10%"}, "ceiling"),
        ({"latency": {"p101": "1ms"}}, "unknown statistic"),
        ({"latency": {"p0": "1ms"}}, "between p0 and p100"),
        ({"latency": {}}, "empty dict"),
        ({"latency": {"p99": "soon"}}, "latency="),
        ({"memory": "-20%"}, "ceiling"),
        ({"accuracy": 1.5}, "0..1"),
        ({"accuracy": "+1%"}, "largest drop"),
        ({"accuracy": "high"}, "accuracy="),
        ({"throughput": "+5%"}, "largest drop"),
        ({"throughput": "fast/s"}, "throughput="),
        ({"throughput": 0}, "positive"),
        ({"metrics": {"final_count": "=100"}}, "condition"),
        ({"metrics": {"accuracy": 0.9}}, "own kwarg"),
        ({"metrics": {"not a name": 1}}, "identifier"),
        ({"metrics": []}, "non-empty dict"),
        ({"speed": "fast"}, "unknown keyword 'speed'"),
        ({"gpu_memory": "1 GB"}, None),
    ],
)
def test_malformed_budgets_name_kwarg_value_and_forms(kwargs, hint):
    if hint is None:
        parse_budget(kwargs)  # valid control case
        return
    with pytest.raises(BudgetError, match=hint) as info:
        parse_budget(kwargs)
    message = str(info.value)
    assert "accepted forms" in message or "accepts" in message


def test_other_forms():
    b = parse_budget({"memory": "512MiB", "gpu_memory": "+20%", "accuracy": 0.98, "throughput": "1.5k/s",
                      "metrics": {"final_count": "==100000", "size": "<=2e6", "recall": 0.5, "drift": "+1%"},
                      "tolerance": "3%"})
    got = {(lim.metric, lim.op, lim.threshold, lim.relative) for lim in b.limits}
    assert got == {
        ("memory", "<=", 512 * 2**20, False), ("gpu_memory", "<=", 0.2, True), ("accuracy", ">=", 0.98, False),
        ("throughput", ">=", 1500.0, False), ("final_count", "==", 100000.0, False), ("size", "<=", 2e6, False),
        ("recall", ">=", 0.5, False), ("drift", "<=", 0.01, True),
    }
    assert b.tolerance == pytest.approx(0.03)
    (acc,) = parse_budget({"accuracy": "-0.5%"}).limits
    assert acc.relative and acc.op == ">=" and acc.threshold == pytest.approx(-0.005)
    (pct,) = parse_budget({"accuracy": "98%"}).limits
    assert pct.threshold == pytest.approx(0.98) and not pct.relative
    assert parse_budget({"latency": None}).limits == ()
