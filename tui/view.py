"""What the panels show, computed from a :class:`RunHistory`: pure functions, no Textual.

The widgets draw; this module decides what to draw: the latest settings, the steps where
a setting changed, the speed and ETA, the layer groups of the gradient panel, the trivial
baseline of the loss. Everything here reads a history and returns plain values, so it is
tested without an app.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence

import numpy as np

from ..diagnosis.facts import Settings, settings_in_force
from ..protocol import channels as ch
from ..protocol.columns import HOT_ROWS, RELEASE_EVERY
from ..protocol.growing import Derived, GrowingArray
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


def current_settings(history: RunHistory) -> Settings:
    """The settings the trainer reported most recently: the one reading the rules use too
    (:func:`octa_tui.diagnosis.facts.settings_in_force`)."""
    return settings_in_force(history)


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


def _planned_length(history: RunHistory) -> tuple[int, int, int] | None:
    """(epochs, steps per epoch, max_steps) from the run's config; 0 where it does not say."""
    config = history.schema.config
    try:
        return (int(config.get("epochs", 0) or 0), int(config.get("steps_per_epoch", 0) or 0),
                int(config.get("max_steps", 0) or 0))
    except (TypeError, ValueError):
        return None


def total_steps(history: RunHistory) -> int | None:
    """The run's planned length in steps, when the config says: epochs x steps per epoch, or
    the trainer's ``max_steps`` when that stops it sooner."""
    planned = _planned_length(history)
    if planned is None:
        return None
    epochs, per_epoch, max_steps = planned
    length = epochs * per_epoch if epochs > 0 and per_epoch > 0 else None
    if max_steps > 0:
        return min(length, max_steps) if length is not None else max_steps
    return length


def total_epochs(history: RunHistory) -> int | None:
    """The epochs the run will train: its ``epochs``, or fewer when ``max_steps`` ends it first."""
    planned = _planned_length(history)
    if planned is None or planned[0] <= 0:
        return None
    epochs, per_epoch, max_steps = planned
    if max_steps > 0 and per_epoch > 0:
        return min(epochs, -(-max_steps // per_epoch))
    return epochs


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


# Group norms are summed in float32 (several times faster over a million rows) wherever that
# is exact to float32's precision: squares of values in this range neither overflow nor
# lose digits. Rows with a norm outside it (an exploding or vanishing layer, NaN, Inf) are
# summed again in float64.
_FLOAT32_SAFE_NORMS = (1e-18, 1e18)


def group_norms(grads: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per row, the norm of each group of columns of ``grads`` (``sqrt(sum(g ** 2))``; NaN and
    Inf propagate); group ``j`` is columns ``starts[j]`` up to the next start. float64 out.

    float32 input is squared in float32 and summed per group by one matrix product with a
    0/1 membership matrix (BLAS reads the strided rows of the step matrix in place, where a
    reshape would copy them); rows whose sums leave the range where float32 is exact are
    summed again in float64.
    """
    sizes = np.diff(np.append(starts, grads.shape[1]))
    m = grads.shape[0]
    if grads.dtype != np.float32 or not m or not sizes.size:
        return np.sqrt(np.add.reduceat(np.square(grads, dtype=np.float64), starts, axis=1))
    members = np.zeros((grads.shape[1], sizes.size), dtype=np.float32)
    for j, (first, size) in enumerate(zip(starts, sizes)):
        members[first : first + size, j] = 1.0
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        squares = np.square(grads)
        sums = squares @ members
        # A product with 0 * Inf or 0 * NaN would smear one layer's NaN/Inf over every group:
        # rows holding any non-finite square are redone below, group by group.
        low, high = _FLOAT32_SAFE_NORMS
        redo = np.flatnonzero(~((sums >= low * low) & (sums <= high * high)).all(axis=1))
        norms = np.sqrt(sums, dtype=np.float64)
        if redo.size:
            again = np.square(grads[redo], dtype=np.float64)
            norms[redo] = np.sqrt(np.add.reduceat(again, starts, axis=1))
    return norms


class GroupNormCache:
    """Per-step gradient norm of each layer group, extended as steps arrive.

    A group's norm is the norm of all its layers' gradients together,
    ``sqrt(sum(norm_i ** 2))`` (NaN/Inf propagate). Recomputing it over a million steps
    every frame would cost tens of milliseconds, so only new rows are computed, into a
    :class:`~octa_tui.protocol.growing.GrowingArray` (spilled when the history's steps are).
    """

    def __init__(self) -> None:
        self.derived = Derived()
        self._norms: GrowingArray | None = None
        self._released = 0
        self._columns_cache: tuple | None = None

    @property
    def generation(self) -> int:
        """Changes whenever the cache starts over (a new history, other groups)."""
        return self.derived.generation

    def _columns(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]]) -> tuple:
        """Each group's step columns (kept for the last schema and groups: looking up a
        hundred layers' columns on every redraw costs more than the redraw)."""
        schema, wanted = history.schema, tuple(tuple(idx) for _, idx in groups)
        cached = self._columns_cache
        if cached is not None and cached[0] is schema and cached[1] == wanted:
            return cached[2]
        first = schema.index(f"grad/{schema.grad[0]}") if schema.grad else 0
        known = schema.channels[first : first + len(schema.grad)] == tuple(f"grad/{name}" for name in schema.grad)
        columns = tuple(tuple((first + i) if known else schema.index(f"grad/{schema.grad[i]}") for i in idx)
                        for idx in wanted)
        self._columns_cache = (schema, wanted, columns)
        return columns

    def rows_done(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]]) -> int:
        """Rows of ``history`` whose norms for ``groups`` are computed already (0 for others)."""
        return self.derived.rows if self.derived.covers(history, self._columns(history, groups)) else 0

    def norms(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]], rows: int) -> np.ndarray:
        """(rows, len(groups)) group norms for the first ``rows`` steps."""
        columns = self._columns(history, groups)
        done = self.derived.start(history, rows, columns)
        if done == 0 or self._norms is None:  # starting over: a fresh array (one in use by a chart stays valid)
            spill = history.steps.spill if columns else None
            self._norms = GrowingArray(np.float64, (len(columns),), max(rows, 1024), spill=spill)
            self._released = 0
        norms = self._norms
        assert norms is not None
        if rows > done:
            buffer = norms.reserve(rows)
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
                    buffer[a:z] = group_norms(grads, starts)
            norms.rows = rows
            self.derived.done(rows)
            if norms.spilled and rows - self._released >= RELEASE_EVERY:
                # Like the steps they come from, only the newest norms stay resident.
                self._released = rows
                norms.release(rows - HOT_ROWS)
        return norms.buffer[:rows]


def channel_group_span(schema, key: str) -> tuple[str, int, int]:
    """The schema group holding channel ``key`` and the columns ``[first, stop)`` it spans."""
    first = 0
    for group, names in schema.groups():
        if key.startswith(group + "/") and key[len(group) + 1 :] in names:
            return group, first, first + len(names)
        first += len(names)
    raise KeyError(f"channel {key!r} is not in run {schema.run_id}'s schema")


class PositiveCounts:
    """How many rows of one channel are above zero in a window, from counts kept per block.

    The gradient panel's "explosions N steps" counts the steps whose parameter count over the
    bound was positive, over the shown window. Counting the raw column each frame would read
    every row of a long run (and page a spilled history back in); the counts of complete
    ``BLOCK_ROWS``-row blocks are kept instead (a growing array extended as rows arrive), and
    only the partial blocks at a window's ends are read row by row.
    """

    BLOCK_ROWS = 64

    def __init__(self) -> None:
        self.derived = Derived()
        self._blocks = GrowingArray(np.int32, (), 64)

    def count(self, history: RunHistory, key: str, start: int, rows: int) -> int | None:
        """Rows ``[start, rows)`` of ``key`` that are > 0 (NaN is not); None when not streamed."""
        if not history.schema.has(key):
            return None
        column = history.steps.values[:rows, history.schema.index(key)]
        b = self.BLOCK_ROWS
        complete = rows // b
        done = self.derived.start(history, complete, key)
        if done == 0:
            self._blocks.rows = 0
        if complete > done:
            fresh = column[done * b : complete * b].reshape(-1, b) > 0
            self._blocks.extend(fresh.sum(axis=1).astype(np.int32))
            self.derived.done(complete)
        blocks = self._blocks.values
        first, last = -(-start // b), rows // b
        if last <= first:
            return int(np.count_nonzero(column[start:rows] > 0))
        return int(blocks[first:last].sum() + np.count_nonzero(column[start : first * b] > 0)
                   + np.count_nonzero(column[last * b : rows] > 0))


class HistorySummary:
    """Block min/max summaries of a history's steps and of its gradient group norms, so the
    charts of a long run are drawn from summaries instead of every row (see summary.py)."""

    def __init__(self) -> None:
        # One per schema group (loss, out, opt, ...), made when a chart first asks for one of
        # its channels: the gradient layers, most of a step's width, are charted through
        # their group norms, so their raw columns are never summarised.
        self.channel_groups: dict[str, BlockEnvelopes] = {}
        self._derived: dict[str, Derived] = {}  # which history (run, generation) each group's summary covers
        self.group_norms = GroupNormCache()
        self.groups = BlockEnvelopes()
        self.explosions = PositiveCounts()

    @property
    def steps(self) -> BlockEnvelopes:
        """The block summaries of the loss channels (the group every run charts)."""
        return self.channel_groups.setdefault("loss", BlockEnvelopes())

    def column(self, history: RunHistory, key: str, start: int, rows: int) -> Column | None:
        """Channel ``key`` over rows ``[start, rows)``; None when the run does not stream it."""
        if not history.schema.has(key):
            return None
        group, first, stop = channel_group_span(history.schema, key)
        values = history.steps.values[:rows, first:stop]
        summary = self.channel_groups.setdefault(group, BlockEnvelopes())
        derived = self._derived.setdefault(group, Derived())
        derived.start(history, rows, (first, stop))
        summary.update((*derived.token, first, stop), values, history.steps.spill)
        derived.done(rows)
        return Column(summary, values, history.schema.index(key) - first, start, rows)

    def group_columns(self, history: RunHistory, groups: Sequence[tuple[str, list[int]]], start: int,
                      rows: int) -> list[Column]:
        """Each layer group's norm over rows ``[start, rows)``."""
        norms = self.group_norms.norms(history, groups, rows)
        self.groups.update(self.group_norms.derived.token, norms, history.steps.spill)
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


RATIO_ROWS = 50  # the newest steps whose median norm the gradient ratio compares


def layer_ratio(history: RunHistory, start: int, rows: int) -> float:
    """The gradient ratio as the diagnosis reads it (:data:`~octa_tui.diagnosis.gradients.RATIO_NAME`,
    :func:`~octa_tui.diagnosis.gradients.shallow_deep`): the first weight layer's gradient norm
    over the last one's, of each layer's median over the newest steps of the window; layers
    that got no gradient are skipped. NaN when undefined."""
    from ..diagnosis.gradients import shallow_deep

    names = history.schema.grad
    if len(names) < 2 or rows <= start:
        return math.nan
    first_row = max(start, rows - RATIO_ROWS)
    columns = [history.schema.index(f"grad/{name}") for name in names]
    if columns == list(range(columns[0], columns[-1] + 1)):
        recent = history.steps.values[first_row:rows, columns[0] : columns[-1] + 1]
    else:
        recent = history.steps.values[first_row:rows][:, columns]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a layer with no finite value: its median is NaN
        medians = np.nanmedian(recent.astype(np.float64), axis=0)
    return shallow_deep(names, medians)


def constant_baseline(history: RunHistory) -> float | None:
    """The loss of the best constant prediction for this run's data: the line a model must beat.

    Read from :func:`octa_tui.diagnosis.facts.constant_baseline`, the one place the rules and
    the chart take it from. None when the run sent no dataset report, its statistics are
    missing, or it uses a loss without a known baseline.
    """
    base = loss_baseline(history)
    return base.loss if base is not None else None


def loss_baseline(history: RunHistory):
    """The run's :class:`~octa_tui.diagnosis.facts.ConstantBaseline` (value and the loss
    channel it compares with), or None; see :func:`constant_baseline`."""
    from ..diagnosis import facts

    base = facts.constant_baseline(history)
    if base is None or not math.isfinite(base.loss):
        return None
    return base


def val_metric(history: RunHistory) -> tuple[str, list[tuple[int, float]]]:
    """The validation figure the run reports per epoch and its (epoch, value) list: Dice for a
    segmentation run, else the validation loss (a heatmap run has no Dice)."""
    dice = [(e.epoch, float(e.val["dice"])) for e in history.epochs if "dice" in e.val]
    if dice or history.schema.task == "segmentation":
        return "Dice", dice
    return "loss", [(e.epoch, float(e.val["loss"])) for e in history.epochs if "loss" in e.val]


class ChangeMarkerCache:
    """:func:`setting_changes` kept up to date as steps arrive, scanning only new rows."""

    def __init__(self) -> None:
        self.derived = Derived()
        self._markers = GrowingArray(np.int64, (), 16)

    def markers(self, history: RunHistory, rows: int) -> list[int]:
        """Row indices where a setting changed, among the first ``rows`` steps."""
        done = self.derived.start(history, rows)
        if done == 0:
            self._markers.rows = 0
        if rows > done:
            begin = max(done - 1, 0)
            fresh = _changed_rows(history.schema, history.steps.values[begin:rows])
            self._markers.extend(begin + fresh)
            self.derived.done(rows)
        return self._markers.values.tolist()
