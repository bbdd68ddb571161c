"""A run's steps held column-wise in numpy arrays that grow in chunks.

The trainer keeps one to answer ``history`` requests; the monitor keeps one that the
charts and the diagnosis engine read; the recording reader fills one. Appending a step
copies its vector into a preallocated row, so ingest costs no allocation per step.

Given a :class:`~octa_tui.protocol.spill.SpillDir`, the columns live in unnamed files mapped
into memory (see spill.py): a monitor following a run for days then keeps only the newest
``hot_rows`` rows resident, while every row stays readable at full resolution.
"""

from __future__ import annotations

import numpy as np

from .errors import ProtocolError
from .growing import GrowingArray
from .messages import Step, StepChunk
from .spill import SpillDir

INITIAL_CAPACITY = 4096
HOT_ROWS = 16384  # rows kept resident when spilling: every zoom window and the diagnosis window
RELEASE_EVERY = 4096  # rows appended between two releases of the older pages
SPILL_GROW_ROWS = 65536  # the most a spilled store grows by at once
_COLUMNS = (("_seq", np.uint64), ("_step", np.int64), ("_epoch", np.int32), ("_time", np.float64))


class StepColumns:
    """Growable column store: ``seq``, ``step``, ``epoch``, ``time`` and a ``values`` matrix.

    Views returned by the properties are valid until the next append that grows the
    store; copy them if you keep them. With ``spill`` the columns are file-backed and rows
    older than the newest ``hot_rows`` are given back to the OS as the store grows.
    """

    def __init__(self, width: int, capacity: int = INITIAL_CAPACITY, *, spill: SpillDir | None = None,
                 hot_rows: int = HOT_ROWS) -> None:
        if width < 0:
            raise ValueError("width must be >= 0")
        self.width = width
        self._n = 0
        self.spill = spill
        self.hot_rows = max(int(hot_rows), 0)
        self._released = 0
        capacity = max(16, capacity)
        # One growing array per column (see growing.py); a zero-width matrix needs no file.
        self._arrays: dict[str, GrowingArray] = {
            name: GrowingArray(dtype, (), capacity, spill=spill, spill_step=SPILL_GROW_ROWS) for name, dtype in _COLUMNS
        }
        self._arrays["_values"] = GrowingArray(np.float32, (width,), capacity, spill=spill if width else None,
                                               spill_step=SPILL_GROW_ROWS)
        self._bind()

    def _bind(self) -> None:
        """Point the column attributes at the arrays' buffers (again after a grow)."""
        for name, array in self._arrays.items():
            setattr(self, name, array.buffer)

    def __len__(self) -> int:
        return self._n

    @property
    def capacity(self) -> int:
        """Rows allocated (grows by doubling; spilled, by at most ``SPILL_GROW_ROWS`` at a time)."""
        return self._seq.shape[0]

    def _reserve(self, rows: int) -> None:
        needed = self._n + rows
        if needed <= self.capacity:
            return
        for array in self._arrays.values():
            array.rows = self._n  # the rows written so far (copied when a RAM array grows)
            array.reserve(needed)
        self._bind()

    def append(self, seq: int, step: int, epoch: int, time: float, values: np.ndarray) -> None:
        """Add one step; ``values`` must have ``width`` entries."""
        if values.shape[0] != self.width:
            raise ProtocolError(f"step has {values.shape[0]} values but the run's schema has {self.width} channels")
        if self._n == self.capacity:
            self._reserve(1)
        i = self._n
        self._seq[i] = seq
        self._step[i] = step
        self._epoch[i] = epoch
        self._time[i] = time
        self._values[i] = values
        self._n = i + 1
        if self.spill is not None and self._n - self._released >= RELEASE_EVERY:
            self._release()

    def append_step(self, step: Step) -> None:
        """Add one decoded :class:`Step`."""
        self.append(step.seq, step.step, step.epoch, step.time, step.values)

    def extend(self, chunk: StepChunk) -> None:
        """Add many steps at once (history replies, recording chunks)."""
        n = len(chunk)
        if n == 0:
            return
        if chunk.values.shape != (n, self.width):
            raise ProtocolError(
                f"step chunk is {chunk.values.shape[1] if chunk.values.ndim == 2 else '?'} channels wide "
                f"but the run's schema has {self.width}"
            )
        self._reserve(n)
        a, b = self._n, self._n + n
        self._seq[a:b] = chunk.seq
        self._step[a:b] = chunk.step
        self._epoch[a:b] = chunk.epoch
        self._time[a:b] = chunk.time
        self._values[a:b] = chunk.values
        self._n = b
        if self.spill is not None and self._n - self._released >= RELEASE_EVERY:
            self._release()

    def _release(self) -> None:
        """Give the pages of rows older than the newest ``hot_rows`` back to the OS."""
        self._released = self._n
        cold = self._n - self.hot_rows
        if cold > 0:
            for array in self._arrays.values():
                array.release(cold)

    @property
    def spill_failed(self) -> str:
        """Why the columns, or arrays kept beside them in the same spill folder (the charts'
        summaries), moved into RAM ("" while they spill or never did)."""
        own = next((array.failed for array in self._arrays.values() if array.failed), "")
        return own or (self.spill.failed if self.spill is not None else "")

    @property
    def seq(self) -> np.ndarray:
        """Sequence numbers (uint64) of the stored steps."""
        return self._seq[: self._n]

    @property
    def step(self) -> np.ndarray:
        """Training step numbers (int64)."""
        return self._step[: self._n]

    @property
    def epoch(self) -> np.ndarray:
        """Epoch of each step (int32)."""
        return self._epoch[: self._n]

    @property
    def time(self) -> np.ndarray:
        """Wall time of each step, seconds since the epoch (float64)."""
        return self._time[: self._n]

    @property
    def values(self) -> np.ndarray:
        """The ``(n, width)`` float32 matrix of channel values."""
        return self._values[: self._n]

    def column(self, index: int) -> np.ndarray:
        """One channel's values over all stored steps (a strided view)."""
        return self._values[: self._n, index]

    def last_seq(self) -> int:
        """Sequence number of the newest stored step, or -1 when empty."""
        return int(self._seq[self._n - 1]) if self._n else -1

    def chunk(self, run_id: str, start: int, stop: int) -> StepChunk:
        """Rows ``[start, stop)`` as a :class:`StepChunk` (copies, safe to send)."""
        stop = min(stop, self._n)
        start = max(0, min(start, stop))
        return StepChunk(
            run_id=run_id,
            seq=self._seq[start:stop].copy(),
            step=self._step[start:stop].copy(),
            epoch=self._epoch[start:stop].copy(),
            time=self._time[start:stop].copy(),
            values=self._values[start:stop].copy(),
        )

    def index_of_seq(self, seq: int) -> int:
        """Row of the first stored step whose sequence number is >= ``seq``."""
        return int(np.searchsorted(self.seq, np.uint64(max(seq, 0)), side="left"))
