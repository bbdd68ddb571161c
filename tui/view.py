"""What the panels show, computed from a :class:`RunHistory`: pure functions, no Textual.

The widgets draw; this module decides what to draw: the latest settings, the steps where
a setting changed, the speed and ETA, the layer groups of the gradient panel, the trivial
baseline of the loss. Everything here reads a history and returns plain values, so it is
tested without an app.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..protocol import channels as ch
from ..protocol.run import RunHistory
from .summary import BlockEnvelopes, Column

SETTING_CHANNELS = (ch.OPT_LR, ch.OPT_BCE_WEIGHT, ch.OPT_DICE_WEIGHT, ch.OPT_POS_WEIGHT, ch.OPT_CLIP)
SPEED_WINDOW_ROWS = 200
NORM_SLICE_ROWS = 1 << 14


def channel_values(history: RunHistory, key: str, rows: int | None = None) -> np.ndarray | None:
    """One channel's values for the first ``rows`` stored steps (all when None), or None
    when the run does not stream it."""
    if not history.schema.has(key):
        return None
    n = len(history.steps) if rows is None else rows
    return history.steps.values[:n, history.schema.index(key)]


def latest(history: RunHistory, key: str) -> float:
    """The newest value of a channel; NaN when absent or before the first step."""
    n = len(history.steps)
    if n == 0 or not history.schema.has(key):
        return math.nan
    return float(history.steps.values[n - 1, history.schema.index(key)])


@dataclass(frozen=True)
class Settings:
    """The training settings in force at the newest step (NaN where the run does not say)."""

    lr: float
    bce_weight: float
    dice_weight: float
    pos_weight: float
    clip: float


def current_settings(history: RunHistory) -> Settings:
    """The settings the trainer reported with its newest step."""
    return Settings(*(latest(history, key) for key in SETTING_CHANNELS))


def setting_changes(history: RunHistory, rows: int | None = None) -> list[int]:
    """Row indices where lr, a loss weight, pos_weight or clip differs from the row before.

    These are the markers on the charts: "something was changed here".
    """
    n = len(history.steps) if rows is None else rows
    return _changed_rows(history.schema, history.steps.values[:n]).tolist()


def _changed_rows(schema, values: np.ndarray) -> np.ndarray:
    """Rows (of ``values``) whose settings differ from the row before."""
    indices = [schema.index(key) for key in SETTING_CHANNELS if schema.has(key)]
    n = values.shape[0]
    if n < 2 or not indices:
        return np.zeros(0, dtype=np.int64)
    block = values[:, indices]
    changed = np.zeros(n - 1, dtype=bool)
    for j in range(block.shape[1]):
        column = block[:, j]
        a, b = column[1:], column[:-1]
        changed |= (a != b) & ~(np.isnan(a) & np.isnan(b))
    return np.flatnonzero(changed) + 1


def steps_per_second(history: RunHistory, window_rows: int = SPEED_WINDOW_ROWS) -> float | None:
    """Training speed over the newest ``window_rows`` steps (by their wall time)."""
    n = len(history.steps)
    if n < 2:
        return None
    first = max(n - window_rows, 0)
    steps = history.steps.step
    times = history.steps.time
    elapsed = float(times[n - 1] - times[first])
    advanced = int(steps[n - 1] - steps[first])
    if elapsed <= 0 or advanced <= 0:
        return None
    return advanced / elapsed


def total_steps(history: RunHistory) -> int | None:
    """The run's planned length in steps (epochs x steps per epoch), when the config says."""
    config = history.schema.config
    try:
        epochs = int(config.get("epochs", 0))
        per_epoch = int(config.get("steps_per_epoch", 0))
    except (TypeError, ValueError):
        return None
    return epochs * per_epoch if epochs > 0 and per_epoch > 0 else None


def missing_steps(history: RunHistory) -> int:
    """Steps between the first and newest sequence number that never arrived."""
    n = len(history.steps)
    if n == 0:
        return 0
    seq = history.steps.seq
    return max(int(seq[n - 1]) - int(seq[0]) + 1 - n, 0)


def window_start(n_rows: int, window_steps: int | None) -> int:
    """First row shown when the time window is the last ``window_steps`` rows (None: all)."""
    if window_steps is None or window_steps <= 0:
        return 0
    return max(n_rows - window_steps, 0)


_GROUP_KEY = re.compile(r"^([A-Za-z_]+\d*)")


def _group_key(name: str) -> str:
    head = name.split(".")[0].split("/")[0]
    match = _GROUP_KEY.match(head)
    return match.group(1) if match else head


def layer_groups(names: Sequence[str], max_rows: int) -> list[tuple[str, list[int]]]:
    """Group gradient layers (shallow to deep) into at most ``max_rows`` rows.

    Layers are grouped by their module prefix (``enc1.conv1.weight`` -> ``enc1``); when there
    are still more groups than rows, neighbouring groups are merged evenly. Order is kept.
    """
    max_rows = max(int(max_rows), 1)
    groups: list[tuple[str, list[int]]] = []
    for i, name in enumerate(names):
        key = _group_key(name)
        if groups and groups[-1][0] == key:
            groups[-1][1].append(i)
        else:
            groups.append((key, [i]))
    if len(groups) <= max_rows:
        return [(names[idx[0]] if len(idx) == 1 else label, idx) for label, idx in groups]
    merged: list[tuple[str, list[int]]] = []
    bounds = np.linspace(0, len(groups), max_rows + 1).astype(int)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b <= a:
            continue
        part = groups[a:b]
        label = part[0][0] if len(part) == 1 else f"{part[0][0]}..{part[-1][0]}"
        merged.append((label, [i for _, idx in part for i in idx]))
    return merged


class GroupNormCache:
    """Per-step gradient norm of each layer group, extended as steps arrive.

    A group's norm is the norm of all its layers' gradients together,
    ``sqrt(sum(norm_i ** 2))`` (NaN/Inf propagate). Recomputing it over a million steps
    every frame would cost tens of milliseconds, so only new rows are computed, into a
    buffer that grows by doubling.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._norms = np.zeros((0, 0), dtype=np.float64)
        self._rows = 0
        self.generation = 0  # changes whenever the cache starts over

    def norms(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]], rows: int) -> np.ndarray:
        """(rows, len(groups)) group norms for the first ``rows`` steps."""
        columns = [[history.schema.index(f"grad/{history.schema.grad[i]}") for i in idx] for _, idx in groups]
        key = (id(history), tuple(tuple(c) for c in columns))
        if key != self._key or self._rows > rows:
            self._key = key
            self._norms = np.zeros((max(rows, 1024), len(columns)), dtype=np.float64)
            self._rows = 0
            self.generation += 1
        done = self._rows
        if rows > done:
            if rows > self._norms.shape[0]:
                grown = np.zeros((max(rows, 2 * self._norms.shape[0]), len(columns)), dtype=np.float64)
                grown[:done] = self._norms[:done]
                self._norms = grown
            values = history.steps.values
            order = np.array([c for cols in columns for c in cols], dtype=np.intp)
            starts = np.cumsum([0] + [len(cols) for cols in columns[:-1]])
            # Layers of a group are neighbouring channels, so usually one slice covers all.
            span = slice(int(order[0]), int(order[0]) + len(order))
            contiguous = bool(np.array_equal(order, np.arange(span.start, span.stop)))
            with np.errstate(over="ignore", invalid="ignore"):
                # In slices of rows, so a long history (a replay opened at its end) needs no
                # float64 copy of every row at once.
                for a in range(done, rows, NORM_SLICE_ROWS):
                    z = min(a + NORM_SLICE_ROWS, rows)
                    grads = values[a:z, span] if contiguous else values[a:z, order]
                    squares = np.square(grads, dtype=np.float64)
                    self._norms[a:z] = np.sqrt(np.add.reduceat(squares, starts, axis=1))
            self._rows = rows
        return self._norms[:rows]


class HistorySummary:
    """Block min/max summaries of a history's steps and of its gradient group norms, so the
    charts of a long run are drawn from summaries instead of every row (see summary.py)."""

    def __init__(self) -> None:
        self.steps = BlockEnvelopes()
        self.group_norms = GroupNormCache()
        self.groups = BlockEnvelopes()

    def column(self, history: RunHistory, key: str, start: int, rows: int) -> Column | None:
        """Channel ``key`` over rows ``[start, rows)``; None when the run does not stream it."""
        if not history.schema.has(key):
            return None
        values = history.steps.values[:rows]
        self.steps.update(id(history), values)
        return Column(self.steps, values, history.schema.index(key), start, rows)

    def group_columns(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]], start: int,
                      rows: int) -> list[Column]:
        """Each layer group's norm over rows ``[start, rows)``."""
        norms = self.group_norms.norms(history, groups, rows)
        self.groups.update((id(history), self.group_norms.generation), norms)
        return [Column(self.groups, norms, j, start, rows) for j in range(len(groups))]


def shallow_deep_ratio(latest_norms: Sequence[float]) -> float:
    """The first (shallowest) group's norm over the last (deepest) one's; NaN if undefined.

    The seed reads a ratio far from 1 (more than 10x) as a sign of vanishing gradients.
    """
    if len(latest_norms) < 2:
        return math.nan
    shallow, deep = float(latest_norms[0]), float(latest_norms[-1])
    if not (math.isfinite(shallow) and math.isfinite(deep)) or deep <= 0:
        return math.nan
    return shallow / deep


def constant_baseline(history: RunHistory) -> float | None:
    """The loss of the best constant prediction for this run's data: the line a model must beat.

    Computed by :mod:`octa_tui.diagnosis.baseline` from the dataset report's target
    statistics and the loss weights in force now. None when the run sent no dataset report,
    its statistics are missing, or it uses a loss without a known baseline.
    """
    from ..diagnosis import baseline

    report = history.dataset
    if report is None:
        return None
    loss = str(history.schema.config.get("loss", ""))
    settings = current_settings(history)
    pos_weight = settings.pos_weight if math.isfinite(settings.pos_weight) and settings.pos_weight > 0 else 1.0
    try:
        if loss == "mse":
            terms = max(1, sum(1 for name in history.schema.loss if name != "total"))
            return baseline.mse_baseline(float(report.target_var), terms).loss
        mean = float(report.target_mean)
        if loss == "bce":
            return baseline.bce_baseline(mean, pos_weight).loss
        if loss == "dice_bce":
            bce_w = settings.bce_weight if math.isfinite(settings.bce_weight) else 0.5
            dice_w = settings.dice_weight if math.isfinite(settings.dice_weight) else 0.5
            return baseline.dice_bce_baseline(mean, bce_w, dice_w, pos_weight).loss
    except ValueError:
        return None
    return None


def val_dice(history: RunHistory) -> list[tuple[int, float]]:
    """(epoch, validation Dice) of every finished epoch that reported one."""
    return [(e.epoch, float(e.val["dice"])) for e in history.epochs if "dice" in e.val]


class ChangeMarkerCache:
    """:func:`setting_changes` kept up to date as steps arrive, scanning only new rows."""

    def __init__(self) -> None:
        self._history_id: int | None = None
        self._rows = 0
        self._markers: list[int] = []

    def markers(self, history: RunHistory, rows: int) -> list[int]:
        """Row indices where a setting changed, among the first ``rows`` steps."""
        if id(history) != self._history_id or rows < self._rows:
            self._history_id, self._rows, self._markers = id(history), 0, []
        if rows > self._rows:
            begin = max(self._rows - 1, 0)
            fresh = _changed_rows(history.schema, history.steps.values[begin:rows])
            self._markers.extend((begin + fresh).tolist())
            self._rows = rows
        return self._markers

