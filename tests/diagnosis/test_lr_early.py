"""lr too small, decided early on strong evidence and never on a warm-up.

GIVEN a run whose loss does not move WHEN the measured update size is orders of magnitude
below healthy THEN the rule speaks after a few dozen steps; WHEN it is only a little below,
it waits as long as before; and a schedule that raises the lr (linear warm-up, OneCycleLR's
lr/25 start) or moves it in the first steps never makes it speak.
"""

from __future__ import annotations

import numpy as np
import pytest
from diagnosis_histories import Builder

from octa_tui.diagnosis import Engine, Thresholds, evaluate_rules
from octa_tui.diagnosis.rules import lr_evidence_steps
from octa_tui.protocol.run import RunHistory

T = Thresholds()
HEALTHY_RATIO_PER_LR = 3e-3 / 1e-3  # the healthy demo: Adam lr 1e-3 measures |dw|/|w| ~3e-3


def flat(steps: int, ratio: float | np.ndarray, lr: float | np.ndarray = 1e-6, loss: float = 0.8) -> RunHistory:
    """A loss that does not move (a little batch noise) with the given update size and lr."""
    noise = np.random.default_rng(0).normal(0.0, 0.004, steps)
    return Builder().steps(steps, loss__total=loss + noise, opt__update_ratio=ratio, opt__lr=lr).history


def fires(history: RunHistory) -> bool:
    return any(v.code == "lr_too_small" for v in evaluate_rules(history, T))


def test_the_steps_needed_fall_with_the_strength_of_the_evidence() -> None:
    assert lr_evidence_steps(1e-7, T) == T.lr_early_steps
    assert lr_evidence_steps(T.lr_update_ratio_tiny, T) == T.lr_early_steps
    assert lr_evidence_steps(T.lr_update_ratio_small, T) == T.lr_min_steps
    assert lr_evidence_steps(float("nan"), T) == T.lr_min_steps  # not measured: the seed's wait
    between = [lr_evidence_steps(r, T) for r in (2e-5, 5e-5, 9e-5)]
    assert T.lr_early_steps < between[0] < between[1] < between[2] < T.lr_min_steps


def test_tiny_updates_on_a_flat_loss_are_called_after_a_few_dozen_steps() -> None:
    assert not fires(flat(T.lr_early_steps - 1, 3e-6))
    assert fires(flat(T.lr_early_steps, 3e-6))


def test_updates_a_little_below_healthy_wait_almost_as_long_as_before() -> None:
    needed = lr_evidence_steps(8e-5, T)
    assert needed > 0.9 * T.lr_min_steps
    assert not fires(flat(60, 8e-5, lr=1e-4))
    assert not fires(flat(needed - 1, 8e-5, lr=1e-4))
    assert fires(flat(needed, 8e-5, lr=1e-4))


def test_the_engine_shows_it_within_its_hold_of_the_early_step() -> None:
    engine = Engine()
    full = flat(80, 3e-6)
    growing = RunHistory(full.schema)
    shown_at = None
    for stop in range(5, 81, 5):
        growing.add(full.steps.chunk(full.run_id, stop - 5, stop))
        if any(v.code == "lr_too_small" for v in engine.evaluate(growing)) and shown_at is None:
            shown_at = stop
    assert shown_at is not None and shown_at <= T.lr_early_steps + (engine.hold - 1) * 5


def linear_warmup(steps: int, warmup: int, top: float = 1e-3, start_factor: float = 1e-3) -> np.ndarray:
    """torch's LinearLR: from top x start_factor up to top over ``warmup`` steps, then held."""
    s = np.arange(steps)
    return top * (start_factor + (1 - start_factor) * np.minimum(s, warmup) / warmup)


def one_cycle(steps: int, total: int, top: float = 1e-3, pct_start: float = 0.3) -> np.ndarray:
    """OneCycleLR (cosine): from top/25 up to top over pct_start of the run, then down to top/1e4."""
    s = np.arange(steps, dtype=np.float64)
    up = pct_start * total
    start, end = top / 25, top / 25 / 1e4
    rising = start + (top - start) * (1 - np.cos(np.pi * np.minimum(s, up) / up)) / 2
    falling = end + (top - end) * (1 + np.cos(np.pi * np.clip(s - up, 0, None) / (total - up))) / 2
    return np.where(s <= up, rising, falling)


@pytest.mark.parametrize(
    "name, lrs",
    [
        ("linear warm-up from lr/1000 over 2000 steps", linear_warmup(600, 2000)),
        ("linear warm-up from 0 over 500 steps", linear_warmup(600, 500, start_factor=0.0)),
        ("linear warm-up from 0 over 20000 steps", linear_warmup(600, 20000, start_factor=0.0)),
        ("OneCycleLR over 2000 steps", one_cycle(600, 2000)),
        ("OneCycleLR to 1e-4 over 20000 steps (fine-tuning)", one_cycle(600, 20000, top=1e-4)),
    ],
)
def test_a_warm_up_on_a_loss_that_does_not_move_yet_is_never_called_too_small(name: str, lrs: np.ndarray) -> None:
    # The update size follows the lr (Adam): at the warm-up's start it is orders of magnitude
    # below healthy, and the loss has not moved yet: everything but the schedule says "too small".
    ratio = np.maximum(lrs * HEALTHY_RATIO_PER_LR, 1e-9)
    full = flat(len(lrs), ratio, lr=lrs)
    engine = Engine()
    growing = RunHistory(full.schema)
    for stop in range(5, len(lrs) + 1, 5):
        growing.add(full.steps.chunk(full.run_id, stop - 5, stop))
        codes = [v.code for v in engine.evaluate(growing)]
        assert "lr_too_small" not in codes, (name, stop, float(lrs[stop - 1]))


def test_an_lr_a_schedule_moved_in_the_first_steps_is_not_decided_early() -> None:
    # Decayed (StepLR) to a tiny lr within the first steps: not called before lr_min_steps.
    lrs = np.where(np.arange(150) < 20, 1e-3, 1e-6)
    assert not fires(flat(150, np.where(lrs > 1e-5, 3e-3, 3e-6), lr=lrs))


def test_a_raise_long_past_does_not_hide_an_lr_that_is_still_too_small() -> None:
    # A timid fix (x5) at step 100 of a 400-step run: the lr is still far too small.
    lrs = np.where(np.arange(400) < 100, 1e-6, 5e-6)
    assert fires(flat(400, lrs * HEALTHY_RATIO_PER_LR, lr=lrs))


def test_a_warm_up_still_rising_now_is_not_judged_even_late() -> None:
    lrs = linear_warmup(400, 5000, start_factor=0.0)
    assert not fires(flat(400, np.maximum(lrs * HEALTHY_RATIO_PER_LR, 1e-9), lr=lrs))
