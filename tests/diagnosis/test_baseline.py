"""The constant-predictor baselines against brute force on sampled targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from octa_tui.diagnosis import bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline

rng = np.random.default_rng(7)
MASKS = (rng.random((4, 64, 64)) < 0.1).astype(np.float64)  # ~10% foreground
P = float(MASKS.mean())
GRID = np.linspace(1e-3, 1.0 - 1e-3, 999)


def bce_of_constant(q: float, targets: np.ndarray, pos_weight: float = 1.0) -> float:
    return float(np.mean(-(pos_weight * targets * math.log(q) + (1 - targets) * math.log(1 - q))))


def dice_loss_of_constant(q: float, targets: np.ndarray) -> float:
    return 1.0 - 2.0 * q * targets.sum() / (q * targets.size + targets.sum())


@pytest.mark.parametrize("pos_weight", [1.0, 9.0])
def test_bce_baseline_is_the_best_constant(pos_weight: float) -> None:
    brute = min(bce_of_constant(q, MASKS, pos_weight) for q in GRID)
    base = bce_baseline(P, pos_weight)
    assert base.loss == pytest.approx(brute, rel=1e-4)
    assert bce_of_constant(base.constant, MASKS, pos_weight) == pytest.approx(base.loss, rel=1e-9)


def test_bce_baseline_is_the_entropy_of_the_foreground_ratio() -> None:
    assert bce_baseline(0.1).loss == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))


def test_dice_baseline_is_all_foreground() -> None:
    brute = min(dice_loss_of_constant(q, MASKS) for q in np.linspace(0.01, 1.0, 100))
    base = dice_loss_baseline(P)
    assert base.constant == 1.0
    assert base.loss == pytest.approx(brute, rel=1e-9)
    assert base.loss == pytest.approx((1 - P) / (1 + P))


def test_dice_bce_baseline_minimises_the_weighted_sum() -> None:
    brute = min(0.3 * bce_of_constant(q, MASKS) + 0.7 * dice_loss_of_constant(q, MASKS) for q in GRID)
    assert dice_bce_baseline(P, 0.3, 0.7).loss == pytest.approx(brute, rel=1e-3)


def test_mse_baseline_is_the_target_variance_per_term() -> None:
    heat = rng.random((2, 32, 32)) ** 3
    per_channel = [float(np.mean((c - c.mean()) ** 2)) for c in heat]
    assert mse_baseline(float(np.mean(per_channel)), terms=2).loss == pytest.approx(sum(per_channel))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: bce_baseline(1.5), "fraction"),
        (lambda: bce_baseline(0.1, pos_weight=0.0), "pos_weight"),
        (lambda: dice_bce_baseline(0.1, 0.0, 0.0), "not both 0"),
        (lambda: mse_baseline(float("nan")), "variance"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
