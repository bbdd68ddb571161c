"""GIVEN a loss series with a change at a known step WHEN the fix trial judges it THEN it says
helped / no effect / hurt as a person reading the curve would, and waits while it cannot tell."""

from __future__ import annotations

import math

import numpy as np
import pytest

from octa_tui.diagnosis.trial import (
    HELPED,
    HURT,
    NO_EFFECT,
    PENDING,
    TrialThresholds,
    judge,
    trial_metric,
)

CHANGE = 200


def _series(after, before=lambda s: 0.8 - 0.0002 * s, noise=0.005, n=300, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.arange(n)
    values = np.where(steps < CHANGE, before(steps), after(steps)) + rng.normal(0, noise, n)
    return steps, values


def test_a_drop_below_the_trend_helped() -> None:
    steps, values = _series(lambda s: 0.5 + 0 * s)
    outcome, predicted, observed, *_ , n = judge(steps, values, CHANGE)
    assert outcome == HELPED
    assert observed < predicted
    assert n == TrialThresholds().after_steps


def test_continuing_the_same_trend_is_no_effect() -> None:
    steps, values = _series(lambda s: 0.8 - 0.0002 * s)
    assert judge(steps, values, CHANGE)[0] == NO_EFFECT


def test_a_decay_that_simply_continues_is_not_credited_to_the_change() -> None:
    curve = lambda s: 0.2 + 0.6 * np.exp(-s / 150)  # noqa: E731
    steps, values = _series(curve, before=curve)
    assert judge(steps, values, CHANGE)[0] == NO_EFFECT


def test_a_rise_above_level_and_trend_hurt() -> None:
    steps, values = _series(lambda s: 0.95 + 0 * s)
    assert judge(steps, values, CHANGE)[0] == HURT


def test_a_loss_that_turns_nan_hurt() -> None:
    steps, values = _series(lambda s: np.where(s > 230, np.nan, 0.7))
    outcome, _, observed, *_ = judge(steps, values, CHANGE)
    assert outcome == HURT and math.isinf(observed)


def test_noise_larger_than_the_change_is_no_effect() -> None:
    steps, values = _series(lambda s: 0.8 - 0.0002 * s - 0.05, noise=0.3)
    assert judge(steps, values, CHANGE)[0] == NO_EFFECT


def test_too_few_steps_after_the_change_is_pending() -> None:
    steps, values = _series(lambda s: 0.5 + 0 * s, n=CHANGE + 10)
    assert judge(steps, values, CHANGE)[0] == PENDING


def test_the_window_stops_at_the_next_change() -> None:
    steps, values = _series(lambda s: 0.5 + 0 * s)
    *_, n = judge(steps, values, CHANGE, end_step=CHANGE + 30)
    assert n == 30 - TrialThresholds().settle_steps


def test_reweighting_changes_are_judged_on_the_dice_term() -> None:
    channels = ("loss/total", "loss/bce", "loss/dice")
    assert trial_metric(("set_loss_weights",), channels) == "loss/dice"
    assert trial_metric(("set_pos_weight",), channels) == "loss/dice"
    assert trial_metric(("set_lr",), channels) == "loss/total"
    assert trial_metric(("set_clip", "set_lr"), ("loss/total", "loss/region")) == "loss/total"


def test_bad_thresholds_are_refused_with_the_name() -> None:
    with pytest.raises(ValueError, match="helped_margin"):
        TrialThresholds(helped_margin=-1)
    with pytest.raises(ValueError, match="min_steps"):
        TrialThresholds(min_steps=1)
