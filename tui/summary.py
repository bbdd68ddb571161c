"""Per-block min/max of a growing matrix, so a chart of a million steps costs microseconds.

Redrawing every panel from a million raw rows five times a second would spend most of a
core in ``min``/``max``. :class:`BlockEnvelopes` keeps, for every complete block of
``BLOCK_ROWS`` rows, each channel's min, max and whether it held NaN/Inf - computed once,
with :func:`octa_tui.protocol.decimate.minmax_envelope`, as rows arrive. A chart's envelope
over a long window is then the envelope of those block summaries (the min of the blocks'
minima, the max of their maxima), with the partial blocks at both ends reduced directly:
still every row's extreme, so no spike is lost. Column boundaries fall on block edges,
which shifts them by less than one block. Short windows are reduced row by row.
"""

from __future__ import annotations

import numpy as np

from ..protocol.decimate import Envelope, minmax_envelope

BLOCK_ROWS = 1024
DIRECT_ROWS = 1 << 16  # windows up to this long are reduced directly from the rows


class BlockEnvelopes:
    """Block min/max of every column of one growing ``(n, k)`` matrix (append-only)."""

    def __init__(self, block_rows: int = BLOCK_ROWS) -> None:
        self.block_rows = block_rows
        self._owner: object = None
        self._lo = np.zeros((0, 0))
        self._hi = np.zeros((0, 0))
        self._bad = np.zeros((0, 0), dtype=bool)
        self._blocks = 0

    def update(self, owner: object, values: np.ndarray) -> None:
        """Summarise the complete blocks of ``values`` not yet seen; ``owner`` is a small
        token naming the matrix (a new one, or fewer rows than before, starts over)."""
        b = self.block_rows
        complete = values.shape[0] // b
        if owner != self._owner or complete < self._blocks or self._lo.shape[1:] != values.shape[1:]:
            self._owner = owner
            self._lo = np.empty((0, values.shape[1]), dtype=np.float64)
            self._hi = np.empty((0, values.shape[1]), dtype=np.float64)
            self._bad = np.empty((0, values.shape[1]), dtype=bool)
            self._blocks = 0
        if complete <= self._blocks:
            return
        fresh = minmax_envelope(values[self._blocks * b : complete * b], complete - self._blocks)
        self._lo = np.concatenate([self._lo[: self._blocks], fresh.lo])
        self._hi = np.concatenate([self._hi[: self._blocks], fresh.hi])
        self._bad = np.concatenate([self._bad[: self._blocks], fresh.nonfinite])
        self._blocks = complete

    def envelope(self, values: np.ndarray, column: int, start: int, stop: int, columns: int) -> Envelope:
        """The envelope of ``values[start:stop, column]`` in ``columns`` chart columns."""
        n = stop - start
        if n <= DIRECT_ROWS or self._blocks == 0:
            return minmax_envelope(values[start:stop, column], columns)
        b = self.block_rows
        first_block = -(-start // b)
        last_block = min(stop // b, self._blocks)
        if last_block - first_block < 2 * columns:
            return minmax_envelope(values[start:stop, column], columns)
        parts_lo, parts_hi, parts_bad, parts_first = [], [], [], []
        head_stop = first_block * b
        if head_stop > start:
            head = minmax_envelope(values[start:head_stop, column], 1)
            parts_lo.append(head.lo)
            parts_hi.append(head.hi)
            parts_bad.append(head.nonfinite)
            parts_first.append(np.array([start]))
        parts_lo.append(self._lo[first_block:last_block, column])
        parts_hi.append(self._hi[first_block:last_block, column])
        parts_bad.append(self._bad[first_block:last_block, column])
        parts_first.append(np.arange(first_block, last_block) * b)
        tail_start = last_block * b
        if tail_start < stop:
            tail = minmax_envelope(values[tail_start:stop, column], 1)
            parts_lo.append(tail.lo)
            parts_hi.append(tail.hi)
            parts_bad.append(tail.nonfinite)
            parts_first.append(np.array([tail_start]))
        unit_lo = np.concatenate(parts_lo)
        unit_hi = np.concatenate(parts_hi)
        unit_bad = np.concatenate(parts_bad).astype(np.float64)
        unit_first = np.concatenate(parts_first) - start
        low = minmax_envelope(unit_lo, columns)
        high = minmax_envelope(unit_hi, columns)
        bad = minmax_envelope(unit_bad, columns)
        first = unit_first[low.first]
        count = np.diff(np.append(first, n))
        return Envelope(lo=low.lo, hi=high.hi, nonfinite=(bad.hi > 0) | low.nonfinite | high.nonfinite,
                        first=first, count=count)


class Column:
    """One channel's window ``[start, stop)`` that charts can draw through its block summary."""

    def __init__(self, summary: BlockEnvelopes, values: np.ndarray, column: int, start: int, stop: int) -> None:
        self.summary = summary
        self.values = values
        self.column = column
        self.start = start
        self.stop = stop

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def envelope(self, columns: int) -> Envelope:
        """Per-column min/max of the window in ``columns`` columns."""
        return self.summary.envelope(self.values, self.column, self.start, self.stop, columns)

    def last(self) -> float:
        """The newest value in the window (NaN when empty)."""
        return float(self.values[self.stop - 1, self.column]) if len(self) else float("nan")
