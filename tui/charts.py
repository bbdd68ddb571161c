"""Charts and sparklines drawn as Rich text from per-column min/max envelopes.

Pure functions, no Textual: a widget passes its size and gets a :class:`rich.text.Text`.
Every chart is drawn from :func:`octa_tui.protocol.decimate.minmax_envelope`, so each
terminal column covers its share of the steps with their minimum *and* maximum: a
one-step spike among a million steps still reaches its height. Columns whose steps held
NaN or Inf are marked with a red ``✕``; gradients use a log scale; a dashed line shows a
reference (the trivial constant-predictor baseline); a dotted vertical line marks each
step where a setting changed.

Lines are drawn in braille cells (2 columns x 4 rows of dots per character), so a chart
of ``height`` rows resolves ``4 * height`` levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.text import Text

from ..protocol.decimate import Envelope, minmax_envelope
from .fit import Part, fit_parts
from .format import format_number
from .theme import MARKER_STYLE, NONFINITE_STYLE, REFERENCE_STYLE

BRAILLE_BASE = 0x2800
# Dot bit of (row within the cell from the top, column within the cell).
BRAILLE_BITS = np.array([[0x01, 0x08], [0x02, 0x10], [0x04, 0x20], [0x40, 0x80]], dtype=np.int64)
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
NONFINITE_MARK = "✕"
REFERENCE_MARK = "┄"
SETTING_MARK = "┊"
GUTTER = 9  # width of the y-axis labels, e.g. "1.50e-04 "
LOG_FLOOR = 1e-30  # values <= 0 sit at the bottom of a log chart


@dataclass(frozen=True)
class Series:
    """One line of a chart: a label, one value per step (NaN/Inf allowed), a colour.

    ``values`` is an array, or a window that summarises itself (anything with ``len()`` and
    ``envelope(columns)``, such as :class:`octa_tui.tui.summary.Column`).
    """

    label: str
    values: object
    color: str


@dataclass(frozen=True)
class Band:
    """A shaded range drawn behind the lines of a chart: per step, from ``lo`` to ``hi`` (for
    a group of runs, their minimum and maximum around the group's mean line). Each chart
    column shades from the lowest ``lo`` to the highest ``hi`` of its steps, so a spike of
    any member is kept."""

    lo: object
    hi: object
    color: str


def envelope_of(values, columns: int) -> Envelope:
    """Per-column min/max of an array or of a self-summarising window."""
    if hasattr(values, "envelope"):
        return values.envelope(columns)
    return minmax_envelope(np.asarray(values), columns)


def _transform(values: np.ndarray, log_scale: bool) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if not log_scale:
        return values
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.where(values > 0, values, LOG_FLOOR))


def value_range(arrays: Sequence[np.ndarray], *, log_scale: bool = False) -> tuple[float, float] | None:
    """The (low, high) of the finite values of all arrays (positive ones on a log scale).

    Used to give several sparklines one shared scale (a vanishing layer then looks low next
    to a healthy one). None when there is no finite value at all.
    """
    lows, highs = [], []
    for array in arrays:
        array = np.asarray(array, dtype=np.float64)
        finite = array[np.isfinite(array)]
        if log_scale:
            finite = finite[finite > 0]
        if finite.size:
            lows.append(finite.min())
            highs.append(finite.max())
    if not lows:
        return None
    return float(min(lows)), float(max(highs))


def _axis(low: float, high: float, log_scale: bool) -> tuple[float, float]:
    """Transformed axis limits, widened when the data is flat so it sits mid-chart."""
    lo, hi = (math.log10(max(low, LOG_FLOOR)), math.log10(max(high, LOG_FLOOR))) if log_scale else (low, high)
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = 0.5 if log_scale else max(abs(hi) * 0.05, 1e-6)
        lo, hi = lo - pad, hi + pad
    return lo, hi


def _rows_of(t: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    scaled = (t - lo) / (hi - lo) * (levels - 1)
    return np.clip(np.rint(np.nan_to_num(scaled, nan=0.0, posinf=levels - 1, neginf=0.0)), 0, levels - 1).astype(
        np.int64
    )


def _styled_row(chars: Sequence[str], styles: Sequence[str]) -> Text:
    """One line of text with runs of equal style merged into one span each."""
    line = Text("".join(chars), no_wrap=True, overflow="crop")
    start = 0
    for i in range(1, len(styles) + 1):
        if i == len(styles) or styles[i] != styles[start]:
            if styles[start]:
                line.stylize(styles[start], start, i)
            start = i
    return line


def _braille_codes(mask: np.ndarray, height: int, plot_width: int) -> np.ndarray:
    """Braille dot codes (height, plot_width) of a (4 * height, 2 * plot_width) mask whose
    row 0 is the lowest level."""
    cells = mask[::-1].reshape(height, 4, plot_width, 2)
    return (cells * BRAILLE_BITS[None, :, None, :]).sum(axis=(1, 3))


def _with_y_labels(rows: Sequence[Text], lo: float, hi: float, log_scale: bool) -> Text:
    """The plot ``rows`` (top first) each behind its ``GUTTER``-wide y label: the top,
    bottom and (from 5 rows) middle values of the transformed range ``lo``..``hi``."""
    height = len(rows)

    def label(t: float) -> str:
        value = 10**t if log_scale else t
        return format_number(value).rjust(GUTTER - 1)[: GUTTER - 1] + " "

    labels = [" " * GUTTER] * height
    labels[0] = label(hi)
    if height > 1:
        labels[-1] = label(lo)
    if height >= 5:
        labels[height // 2] = label(hi - (hi - lo) * (height // 2) / (height - 1))
    out = Text(no_wrap=True, overflow="crop")
    for r, row in enumerate(rows):
        if r:
            out.append("\n")
        out.append(labels[r], style="bright_black")
        out.append_text(row)
    return out


def render_chart(
    series: Sequence[Series],
    width: int,
    height: int,
    *,
    log_scale: bool = False,
    reference: float | None = None,
    markers: Sequence[int] = (),
    y_range: tuple[float, float] | None = None,
    reference_in_range: bool = True,
    bands: Sequence[Band] = (),
) -> Text:
    """Draw ``series`` (all the same length) into ``width`` x ``height`` cells.

    ``reference`` is a y value drawn as a dashed line (the baseline); ``markers`` are row
    indices into the series where a setting changed. The y range covers every finite
    value of every series and the reference (the reference only with
    ``reference_in_range``; else it is drawn only when it falls inside), unless ``y_range``
    fixes it. The left ``GUTTER`` columns carry the axis labels. ``bands`` are shaded
    behind the lines (same length as the series; the y range covers them too): with one
    series per group mean and one band per group's min-max, a chart overlays groups of runs.
    """
    height = max(int(height), 1)
    plot_width = int(width) - GUTTER
    if plot_width < 2 or not series:
        return Text("\n".join([""] * height), no_wrap=True)
    n = len(series[0].values)
    if any(len(s.values) != n for s in series):
        raise ValueError("every series of a chart needs one value per step, and the lengths differ")
    levels = 4 * height
    sub_columns = 2 * plot_width

    envelopes = [envelope_of(s.values, sub_columns) for s in series] if n else []
    if any(len(b.lo) != n or len(b.hi) != n for b in bands):
        raise ValueError("every band of a chart needs one low and one high value per step of its series")
    band_envelopes = [(envelope_of(b.lo, sub_columns), envelope_of(b.hi, sub_columns)) for b in bands] if n else []
    limits = y_range
    if limits is None:
        parts: list[np.ndarray] = []
        for envelope in envelopes:
            parts.extend((envelope.lo, envelope.hi))
        for low, high in band_envelopes:
            parts.extend((low.lo, high.hi))
        if reference is not None and math.isfinite(reference) and (reference_in_range or not parts):
            parts.append(np.array([reference]))
        limits = value_range(parts, log_scale=log_scale) or (0.0, 1.0)
    lo, hi = _axis(limits[0], limits[1], log_scale)

    dots = np.zeros((height, plot_width), dtype=np.int64)
    owner = np.full((height, plot_width), -1, dtype=np.int64)
    nonfinite_cells = np.zeros(plot_width, dtype=bool)
    rows = np.arange(levels)[:, None]
    first_rows: np.ndarray | None = None
    for index, envelope in enumerate(envelopes):
        count = envelope.columns
        if count == 0:
            continue
        first_rows = np.asarray(envelope.first[:count])
        lo_t = _transform(envelope.lo[:count], log_scale)
        hi_t = _transform(envelope.hi[:count], log_scale)
        valid = np.isfinite(envelope.lo[:count]) & np.isfinite(envelope.hi[:count])
        r_lo = _rows_of(lo_t, lo, hi, levels)
        r_hi = _rows_of(hi_t, lo, hi, levels)
        # Join each column to its left neighbour, so a steep change reads as one line.
        prev_lo = np.roll(r_lo, 1)
        prev_hi = np.roll(r_hi, 1)
        prev_valid = np.roll(valid, 1)
        prev_valid[0] = False
        join = valid & prev_valid
        r_lo = np.where(join & (r_lo > prev_hi), prev_hi + 1, r_lo)
        r_hi = np.where(join & (r_hi < prev_lo), prev_lo - 1, r_hi)
        r_lo, r_hi = np.minimum(r_lo, r_hi), np.maximum(r_lo, r_hi)
        mask = (rows >= r_lo[None, :]) & (rows <= r_hi[None, :]) & valid[None, :]
        full = np.zeros((levels, sub_columns), dtype=bool)
        full[:, :count] = mask
        code = _braille_codes(full, height, plot_width)
        dots |= code
        owner = np.where(code > 0, index, owner)
        bad = np.zeros(sub_columns, dtype=bool)
        bad[:count] = np.asarray(envelope.nonfinite[:count], dtype=bool)
        nonfinite_cells |= bad.reshape(plot_width, 2).any(axis=1)

    shade = np.zeros((height, plot_width), dtype=np.int64)
    shade_owner = np.full((height, plot_width), -1, dtype=np.int64)
    for index, (low, high) in enumerate(band_envelopes):
        count = min(low.columns, high.columns)
        if count == 0:
            continue
        valid = np.isfinite(low.lo[:count]) & np.isfinite(high.hi[:count])
        r_lo = _rows_of(_transform(low.lo[:count], log_scale), lo, hi, levels)
        r_hi = _rows_of(_transform(high.hi[:count], log_scale), lo, hi, levels)
        r_lo, r_hi = np.minimum(r_lo, r_hi), np.maximum(r_lo, r_hi)
        mask = (rows >= r_lo[None, :]) & (rows <= r_hi[None, :]) & valid[None, :]
        full = np.zeros((levels, sub_columns), dtype=bool)
        full[:, :count] = mask
        code = _braille_codes(full, height, plot_width)
        shade |= code
        shade_owner = np.where(code > 0, index, shade_owner)

    braille = np.vectorize(lambda c: chr(BRAILLE_BASE + int(c)), otypes=[object])
    chars = braille(dots) if dots.any() else None
    shade_chars = braille(shade) if shade.any() else None
    grid = [[" "] * plot_width for _ in range(height)]
    styles = [[""] * plot_width for _ in range(height)]
    for r in range(height):
        for c in range(plot_width):
            if dots[r, c]:
                grid[r][c] = chars[r, c]
                styles[r][c] = series[int(owner[r, c])].color
            elif shade[r, c]:
                grid[r][c] = shade_chars[r, c]
                styles[r][c] = f"dim {bands[int(shade_owner[r, c])].color}"

    if reference is not None and math.isfinite(reference) and (not log_scale or reference > 0):
        ref_t = float(_transform(np.array([reference]), log_scale)[0])
        if lo <= ref_t <= hi:
            ref_row = height - 1 - int(_rows_of(np.array([ref_t]), lo, hi, levels)[0]) // 4
            for c in range(plot_width):
                if not dots[ref_row, c]:
                    grid[ref_row][c] = REFERENCE_MARK
                    styles[ref_row][c] = REFERENCE_STYLE
    if markers and first_rows is not None and len(first_rows):
        for marker in markers:
            sub = int(np.searchsorted(first_rows, marker, side="right")) - 1
            if sub < 0:
                continue
            c = sub // 2
            for r in range(height):
                if not dots[r, c]:
                    grid[r][c] = SETTING_MARK
                    styles[r][c] = MARKER_STYLE
    for c in np.flatnonzero(nonfinite_cells):
        grid[0][c] = NONFINITE_MARK
        styles[0][c] = NONFINITE_STYLE

    return _with_y_labels([_styled_row(grid[r], styles[r]) for r in range(height)], lo, hi, log_scale)


def render_sparkline(
    values,
    width: int,
    *,
    log_scale: bool = False,
    y_range: tuple[float, float] | None = None,
    color: str = "cyan",
) -> Text:
    """One line of block characters, one per column, each the column's maximum.

    The maximum (not a sample) keeps every spike; NaN/Inf columns show a red ``✕``.
    ``y_range`` shares a scale between several sparklines.
    """
    width = max(int(width), 0)
    if width == 0 or len(values) == 0:
        return Text(" " * width)
    envelope = envelope_of(values, width)
    count = envelope.columns
    high = np.asarray(envelope.hi[:count], dtype=np.float64)
    limits = y_range or value_range([high], log_scale=log_scale) or (0.0, 1.0)
    lo, hi = _axis(limits[0], limits[1], log_scale)
    level = _rows_of(_transform(high, log_scale), lo, hi, len(SPARK_LEVELS))
    chars, styles = [], []
    for c in range(count):
        if envelope.nonfinite[c]:
            chars.append(NONFINITE_MARK)
            styles.append(NONFINITE_STYLE)
        elif not math.isfinite(high[c]):
            chars.append(" ")
            styles.append("")
        else:
            chars.append(SPARK_LEVELS[int(level[c])])
            styles.append(color)
    return _styled_row(chars, styles)


def legend_parts(series: Sequence[Series], latest: Sequence[float] | None = None) -> list[Part]:
    """Each series as one part of a legend line (``■ total 0.603``): the first series is kept
    longest when the line is too narrow for all of them."""
    parts = []
    for i, s in enumerate(series):
        text = Text()
        text.append("■ ", style=s.color)
        text.append(s.label)
        if latest is not None:
            text.append(f" {format_number(latest[i])}", style="bold")
        parts.append(Part(text.plain, keep=len(series) - i, rich=text))
    return parts


def render_legend(series: Sequence[Series], latest: Sequence[float] | None = None, width: int | None = None) -> Text:
    """``■ total 0.603  ■ bce 0.210`` - each series' colour, label and latest value. Given
    ``width``, the series that do not fit are left out whole (the last ones first)."""
    out = fit_parts(legend_parts(series, latest), 10**6 if width is None else width)
    if width is None:
        out.overflow = "ellipsis"
    return out
