"""Chart columns over a shared x axis, for one run and for a group of runs.

Runs of a comparison differ in length and in where their points lie (steps, epochs,
seconds), so they cannot be summarised row by row as one run's chart is. Instead the x
range shown is cut into equal columns and every run's rows are put into the column their
x falls in. Each column keeps the minimum and the maximum of *every* row in it (a one-step
spike is never lost, as in :mod:`octa_tui.protocol.decimate`), the mean of its finite rows,
and whether any row was NaN/Inf.

A group (the seeds of one setting, say) is drawn as the mean of its runs with a band from
the lowest to the highest value any of its runs reached in that column: per column, the
group mean is the mean over the runs present of each run's column mean, and the band is
the min of the runs' minima and the max of their maxima.

Pure numpy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Columns:
    """One run's rows summarised per chart column (arrays of length ``columns``).

    ``lo``/``hi``/``mean`` are NaN where a column holds no finite value; ``count`` is how
    many rows fell in the column (finite or not); ``nonfinite`` marks columns with a NaN/Inf.
    """

    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    count: np.ndarray
    nonfinite: np.ndarray

    @property
    def columns(self) -> int:
        """How many columns."""
        return int(self.lo.shape[0])


@dataclass(frozen=True, eq=False)
class GroupColumns:
    """A group's mean and min-max band per column, and how many of its runs had data there."""

    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    runs: np.ndarray  # runs with at least one finite value in the column
    nonfinite: np.ndarray


def column_of(x: np.ndarray, x_lo: float, x_hi: float, columns: int) -> np.ndarray:
    """The chart column each x falls in (``x_hi`` itself goes in the last column); -1 for
    an x outside ``[x_lo, x_hi]`` or not finite."""
    x = np.asarray(x, dtype=np.float64)
    span = x_hi - x_lo
    out = np.full(x.shape, -1, dtype=np.int64)
    inside = np.isfinite(x) & (x >= x_lo) & (x <= x_hi)
    if span <= 0:
        out[inside] = 0
        return out
    scaled = np.floor((x[inside] - x_lo) / span * columns).astype(np.int64)
    out[inside] = np.minimum(scaled, columns - 1)
    return out


def _sorted_starts(x: np.ndarray, x_lo: float, x_hi: float, columns: int) -> tuple[np.ndarray, int]:
    """For sorted finite ``x``: the first row of each column (as :func:`column_of` assigns
    them) and the end of the rows inside the range, found by binary search instead of a
    column number per row."""
    begin = int(np.searchsorted(x, x_lo, side="left"))
    end = int(np.searchsorted(x, x_hi, side="right"))
    span = x_hi - x_lo
    k = np.arange(columns)
    if span <= 0:
        starts = np.full(columns, end, dtype=np.int64)
        starts[0] = begin
        return starts, end
    starts = np.searchsorted(x, x_lo + span * k / columns, side="left").clip(begin, end)

    def col(rows: np.ndarray) -> np.ndarray:
        return np.minimum(np.floor((x[rows] - x_lo) / span * columns), columns - 1)

    # The edge's rounding may put a start one row off the column formula: step it back or on.
    for _ in range(4):
        back = (starts > begin) & (col(np.maximum(starts - 1, 0)) >= k)
        on = (starts < end) & (col(np.minimum(starts, x.size - 1)) < k)
        if not (back.any() or on.any()):
            break
        starts = starts - back + on
    return np.maximum.accumulate(starts), end


def bucket(x: np.ndarray, y: np.ndarray, x_lo: float, x_hi: float, columns: int) -> Columns:
    """Summarise rows ``(x, y)`` into ``columns`` equal columns over ``[x_lo, x_hi]``.

    Rows outside the range are left out. ``x`` need not be sorted (sorted is the fast case:
    a step, epoch or time axis).
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-D of one length, got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float64)
    nan = np.full(columns, np.nan)
    lo, hi, mean = nan.copy(), nan.copy(), nan.copy()
    count = np.zeros(columns, dtype=np.int64)
    nonfinite = np.zeros(columns, dtype=bool)
    if x.size and np.isfinite(x[0]) and np.isfinite(x[-1]) and np.all(x[1:] >= x[:-1]):
        starts, end = _sorted_starts(x, x_lo, x_hi, columns)
        y = y[:end]
        count = np.diff(np.append(starts, end))
    else:
        col = column_of(x, x_lo, x_hi, columns)
        keep = col >= 0
        col, y = col[keep], y[keep]
        if col.size > 1 and np.any(col[1:] < col[:-1]):
            order = np.argsort(col, kind="stable")
            col, y = col[order], y[order]
        ids = np.arange(columns)
        starts = np.searchsorted(col, ids, side="left")
        count = np.searchsorted(col, ids, side="right") - starts
    present = count > 0
    if not present.any():
        return Columns(lo, hi, mean, count, nonfinite)
    at = starts[present]
    first = int(at[0])
    window, at = y[first:], at - first  # rows before the first column are outside the range
    finite = np.isfinite(window)
    if finite.all():
        lo[present] = np.minimum.reduceat(window, at)
        hi[present] = np.maximum.reduceat(window, at)
        mean[present] = np.add.reduceat(window, at, dtype=np.float64) / count[present]
        return Columns(lo, hi, mean, count, nonfinite)
    n_finite = np.add.reduceat(finite.astype(np.int64), at)
    low = np.minimum.reduceat(np.where(finite, window, np.inf), at)
    high = np.maximum.reduceat(np.where(finite, window, -np.inf), at)
    total = np.add.reduceat(np.where(finite, window, 0.0), at, dtype=np.float64)
    has = n_finite > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo[present] = np.where(has, low, np.nan)
        hi[present] = np.where(has, high, np.nan)
        mean[present] = np.where(has, total / np.maximum(n_finite, 1), np.nan)
    nonfinite[present] = n_finite < count[present]
    return Columns(lo, hi, mean, count, nonfinite)


def combine(runs: Sequence[Columns]) -> GroupColumns:
    """A group's mean line (mean of the runs' column means) and min-max band (min of the
    runs' minima, max of their maxima), column by column over the runs that have data."""
    if not runs:
        raise ValueError("a group needs at least one run")
    means = np.vstack([r.mean for r in runs])
    los = np.vstack([r.lo for r in runs])
    his = np.vstack([r.hi for r in runs])
    present = np.isfinite(means)
    n = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, np.where(present, means, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
        lo = np.where(n > 0, np.where(np.isfinite(los), los, np.inf).min(axis=0), np.nan)
        hi = np.where(n > 0, np.where(np.isfinite(his), his, -np.inf).max(axis=0), np.nan)
    nonfinite = np.vstack([r.nonfinite for r in runs]).any(axis=0)
    return GroupColumns(mean=mean, lo=lo, hi=hi, runs=n, nonfinite=nonfinite)


def x_extent(xs: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """The smallest and largest finite x over all runs (None when there is none)."""
    lows, highs = [], []
    for x in xs:
        x = np.asarray(x, dtype=np.float64)
        if x.size == 0:
            continue
        finite = x[np.isfinite(x)]
        if finite.size:
            lows.append(float(finite.min()))
            highs.append(float(finite.max()))
    if not lows:
        return None
    return min(lows), max(highs)
