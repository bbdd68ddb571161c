"""The one growing array: rows appended at the end, in RAM or spilled to a file, and the
stores derived from a run's steps that extend themselves as rows arrive.

Every growable buffer of the monitor is one of these: the step columns
(:class:`~octa_tui.protocol.columns.StepColumns`), the charts' block summaries, the gradient
group norms, the explosion counts and the change markers. :class:`GrowingArray` holds the
rows and grows (by doubling in RAM; by a bounded step in a spill file, where growing copies
nothing), and gives the pages of old rows back when spilled. :class:`Derived` is what a
store computed from a history's rows keeps about what it has done: which run and which
generation of it (a replay that seeks back, a restarted trainer, a history replaced by a
new object: the store starts over) and how many rows it covered, so the next call computes
only the rows that arrived since.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from .spill import SpillArray, SpillDir


class GrowingArray:
    """An array of rows of one dtype and row shape that grows at the end.

    ``buffer`` is the whole allocation (``capacity`` rows); :attr:`rows` of them are in use
    (:attr:`values`). In RAM it grows by doubling (one copy of the rows so far); given a
    ``spill`` folder it lives in an unnamed file and grows by at most ``spill_step`` rows at a
    time without copying (see :mod:`octa_tui.protocol.spill`). Views handed out earlier stay
    valid after a grow (they keep the old buffer or mapping alive).
    """

    def __init__(self, dtype: Any, row_shape: Sequence[int] = (), capacity: int = 16, *,
                 spill: SpillDir | None = None, spill_step: int | None = None) -> None:
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(int(n) for n in row_shape)
        self.spill_step = spill_step
        capacity = max(int(capacity), 1)
        self._spilled: SpillArray | None = spill.array(self.dtype, self.row_shape, capacity) if spill is not None else None
        self.buffer: np.ndarray = (self._spilled.array if self._spilled is not None
                                   else np.zeros((capacity, *self.row_shape), dtype=self.dtype))
        self.rows = 0

    @property
    def capacity(self) -> int:
        """Rows allocated."""
        return int(self.buffer.shape[0])

    @property
    def spilled(self) -> bool:
        """Whether the rows live in a spill file (False in RAM, or after the file failed)."""
        return self._spilled is not None and not self._spilled.failed

    @property
    def failed(self) -> str:
        """Why a spilled array moved into RAM ("" while it spills, or when it never did)."""
        return self._spilled.failed if self._spilled is not None else ""

    @property
    def values(self) -> np.ndarray:
        """The rows in use (a view)."""
        return self.buffer[: self.rows]

    def reserve(self, rows: int) -> np.ndarray:
        """Make room for ``rows`` rows in all; returns the buffer (a new one when it grew)."""
        capacity = self.capacity
        if rows <= capacity:
            return self.buffer
        while capacity < rows:
            step = self.spill_step if self._spilled is not None and self.spill_step else capacity
            capacity += min(capacity, step)
        if self._spilled is not None:
            self.buffer = self._spilled.grow(capacity)  # the same file mapped longer: nothing copied
        else:
            grown = np.zeros((capacity, *self.row_shape), dtype=self.dtype)
            grown[: self.rows] = self.buffer[: self.rows]
            self.buffer = grown
        return self.buffer

    def append(self, row: Any) -> None:
        """Add one row."""
        if self.rows == self.capacity:
            self.reserve(self.rows + 1)
        self.buffer[self.rows] = row
        self.rows += 1

    def extend(self, block: Any) -> None:
        """Add the rows of ``block`` (an array of rows)."""
        block = np.asarray(block)
        n = int(block.shape[0])
        if n:
            self.reserve(self.rows + n)
            self.buffer[self.rows : self.rows + n] = block
            self.rows += n

    def release(self, stop_row: int) -> None:
        """Give the pages of rows before ``stop_row`` back to the OS (spilled only; they stay
        readable from the file)."""
        if self._spilled is not None and stop_row > 0:
            self._spilled.release(stop_row)


_generations = itertools.count(1)


class Derived:
    """What a store derived from a history's rows has covered: the history it was computed
    from (held weakly, compared by identity, so a new history object is never mistaken for
    the old one however the memory is reused), the run, a generation that changes whenever
    the store starts over, and the rows done.

    ``key`` adds what else the store depends on (which columns, which groups). A store calls
    :meth:`start` before computing; it returns the first row still to do (0 after starting
    over) and the store then computes up to the rows it was asked for and calls :meth:`done`.
    """

    def __init__(self) -> None:
        self._history: weakref.ReferenceType | None = None
        self.run_id = ""
        self.key: Any = None
        self.generation = 0
        self.rows = 0

    def covers(self, history: Any, key: Any = None) -> bool:
        """Whether the store holds rows of this very history (and this ``key``)."""
        return self._history is not None and self._history() is history and key == self.key

    def start(self, history: Any, rows: int, key: Any = None) -> int:
        """The first row to compute for ``rows`` rows of ``history``: where the store left
        off, or 0 when it must start over (another history, another key, fewer rows)."""
        if not self.covers(history, key) or rows < self.rows:
            try:
                self._history = weakref.ref(history)
            except TypeError:  # an object that cannot be referenced weakly: held strongly
                self._history = (lambda h: (lambda: h))(history)
            self.run_id = str(getattr(getattr(history, "schema", None), "run_id", ""))
            self.key = key
            self.generation = next(_generations)
            self.rows = 0
        return self.rows

    def done(self, rows: int) -> None:
        """The store now covers ``rows`` rows."""
        self.rows = rows

    @property
    def token(self) -> tuple[str, int]:
        """(run, generation): names the derived rows for a store built on top of this one."""
        return (self.run_id, self.generation)
