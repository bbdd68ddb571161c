"""Per-block min/max of a growing matrix, so a chart of a million steps costs microseconds.

Redrawing every panel from a million raw rows a few times a second would spend most of a
core in ``min``/``max``. :class:`BlockEnvelopes` keeps, for every complete block of
``BLOCK_ROWS`` rows, each channel's min, max and whether it held NaN/Inf, and coarser
levels that each summarise ``LEVEL_FACTOR`` blocks of the level below. All are appended to as
rows arrive (each row is reduced once, with
:func:`octa_tui.protocol.decimate.minmax_envelope`), never recomputed. A chart's envelope
over a long window is then the envelope of the block summaries (the min of the blocks'
minima, the max of their maxima), with the partial blocks at both ends reduced directly:
still every row's extreme, so no spike is lost. Column boundaries fall on block edges,
which shifts them by less than one block; a level is used only when every chart column
spans at least two of its blocks. Short windows are reduced row by row.
"""

from __future__ import annotations

import numpy as np

from ..protocol.columns import HOT_ROWS, RELEASE_EVERY
from ..protocol.decimate import Envelope, column_bounds, minmax_envelope
from ..protocol.growing import GrowingArray
from ..protocol.spill import SpillDir

BLOCK_ROWS = 64
LEVEL_FACTOR = 16  # a coarser level's block is this many blocks of the level below
# Block sizes 64, 1,024, 16,384 and 262,144 rows. A chart reads one level: the coarsest whose
# blocks are at most half a column wide, so it touches fewer than 2 x LEVEL_FACTOR blocks per
# column, however long the run; the levels finer than that are not read at all (and, when the
# history spills to a file, their old blocks are not kept resident).
LEVELS = 4
MIN_BLOCKS_PER_COLUMN = 2  # a level is used only when each column spans this many blocks


class _Level:
    """Min, max and a non-finite flag per block of ``block_rows`` rows, each a
    :class:`~octa_tui.protocol.growing.GrowingArray`. Given a spill folder (the history's steps
    spill, see protocol/spill.py) they are file-backed and only the blocks of the newest rows
    stay resident."""

    def __init__(self, block_rows: int, width: int, dtype: np.dtype, spill: SpillDir | None = None) -> None:
        self.block_rows = block_rows
        self._released = 0
        spill = spill if width else None
        self._arrays = {name: GrowingArray(kind, (width,), 16, spill=spill)
                        for name, kind in (("lo", dtype), ("hi", dtype), ("bad", bool))}
        self._spilled = {name: a for name, a in self._arrays.items() if a._spilled is not None}
        self._bind()

    def _bind(self) -> None:
        self.lo, self.hi, self.bad = (self._arrays[name].buffer for name in ("lo", "hi", "bad"))

    @property
    def blocks(self) -> int:
        """Blocks summarised so far."""
        return self._arrays["lo"].rows

    def append(self, lo: np.ndarray, hi: np.ndarray, bad: np.ndarray) -> None:
        """Add the summaries of the next ``len(lo)`` blocks."""
        for name, block in (("lo", lo), ("hi", hi), ("bad", bad)):
            self._arrays[name].extend(block)
        self._bind()
        b = self.blocks
        hot_blocks = HOT_ROWS // self.block_rows
        if self._spilled and b - self._released >= max(RELEASE_EVERY // self.block_rows, 1):
            self._released = b
            for array in self._spilled.values():
                array.release(b - hot_blocks)


class BlockEnvelopes:
    """Block min/max of every column of one growing ``(n, k)`` matrix (append-only)."""

    def __init__(self, block_rows: int = BLOCK_ROWS, levels: int = LEVELS, level_factor: int = LEVEL_FACTOR) -> None:
        if block_rows < 1 or levels < 1 or level_factor < 2:
            raise ValueError("block_rows and levels must be >= 1 and level_factor >= 2")
        self.block_rows = block_rows
        self.level_count = levels
        self.level_factor = level_factor
        self._owner: object = None
        self._levels: list[_Level] = []

    def update(self, owner: object, values: np.ndarray, spill: SpillDir | None = None) -> None:
        """Summarise the complete blocks of ``values`` not yet seen; ``owner`` is a small
        token naming the matrix (a new one, or fewer rows than before, starts over).
        ``spill``: keep the finest level in a file too (when the matrix spills)."""
        b = self.block_rows
        complete = values.shape[0] // b
        width = values.shape[1]
        levels = self._levels
        if (owner != self._owner or not levels or complete < levels[0].blocks or levels[0].lo.shape[1] != width
                or levels[0].lo.dtype != _summary_dtype(values)):
            self._owner = owner
            dtype = _summary_dtype(values)
            # Only the finest level grows fast enough to be worth a file (a block per 64 rows;
            # the next is 16 times smaller), and files cost descriptors.
            self._levels = levels = [
                _Level(b * self.level_factor**i, width, dtype, spill if i == 0 else None)
                for i in range(self.level_count)
            ]
        fine = levels[0]
        if complete > fine.blocks:
            fresh = minmax_envelope(values[fine.blocks * b : complete * b], complete - fine.blocks)
            fine.append(fresh.lo, fresh.hi, fresh.nonfinite)
        for below, level in zip(levels, levels[1:]):
            ready = below.blocks // self.level_factor
            if ready <= level.blocks:
                break
            f = self.level_factor
            a, z = level.blocks * f, ready * f
            shape = (ready - level.blocks, f, width)
            # Block minima are NaN only where a block held no finite value: fmin/fmax skip them.
            level.append(
                np.fmin.reduce(below.lo[a:z].reshape(shape), axis=1),
                np.fmax.reduce(below.hi[a:z].reshape(shape), axis=1),
                below.bad[a:z].reshape(shape).any(axis=1),
            )

    def envelope(self, values: np.ndarray, column: int, start: int, stop: int, columns: int) -> Envelope:
        """The envelope of ``values[start:stop, column]`` in ``columns`` chart columns."""
        for level in reversed(self._levels):
            b = level.block_rows
            first_block = -(-start // b)
            last_block = min(stop // b, level.blocks)
            if last_block - first_block >= MIN_BLOCKS_PER_COLUMN * columns:
                return _from_blocks(level, values, column, start, stop, columns, first_block, last_block)
        return minmax_envelope(values[start:stop, column], columns)


def _summary_dtype(values: np.ndarray) -> np.dtype:
    return values.dtype if np.issubdtype(values.dtype, np.floating) else np.dtype(np.float64)


def _from_blocks(level: _Level, values: np.ndarray, column: int, start: int, stop: int, columns: int,
                 first_block: int, last_block: int) -> Envelope:
    """The envelope from whole blocks ``[first_block, last_block)`` of ``level`` plus the
    rows before and after them, each of those two parts one unit."""
    b = level.block_rows
    head_stop, tail_start = first_block * b, last_block * b
    parts_lo = [level.lo[first_block:last_block, column]]
    parts_hi = [level.hi[first_block:last_block, column]]
    parts_bad = [level.bad[first_block:last_block, column]]
    unit_first = np.arange(first_block, last_block, dtype=np.int64) * b - start
    if head_stop > start:
        head = minmax_envelope(values[start:head_stop, column], 1)
        parts_lo.insert(0, head.lo)
        parts_hi.insert(0, head.hi)
        parts_bad.insert(0, head.nonfinite)
        unit_first = np.concatenate(([0], unit_first))
    if tail_start < stop:
        tail = minmax_envelope(values[tail_start:stop, column], 1)
        parts_lo.append(tail.lo)
        parts_hi.append(tail.hi)
        parts_bad.append(tail.nonfinite)
        unit_first = np.append(unit_first, tail_start - start)
    unit_lo = np.concatenate(parts_lo)
    unit_hi = np.concatenate(parts_hi)
    unit_bad = np.concatenate(parts_bad)
    starts, _ = column_bounds(unit_lo.shape[0], columns)
    # A unit's lo/hi are NaN only when it held no finite value (then it is flagged bad).
    lo = np.fmin.reduceat(unit_lo, starts)
    hi = np.fmax.reduceat(unit_hi, starts)
    bad = np.logical_or.reduceat(unit_bad, starts)
    first = unit_first[starts]
    count = np.diff(np.append(first, stop - start))
    return Envelope(lo=lo, hi=hi, nonfinite=bad, first=first, count=count)


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
