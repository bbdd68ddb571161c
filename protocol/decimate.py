"""Per-column min/max envelopes: how a chart draws a million steps in 200 columns.

A chart column stands for a bucket of consecutive rows. Sampling one row per bucket
would hide a one-step spike; the envelope keeps the minimum and the maximum over *every*
row of the bucket, so no spike can disappear. NaN and Inf are left out of the min/max
(a single NaN would otherwise blank a whole column) and flagged per column instead, so a
chart can mark where a run went non-finite.

Pure numpy, no I/O. The caller slices the window it wants to draw and passes it in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A wide table (many channels per row) is reduced by halving: each step is one long
# elementwise min/max over whole buckets instead of numpy's row-by-row accumulation,
# which for 152 channels spends most of its time in per-row overhead.
_HALVING_MIN_CHANNELS = 8
_HALVING_GROUP_ELEMENTS = 1 << 20
# Non-finite buckets are re-reduced with a mask, a batch at a time, so that the
# temporaries stay small even when every value is NaN.
_MASKED_BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True, eq=False)
class Envelope:
    """The min/max of each chart column over all of its rows.

    ``lo`` and ``hi`` have shape ``(columns,)`` for 1-D input or ``(columns, k)`` for 2-D
    input; they are NaN where a column held no finite value at all. ``nonfinite`` (same
    shape) is True where a column held any NaN or Inf. ``first[i]`` is the row where column
    ``i`` starts and ``count[i]`` how many rows it covers, so a chart can map a column back
    to steps.
    """

    lo: np.ndarray
    hi: np.ndarray
    nonfinite: np.ndarray
    first: np.ndarray
    count: np.ndarray

    @property
    def columns(self) -> int:
        """How many columns the envelope has (fewer than asked when there are fewer rows)."""
        return int(self.first.shape[0])


def column_bounds(n: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """First row and row count of each column when ``n`` rows are split into ``columns``.

    Columns differ by at most one row: the first ``n % columns`` columns take the extra
    row. With fewer rows than columns, each row is its own column.
    """
    if columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    if n < 0:
        raise ValueError(f"row count must be >= 0, got {n}")
    m = min(columns, n)
    if m == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    size, extra = divmod(n, m)
    count = np.full(m, size, dtype=np.int64)
    count[:extra] += 1
    first = np.zeros(m, dtype=np.int64)
    np.cumsum(count[:-1], out=first[1:])
    return first, count


def minmax_envelope(values: np.ndarray, columns: int) -> Envelope:
    """Split the rows of ``values`` into ``columns`` buckets and keep each bucket's min and max.

    ``values`` is 1-D ``(n,)`` or 2-D ``(n, k)`` (every channel at once); views and strided
    columns are fine. The result keeps the input's float dtype (integers become float64).
    """
    array = np.asarray(values)
    if array.ndim not in (1, 2):
        raise ValueError(f"values must be 1-D (n,) or 2-D (n, k), got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    one_d = array.ndim == 1
    table = array[:, None] if one_d else array
    n, k = table.shape
    first, count = column_bounds(n, columns)
    m = first.shape[0]
    lo = np.empty((m, k), dtype=table.dtype)
    hi = np.empty((m, k), dtype=table.dtype)
    if m:
        # Buckets of equal size reshape into a 3-D view and reduce in one call each; the
        # (up to two) sizes present are handled as two blocks.
        big = int(count[0])
        n_big = int(np.count_nonzero(count == big))
        split = n_big * big
        for rows, out_rows, size in (
            (slice(0, split), slice(0, n_big), big),
            (slice(split, n), slice(n_big, m), big - 1),
        ):
            block_count = out_rows.stop - out_rows.start
            if block_count == 0:
                continue
            _reduce_buckets(table[rows].reshape(block_count, size, k), lo[out_rows], hi[out_rows])
    # min propagates NaN and max/min surface +/-Inf, so a bucket held a non-finite value
    # exactly when its plain min or max is not finite: only those buckets need a mask.
    nonfinite = ~(np.isfinite(lo) & np.isfinite(hi))
    bad_columns = np.flatnonzero(nonfinite.any(axis=1))
    if bad_columns.size:
        _masked_minmax(table, first, count, nonfinite, bad_columns, lo, hi)
    if one_d:
        lo, hi, nonfinite = lo[:, 0], hi[:, 0], nonfinite[:, 0]
    return Envelope(lo=lo, hi=hi, nonfinite=nonfinite, first=first, count=count)


def _reduce_buckets(block: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
    """Min and max over axis 1 of ``block`` (buckets, rows, channels) into ``lo`` and ``hi``."""
    buckets, rows, k = block.shape
    if k < _HALVING_MIN_CHANNELS or rows < 4:
        np.min(block, axis=1, out=lo)
        np.max(block, axis=1, out=hi)
        return
    # Groups of buckets small enough that the halving steps run in cache.
    group = max(1, _HALVING_GROUP_ELEMENTS // (rows * k))
    scratch = np.empty((min(group, buckets), rows // 2, k), dtype=block.dtype)
    for start in range(0, buckets, group):
        part = block[start : start + group]
        space = scratch[: part.shape[0]]
        lo[start : start + group] = _halve(part, np.minimum, space)
        hi[start : start + group] = _halve(part, np.maximum, space)


def _halve(part: np.ndarray, op: np.ufunc, scratch: np.ndarray) -> np.ndarray:
    """Reduce axis 1 of ``part`` with ``op`` by folding it in half until one row is left."""
    rows = part.shape[1]
    current = part
    while rows > 1:
        half = rows // 2
        target = scratch[:, :half]
        op(current[:, :half], current[:, half : 2 * half], out=target)
        if rows % 2:  # the odd row out joins the first row
            op(target[:, 0], current[:, 2 * half], out=target[:, 0])
        current, rows = target, half
    return current[:, 0]


def _masked_minmax(
    table: np.ndarray,
    first: np.ndarray,
    count: np.ndarray,
    nonfinite: np.ndarray,
    bad: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
) -> None:
    """Recompute min/max of the listed buckets over their finite values only (in place).

    Only the channels that went non-finite somewhere in a batch are gathered, so one NaN
    channel among 152 costs one channel's worth of work.
    """
    for size in np.unique(count[bad]):
        same = bad[count[bad] == size]
        channels_per_bucket = max(1, int(nonfinite[same].any(axis=0).sum()))
        batch = max(1, _MASKED_BATCH_ELEMENTS // (int(size) * channels_per_bucket))
        for start in range(0, same.size, batch):
            ids = same[start : start + batch]
            channels = np.flatnonzero(nonfinite[ids].any(axis=0))
            rows = first[ids][:, None] + np.arange(size)[None, :]
            if 2 * channels.size > table.shape[1]:  # most channels: a plain row gather is cheaper
                channels = np.arange(table.shape[1])
                block = table[rows]
            else:
                block = table[rows[:, :, None], channels[None, None, :]]  # (buckets, size, channels)
            finite = np.isfinite(block)
            any_finite = finite.any(axis=1)
            block_lo = np.where(finite, block, np.inf).min(axis=1)
            block_hi = np.where(finite, block, -np.inf).max(axis=1)
            block_lo[~any_finite] = np.nan
            block_hi[~any_finite] = np.nan
            lo[ids[:, None], channels[None, :]] = block_lo
            hi[ids[:, None], channels[None, :]] = block_hi
