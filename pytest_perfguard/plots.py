"""The figures of ``perfguard report``, drawn with matplotlib's Agg renderer (no pytest import).

matplotlib is imported inside the functions that draw: the plugin never imports this module, and
``perfguard report`` checks for matplotlib before it draws. Figures are ``matplotlib.figure.Figure``
objects (not pyplot), so no global state, GUI backend or display is involved. Each function takes
plain data (computed by ``html_report``) and returns a ``data:image/png;base64,...`` URI for an
``<img src=...>``, so the page stays one self-contained file.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .units import format_duration, time_scale

__all__ = ["Bar", "Panel", "Scatter", "cross_machine_figure", "cross_machine_png", "distributions_png", "memory_figure",
           "memory_png", "pareto_png", "projection_png"]

WIDTH = 11.0  # inches: at DPI, about the page's content width
DPI = 96
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
BASE_COLOR, NOW_COLOR = "#9DB4D3", "#DD8452"
TIME_TICKS = [10.0 ** e for e in range(-9, 1)] + [10.0, 60.0, 600.0, 3600.0, 36000.0, 86400.0, 864000.0]
FINE_TIME_TICKS = [m * 10.0 ** e for e in range(-9, 3) for m in (1, 2, 5)]
RATIO_TICKS = [0.05, 0.1, 0.2, 0.25, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0]
COARSE_RATIO_TICKS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]  # over wide ranges
MEMORY_TICKS = [2.0 ** e for e in range(0, 50, 5)]  # 1 B, 32 B, 1 KiB, 32 KiB, 1 MiB, 32 MiB, 1 GiB, ...


@dataclass
class Panel:
    """One small multiple: a title and named sample sets (seconds), drawn bottom-up."""

    title: str
    boxes: list[tuple[str, list[float]]]
    per: str = "call"


@dataclass
class Bar:
    """One labelled value of a bar chart, with an optional note drawn at the bar's end."""

    label: str
    value: float
    note: str = ""
    group: str = ""


@dataclass
class Scatter:
    """One accuracy/latency plane: points ``(label, latency s, accuracy, on the front)``."""

    title: str
    points: list[tuple[str, float, float, bool]]


def text(label: str, width: int = 60) -> str:
    """A label matplotlib draws literally (``$`` would start mathtext); long ones keep both ends."""
    if len(label) > width:
        keep = (width - 1) // 2
        label = label[:keep] + "…" + label[-(width - 1 - keep):]
    return label.replace("$", r"\$")


def _figure(height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(WIDTH, max(1.6, height)), dpi=DPI)
    fig.set_layout_engine("constrained")
    return fig


def _data_uri(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _legend(ax: Any, below: bool = False) -> None:
    """The figure's legend outside the axes (above, or below the x label), where it covers no data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.figure.legend(handles, labels, loc="outside lower left" if below else "outside upper left",
                         fontsize=8, ncols=min(3, len(handles)), frameon=False)


def _fixed_ticks(ax: Any, ticks: Sequence[float], lo: float, hi: float, fmt: Any) -> None:
    """Major ticks at the given values inside [lo, hi], labelled by ``fmt``; no minor labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    inside = [t for t in ticks if lo <= t <= hi] or [lo, hi]
    ax.xaxis.set_major_locator(FixedLocator(inside))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: fmt(x)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _time_axis(ax: Any, values: Sequence[float]) -> None:
    """Latency on x: log scale with human ticks across decades, linear within one."""
    lo, hi = min(values), max(values)
    if hi / lo < 8:
        name, scale = time_scale(hi)
        pad = (hi - lo) * 0.25 or hi * 0.1
        ax.set_xlim(lo - pad, hi + pad)
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / scale:.3g} {name}"))
    else:
        ax.set_xscale("log")
        ax.set_xlim(lo / 1.6, hi * 1.6)
        _fixed_ticks(ax, FINE_TIME_TICKS if hi / lo < 300 else TIME_TICKS, lo / 1.6, hi * 1.6, format_duration)


def _boxplot(ax: Any, data: list[list[float]], labels: list[str]) -> Any:
    """Horizontal box plot; the keyword for that changed in matplotlib 3.10."""
    style: dict[str, Any] = {"patch_artist": True, "widths": 0.6, "showfliers": True,
                             "flierprops": {"markersize": 3, "alpha": 0.5}, "medianprops": {"color": "black"}}
    try:
        parts = ax.boxplot(data, orientation="horizontal", **style)
    except TypeError:  # matplotlib < 3.10
        parts = ax.boxplot(data, vert=False, **style)
    ax.set_yticks(range(1, len(labels) + 1))
    ax.set_yticklabels([text(lab, 20) for lab in labels])
    return parts


def distributions_png(panels: Sequence[Panel]) -> str:
    """Small multiples of horizontal box plots (baseline vs now), each in its own time unit."""
    ncols = 1 if len(panels) == 1 else 2
    nrows = math.ceil(len(panels) / ncols)
    fig = _figure((0.4 * max(len(p.boxes) for p in panels) + 1.15) * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels):
        name, scale = time_scale(max(max(s) for _, s in panel.boxes if s))
        parts = _boxplot(ax, [[v / scale for v in s] for _, s in panel.boxes], [lab for lab, _ in panel.boxes])
        for i, patch in enumerate(parts["boxes"]):
            patch.set_facecolor(NOW_COLOR if i == len(panel.boxes) - 1 else BASE_COLOR)
        ax.set_title("\n".join(text(line, 130 // ncols) for line in panel.title.split("\n")),
                     fontsize=8.5, loc="left")
        ax.set_xlabel(f"{name} per {panel.per}", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    return _data_uri(fig)


def pareto_png(planes: Sequence[Scatter]) -> str:
    """Accuracy vs median latency, one plane per test; the front as a step line.

    The step line reads "the best accuracy reachable within this latency budget": it steps up at
    each front point and runs flat until the next one.
    """
    ncols = 1 if len(planes) == 1 else 2
    nrows = math.ceil(len(planes) / ncols)
    fig = _figure(3.4 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, plane in zip(axes, planes):
        _pareto_plane(ax, plane, 130 // ncols)
    for ax in axes[len(planes):]:
        ax.set_visible(False)
    return _data_uri(fig)


def _pareto_plane(ax: Any, plane: Scatter, title_width: int) -> None:
    pts = sorted(plane.points, key=lambda p: p[1])
    _time_axis(ax, [p[1] for p in pts])
    accs = [p[2] for p in pts]
    pad = (max(accs) - min(accs)) * 0.2 or 0.01
    ax.set_ylim(min(accs) - pad, max(accs) + pad)
    off, on = [p for p in pts if not p[3]], [p for p in pts if p[3]]
    ax.scatter([p[1] for p in off], [p[2] for p in off], color="#8C8C8C", s=28, label="dominated")
    ax.scatter([p[1] for p in on], [p[2] for p in on], color=COLORS[0], edgecolor="black", s=50, zorder=3,
               label="Pareto front")
    right = ax.get_xlim()[1]
    xs, ys = [p[1] for p in on] + [right], [p[2] for p in on]
    ax.step(xs, ys + ys[-1:], where="post", color=COLORS[0], alpha=0.7)
    middle = math.sqrt(pts[0][1] * pts[-1][1])
    for i, (label, x, y, _) in enumerate(pts):  # alternate above/below: neighbours rarely collide
        right_half = x > middle and len(pts) > 1  # there the label runs leftwards, inside the axes
        ax.annotate(text(label, 44), (x, y), fontsize=7.5, xytext=(-5 if right_half else 5, 5 if i % 2 == 0 else -12),
                    textcoords="offset points", ha="right" if right_half else "left")
    ax.set_title(text(plane.title, title_width), fontsize=9, loc="left")
    ax.set_xlabel("median latency (lower is better)", fontsize=8)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def _bars(ax: Any, bars: Sequence[Bar], colors: dict[str, str], start: float = 0.0) -> None:
    """Horizontal bars from ``start`` to each value, grouped by ``Bar.group`` (one colour each, in the
    order of ``colors``)."""
    labels = list(dict.fromkeys(b.label for b in bars))
    groups = list(colors)
    height = 0.8 / len(groups)
    for g, group in enumerate(groups):
        mine = [b for b in bars if b.group == group]
        ys = [labels.index(b.label) + (g - (len(groups) - 1) / 2) * height for b in mine]
        ax.barh(ys, [b.value - start for b in mine], left=start, height=height * 0.9, color=colors[group],
                label=group or None)
        for y, b in zip(ys, mine):
            if b.note:
                ax.annotate(text(b.note, 40), (b.value, y), xytext=(3, 0), textcoords="offset points",
                            va="center", fontsize=7)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([text(lab, 60) for lab in labels], fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)  # first label on top


def _colors(bars: Sequence[Bar]) -> dict[str, str]:
    return {g: COLORS[i % len(COLORS)] for i, g in enumerate(dict.fromkeys(b.group for b in bars))}


def _height(rows: int, per_row: float) -> float:
    return 1.2 + rows * per_row


def projection_png(rows: Sequence[tuple[str, dict[int, float]]]) -> str:
    """Total time for N sequential users per test (log scale, human ticks), one marker per N."""
    fig = _figure(_height(len(rows), 0.42))
    ax = fig.subplots()
    users = sorted({n for _, totals in rows for n in totals})
    for y, (_, totals) in enumerate(rows):
        xs = [totals[n] for n in users]
        ax.plot(xs, [y] * len(xs), color="#c8ccd4", linewidth=2, zorder=1)
        for n, x in zip(users, xs):
            ax.annotate(format_duration(x), (x, y), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=7)
    for k, n in enumerate(users):
        ax.scatter([totals[n] for _, totals in rows], range(len(rows)), color=COLORS[k % len(COLORS)],
                   s=36, zorder=3, label=f"{n:,} users")
    everything = [x for _, totals in rows for x in totals.values()]
    ax.set_xscale("log")
    lo, hi = min(everything) / 3, max(everything) * 3
    ax.set_xlim(lo, hi)
    _fixed_ticks(ax, TIME_TICKS, lo, hi, format_duration)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([text(label, 60) for label, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.7)
    ax.set_xlabel("total time = median latency per call x users, served one after another (log scale)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.4)
    _legend(ax)
    return _data_uri(fig)


def memory_png(bars: Sequence[Bar]) -> str:
    return _data_uri(memory_figure(bars))


def memory_figure(bars: Sequence[Bar]) -> Any:
    """Peak RSS growth per test (baseline and now) on a log scale, each bar noting its value and
    mechanism: a few KiB stay visible beside hundreds of MiB (on a linear axis they vanish). The bars
    start at a common floor below the smallest growth; a growth of 0 B or less draws no bar, only its note."""
    labels = {b.label for b in bars}
    groups = {b.group for b in bars}
    fig = _figure(_height(len(labels), 0.25 * len(groups) + 0.1))
    ax = fig.subplots()
    ax.set_xscale("log")
    positive = [b.value for b in bars if b.value > 0] or [1.0]
    floor = 2.0 ** (math.floor(math.log2(min(positive))) - 3)  # a power of two, 8x to 16x below the smallest
    drawn = [Bar(b.label, max(b.value, floor), b.note, b.group) for b in bars]
    _bars(ax, drawn, {g: (NOW_COLOR if g == "now" else BASE_COLOR) for g in sorted(groups)}, start=floor)
    hi = max(positive) * 4  # room for the notes
    ax.set_xlim(floor, hi)
    _fixed_ticks(ax, MEMORY_TICKS, floor, hi, _bytes_tick)
    ax.set_xlabel("peak RSS growth over the measured region (log scale)", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    _legend(ax)
    return fig


def _bytes_tick(x: float) -> str:
    """``32 KiB``: a tick of the memory axis (``units.format_value`` keeps two decimals: ``32.00 KiB``)."""
    for unit, k in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if x >= 2**k:
            return f"{x / 2**k:g} {unit}"
    return f"{x:g} B"


def cross_machine_png(bars: Sequence[Bar], geomeans: dict[str, float], reference: str) -> str:
    return _data_uri(cross_machine_figure(bars, geomeans, reference))


def cross_machine_figure(bars: Sequence[Bar], geomeans: dict[str, float], reference: str) -> Any:
    """Median latency ratio per test vs the reference machine, geometric means dashed. Each bar runs from
    1x (the reference) to its ratio, on a log axis centred on 1x: 2x slower and 2x faster are as long."""
    labels = {b.label for b in bars}
    groups = {b.group for b in bars}
    fig = _figure(_height(len(labels), 0.25 * len(groups) + 0.1) + 0.3 * len(groups))
    ax = fig.subplots()
    colors = _colors(bars)
    ax.set_xscale("log")
    _bars(ax, bars, colors, start=1.0)
    values = [b.value for b in bars] + list(geomeans.values())
    reach = max([abs(math.log(v)) for v in values if v > 0] + [math.log(1.1)]) * 1.4  # room for the notes
    lo, hi = math.exp(-reach), math.exp(reach)
    ax.set_xlim(lo, hi)
    ax.axvline(1.0, color="black", linewidth=1)
    for group, g in geomeans.items():
        ax.axvline(g, color=colors[group], linestyle="--", linewidth=1.5, label=f"geometric mean: {g:.2f}x")
    _fixed_ticks(ax, RATIO_TICKS if hi / lo < 30 else COARSE_RATIO_TICKS, lo, hi, lambda x: f"{x:g}x")
    ax.set_xlabel(f"median latency / median on the reference ({text(reference, 60)})\n"
                  "log scale centred on 1x: < 1x is faster than the reference", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    _legend(ax, below=True)
    return fig
