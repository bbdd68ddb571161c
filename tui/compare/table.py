"""The run table of a comparison: what differs between the runs and how each is doing.

Only the config keys whose values differ between the runs are columns (a sweep over lr and
seed shows ``lr`` and ``seed``, not the twenty settings they share). Each run's row has its
best and last validation Dice, its loss now (the mean of its last :data:`LOSS_NOW_STEPS`
steps of ``loss/total``), its steps/s (over its last :data:`RATE_STEPS` steps), its state,
the verdicts the diagnosis engine gives it, and the changes applied to it with their fix
trial's outcome. A verdict cell lists the other runs that share it, so "plateau (1 3 5)"
reads as: this run and runs 1, 3 and 5 are on a plateau.

Groups: by one config key, or by every differing key but the seed (the seeds of one setting
then form one group). Pure: no Textual, no I/O except :func:`write_csv`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...protocol import channels as ch
from ...protocol.run import RunHistory
from ..format import format_number

LOSS_NOW_STEPS = 20
RATE_STEPS = 200
SEED_KEYS = ("seed",)
SHARED_SHOWN = 5  # run numbers listed in a verdict cell before "+N"
BY_ALL_BUT_SEED = "all but seed"
_MISSING = "-"


@dataclass(frozen=True)
class Change:
    """A change applied to a run (a ``command_applied`` event) and its fix trial's outcome."""

    step: int
    op: str
    text: str
    outcome: str = ""  # helped | no effect | hurt | pending | "" (not a trial)


@dataclass(frozen=True)
class RunRow:
    """One run of the comparison as the table shows it."""

    number: int
    label: str
    kind: str  # recorded | live
    state: str
    steps: int
    loss_now: float
    best_dice: float
    last_dice: float
    steps_per_s: float
    config: Mapping[str, Any] = field(default_factory=dict)
    verdicts: tuple[str, ...] = ()
    changes: tuple[Change, ...] = ()
    cleared: tuple[str, ...] = ()  # verdicts raised earlier in this comparison that no longer hold


def _last_mean(values: np.ndarray, k: int) -> float:
    tail = np.asarray(values[-k:], dtype=np.float64)
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


def run_facts(history: RunHistory) -> dict[str, Any]:
    """Loss now, best/last val Dice, steps/s and step count of one run's history."""
    steps = history.steps
    n = len(steps)
    loss_now = float("nan")
    if n and history.schema.has(ch.LOSS_TOTAL):
        loss_now = _last_mean(steps.values[max(0, n - LOSS_NOW_STEPS):n, history.schema.index(ch.LOSS_TOTAL)],
                              LOSS_NOW_STEPS)
    dice = [float(e.val["dice"]) for e in history.epochs if "dice" in e.val]
    finite = [d for d in dice if math.isfinite(d)]
    rate = float("nan")
    if n >= 2:
        a = max(0, n - RATE_STEPS)
        span = float(steps.time[n - 1] - steps.time[a])
        if span > 0:
            rate = float(steps.step[n - 1] - steps.step[a]) / span
    return {
        "steps": int(steps.step[n - 1]) + 1 if n else 0,
        "loss_now": loss_now,
        "best_dice": max(finite) if finite else float("nan"),
        "last_dice": dice[-1] if dice else float("nan"),
        "steps_per_s": rate,
    }


def changes_of(history: RunHistory, trials: Iterable[Any] = ()) -> tuple[Change, ...]:
    """The run's applied changes, oldest first, each with its trial outcome where judged."""
    from ..format import format_command

    outcome_at = {int(t.step): t.outcome for t in trials}
    out = []
    for event in history.events:
        if event.kind != "command_applied":
            continue
        data = dict(event.data)
        op = str(data.get("op", "?"))
        args = {k: v for k, v in data.items() if k in ("lr", "bce", "dice", "pos_weight", "clip", "new")}
        text = format_command(op, args) if args else op
        out.append(Change(int(event.step), op, text, outcome_at.get(int(event.step), "")))
    return tuple(out)


def _value_text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"  # a setting as typed: 0.001, 0.0003, 1e-05
    return _MISSING if value is None else str(value)


def differing_keys(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Config keys whose value is not the same in every run (a key missing from a run
    differs from any value), in the order they first appear."""
    keys: dict[str, None] = {}
    for config in configs:
        for key in config:
            keys.setdefault(key, None)
    out = []
    for key in keys:
        values = {repr(config.get(key, _MISSING)) for config in configs}
        if len(values) > 1:
            out.append(key)
    return out


def group_labels(configs: Sequence[Mapping[str, Any]], by: str | None) -> list[str]:
    """Each run's group: its value of config key ``by``, or with :data:`BY_ALL_BUT_SEED` its
    values of every differing key but the seed; None groups nothing (one group per run)."""
    if by is None:
        return [f"#{i + 1}" for i in range(len(configs))]
    if by == BY_ALL_BUT_SEED:
        keys = [k for k in differing_keys(configs) if k not in SEED_KEYS]
        if not keys:
            return ["all"] * len(configs)
        return [" ".join(f"{k}={_value_text(c.get(k))}" for k in keys) for c in configs]
    return [f"{by}={_value_text(c.get(by))}" for c in configs]


def groups_of(labels: Sequence[str]) -> dict[str, list[int]]:
    """Run indices per group label, groups in order of first appearance."""
    out: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        out.setdefault(label, []).append(i)
    return out


def shared_verdicts(rows: Sequence[RunRow]) -> dict[str, list[int]]:
    """For each verdict code, the numbers of the runs that have it (codes in first-seen order)."""
    out: dict[str, list[int]] = {}
    for row in rows:
        for code in row.verdicts:
            out.setdefault(code, []).append(row.number)
    return out


def verdict_cell(row: RunRow, shared: Mapping[str, list[int]], runs: int = 0) -> str:
    """``plateau (2 5)``: each verdict of the run, with the other runs that share it (``all``
    when every one of the ``runs`` does; the first few and a count when many do), then those
    raised earlier that have cleared (``cleared: gradient_explosion``)."""
    parts = []
    for code in row.verdicts:
        others = [str(n) for n in shared.get(code, []) if n != row.number]
        if not others:
            parts.append(code)
        elif runs > 2 and len(others) == runs - 1:
            parts.append(f"{code} (all)")
        elif len(others) > SHARED_SHOWN:
            parts.append(f"{code} ({' '.join(others[:SHARED_SHOWN])} +{len(others) - SHARED_SHOWN})")
        else:
            parts.append(f"{code} ({' '.join(others)})")
    text = ", ".join(parts) if parts else "none"
    if row.cleared:
        text += f"; cleared: {', '.join(row.cleared)}"
    return text


def changes_cell(row: RunRow) -> str:
    """``set_lr lr=0.002 @150 helped; pause @300``: the changes applied and their outcomes."""
    parts = []
    for change in row.changes:
        outcome = f" {change.outcome}" if change.outcome else ""
        parts.append(f"{change.text} @{change.step}{outcome}")
    return "; ".join(parts) if parts else "none"


@dataclass(frozen=True)
class TableColumn:
    """One column of the run table: its key, header, the width it needs and its priority
    (lower stays longer as the terminal narrows)."""

    key: str
    header: str
    priority: int


def table_columns(keys: Sequence[str]) -> list[TableColumn]:
    """Every column the table can show, in display order, for the differing config ``keys``."""
    cols = [TableColumn("number", "#", 0), TableColumn("label", "run", 1)]
    cols += [TableColumn(f"config:{k}", k, 2) for k in keys]
    cols += [
        TableColumn("loss_now", "loss now", 3),
        TableColumn("last_dice", "val Dice", 4),
        TableColumn("state", "state", 5),
        TableColumn("verdicts", "verdicts", 6),
        TableColumn("best_dice", "best Dice", 7),
        TableColumn("steps_per_s", "steps/s", 8),
        TableColumn("steps", "steps", 9),
        TableColumn("changes", "changes applied", 10),
    ]
    return cols


def cell(row: RunRow, key: str, shared: Mapping[str, list[int]], runs: int = 0) -> str:
    """The text of one cell (``runs``: how many runs the table has)."""
    if key.startswith("config:"):
        return _value_text(row.config.get(key[len("config:"):]))
    if key == "number":
        return str(row.number)
    if key == "label":
        return row.label
    if key == "verdicts":
        return verdict_cell(row, shared, runs)
    if key == "changes":
        return changes_cell(row)
    if key == "state":
        return row.state
    if key == "steps":
        return str(row.steps)
    value = getattr(row, key)
    if key == "steps_per_s":
        return _MISSING if not math.isfinite(value) else f"{value:.1f}"
    return _MISSING if not math.isfinite(value) else format_number(value)


def fit_columns(rows: Sequence[RunRow], columns: Sequence[TableColumn], width: int,
                shared: Mapping[str, list[int]]) -> list[TableColumn]:
    """The columns that fit in ``width`` characters: the least important go first, the run's
    number and name stay. Each column needs the width of its widest cell (capped) plus a gap."""
    need = {}
    for col in columns:
        cells = [len(cell(row, col.key, shared, len(rows))) for row in rows]
        need[col.key] = min(max([len(col.header), *cells]), 40) + 2
    kept = list(columns)
    while len(kept) > 2 and sum(need[c.key] for c in kept) > width:
        worst = max(kept, key=lambda c: (c.priority, columns.index(c)))
        kept.remove(worst)
    return kept


def csv_text(rows: Sequence[RunRow], keys: Sequence[str]) -> str:
    """The run table as CSV: every column, numbers unformatted (NaN as empty)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    shared = shared_verdicts(rows)
    header = ["number", "run", "kind", *keys, "state", "steps", "loss_now", "best_val_dice", "last_val_dice",
              "steps_per_s", "verdicts", "shared_verdicts", "verdicts_cleared", "changes_applied"]
    writer.writerow(header)
    for row in rows:
        def num(value: float) -> str:
            return "" if not math.isfinite(value) else repr(float(value))

        sharing = "; ".join(
            f"{code}: {' '.join(str(n) for n in shared[code] if n != row.number)}"
            for code in row.verdicts if len(shared.get(code, [])) > 1
        )
        writer.writerow([
            row.number, row.label, row.kind,
            *(_value_text(row.config.get(k)) if k in row.config else "" for k in keys),
            row.state, row.steps, num(row.loss_now), num(row.best_dice), num(row.last_dice), num(row.steps_per_s),
            " ".join(row.verdicts), sharing, " ".join(row.cleared), changes_cell(row) if row.changes else "",
        ])
    return buffer.getvalue()


def write_csv(path: str, rows: Sequence[RunRow], keys: Sequence[str]) -> str:
    """Write the run table to ``path`` as CSV; returns the path."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write(csv_text(rows, keys))
    return path
