"""From the runs and what the user chose (channel, x axis, zoom, grouping) to the chart's text
and its legend. Pure: numpy and Rich only, tested directly.

Without grouping every run is its own min/max line in its own colour. Grouped, each group is
its mean line over a band from the lowest to the highest value its runs reached in each
column (:func:`octa_tui.tui.compare.aggregate.combine`). Changes applied to a run are markers
on that run's curve at the change's x, their glyph the fix trial's outcome
(:data:`OUTCOME_GLYPHS`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.text import Text

from ..format import format_number
from .aggregate import Columns, GroupColumns, bucket, column_of, combine
from .chart import Band, Line, Marker, band_colour, colour, data_columns, render_overlay

STEP_WINDOWS = (None, 10_000, 1_000, 100)  # steps shown ending at the newest, as the monitor's zoom
FRACTION_WINDOWS = (None, 0.25, 0.0625, 0.015625)  # of the x range, for epoch and time axes
OUTCOME_GLYPHS = {"helped": "▲", "no effect": "●", "hurt": "▼", "pending": "◆", "": "◇"}


@dataclass(frozen=True, eq=False)
class Curve:
    """One run's points for the chosen channel and where its changes were applied."""

    number: int
    label: str
    x: np.ndarray
    y: np.ndarray
    markers: tuple[tuple[float, str], ...] = ()  # (x, trial outcome)


@dataclass(frozen=True)
class LegendEntry:
    """A line of the chart: its colour, its name and its newest value."""

    label: str
    color: str
    value: float
    runs: int = 1


@dataclass(frozen=True, eq=False)
class ChartView:
    """What the chart widget shows."""

    text: Text
    legend: tuple[LegendEntry, ...]
    x_range: tuple[float, float] | None
    columns: dict[str, Columns] = field(default_factory=dict)  # per run label
    groups: dict[str, GroupColumns] = field(default_factory=dict)  # per group label, when grouped


def zoom_range(extent: tuple[float, float], mode: str, zoom: int) -> tuple[float, float]:
    """The x range shown at zoom level ``zoom`` (0: everything), ending at the newest x."""
    lo, hi = extent
    if mode == "step":
        window = STEP_WINDOWS[zoom % len(STEP_WINDOWS)]
        return (lo, hi) if window is None else (max(lo, hi - window), hi)
    fraction = FRACTION_WINDOWS[zoom % len(FRACTION_WINDOWS)]
    return (lo, hi) if fraction is None else (max(lo, hi - (hi - lo) * fraction), hi)


def zoom_name(mode: str, zoom: int) -> str:
    """``all``, ``last 1000 steps`` or ``last 25%``."""
    if mode == "step":
        window = STEP_WINDOWS[zoom % len(STEP_WINDOWS)]
        return "all" if window is None else f"last {window} steps"
    fraction = FRACTION_WINDOWS[zoom % len(FRACTION_WINDOWS)]
    return "all" if fraction is None else f"last {fraction:.1%}".replace(".0%", "%")


def _extent(curves: Sequence[Curve]) -> tuple[float, float] | None:
    lows, highs = [], []
    for curve in curves:
        x = curve.x
        if x.size == 0:
            continue
        # Step, epoch and time axes grow with the row, so the ends are the first and last x.
        first, last = float(x[0]), float(x[-1])
        if not (math.isfinite(first) and math.isfinite(last)) or last < first:
            finite = x[np.isfinite(x)]
            if not finite.size:
                continue
            first, last = float(finite.min()), float(finite.max())
        lows.append(first)
        highs.append(last)
    return (min(lows), max(highs)) if lows else None


def _window(curve: Curve, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """The rows of ``curve`` whose x lies in [lo, hi] (a slice when x is sorted)."""
    x, y = curve.x, curve.y
    if x.size and x[0] <= x[-1]:
        a = int(np.searchsorted(x, lo, side="left"))
        b = int(np.searchsorted(x, hi, side="right"))
        return x[a:b], y[a:b]
    keep = (x >= lo) & (x <= hi)
    return x[keep], y[keep]


def _latest(y: np.ndarray) -> float:
    tail = np.asarray(y[-50:], dtype=np.float64)
    finite = tail[np.isfinite(tail)]
    return float(finite[-1]) if finite.size else math.nan


def legend_of(curves: Sequence[Curve], groups: dict[str, list[int]] | None = None,
              colours: dict[int, int] | None = None) -> tuple[LegendEntry, ...]:
    """The legend: each run (or each group, with its mean of the runs' newest values)."""
    colours = colours or {c.number: c.number - 1 for c in curves}
    if groups:
        out = []
        for g, (label, members) in enumerate(groups.items()):
            latest = [_latest(curves[i].y) for i in members if i < len(curves)]
            finite = [v for v in latest if math.isfinite(v)]
            out.append(LegendEntry(label, colour(g), float(np.mean(finite)) if finite else math.nan, runs=len(members)))
        return tuple(out)
    return tuple(LegendEntry(f"#{c.number} {c.label}", colour(colours.get(c.number, i)), _latest(c.y))
                 for i, c in enumerate(curves))


def build_chart(
    curves: Sequence[Curve],
    width: int,
    height: int,
    *,
    mode: str = "step",
    zoom: int = 0,
    log_scale: bool = False,
    groups: dict[str, list[int]] | None = None,
    colours: dict[int, int] | None = None,
) -> ChartView:
    """The chart of ``curves`` in ``width`` x ``height`` cells.

    ``groups`` maps a group label to indices into ``curves``; without it each run is drawn
    on its own. ``colours`` maps a run number to its palette index (stable: a run keeps its
    colour whatever else is shown); by default its number.
    """
    colours = colours or {c.number: c.number - 1 for c in curves}
    extent = _extent(curves)
    columns = data_columns(width)
    if extent is None or columns < 2:
        empty = Text("no data for this channel yet" if extent is None else "", style="bright_black")
        return ChartView(empty, (), None)
    x_lo, x_hi = zoom_range(extent, mode, zoom)
    per_run: dict[int, Columns] = {}
    windows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i, curve in enumerate(curves):
        wx, wy = _window(curve, x_lo, x_hi)
        windows[i] = (wx, wy)
        per_run[i] = bucket(wx, wy, x_lo, x_hi, columns)
    lines: list[Line] = []
    bands: list[Band] = []
    legend = legend_of(curves, groups, colours)
    combined: dict[str, GroupColumns] = {}
    if groups:
        for g, (label, members) in enumerate(groups.items()):
            present = [per_run[i] for i in members if i in per_run]
            if not present:
                continue
            group = combined[label] = combine(present)
            bands.append(Band(group.lo, group.hi, band_colour(g)))
            lines.append(Line(group.mean, group.mean, colour(g), group.nonfinite))
    else:
        for i, curve in enumerate(curves):
            c = per_run[i]
            lines.append(Line(c.lo, c.hi, colour(colours.get(curve.number, i)), c.nonfinite))
    markers: list[Marker] = []
    for i, curve in enumerate(curves):
        color = colour(colours.get(curve.number, i))
        if groups:
            g = next((k for k, members in enumerate(groups.values()) if i in members), 0)
            color = colour(g)
        for mx, outcome in curve.markers:
            col = int(column_of(np.array([mx]), x_lo, x_hi, columns)[0])
            if col < 0:
                continue
            wx, wy = windows[i]
            j = int(np.searchsorted(wx, mx, side="left")) if wx.size else -1
            y = float(wy[min(max(j, 0), wx.size - 1)]) if wx.size else math.nan
            markers.append(Marker(col, y, OUTCOME_GLYPHS.get(outcome, "◇"), color))
    text = render_overlay(lines, width, height, bands=bands, markers=markers, x_range=(x_lo, x_hi),
                          x_label={"step": "steps", "epoch": "epochs", "time": "s"}.get(mode, mode),
                          log_scale=log_scale)
    return ChartView(text, tuple(legend), (x_lo, x_hi), {curves[i].label: c for i, c in per_run.items()}, combined)


def render_legend(entries: Sequence[LegendEntry], width: int) -> Text:
    """``■ #1 lr-1e-3 0.603  ■ #2 ...``, cut to ``width`` characters per line, wrapping."""
    out = Text(no_wrap=False, overflow="fold")
    for i, entry in enumerate(entries):
        if i:
            out.append("  ")
        out.append("■ ", style=entry.color)
        label = entry.label if entry.runs == 1 else f"{entry.label} ({entry.runs} runs, mean)"
        out.append(label)
        out.append(f" {format_number(entry.value)}", style="bold")
    return out
