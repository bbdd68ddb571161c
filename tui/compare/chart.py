"""Several runs in one chart: each run's min/max line, or each group's mean over a band.

Pure: column summaries in (from :mod:`.aggregate`), a :class:`rich.text.Text` out. Lines are
drawn in braille cells (2 x 4 dots per character), so a chart ``width`` characters wide has
``2 * (width - GUTTER)`` data columns (:func:`data_columns`); a group's band is the
background of the cells between its lowest and highest value, with its mean drawn over it.
Markers (a change applied to a run, with its trial's outcome) sit on the run's line at
the change's x. The last line is the x axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text

from ..charts import (
    BRAILLE_BASE,
    GUTTER,
    NONFINITE_MARK,
    _axis,
    _braille_codes,
    _styled_row,
    _transform,
    _with_y_labels,
    value_range,
)
from ..charts import _rows_of as _levels
from ..format import format_number
from ..theme import NONFINITE_STYLE

# Stable run colours (a run keeps its colour whatever is shown) and the dark shade of each
# that a group's band is filled with.
PALETTE = (
    ("#4fc3f7", "#0b3a4a"),
    ("#ffb74d", "#4a3410"),
    ("#81c784", "#173d19"),
    ("#f06292", "#4a1226"),
    ("#ba68c8", "#36163d"),
    ("#fff176", "#47431a"),
    ("#4db6ac", "#0f3a36"),
    ("#e57373", "#4a1616"),
    ("#90a4ae", "#26323a"),
    ("#aed581", "#2c3d17"),
)


def colour(index: int) -> str:
    """The line colour of run (or group) number ``index``."""
    return PALETTE[index % len(PALETTE)][0]


def band_colour(index: int) -> str:
    """The band fill of group number ``index``."""
    return PALETTE[index % len(PALETTE)][1]


def data_columns(width: int) -> int:
    """How many data columns a chart ``width`` characters wide draws (two per character)."""
    return max(0, 2 * (int(width) - GUTTER))


@dataclass(frozen=True, eq=False)
class Line:
    """One run's (or a group mean's) values per data column: drawn from ``lo`` to ``hi``."""

    lo: np.ndarray
    hi: np.ndarray
    color: str
    nonfinite: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Band:
    """A group's spread per data column, filled in ``color`` behind the lines."""

    lo: np.ndarray
    hi: np.ndarray
    color: str


@dataclass(frozen=True)
class Marker:
    """A glyph at data column ``column`` and value ``y`` (a change applied at that x)."""

    column: int
    y: float
    glyph: str
    color: str


def y_limits(lines: Sequence[Line], bands: Sequence[Band], log_scale: bool) -> tuple[float, float]:
    """The transformed (low, high) covering every finite value drawn; padded when flat."""
    parts = [a for line in lines for a in (line.lo, line.hi)] + [a for band in bands for a in (band.lo, band.hi)]
    return _axis(*(value_range(parts, log_scale=log_scale) or (0.0, 1.0)), log_scale)


def _line_cells(line: Line, lo: float, hi: float, height: int, plot_width: int, log_scale: bool) -> np.ndarray:
    """Braille dot codes (height, plot_width) of one line."""
    levels = 4 * height
    count = min(int(line.lo.shape[0]), 2 * plot_width)
    lo_t = _transform(line.lo[:count], log_scale)
    hi_t = _transform(line.hi[:count], log_scale)
    valid = np.isfinite(np.asarray(line.lo[:count], dtype=np.float64)) & np.isfinite(
        np.asarray(line.hi[:count], dtype=np.float64))
    r_lo = _levels(lo_t, lo, hi, levels)
    r_hi = _levels(hi_t, lo, hi, levels)
    # Join each column to the previous one that has data, so a steep change (or a run with
    # fewer points than columns) reads as one line.
    idx = np.flatnonzero(valid)
    if idx.size > 1:
        a, b = idx[:-1], idx[1:]
        prev_lo, prev_hi = r_lo[a], r_hi[a]
        cur_lo, cur_hi = r_lo[b].copy(), r_hi[b].copy()
        gap = b - a
        adjacent = gap == 1
        r_lo[b] = np.where(adjacent & (cur_lo > prev_hi), prev_hi + 1, cur_lo)
        r_hi[b] = np.where(adjacent & (cur_hi < prev_lo), prev_lo - 1, cur_hi)
    r_lo, r_hi = np.minimum(r_lo, r_hi), np.maximum(r_lo, r_hi)
    rows = np.arange(levels)[:, None]
    mask = (rows >= r_lo[None, :]) & (rows <= r_hi[None, :]) & valid[None, :]
    # Sparse points (fewer points than columns): fill the columns between two points.
    if idx.size > 1:
        for a, b in zip(idx[:-1], idx[1:]):
            if b - a > 1:
                for c in range(a + 1, b):
                    f = (c - a) / (b - a)
                    level = int(round(r_hi[a] + (r_lo[b] - r_hi[a]) * f))
                    mask[min(max(level, 0), levels - 1), c] = True
    full = np.zeros((levels, 2 * plot_width), dtype=bool)
    full[:, :count] = mask
    return _braille_codes(full, height, plot_width)


def render_overlay(
    lines: Sequence[Line],
    width: int,
    height: int,
    *,
    bands: Sequence[Band] = (),
    markers: Sequence[Marker] = (),
    x_range: tuple[float, float] = (0.0, 1.0),
    x_label: str = "step",
    log_scale: bool = False,
) -> Text:
    """Draw ``bands`` then ``lines`` (later ones on top) into ``width`` x ``height`` cells.

    Every array has one value per data column (:func:`data_columns` of ``width``). The last
    of the ``height`` rows is the x axis, labelled with ``x_range`` in ``x_label`` units.
    """
    height = max(int(height), 2)
    plot_height = height - 1
    plot_width = int(width) - GUTTER
    if plot_width < 2:
        return Text("\n".join([""] * height), no_wrap=True)
    lo, hi = y_limits(lines, bands, log_scale)
    levels = 4 * plot_height
    background = [[""] * plot_width for _ in range(plot_height)]
    for band in bands:
        count = min(int(band.lo.shape[0]), 2 * plot_width)
        valid = np.isfinite(np.asarray(band.lo[:count], dtype=np.float64)) & np.isfinite(
            np.asarray(band.hi[:count], dtype=np.float64))
        r_lo = _levels(_transform(band.lo[:count], log_scale), lo, hi, levels) // 4
        r_hi = _levels(_transform(band.hi[:count], log_scale), lo, hi, levels) // 4
        for c in np.flatnonzero(valid):
            cell = int(c) // 2
            for level in range(int(r_lo[c]), int(r_hi[c]) + 1):
                background[plot_height - 1 - level][cell] = band.color
    dots = np.zeros((plot_height, plot_width), dtype=np.int64)
    owner = np.full((plot_height, plot_width), -1, dtype=np.int64)
    nonfinite = np.zeros(plot_width, dtype=bool)
    for index, line in enumerate(lines):
        code = _line_cells(line, lo, hi, plot_height, plot_width, log_scale)
        dots |= code
        owner = np.where(code > 0, index, owner)
        if line.nonfinite is not None:
            bad = np.zeros(2 * plot_width, dtype=bool)
            count = min(int(line.nonfinite.shape[0]), 2 * plot_width)
            bad[:count] = np.asarray(line.nonfinite[:count], dtype=bool)
            nonfinite |= bad.reshape(plot_width, 2).any(axis=1)
    grid = [[" "] * plot_width for _ in range(plot_height)]
    styles = [[""] * plot_width for _ in range(plot_height)]
    for r, c in zip(*np.nonzero(dots)):
        grid[r][c] = chr(BRAILLE_BASE + int(dots[r, c]))
        styles[r][c] = lines[int(owner[r, c])].color
    for marker in markers:
        if not math.isfinite(marker.y) or (log_scale and marker.y <= 0):
            continue
        c = int(marker.column) // 2
        if not 0 <= c < plot_width:
            continue
        level = int(_levels(_transform(np.array([marker.y]), log_scale), lo, hi, levels)[0]) // 4
        grid[plot_height - 1 - level][c] = marker.glyph
        styles[plot_height - 1 - level][c] = f"bold {marker.color}"
    for c in np.flatnonzero(nonfinite):
        grid[0][c] = NONFINITE_MARK
        styles[0][c] = NONFINITE_STYLE
    rows = [_row(grid[r], styles[r], background[r]) for r in range(plot_height)]
    out = _with_y_labels(rows, lo, hi, log_scale)
    out.append("\n")
    out.append(x_axis(x_range, x_label, plot_width), style="bright_black")
    return out


def _row(chars: list[str], styles: list[str], background: list[str]) -> Text:
    """One plot row, each cell's style over its band's background."""
    return _styled_row(chars, [(f"{s} on {b}" if s else f"on {b}") if b else s for s, b in zip(styles, background)])


def x_axis(x_range: tuple[float, float], x_label: str, plot_width: int) -> str:
    """The x axis line: the range's ends (and middle) under the plot, with its unit."""
    low, high = x_range
    left = format_number(low)
    right = f"{format_number(high)} {x_label}"
    middle = format_number((low + high) / 2)
    line = [" "] * plot_width
    for i, ch in enumerate(left[:plot_width]):
        line[i] = ch
    start = max(len(left) + 1, plot_width - len(right))
    for i, ch in enumerate(right[: max(0, plot_width - start)]):
        line[start + i] = ch
    mid_at = plot_width // 2 - len(middle) // 2
    if mid_at > len(left) + 1 and mid_at + len(middle) < start - 1:
        for i, ch in enumerate(middle):
            line[mid_at + i] = ch
    return " " * GUTTER + "".join(line)
