"""Seed 000's diagnosis matrix (诊断矩阵) and the row nearest to the live numbers.

The seed maps five symptom patterns (the loss level it is stuck at, validation Dice, BCE,
the Dice-loss level, the gradient state) to a likely cause and a quick fix. The monitor shows
the table with the row nearest to the run highlighted, and how near it is: each observed
number's distance to the row's cell (an interval: "0.80+" and "high" are open-ended), divided
by that column's spread across the table, averaged in quadrature over the columns observed.
0 is an exact match; about 1 is as far as the table's rows are from each other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from octa_tui.protocol import channels as ch
from octa_tui.protocol.run import RunHistory

from .rules import Context
from .thresholds import Thresholds
from .verdict import check_lang

INF = math.inf
FEATURES = ("loss", "dice", "bce", "dice_loss", "grad")
# Each column's spread across the table: a distance of 1 crosses the whole table.
SCALES = {"loss": 0.25, "dice": 0.08, "bce": 0.4, "dice_loss": 0.2, "grad": 2.0}
# Dice-loss levels (seed 000: "Dice > 0.35" is high).
LOW, MID, HIGH = (0.0, 0.25), (0.25, 0.35), (0.35, 1.0)

# (cells as intervals, display cells per language, cause per language, fix per language)
_ROWS = (
    (
        {"loss": (0.60, 0.60), "dice": (0.40, 0.40), "bce": (0.30, 0.30), "dice_loss": HIGH, "grad": (0, 0)},
        ("0.60", "0.40", "0.30", "high", "ok"),
        ("0.60", "0.40", "0.30", "高", "✓正常"),
        ("Loss weights unbalanced", "Loss 权重不当"),
        ("Lower the Dice weight to 0.5", "降低 Dice 权重到 0.5"),
    ),
    (
        {"loss": (0.65, 0.65), "dice": (0.35, 0.35), "bce": (0.50, 0.50), "dice_loss": LOW, "grad": (0, 0)},
        ("0.65", "0.35", "0.50", "low", "ok"),
        ("0.65", "0.35", "0.50", "低", "✓正常"),
        ("BCE not settled", "BCE 未稳定"),
        ("Raise the lr or train more epochs", "增加 lr 或 epoch"),
    ),
    (
        {"loss": (0.70, 0.70), "dice": (0.42, 0.42), "bce": (0.60, 0.60), "dice_loss": MID, "grad": (1, 1)},
        ("0.70", "0.42", "0.60", "mid", "slight vanishing"),
        ("0.70", "0.42", "0.60", "中", "⚠️轻微消失"),
        ("Learning rate too small", "学习率太小"),
        ("lr 0.0001 -> 0.0005", "lr 0.0001→0.0005"),
    ),
    (
        {"loss": (0.55, 0.55), "dice": (0.43, 0.43), "bce": (0.20, 0.20), "dice_loss": HIGH, "grad": (0, 0)},
        ("0.55", "0.43", "0.20", "high", "ok"),
        ("0.55", "0.43", "0.20", "高", "✓正常"),
        ("Low foreground ratio", "前景比例低"),
        ("Check the masks, weight the foreground", "检查掩码，加权"),
    ),
    (
        {"loss": (0.80, INF), "dice": (0.38, 0.38), "bce": (0.60, INF), "dice_loss": LOW, "grad": (2, 2)},
        ("0.80+", "0.38", "high", "low", "vanishing"),
        ("0.80+", "0.38", "高", "低", "❌消失"),
        ("Gradient problem", "梯度问题"),
        ("Change the model architecture", "改模型架构"),
    ),
)


@dataclass(frozen=True)
class MatrixRow:
    """One row of the seed's matrix as the monitor shows it (cells already in the chosen language)."""

    loss: str
    dice: str
    bce: str
    dice_loss: str
    grad: str
    cause: str
    fix: str


@dataclass(frozen=True)
class MatrixMatch:
    """The matrix, the row nearest to the run (-1 when nothing is observed yet) and how near.

    ``distances`` holds every row's normalised distance; ``observed`` the live numbers used
    (``loss``, ``dice`` = validation Dice, ``bce``, ``dice_loss``, ``grad`` = 0 healthy /
    1 slight / 2 vanishing), absent keys were not observed. ``near`` says whether the nearest
    row is close enough to take as the run's pattern.
    """

    row: int
    distance: float
    rows: tuple[MatrixRow, ...]
    observed: dict
    distances: tuple[float, ...] = ()
    near: bool = False


def matrix_rows(lang: str = "en") -> tuple[MatrixRow, ...]:
    """The seed's five rows in ``lang`` ("en" or "zh")."""
    zh = check_lang(lang) == "zh"
    rows = []
    for _, cells_en, cells_zh, cause, fix in _ROWS:
        cells = cells_zh if zh else cells_en
        rows.append(MatrixRow(*cells, cause=cause[zh], fix=fix[zh]))
    return tuple(rows)


def _gap(value: float, cell: tuple[float, float]) -> float:
    lo, hi = cell
    return lo - value if value < lo else value - hi if value > hi else 0.0


def row_distances(observed: dict) -> tuple[float, ...]:
    """Every row's normalised distance to ``observed`` (inf when nothing is observed)."""
    keys = [k for k in FEATURES if k in observed and math.isfinite(observed[k])]
    if not keys:
        return tuple(INF for _ in _ROWS)
    out = []
    for cells, *_ in _ROWS:
        total = sum((_gap(observed[k], cells[k]) / SCALES[k]) ** 2 for k in keys)
        out.append(math.sqrt(total / len(keys)))
    return tuple(out)


def match_matrix(history: RunHistory, thresholds: Thresholds | None = None, lang: str = "en") -> MatrixMatch:
    """The seed's matrix with the row nearest to ``history``'s live numbers.

    Only segmentation runs (BCE, Dice+BCE) are placed in it: its columns are their loss terms.
    """
    thresholds = thresholds or Thresholds()
    rows = matrix_rows(lang)
    ctx = Context(history, thresholds, lang)
    if not ctx.facts.is_segmentation or ctx.view.n_steps == 0:
        return MatrixMatch(-1, INF, rows, {}, tuple(INF for _ in rows), False)
    observed: dict = {}
    for name, key in (("loss", ch.LOSS_TOTAL), ("bce", ch.LOSS_BCE), ("dice_loss", ch.LOSS_DICE)):
        value = ctx.recent_mean(key)
        if math.isfinite(value):
            observed[name] = value
    if math.isfinite(ctx.view.val_dice):
        observed["dice"] = ctx.view.val_dice
    if ctx.grads is not None:
        observed["grad"] = ctx.grads.level
    distances = row_distances(observed)
    if not observed:
        return MatrixMatch(-1, INF, rows, observed, distances, False)
    best = min(range(len(distances)), key=distances.__getitem__)
    return MatrixMatch(
        best, distances[best], rows, observed, distances, distances[best] <= thresholds.matrix_near
    )
