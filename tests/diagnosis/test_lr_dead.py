"""A network killed by a too-high lr in its first steps is "lr too high", never "lr too small".

GIVEN the shape of a real run (CRAFT-like net, Adam lr 0.1: the first 20 steps move the weights
by 78% per step, then no gradient passes and the updates decay to 1e-11 while the loss sits at
the constant predictor's level) WHEN the rules run THEN lr_too_high says the network died and
asks for a restart with a sized lr, and lr_too_small (whose fix would raise the lr) stays silent.
"""

from __future__ import annotations

import numpy as np
from diagnosis_histories import Builder

from octa_tui.diagnosis import evaluate_rules
from octa_tui.protocol.run import RunHistory


def killed(early_ratio: float = 0.78, grad_after: float = 0.0, steps: int = 300,
           loss=lambda r: 0.065 + 0.001 * np.sin(r)) -> RunHistory:
    """Measured every 20 steps (repeated between), as the probe does."""
    def ratio(r: np.ndarray) -> np.ndarray:
        block = r // 20
        return np.where(block == 0, early_ratio, early_ratio * 10.0 ** (-1.5 * block)).clip(min=0.0)

    b = Builder()
    b.steps(20, loss__total=0.09, opt__lr=0.1, opt__update_ratio=ratio, gradstat__total_norm=5.0)
    return b.steps(steps - 20, loss__total=loss, opt__lr=0.1, opt__update_ratio=lambda r: ratio(r + 20),
                   gradstat__total_norm=grad_after).history


def codes(history: RunHistory) -> dict:
    return {v.code: v for v in evaluate_rules(history)}


def test_a_net_killed_in_its_first_steps_is_lr_too_high_with_a_restart_sized_from_the_first_updates() -> None:
    found = codes(killed())
    assert "lr_too_small" not in found
    v = found["lr_too_high"]
    assert "died" in v.title
    assert "0.78" in v.evidence and "gradient norm is 0" in v.evidence
    assert v.fixes == ()  # lowering the lr now revives nothing: a restart
    assert "0.00038" in v.instruction  # 0.1 x 3e-3 / 0.78


def test_it_is_said_within_a_few_dozen_steps() -> None:
    assert "lr_too_high" in codes(killed(steps=60))


def test_no_gradient_without_large_first_updates_is_not_the_lr() -> None:
    found = codes(killed(early_ratio=3e-3))
    assert "lr_too_high" not in found and "lr_too_small" not in found


def test_large_first_updates_of_a_net_that_goes_on_learning_are_nothing() -> None:
    b = Builder()
    b.steps(20, loss__total=0.9, opt__lr=0.01, opt__update_ratio=0.08, gradstat__total_norm=5.0)
    history = b.steps(280, loss__total=lambda r: 0.8 * np.exp(-r / 100) + 0.1, opt__lr=0.01,
                      opt__update_ratio=3e-3, gradstat__total_norm=0.5).history
    assert "lr_too_high" not in codes(history)


def test_tiny_updates_with_no_gradient_are_not_an_lr_too_small() -> None:
    b = Builder()
    history = b.steps(300, loss__total=0.8, opt__lr=1e-3, opt__update_ratio=1e-11, gradstat__total_norm=0.0).history
    assert "lr_too_small" not in codes(history)
