"""Seed 000's diagnosis matrix: the live numbers find their row, and say how near it is."""

from __future__ import annotations

import math

from diagnosis_histories import Builder, healthy_run, heatmap_schema

from octa_tui.diagnosis import match_matrix, matrix_rows
from octa_tui.diagnosis.matrix import row_distances


def stuck_run(
    loss: float, bce: float, dice_loss: float, val_dice: float, grads: dict | None = None
) -> Builder:
    b = Builder().dataset()
    b.steps(200, loss__total=loss, loss__bce=bce, loss__dice=dice_loss, **(grads or {}))
    return b.epochs([loss] * 5, val_dice=val_dice)


def test_the_seed_rows_match_themselves_exactly() -> None:
    cases = [
        ({"loss": 0.60, "dice": 0.40, "bce": 0.30, "dice_loss": 0.43, "grad": 0}, 0),
        ({"loss": 0.65, "dice": 0.35, "bce": 0.50, "dice_loss": 0.20, "grad": 0}, 1),
        ({"loss": 0.70, "dice": 0.42, "bce": 0.60, "dice_loss": 0.30, "grad": 1}, 2),
        ({"loss": 0.55, "dice": 0.43, "bce": 0.20, "dice_loss": 0.40, "grad": 0}, 3),
        ({"loss": 0.95, "dice": 0.38, "bce": 0.90, "dice_loss": 0.10, "grad": 2}, 4),
    ]
    for observed, row in cases:
        distances = row_distances(observed)
        assert distances[row] == 0.0
        assert min(d for i, d in enumerate(distances) if i != row) > 0.2


def test_a_run_stuck_like_seed_000_matches_the_loss_weight_row() -> None:
    # GIVEN seed 000's run: loss 0.61, BCE 0.30, Dice term 0.43, val Dice 0.40, healthy gradients
    match = match_matrix(stuck_run(0.61, 0.30, 0.43, 0.40).history)
    # THEN the first row ("Loss weights unbalanced") is the nearest, and near
    assert match.row == 0 and match.near
    assert match.distance < 0.1
    assert match.rows[0].cause == "Loss weights unbalanced"
    assert set(match.observed) == {"loss", "bce", "dice_loss", "dice", "grad"}


def test_vanishing_gradients_pull_towards_the_gradient_row() -> None:
    grads = {"grad__enc1": 1e-6}
    match = match_matrix(stuck_run(0.85, 0.7, 0.2, 0.38, grads).history)
    assert match.row == 4 and match.observed["grad"] == 2


def test_a_healthy_run_is_far_from_every_row() -> None:
    match = match_matrix(healthy_run(1000).history)
    assert not match.near and match.distance > 1.0


def test_heatmap_runs_and_empty_runs_have_no_row() -> None:
    assert match_matrix(Builder(heatmap_schema()).steps(100).history).row == -1
    empty = match_matrix(Builder().history)
    assert empty.row == -1 and math.isinf(empty.distance) and len(empty.rows) == 5


def test_rows_in_chinese_are_the_seeds_own_words() -> None:
    rows = matrix_rows("zh")
    assert [r.cause for r in rows] == ["Loss 权重不当", "BCE 未稳定", "学习率太小", "前景比例低", "梯度问题"]
    assert rows[2].grad == "⚠️轻微消失" and rows[4].loss == "0.80+"
