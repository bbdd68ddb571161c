"""Thresholds are configuration: the seeds' defaults, changeable, and refused when nonsensical."""

from __future__ import annotations

import pytest
from test_rules import seed_plateau

from octa_tui.diagnosis import Thresholds, evaluate_rules


def test_defaults_are_the_seeds_numbers() -> None:
    t = Thresholds()
    assert (t.plateau_epochs, t.plateau_variance, t.plateau_improvement) == (5, 1e-6, 1e-4)
    assert (t.foreground_ratio_min, t.dice_term_high, t.bce_settled_max) == (0.02, 0.35, 0.3)
    assert (t.grad_layer_min, t.grad_ratio_slight, t.explosion_param_norm) == (1e-4, 10.0, 10.0)
    assert (t.explosion_clip, t.explosion_lr_divisor, t.lr_raise_factor, t.small_dataset_images) == (
        1.0,
        10.0,
        5.0,
        50,
    )


def test_a_changed_threshold_changes_the_verdict() -> None:
    # GIVEN seed 000's plateau WHEN the user demands a variance below 1e-8 THEN it is no longer a plateau
    assert "plateau" in {v.code for v in evaluate_rules(seed_plateau())}
    assert "plateau" not in {
        v.code for v in evaluate_rules(seed_plateau(), Thresholds(plateau_variance=1e-8))
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"plateau_variance": -1e-6}, "plateau_variance must be >= 0"),
        ({"window_steps": 0}, "window_steps must be at least 1"),
        ({"plateau_epochs": 2}, "at least 3"),
        ({"bce_low": float("nan")}, "bce_low must be a number"),
    ],
)
def test_nonsense_is_refused_naming_the_field(changes, message) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**changes)
