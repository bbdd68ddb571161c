"""The loss of the best constant predictor, computed from the data's own statistics.

Seed 002 judged its MSE against fixed numbers (random 0.167, all-zero 0.333, all-0.5 0.083)
that hold only for uniformly distributed targets. A model that has learned nothing can always
output one constant; the best such constant sets the level a real model must beat:

- BCE (optionally with ``pos_weight`` on the foreground): BCE is linear in the target, so only
  the mean target ``p`` matters; the best constant is ``q = w p / (w p + 1 - p)``.
- Dice loss (soft Dice over the batch): ``1 - 2 q p / (q + p)`` falls as ``q`` grows, so the
  best constant is all foreground, ``(1 - p) / (1 + p)``.
- MSE: predicting each target channel's mean costs that channel's variance.
- BCE + Dice with weights: one constant must serve both terms; minimised over a grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_EPS = 1e-7
_GRID = np.linspace(1e-4, 1.0, 4001)


@dataclass(frozen=True)
class Baseline:
    """A constant predictor's loss: the value to beat and the constant that achieves it."""

    loss: float
    constant: float


def _check_fraction(p: float, what: str) -> float:
    if not (math.isfinite(p) and 0.0 <= p <= 1.0):
        raise ValueError(f"{what} must be a fraction in [0, 1], got {p!r}")
    return p


def _weighted_bce(q: np.ndarray | float, p: float, pos_weight: float) -> np.ndarray | float:
    q = np.clip(q, _EPS, 1.0 - _EPS)
    return -(pos_weight * p * np.log(q) + (1.0 - p) * np.log(1.0 - q))


def bce_baseline(p: float, pos_weight: float = 1.0) -> Baseline:
    """BCE of the best constant when the mean target (foreground ratio) is ``p``."""
    p = _check_fraction(p, "the mean target")
    if not (math.isfinite(pos_weight) and pos_weight > 0):
        raise ValueError(f"pos_weight must be a positive number, got {pos_weight!r}")
    q = pos_weight * p / (pos_weight * p + 1.0 - p) if p > 0 else 0.0
    return Baseline(float(_weighted_bce(q, p, pos_weight)), float(q))


def dice_loss_baseline(p: float) -> Baseline:
    """Soft Dice loss of predicting all foreground when the foreground ratio is ``p``."""
    p = _check_fraction(p, "the foreground ratio")
    return Baseline((1.0 - p) / (1.0 + p), 1.0)


def dice_bce_baseline(p: float, bce_weight: float, dice_weight: float, pos_weight: float = 1.0) -> Baseline:
    """``bce_weight * BCE + dice_weight * (1 - Dice)`` of the best single constant."""
    p = _check_fraction(p, "the foreground ratio")
    if not (bce_weight >= 0 and dice_weight >= 0 and bce_weight + dice_weight > 0):
        raise ValueError(f"loss weights must be >= 0 and not both 0, got {bce_weight!r}/{dice_weight!r}")
    q = _GRID
    dice = 1.0 - 2.0 * q * p / (q + p) if p > 0 else np.ones_like(q)
    total = bce_weight * _weighted_bce(q, p, pos_weight) + dice_weight * dice
    i = int(np.argmin(total))
    return Baseline(float(total[i]), float(q[i]))


def mse_baseline(target_var: float, terms: int = 1) -> Baseline:
    """MSE of predicting each target channel's mean; a total summing ``terms`` channel MSEs costs ``terms`` times that.

    ``target_var`` is the mean over channels of each channel's variance (the data set report's
    figure); the constant is reported as NaN because it differs per channel.
    """
    if not (math.isfinite(target_var) and target_var >= 0):
        raise ValueError(f"the target variance must be a number >= 0, got {target_var!r}")
    return Baseline(float(target_var) * max(1, terms), float("nan"))
