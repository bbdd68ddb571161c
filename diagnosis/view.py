"""A windowed, read-only look at a :class:`RunHistory`: what the rules may read, and no more.

The engine runs on every UI refresh over runs of millions of steps, so nothing here touches
more than the newest ``window`` rows of the step store (plus a few rows at its start for the
starting loss) and the newest epoch summaries: the cost of an evaluation does not grow with
the run. Every array handed out is a float64 copy, so a rule never holds a view that the next
append could invalidate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from octa_tui.protocol import channels as ch
from octa_tui.protocol.messages import DatasetReport, EpochSummary
from octa_tui.protocol.run import RunHistory

from . import facts

# EpochSummary keys the rules understand, in the order they are tried.
TRAIN_LOSS_KEYS = ("loss", "total", "loss/total")
VAL_LOSS_KEYS = ("loss", "total", "loss/total")
DICE_KEYS = ("dice", "val_dice", "dice_score")



def metric(metrics: Mapping[str, float], keys: Sequence[str]) -> float:
    """The first finite value among ``keys`` in an epoch summary's metrics (NaN if none)."""
    for key in keys:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return math.nan


def finite_mean(values: np.ndarray) -> float:
    """Mean of the finite entries (NaN when there are none)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


class RunView:
    """The newest ``window`` steps, the epoch summaries and the run's facts, read once."""

    def __init__(self, history: RunHistory, window: int) -> None:
        self.history = history
        self.schema = history.schema
        self.config: Mapping[str, Any] = self.schema.config or {}
        self.dataset: DatasetReport | None = history.dataset
        self.epochs: list[EpochSummary] = history.epochs
        self._index = {key: i for i, key in enumerate(self.schema.channels)}
        store = history.steps
        self.n_steps = len(store)
        self.window = min(self.n_steps, max(1, window))
        start = self.n_steps - self.window
        self._values = store.values[start:]  # a view: rows are copied column by column below
        self._head = store.values[: min(self.n_steps, 64)]
        self.steps = store.step[start:].copy()
        self.epoch_of_step = store.epoch[start:].copy()
        self.step = int(self.steps[-1]) if self.n_steps else -1
        self.epoch = int(self.epoch_of_step[-1]) if self.n_steps else -1

    # --- channels -------------------------------------------------------------------------
    def has(self, key: str) -> bool:
        """Whether the run streams channel ``group/name``."""
        return key in self._index

    def index(self, key: str) -> int:
        """Position of a channel in the step vector (KeyError if absent)."""
        return self._index[key]

    def group(self, group: str) -> tuple[str, ...]:
        """The ``group/name`` keys of one group, in schema order."""
        return tuple(f"{group}/{name}" for name in dict(self.schema.groups())[group])

    def recent(self, key: str, rows: int | None = None) -> np.ndarray | None:
        """The newest ``rows`` values of a channel (the whole window by default), or None if absent."""
        i = self._index.get(key)
        if i is None or self.n_steps == 0:
            return None
        rows = self.window if rows is None else min(rows, self.window)
        return self._values[self.window - rows :, i].astype(np.float64)

    def recent_matrix(self, keys: Sequence[str], rows: int) -> np.ndarray:
        """The newest ``rows`` values of several channels as a (rows, len(keys)) float64 array."""
        rows = min(rows, self.window)
        idx = [self._index[k] for k in keys]
        return self._values[self.window - rows :, idx].astype(np.float64)

    def first(self, key: str, rows: int) -> np.ndarray | None:
        """The oldest ``rows`` values of a channel (at most 64), or None if absent."""
        i = self._index.get(key)
        if i is None or self.n_steps == 0:
            return None
        return self._head[:rows, i].astype(np.float64)

    def setting(self, key: str) -> float:
        """The newest finite value of an ``opt/*`` channel: the setting in force (NaN if unknown);
        read by :func:`octa_tui.diagnosis.facts.setting`, as the panels read it."""
        return facts.setting(self.history, key)

    # --- the run's facts (loss kind, settings, run length: :mod:`.facts`) -------------------
    def config_number(self, key: str) -> float:
        """A numeric config value, NaN when absent or not a number."""
        return facts.config_number(self.config, key)

    @property
    def train_images(self) -> int:
        """Training images, from the data set report or the config (0 when unknown)."""
        if self.dataset is not None and self.dataset.train_images > 0:
            return self.dataset.train_images
        n = self.config_number("train_images")
        if math.isfinite(n) and n > 0:
            return int(n)
        if self.dataset is not None and self.dataset.pairs > 0:
            return self.dataset.pairs
        return 0

    # --- epoch summaries -----------------------------------------------------------------
    def epoch_train_losses(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        """(epochs, losses) of the newest ``count`` finished epochs with a training loss.

        From the epoch summaries; when they carry no training loss, from the per-step total
        loss of the epochs that lie wholly inside the step window.
        """
        epochs: list[int] = []
        losses: list[float] = []
        for summary in reversed(self.epochs):
            value = metric(summary.train, TRAIN_LOSS_KEYS)
            if math.isfinite(value):
                epochs.append(summary.epoch)
                losses.append(value)
                if len(losses) == count:
                    break
        if losses:
            return np.array(epochs[::-1]), np.array(losses[::-1])
        return self._epoch_means_from_steps(count)

    def _epoch_means_from_steps(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        total = self.recent(ch.LOSS_TOTAL)
        if total is None:
            return np.array([], dtype=int), np.array([])
        epoch = self.epoch_of_step
        # The current epoch is unfinished; the window's first may be cut: neither is an epoch mean.
        first_complete = epoch[0] + (1 if self.window < self.n_steps else 0)
        done = (epoch >= first_complete) & (epoch < epoch[-1])
        if not done.any():
            return np.array([], dtype=int), np.array([])
        ids, inverse = np.unique(epoch[done], return_inverse=True)
        values = total[done]
        finite = np.isfinite(values)
        sums = np.bincount(inverse[finite], weights=values[finite], minlength=ids.size)
        counts = np.bincount(inverse[finite], minlength=ids.size)
        keep = counts > 0
        means = sums[keep] / counts[keep]
        return ids[keep][-count:], means[-count:]

    def latest_epoch_metric(self, split: str, keys: Sequence[str]) -> tuple[int, float]:
        """(epoch, value) of the newest summary whose ``train``/``val`` carries one of ``keys``."""
        for summary in reversed(self.epochs[-20:]):
            value = metric(getattr(summary, split), keys)
            if math.isfinite(value):
                return summary.epoch, value
        return -1, math.nan

    @property
    def val_dice(self) -> float:
        """The newest validation Dice score (NaN when none was reported)."""
        return self.latest_epoch_metric("val", DICE_KEYS)[1]
