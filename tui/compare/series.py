"""What a comparison plots: one channel of each run as (x, y) arrays, x by step, epoch or time.

A channel is a step channel (``loss/total``, ``loss/dice``, ``opt/lr``, ``grad/<layer>``,
...: one value per training step) or an epoch metric written ``val/<name>`` or
``train/<name>`` (``val/dice``: one value per finished epoch, read from the run's epoch
summaries). The x of a step is its step number, its epoch with the position inside the epoch
as a fraction (epoch 3 is drawn over [3, 4)), or its seconds since the run's first step. An
epoch summary sits at the end of its epoch: its step, ``epoch + 1``, or its time.

Pure: reads a :class:`~octa_tui.protocol.run.RunHistory`, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ...protocol import channels as ch
from ...protocol.run import RunHistory

X_MODES = ("step", "epoch", "time")
EPOCH_PREFIXES = ("val/", "train/")
# Offered first, in this order, when the runs have them.
PREFERRED = (ch.LOSS_TOTAL, "val/dice", ch.LOSS_BCE, ch.LOSS_DICE, ch.LOSS_MSE, ch.OPT_LR, ch.GRAD_TOTAL_NORM)


def is_epoch_channel(channel: str) -> bool:
    """Whether ``channel`` is a per-epoch metric (``val/dice``) rather than a step channel."""
    return channel.startswith(EPOCH_PREFIXES)


def log_scaled(channel: str) -> bool:
    """Whether the channel reads best on a log scale (gradient norms, learning rates)."""
    return channel.startswith("grad/") or channel in (ch.GRAD_TOTAL_NORM, ch.GRAD_MAX_PARAM_NORM, ch.OPT_LR)


def channels_of(histories: Sequence[RunHistory]) -> list[str]:
    """Every channel at least one run has, the usual ones first, then in schema order."""
    seen: dict[str, None] = {}
    for history in histories:
        for name in history.schema.channels:
            seen.setdefault(name, None)
        for epoch in history.epochs:
            for part, metrics in (("val", epoch.val), ("train", epoch.train)):
                for key in metrics:
                    seen.setdefault(f"{part}/{key}", None)
    first = [name for name in PREFERRED if name in seen]
    return first + [name for name in seen if name not in first]


def _epoch_x(epochs: np.ndarray) -> np.ndarray:
    """Epoch plus the step's position inside its epoch as a fraction of the epoch's steps."""
    n = epochs.shape[0]
    if n == 0:
        return np.zeros(0)
    change = np.flatnonzero(np.diff(epochs) != 0) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [n])))
    position = np.arange(n) - np.repeat(starts, lengths)
    return epochs.astype(np.float64) + position / np.repeat(lengths, lengths)


def step_x(history: RunHistory, mode: str, rows: int | None = None) -> np.ndarray:
    """The x of each of the run's first ``rows`` steps (all by default) in ``mode``."""
    steps = history.steps
    n = len(steps) if rows is None else min(rows, len(steps))
    if mode == "step":
        return steps.step[:n].astype(np.float64)
    if mode == "epoch":
        return _epoch_x(steps.epoch[:n])
    if mode == "time":
        t = steps.time[:n]
        return t - t[0] if n else t.astype(np.float64)
    raise ValueError(f"x mode must be one of {', '.join(X_MODES)}, got {mode!r}")


def run_series(history: RunHistory, channel: str, mode: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``channel`` for one run; empty arrays when the run does not have it."""
    if mode not in X_MODES:
        raise ValueError(f"x mode must be one of {', '.join(X_MODES)}, got {mode!r}")
    if is_epoch_channel(channel):
        part, name = channel.split("/", 1)
        rows = [(e, float(getattr(e, part)[name])) for e in history.epochs if name in getattr(e, part)]
        if not rows:
            return np.zeros(0), np.zeros(0)
        y = np.array([value for _, value in rows], dtype=np.float64)
        if mode == "step":
            x = np.array([e.step for e, _ in rows], dtype=np.float64)
        elif mode == "epoch":
            x = np.array([e.epoch + 1 for e, _ in rows], dtype=np.float64)
        else:
            start = float(history.steps.time[0]) if len(history.steps) else rows[0][0].time
            x = np.array([e.time - start for e, _ in rows], dtype=np.float64)
        return x, y
    if not history.schema.has(channel):
        return np.zeros(0), np.zeros(0)
    steps = history.steps
    n = len(steps)  # read once: a live history may grow meanwhile
    y = steps.values[:n, history.schema.index(channel)]
    return step_x(history, mode, n), y


def x_of_step(history: RunHistory, step: int, mode: str) -> float:
    """Where training step ``step`` lies on the x axis in ``mode`` (for markers)."""
    if mode == "step":
        return float(step)
    steps = history.steps
    n = len(steps)
    if n == 0:
        return float("nan")
    row = int(np.searchsorted(steps.step[:n], step, side="left"))
    row = min(row, n - 1)
    return float(step_x(history, mode, row + 1)[row]) if mode == "epoch" else float(steps.time[row] - steps.time[0])


def value_at(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """The y of the row whose x is nearest to ``at`` at or before it (NaN when none)."""
    if x.size == 0:
        return float("nan")
    i = int(np.searchsorted(x, at, side="right")) - 1
    return float(y[max(i, 0)])
