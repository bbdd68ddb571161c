"""The seeds' own numbers, read by the engine as the seeds read them.

Seed 000 (UNet/OCTA, loss stuck at 0.6) and seed 002 (CRAFT without a sigmoid) print logs and
tables; each figure they call a plateau, a vanishing hint, an explosion or a fix is a case here.
"""

from __future__ import annotations

import numpy as np
import pytest
from diagnosis_histories import Builder, heatmap_schema, segmentation_schema

from octa_tui.diagnosis import Thresholds, evaluate_rules, mse_baseline
from octa_tui.diagnosis.gradients import format_ratio, gradient_health
from octa_tui.diagnosis.signals import gradient_state, plateau_test

T = Thresholds()
SEED_000_LOSSES = [0.612534, 0.611893, 0.612105, 0.611567, 0.612001]
SEED_000_GRADS = {
    "encoder_conv1": 0.052314,
    "encoder_last": 0.003101,
    "decoder_first": 0.004522,
    "decoder_output": 0.002881,
}


def test_seed_000_five_losses_are_a_plateau() -> None:
    # GIVEN the five epoch losses of seed 000's plateau check
    test = plateau_test(
        np.array(SEED_000_LOSSES), T.plateau_variance, T.plateau_improvement, T.plateau_noise_sigmas
    )
    # THEN the seed's verdict holds: flat ("⚠️ Loss已进入平台期")
    assert test.flat
    # The log prints variance 8.23e-07; the five numbers' own variance is 9.86e-08; both are < 1e-6.
    assert test.variance == pytest.approx(9.8624e-08, rel=1e-3)
    # Its first-to-last fall (0.000533) is within the epoch-to-epoch scatter: no real improvement.
    assert 0.0005 < test.trend < test.noise
    assert test.improvement == 0.0


def test_seed_000_gradient_log_is_a_slight_shallow_deep_ratio() -> None:
    # GIVEN seed 000's gradient log line, shallow to deep
    layers = tuple(SEED_000_GRADS)
    norms = np.array([list(SEED_000_GRADS.values())])
    state = gradient_state(
        layers, norms, T.grad_layer_min, T.grad_ratio_slight, T.grad_ratio_moderate, T.grad_ratio_strong
    )
    # THEN shallow/deep is above 10x: the seed's "⚠️浅层/深层>10x，轻微消失", graded slight, every layer above 1e-4
    assert state is not None
    assert state.direction == "shallow/deep"
    assert 16.0 < state.ratio < 19.0
    assert state.strength == "slight" and state.below_floor == ()
    # AND the pair the hint names (encoder_conv1 vs encoder_last) is ~17x
    assert SEED_000_GRADS["encoder_conv1"] / SEED_000_GRADS["encoder_last"] == pytest.approx(16.87, abs=0.01)


def test_seed_000_gradient_log_is_in_the_normal_range() -> None:
    # GIVEN a run streaming seed 000's gradient norms; the seed itself: "Gradient Norm 在正常范围，不是梯度消失"
    b = Builder(segmentation_schema(grad=tuple(SEED_000_GRADS)))
    b.steps(60, **{f"grad__{k}": v for k, v in SEED_000_GRADS.items()})
    # THEN no vanishing verdict, not even a note: 18x between a first conv and an output layer is normal
    assert "vanishing_gradients" not in {v.code for v in evaluate_rules(b.history)}
    # AND the ratio reads the same way everywhere: shallow/deep, first weight layer over last
    health = gradient_health(tuple(SEED_000_GRADS), np.array([list(SEED_000_GRADS.values())]), None)
    assert format_ratio(health.ratio) == "18x" and not health.vanishing


def craft_run(
    outputs: tuple[float, float], max_norm: float, n_over: int, total: float, lr: float, clip: float
) -> Builder:
    b = Builder(heatmap_schema()).dataset(unique_mask_values=256, target_mean=0.2, target_var=0.05)
    b.steps(
        300,
        out__act_min=outputs[0],
        out__act_max=outputs[1],
        out__raw_min=outputs[0],
        out__raw_max=outputs[1],
        out__frac_outside_01=0.0,
        gradstat__max_param_norm=max_norm,
        gradstat__n_over_bound=n_over,
        loss__total=total,
        opt__lr=lr,
        opt__clip=clip,
    )
    return b


def test_seed_002_before_gives_missing_sigmoid_and_explosion() -> None:
    # GIVEN seed 002's CRAFT before the fix: outputs [-8.489, 1.476], 16 params over 10, max 32.3, MSE 2.388
    b = craft_run((-8.489, 1.476), 32.297974, 16, 2.388261, lr=1e-3, clip=5.0)
    verdicts = {v.code: v for v in evaluate_rules(b.history)}
    # THEN both of its findings are named, with the seed's fix offered as commands
    assert {"missing_sigmoid", "gradient_explosion"} <= set(verdicts)
    assert "[-8.489, 1.476]" in verdicts["missing_sigmoid"].evidence
    fixes = {(f.op, tuple(f.args.values())) for f in verdicts["gradient_explosion"].fixes}
    assert fixes == {("set_clip", (1.0,)), ("set_lr", (1e-4,))}
    assert "16 parameters" in verdicts["gradient_explosion"].evidence


def test_seed_002_after_gives_neither() -> None:
    # GIVEN seed 002's numbers after the fix: outputs [0.291, 0.981], max gradient 1.32, loss 0.40
    b = craft_run((0.291, 0.981), 1.324812, 0, 0.400781, lr=1e-4, clip=1.0)
    codes = {v.code for v in evaluate_rules(b.history)}
    # THEN neither finding remains
    assert not {"missing_sigmoid", "gradient_explosion"} & codes


def test_seed_002_fixed_baselines_hold_only_for_uniform_targets() -> None:
    # GIVEN uniformly distributed targets, the one case the seed's "all-0.5 MSE ~ 0.083" is for
    uniform_var = 1.0 / 12.0
    # THEN the data-driven baseline reproduces it ...
    assert mse_baseline(uniform_var).loss == pytest.approx(0.083, abs=5e-4)
    # ... and for sparse heatmaps (mean 0.05, variance 0.02) the constant to beat is far lower
    assert mse_baseline(0.02).loss < 0.083 / 4


def test_seed_000_log_line_with_bce_exactly_0_3_is_the_loss_weights_case() -> None:
    # GIVEN seed 000's log: "Train Loss: 0.6123 (BCE: 0.3000, Dice: 0.4271)", val Dice 0.40, its five
    # plateau losses, late in a 10-epoch plan; BCE 0.3000 travels as float32 0.30000001
    from octa_tui.diagnosis import match_matrix, root_cause

    b = Builder(segmentation_schema(config={"epochs": 10, "steps_per_epoch": 100})).dataset()
    b.steps(900, loss__total=0.6123, loss__bce=0.3000, loss__dice=0.4271)
    for i, loss in enumerate([0.6, 0.6, 0.6, *SEED_000_LOSSES]):
        b.epoch(i + 1, {"loss": loss}, {"dice": 0.40})
    verdicts = evaluate_rules(b.history)
    codes = [v.code for v in verdicts]
    # THEN the seed's finding (loss weights, fix 0.5/0.5) is the root cause; BCE 0.3 is not "> 0.3"
    assert "loss_weights_unbalanced" in codes and "bce_not_settled" not in codes
    assert root_cause(verdicts).code == "loss_weights_unbalanced"
    assert codes.index("loss_weights_unbalanced") < codes.index("plateau")
    # AND the matrix's nearest row is the seed's first row (Loss 权重不当)
    assert match_matrix(b.history).row == 0
