"""Every rule, table-driven: histories that must raise its verdict and histories that must not.

GIVEN a history built row by row WHEN the rules run (no hysteresis) THEN the rule's verdict is
present or absent, with the severity, confidence, evidence and fix a user would act on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from diagnosis_histories import (
    GRADSTAT,
    OPT,
    Builder,
    decaying,
    healthy_run,
    heatmap_schema,
    segmentation_schema,
)

from octa_tui.diagnosis import RULE_CODES, Severity, evaluate_rules, root_cause
from octa_tui.protocol.commands import make_command
from octa_tui.protocol.run import RunHistory

GRADSTAT_AMP = (*GRADSTAT, "amp_skipped")
OPT_AMP = (*OPT, "amp_scale")
SEED_000_PLATEAU = [0.612534, 0.611893, 0.612105, 0.611567, 0.612001]


@dataclass(frozen=True)
class Case:
    """One row of the table: a history, the rule it is about, whether it must fire, and checks."""

    name: str
    code: str
    build: Callable[[], RunHistory]
    fires: bool
    severity: Severity | None = None
    evidence: tuple[str, ...] = ()
    fixes: tuple | None = None
    confidence: str | None = None


# --- histories ------------------------------------------------------------------------------
def nan_loss_now() -> RunHistory:
    return Builder().steps(300).steps(1, loss__total=float("nan")).history


def nonfinite_grad_flag() -> RunHistory:
    return Builder().steps(300).steps(2, gradstat__nonfinite=1.0, gradstat__total_norm=float("inf")).history


def nan_long_ago() -> RunHistory:
    return Builder().steps(100).steps(1, loss__total=float("nan")).steps(200).history


def craft(
    outputs: tuple[float, float],
    max_norm: float,
    n_over: float,
    lr: float = 1e-3,
    clip: float = 5.0,
    steps: int = 60,
) -> Builder:
    b = Builder(heatmap_schema())
    b.steps(
        steps,
        out__act_min=outputs[0],
        out__act_max=outputs[1],
        out__raw_min=outputs[0],
        out__raw_max=outputs[1],
        out__frac_outside_01=0.0 if 0 <= outputs[0] and outputs[1] <= 1 else 0.41,
        gradstat__max_param_norm=max_norm,
        gradstat__n_over_bound=n_over,
        opt__lr=lr,
        opt__clip=clip,
    )
    return b


def logits_loss_out_of_range() -> RunHistory:
    b = Builder(segmentation_schema(loss_expects_probabilities=False))
    return b.steps(100, out__act_min=-8.0, out__act_max=6.0, out__frac_outside_01=0.5).history


def raw_only(heatmap: bool) -> RunHistory:
    """Only pre-activation outputs are streamed: logits for Dice+BCE, the loss's input for MSE."""
    raw = ("raw_min", "raw_max")
    b = Builder(heatmap_schema(out=raw) if heatmap else segmentation_schema(out=raw))
    return b.steps(60, out__raw_min=-8.489, out__raw_max=1.476).history


def explosion_once() -> RunHistory:
    return (
        Builder()
        .steps(100)
        .steps(1, gradstat__n_over_bound=16, gradstat__max_param_norm=32.3)
        .steps(10)
        .history
    )


def explosion_already_clipped() -> RunHistory:
    return craft((0.1, 0.9), 32.297974, 16, lr=1e-3, clip=1.0).history


def grads(norms: dict[str, float]) -> RunHistory:
    b = Builder(segmentation_schema(grad=tuple(norms)))
    return b.steps(100, **{f"grad__{k}": v for k, v in norms.items()}).history


def masks(unique: int, values: tuple[float, ...], heatmap: bool = False) -> RunHistory:
    b = Builder(heatmap_schema() if heatmap else segmentation_schema())
    return b.dataset(unique_mask_values=unique, mask_values=values).history


def foreground(ratio: float, pos_weight: float = 1.0, suggested: float | None = None) -> RunHistory:
    b = Builder().dataset(
        foreground_ratio=ratio, target_mean=ratio, suggested_pos_weight=suggested or (1 - ratio) / ratio
    )
    return b.steps(20, opt__pos_weight=pos_weight).history


def bce_only(level: float, steps: int = 300) -> RunHistory:
    b = Builder(segmentation_schema(config={"loss": "bce"}))
    b.dataset(foreground_ratio=0.1, target_mean=0.1)
    return b.steps(
        steps, loss__total=level, loss__bce=level, opt__bce_weight=1.0, opt__dice_weight=0.0
    ).history


def mse_run(total: float, steps: int = 300) -> RunHistory:
    b = Builder(heatmap_schema()).dataset(target_mean=0.2, target_var=0.05, unique_mask_values=256)
    return b.steps(steps, loss__total=total, loss__region=total * 0.7, loss__affinity=total * 0.3).history


def seed_plateau(val_dice: float = 0.40) -> RunHistory:
    b = Builder().dataset()
    b.steps(600, loss__total=0.612, loss__bce=0.234, loss__dice=0.435)
    return b.epochs(SEED_000_PLATEAU, val_dice=val_dice).history


def epochs_declining() -> RunHistory:
    return Builder().steps(600).epochs([0.70, 0.65, 0.61, 0.58, 0.56], val_dice=0.4).history


def epochs_slow_steady() -> RunHistory:
    return Builder().steps(600).epochs([0.1000, 0.0998, 0.0996, 0.0994, 0.0992], val_dice=0.4).history


def long_epochs_flat() -> RunHistory:
    b = Builder(segmentation_schema(config={"steps_per_epoch": 5000}))
    return b.steps(1500, loss__total=decaying(0.612, 0.612, 1, noise=0.002)).history


def long_epochs_falling() -> RunHistory:
    b = Builder(segmentation_schema(config={"steps_per_epoch": 5000}))
    return b.steps(1500, loss__total=decaying(0.9, 0.3, 800, noise=0.002)).history


def weights_case(
    dice: float = 0.435,
    bce: float = 0.234,
    val_dice: float = 0.40,
    weights=(0.3, 0.7),
    plateau: bool = True,
    **extra,
) -> RunHistory:
    b = Builder().dataset()
    total = weights[0] * bce + weights[1] * dice
    b.steps(
        600,
        loss__total=total,
        loss__bce=bce,
        loss__dice=dice,
        opt__bce_weight=weights[0],
        opt__dice_weight=weights[1],
        **extra,
    )
    losses = SEED_000_PLATEAU if plateau else [0.70, 0.66, 0.63, 0.61, 0.60]
    return b.epochs(losses, val_dice=val_dice).history


def tiny_lr(update_ratio: float | None = 1e-6, lr: float = 1e-5) -> RunHistory:
    opt = ("lr", "bce_weight", "dice_weight", "pos_weight", "clip") + (
        ("update_ratio",) if update_ratio is not None else ()
    )
    b = Builder(segmentation_schema(opt=opt))
    extra = {"opt__update_ratio": update_ratio} if update_ratio is not None else {}
    return b.steps(400, loss__total=lambda r: 0.80 - 0.00005 * r, opt__lr=lr, **extra).history


def bce_late(bce, step_count: int, pos_weight: float = 1.0, update_ratio: float = 3e-3) -> RunHistory:
    b = Builder(segmentation_schema(config={"epochs": 10, "steps_per_epoch": 100})).dataset()
    return b.steps(step_count, loss__bce=bce, opt__pos_weight=pos_weight, opt__update_ratio=update_ratio).history


def big_model(params: int, images: int, gap: tuple[float, float] | None) -> RunHistory:
    b = Builder(segmentation_schema(parameters=params, model="UNet_Transformer")).dataset(train_images=images)
    b.steps(50)
    if gap is not None:
        b.epoch(1, {"loss": gap[0]}, {"loss": gap[1]})
    return b.history


# --- histories of the pitfalls found in segmentation projects' trackers ------------------------
def outputs(raw: tuple[float, float], act: tuple[float, float], steps: int = 150, **extra) -> RunHistory:
    b = Builder().dataset()
    return b.steps(
        steps, out__raw_min=raw[0], out__raw_max=raw[1], out__act_min=act[0], out__act_max=act[1], **extra
    ).history


def sig(x: float) -> float:
    return 1.0 / (1.0 + np.exp(-x))


def double_sigmoid() -> RunHistory:
    return outputs((0.02, 0.97), (sig(0.02), sig(0.97)))


def relu_head(loss: float = 0.69) -> RunHistory:
    return outputs((0.0, 3.1), (0.5, sig(3.1)), loss__bce=loss)


def fresh_then_both_signs() -> RunHistory:
    """Logits in (0, 1) for the first 10 steps (a bias at init), then of both signs, as learning starts."""
    b = Builder().dataset()
    b.steps(10, out__raw_min=0.05, out__raw_max=0.6, out__act_min=sig(0.05), out__act_max=sig(0.6))
    return b.steps(40, out__raw_min=-0.4, out__raw_max=0.9, out__act_min=sig(-0.4), out__act_max=sig(0.9)).history


def softmax_one_channel() -> RunHistory:
    return outputs((1.0, 1.0), (sig(1.0), sig(1.0)), gradstat__total_norm=0.0)


def zero_term(config: dict | None = None) -> RunHistory:
    schema = segmentation_schema(opt=("lr", "pos_weight", "clip", "update_ratio"), config=config)
    return Builder(schema).steps(120, loss__dice=0.0, loss__total=lambda r: 0.3 + 0.01 * np.sin(r)).history


def amp(skipped_fraction: float, scale: float = 65536.0) -> RunHistory:
    schema = segmentation_schema(gradstat=GRADSTAT_AMP, opt=OPT_AMP, config={"amp": "fp16"})
    b = Builder(schema)
    skipped = (np.random.default_rng(1).random(100) < skipped_fraction).astype(float)
    return b.steps(100, gradstat__amp_skipped=lambda r: skipped[r], opt__amp_scale=scale).history


def amp_skipped_steps_with_inf_grads() -> RunHistory:
    schema = segmentation_schema(gradstat=GRADSTAT_AMP, opt=OPT_AMP, config={"amp": "fp16"})
    b = Builder(schema).steps(100, opt__amp_scale=65536.0)
    return b.steps(2, gradstat__amp_skipped=1.0, gradstat__total_norm=float("inf"), opt__amp_scale=32768.0).history


def amp_nan_loss() -> RunHistory:
    schema = segmentation_schema(gradstat=GRADSTAT_AMP, opt=OPT_AMP, config={"amp": "fp16"})
    return Builder(schema).steps(100).steps(1, loss__total=float("nan")).history


def oscillating(update_ratio: float = 0.08, trend: float = 0.0) -> RunHistory:
    rng = np.random.default_rng(3)
    noise = rng.normal(0.0, 0.12, 600)
    return Builder().steps(
        600, loss__total=lambda r: 0.9 - trend * r + noise[r], opt__update_ratio=update_ratio
    ).history


def unused_layer() -> RunHistory:
    return grads({"conv1": 0.05, "aux_head": float("nan"), "head": 0.2})


def val_dice_curve(dice: list[float], train_dice: list[float] | None = None) -> RunHistory:
    b = Builder().steps(50)
    for i, d in enumerate(dice):
        train = {"loss": 0.5 - 0.02 * i}
        if train_dice is not None:
            train["dice"] = train_dice[i]
        b.epoch(i + 1, train, {"dice": d})
    return b.history


def val_loss_rising() -> RunHistory:
    b = Builder().steps(50)
    for i, v in enumerate([0.50, 0.42, 0.40, 0.47, 0.52, 0.58, 0.6]):
        b.epoch(i + 1, {"loss": 0.5 - 0.05 * i}, {"loss": v})
    return b.history


def bce_stuck_at(
    value: float, epochs: int = 9, val_dice: float = float("nan"), train_dice: float = float("nan")
) -> RunHistory:
    b = Builder(segmentation_schema(config={"epochs": 10, "steps_per_epoch": 100})).dataset()
    b.steps(100, loss__bce=lambda r: 0.7 - 0.004 * r)  # the early descent, 0.7 -> 0.3
    b.steps(epochs * 100 - 100, loss__bce=value)
    train = {"loss": 0.3} if train_dice != train_dice else {"loss": 0.3, "dice": train_dice}
    return b.epoch(epochs, train, {} if val_dice != val_dice else {"dice": val_dice}).history


def flat_well_below_constant() -> RunHistory:
    b = Builder(heatmap_schema()).dataset(target_mean=0.1, target_var=0.027)  # constant: 0.054 (2 terms)
    return b.steps(150).epochs([0.0216] * 5).history


def low_level_creeping() -> RunHistory:
    # seed 002's CRAFT with its sigmoid, measured: epoch losses ~0.022 with +-0.0005 of scatter, creeping down
    b = Builder(heatmap_schema()).dataset(target_mean=0.1, target_var=0.027)
    b.steps(150)
    return b.epochs([0.022196, 0.022154, 0.022725, 0.022681, 0.021661]).history


def constant_level_after_descent() -> RunHistory:
    # BCE-only, 10% foreground: the constant costs 0.325; the run was there for 300 steps, is 30% below now
    b = Builder(segmentation_schema(config={"loss": "bce"})).dataset(foreground_ratio=0.1, target_mean=0.1)
    b.steps(300, loss__total=0.6, loss__bce=0.6)
    return b.steps(400, loss__total=0.22, loss__bce=lambda r: 0.22 + 0.01 * np.sin(r)).history


CASES = [
    # non-finite loss or gradients
    Case(
        "nan loss at the newest step",
        "nonfinite",
        nan_loss_now,
        True,
        Severity.CRIT,
        ("loss/total", "step 300"),
        (make_command("pause"),),
        "measured",
    ),
    Case(
        "gradient NaN flag", "nonfinite", nonfinite_grad_flag, True, Severity.CRIT, ("gradstat/total_norm",)
    ),
    Case("nan long ago, finite since", "nonfinite", nan_long_ago, False),
    Case("healthy", "nonfinite", lambda: healthy_run().history, False),
    # missing sigmoid
    Case(
        "seed 002 before",
        "missing_sigmoid",
        lambda: craft((-8.489, 1.476), 32.297974, 16).history,
        True,
        Severity.WARN,
        ("-8.489", "1.476", "MSE", "41%"),
        (),
        "measured",
    ),
    Case("seed 002 after", "missing_sigmoid", lambda: craft((0.291, 0.981), 1.324812, 0).history, False),
    Case("loss takes logits", "missing_sigmoid", logits_loss_out_of_range, False),
    Case(
        "MSE on raw outputs, only raw streamed",
        "missing_sigmoid",
        lambda: raw_only(heatmap=True),
        True,
        Severity.WARN,
        ("-8.489",),
    ),
    Case("Dice+BCE logits, only raw streamed", "missing_sigmoid", lambda: raw_only(heatmap=False), False),
    Case("healthy", "missing_sigmoid", lambda: healthy_run().history, False),
    # gradient explosion
    Case(
        "seed 002 before",
        "gradient_explosion",
        lambda: craft((-8.489, 1.476), 32.297974, 16).history,
        True,
        Severity.WARN,
        ("16 parameters", "> 10", "32.3"),
        (make_command("set_clip", clip=1.0), make_command("set_lr", lr=1e-4)),
        "measured",
    ),
    Case("seed 002 after", "gradient_explosion", lambda: craft((0.291, 0.981), 1.324812, 0).history, False),
    Case("one spike in the recent steps", "gradient_explosion", explosion_once, False),
    Case(
        "already clipped at 1.0",
        "gradient_explosion",
        explosion_already_clipped,
        True,
        Severity.WARN,
        (),
        (make_command("set_lr", lr=1e-4),),
    ),
    # vanishing gradients: weight layers only, orders of magnitude, sustained
    Case(
        "seed 000 log: 17x is within the normal range",
        "vanishing_gradients",
        lambda: grads({"encoder_conv1": 0.052314, "encoder_last": 0.003101}),
        False,
    ),
    Case(
        "the 12-layer sigmoid CNN: first/last 3.7e-9",
        "vanishing_gradients",
        lambda: grads({"conv01": 4.9e-11, "conv06": 6e-7, "conv11": 4.3e-3, "head": 1.33e-2}),
        True,
        Severity.WARN,
        ("shallow/deep", "3.7e-9x", "conv01", "head"),
        (),
        "measured",
    ),
    Case(
        "an end below 1e-4, 100x under the other",
        "vanishing_gradients",
        lambda: grads({"c1": 3e-6, "c2": 1e-3, "c3": 2e-2}),
        True,
        Severity.WARN,
        ("c1", "< 0.0001"),
    ),
    Case("500x is not yet vanishing", "vanishing_gradients", lambda: grads({"c1": 2e-4, "c2": 5e-3, "c3": 0.1}),
         False),
    Case(
        "a normalisation layer below 1e-4 between balanced ends",
        "vanishing_gradients",
        lambda: grads({"conv1": 0.1, "bn": 5e-5, "conv2": 0.02, "head": 0.13}),
        False,
    ),
    Case(
        "a BatchNorm first layer is not an end",
        "vanishing_gradients",
        lambda: grads({"bn0": 1e-6, "conv1": 0.05, "conv2": 0.02, "head": 0.2}),
        False,
    ),
    Case("unused layer (NaN channel) is not vanishing", "vanishing_gradients",
         lambda: grads({"c1": 0.03, "aux": float("nan"), "c3": 0.01}), False),
    Case("even spread 3x", "vanishing_gradients", lambda: grads({"c1": 0.03, "c2": 0.02, "c3": 0.01}), False),
    # squashed outputs (a sigmoid applied twice)
    Case("double sigmoid", "squashed_outputs", double_sigmoid, True, Severity.WARN, ("0.5", "0.731"), (),
         "measured"),
    Case("healthy logits", "squashed_outputs", lambda: healthy_run().history, False),
    Case("double sigmoid, decided on 30 steps", "squashed_outputs",
         lambda: outputs((0.02, 0.97), (sig(0.02), sig(0.97)), steps=30), True),
    Case("double sigmoid, 29 steps: too early", "squashed_outputs",
         lambda: outputs((0.02, 0.97), (sig(0.02), sig(0.97)), steps=29), False),
    Case("a fresh net whose logits were all in (0, 1) for its first steps", "squashed_outputs",
         fresh_then_both_signs, False),
    Case("a ReLU head is not a double sigmoid", "squashed_outputs", relu_head, False),
    # BCE pinned at ln 2 (a final ReLU before BCEWithLogits)
    Case("ReLU before BCEWithLogits", "bce_at_ln2", relu_head, True, Severity.WARN, ("0.693",)),
    Case("logits of both signs", "bce_at_ln2", lambda: healthy_run().history, False),
    Case("double sigmoid is not a ReLU", "bce_at_ln2", double_sigmoid, False),
    # constant or zero loss term
    Case("softmax over one channel", "constant_loss", softmax_one_channel, True, Severity.WARN, ("1",)),
    Case("a term exactly 0", "constant_loss", zero_term, True, Severity.WARN, ("loss/dice", "exactly 0")),
    Case("a term exactly 0, weighted 0.7 in the config", "constant_loss",
         lambda: zero_term({"bce_weight": 0.3, "dice_weight": 0.7}), True, Severity.WARN, ("loss/dice",)),
    Case("a term the config weights 0 (weights not streamed)", "constant_loss",
         lambda: zero_term({"bce_weight": 1.0, "dice_weight": 0.0}), False),
    Case("healthy", "constant_loss", lambda: healthy_run().history, False),
    Case("a constant output is not a double sigmoid", "squashed_outputs", softmax_one_channel, False),
    Case("all-zero gradients are not vanishing", "vanishing_gradients",
         lambda: grads({"c1": 0.0, "c2": 0.0, "c3": 0.0}), False),
    Case("seed 002's literal numbers, every step alike", "constant_loss",
         lambda: craft((-8.489, 1.476), 32.3, 16, steps=200).history, False),
    # AMP
    Case("the scaler skips every other step", "amp_overflow", lambda: amp(0.8), True, Severity.WARN, ("float16",)),
    Case("the scale collapsed", "amp_overflow", lambda: amp(0.0, scale=0.25), True, Severity.WARN),
    Case("occasional skips are normal", "amp_overflow", lambda: amp(0.02), False),
    Case("skipped steps are not NaN", "nonfinite", amp_skipped_steps_with_inf_grads, False),
    # lr too high without exploding
    Case("oscillating at a high level with huge updates", "lr_too_high", oscillating, True, Severity.WARN,
         ("0.08",), (make_command("set_lr", lr=3.75e-5),), "hypothesis"),
    Case("huge updates but falling", "lr_too_high", lambda: oscillating(trend=0.001), False),
    Case("oscillating with normal updates", "lr_too_high", lambda: oscillating(update_ratio=3e-3), False),
    Case("healthy", "lr_too_high", lambda: healthy_run().history, False),
    # unused parameters
    Case("a layer with no gradient", "unused_parameters", unused_layer, True, Severity.INFO,
         ("aux_head",)),
    Case("every layer gets one", "unused_parameters", lambda: healthy_run().history, False),
    # validation collapse
    Case("val Dice falls from its best", "val_collapse",
         lambda: val_dice_curve([0.3, 0.55, 0.62, 0.41, 0.35, 0.30]), True, Severity.WARN, ("0.62", "epoch 3")),
    Case("validation predicts background", "val_collapse",
         lambda: val_dice_curve([0.01, 0.01, 0.02, 0.01], train_dice=[0.5, 0.7, 0.75, 0.8]), True, Severity.WARN, ("0.010",)),
    Case("val loss rises while train falls", "val_collapse", val_loss_rising, True, Severity.WARN),
    Case("one epoch predicting background", "val_collapse",
         lambda: val_dice_curve([0.3, 0.01, 0.5, 0.6], train_dice=[0.5, 0.7, 0.75, 0.8]), False),
    Case("two low epochs after the best", "val_collapse",
         lambda: val_dice_curve([0.3, 0.55, 0.62, 0.41, 0.35, 0.6]), False),
    Case("val Dice noisy but near its best", "val_collapse",
         lambda: val_dice_curve([0.3, 0.55, 0.62, 0.58, 0.60]), False),
    Case("never learned", "val_collapse", lambda: val_dice_curve([0.1, 0.05, 0.02, 0.01]), False),
    # levels are recent levels; float32 bounds with a tolerance
    Case("BCE 0.2999 for 9 epochs has settled", "bce_not_settled", lambda: bce_stuck_at(0.2999), False),
    Case("BCE 0.3 (float32 0.30000001) has settled", "bce_not_settled", lambda: bce_stuck_at(0.3), False),
    Case("BCE 0.34 late", "bce_not_settled", lambda: bce_stuck_at(0.34), True, Severity.WARN),
    Case("BCE 0.34 late but val Dice 0.89 (BatchNorm nets, soft logits)", "bce_not_settled",
         lambda: bce_stuck_at(0.34, val_dice=0.89), False),
    Case("BCE 0.34 late, training Dice 0.95 (validation broken)", "bce_not_settled",
         lambda: bce_stuck_at(0.34, val_dice=0.55, train_dice=0.95), False),
    Case("heatmap MSE 0.022, 60% below the constant, still creeping down", "plateau", low_level_creeping, False),
    Case("flat at 40% of the constant baseline: it learned, nothing to fix", "plateau", flat_well_below_constant,
         False),
    Case("no updates at all is not a small lr", "lr_too_small", lambda: tiny_lr(0.0), False),
    Case("30% below the constant now, above it earlier", "no_better_than_constant",
         constant_level_after_descent, False),
    # masks not binary
    Case(
        "256 mask values",
        "masks_not_binary",
        lambda: masks(256, (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)),
        True,
        Severity.WARN,
        ("256", "expected 2"),
        (),
        "measured",
    ),
    Case("binary masks", "masks_not_binary", lambda: masks(2, (0.0, 255.0)), False),
    Case(
        "heatmap targets are continuous by design",
        "masks_not_binary",
        lambda: masks(256, (0.0, 0.5), heatmap=True),
        False,
    ),
    # class imbalance
    Case(
        "0.5% foreground",
        "class_imbalance",
        lambda: foreground(0.005),
        True,
        Severity.WARN,
        ("0.50%", "< 2%"),
        (make_command("set_pos_weight", pos_weight=199.0),),
        "measured",
    ),
    Case("15% foreground", "class_imbalance", lambda: foreground(0.15), False),
    Case(
        "0.5% foreground already weighted",
        "class_imbalance",
        lambda: foreground(0.005, pos_weight=199.0),
        False,
    ),
    # no better than a constant predictor
    Case(
        "BCE at the foreground-ratio constant",
        "no_better_than_constant",
        lambda: bce_only(0.33),
        True,
        Severity.WARN,
        ("0.325", "predicting 0.1 everywhere"),
        (),
        "measured",
    ),
    Case("BCE well below it", "no_better_than_constant", lambda: bce_only(0.12), False),
    Case("too early to judge", "no_better_than_constant", lambda: bce_only(0.33, steps=100), False),
    Case(
        "seed 002 MSE 2.388 vs 2 x var",
        "no_better_than_constant",
        lambda: mse_run(2.388261),
        True,
        Severity.WARN,
        ("2.388", "0.1 for the best"),
    ),
    Case("seed 002 after: MSE 0.05", "no_better_than_constant", lambda: mse_run(0.05), False),
    Case("healthy", "no_better_than_constant", lambda: healthy_run().history, False),
    # plateau
    Case(
        "seed 000's five epoch losses",
        "plateau",
        seed_plateau,
        True,
        Severity.WARN,
        ("0.612534", "< 1e-06", "< 0.0001"),
        (),
        "measured",
    ),
    Case("flat with a good val Dice is convergence", "plateau", lambda: seed_plateau(val_dice=0.85), False),
    Case("epoch losses still falling", "plateau", epochs_declining, False),
    Case("slow but steady decline", "plateau", epochs_slow_steady, False),
    Case(
        "long epochs, flat step window", "plateau", long_epochs_flat, True, Severity.WARN, ("blocks of 200",)
    ),
    Case("long epochs, falling step window", "plateau", long_epochs_falling, False),
    # loss weights unbalanced
    Case(
        "seed 000 case 3",
        "loss_weights_unbalanced",
        weights_case,
        True,
        Severity.WARN,
        ("0.435", "0.234", "0.40"),
        (make_command("set_loss_weights", bce=0.5, dice=0.5),),
        "hypothesis",
    ),
    Case(
        "thin vessels: Dice term 0.38, val Dice 0.80",
        "loss_weights_unbalanced",
        lambda: weights_case(dice=0.38, bce=0.08, val_dice=0.80, plateau=False),
        False,
    ),
    Case("healthy run", "loss_weights_unbalanced", lambda: healthy_run().history, False),
    Case("no plateau", "loss_weights_unbalanced", lambda: weights_case(plateau=False), False),
    Case("val Dice good", "loss_weights_unbalanced", lambda: weights_case(val_dice=0.8), False),
    Case("gradients vanishing", "loss_weights_unbalanced", lambda: weights_case(grad__enc1=1e-6), False),
    Case("already 0.5/0.5", "loss_weights_unbalanced", lambda: weights_case(weights=(0.5, 0.5)), False),
    # lr too small
    Case(
        "crawling with tiny updates",
        "lr_too_small",
        tiny_lr,
        True,
        Severity.WARN,
        ("|dw|/|w| 1e-06", "0.01"),
        (make_command("set_lr", lr=0.01),),  # 1e-5 x (3e-3 / 1e-6) = x3000, capped at x1000
        "hypothesis",
    ),
    Case(
        "no update ratio, lr 1e-5",
        "lr_too_small",
        lambda: tiny_lr(None),
        True,
        Severity.WARN,
        ("update size not measured",),
        (make_command("set_lr", lr=5e-5),),
    ),
    Case("crawling but normal update size", "lr_too_small", lambda: tiny_lr(1e-3), False),
    Case("no update ratio, lr 1e-3", "lr_too_small", lambda: tiny_lr(None, lr=1e-3), False),
    Case("healthy", "lr_too_small", lambda: healthy_run().history, False),
    # BCE not settled
    Case(
        "BCE 0.45 at 80% of training",
        "bce_not_settled",
        lambda: bce_late(0.45, 800),
        True,
        Severity.WARN,
        ("0.450", "80%"),
        (make_command("set_lr", lr=2e-3),),
        "hypothesis",
    ),
    Case("BCE 0.45 at 20% of training", "bce_not_settled", lambda: bce_late(0.45, 200), False),
    # A schedule spent the lr: updates 1e-5 against the healthy 3e-3: the fix is sized from them, not x2.
    Case("BCE 0.45 late with an lr a schedule spent", "bce_not_settled",
         lambda: bce_late(0.45, 800, update_ratio=1e-5), True, Severity.WARN, (),
         (make_command("set_lr", lr=0.3),)),
    # 0.50 -> 0.31 over 700 steps of 1000 (falling 2.7e-4 a step): it passes 0.3 well before the end.
    Case("BCE 0.31 at 70%, falling fast enough to settle before the end", "bce_not_settled",
         lambda: bce_late(lambda r: 0.50 - 2.7e-4 * r, 700), False),
    # 0.50 -> 0.45 over 800 steps: at that pace it ends near 0.44.
    Case("BCE 0.45 at 80%, falling too slowly to settle", "bce_not_settled",
         lambda: bce_late(lambda r: 0.50 - 6e-5 * r, 800), True),
    Case("BCE 0.10 late", "bce_not_settled", lambda: bce_late(0.10, 800), False),
    Case(
        "BCE 0.45 weighted by pos_weight 9",
        "bce_not_settled",
        lambda: bce_late(0.45, 800, pos_weight=9.0),
        False,
    ),
    # model too large
    Case(
        "31M params, 40 images, val gap",
        "model_too_large",
        lambda: big_model(31_000_000, 40, (0.3, 0.6)),
        True,
        Severity.WARN,
        ("31,000,000", "40 training images", "gap 0.3"),
        (),
        "hypothesis",
    ),
    Case(
        "31M params, 40 images, no epoch yet",
        "model_too_large",
        lambda: big_model(31_000_000, 40, None),
        True,
        Severity.INFO,
    ),
    Case(
        "31M params, 40 images, no gap",
        "model_too_large",
        lambda: big_model(31_000_000, 40, (0.3, 0.32)),
        False,
    ),
    Case("8.5M UNet on 40 images", "model_too_large", lambda: big_model(8_500_000, 40, (0.3, 0.6)), False),
    Case("31M params, 500 images", "model_too_large", lambda: big_model(31_000_000, 500, (0.3, 0.6)), False),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c.code}: {c.name}" for c in CASES])
def test_rule(case: Case) -> None:
    # GIVEN the case's history WHEN every rule runs
    verdicts = {v.code: v for v in evaluate_rules(case.build())}
    # THEN the rule fires exactly when it should, saying what a user needs
    if not case.fires:
        assert case.code not in verdicts, verdicts.get(case.code)
        return
    assert case.code in verdicts, f"{case.code} did not fire; got {sorted(verdicts)}"
    v = verdicts[case.code]
    if case.severity is not None:
        assert v.severity == case.severity
    for text in case.evidence:
        assert text in f"{v.title} | {v.evidence}", f"{text!r} missing from {v.title!r} / {v.evidence!r}"
    if case.fixes is not None:
        assert v.fixes == case.fixes
    if case.confidence is not None:
        assert v.confidence == case.confidence
    assert v.title and v.cause and v.evidence and v.instruction


def test_every_rule_has_a_positive_and_a_negative_case() -> None:
    fires = {(c.code, c.fires) for c in CASES}
    for code in RULE_CODES:
        assert (code, True) in fires and (code, False) in fires, code


def test_a_healthy_run_raises_no_warning_at_any_point() -> None:
    # GIVEN a healthy run WHEN judged after each 50 steps THEN nothing above info is ever said
    full = healthy_run(1000).history
    for n in range(50, 1001, 50):
        part = RunHistory(full.schema)
        part.add(full.steps.chunk(full.run_id, 0, n))
        part.dataset = full.dataset
        part.epochs = [e for e in full.epochs if e.step < n]
        loud = [v for v in evaluate_rules(part) if v.severity >= Severity.WARN]
        assert loud == [], (n, loud)


def test_verdicts_come_in_cause_order_and_carry_the_newest_step() -> None:
    # GIVEN seed 002's CRAFT (no sigmoid, exploding) whose loss has just gone Inf
    b = craft((-8.489, 1.476), 32.297974, 16).steps(1, loss__total=float("inf"))
    verdicts = evaluate_rules(b.history)
    codes = [v.code for v in verdicts]
    # THEN the root cause comes first, its consequences after it, each naming it (seed 002's own
    # analysis: no sigmoid -> huge loss -> explosion)
    assert codes[0] == "missing_sigmoid"
    assert set(codes[1:]) == {"gradient_explosion", "nonfinite"}
    by_code = {v.code: v for v in verdicts}
    assert by_code["gradient_explosion"].caused_by == "missing_sigmoid"
    assert by_code["nonfinite"].caused_by == "missing_sigmoid"
    assert "Likely cause in this run" in by_code["gradient_explosion"].cause
    assert root_cause(verdicts).code == "missing_sigmoid"
    assert all(v.step == 60 for v in verdicts)


def test_a_consequence_alone_names_no_cause() -> None:
    verdicts = evaluate_rules(nan_loss_now())
    assert [v.code for v in verdicts] == ["nonfinite"] and verdicts[0].caused_by == ""


def test_tiny_lr_ranks_the_lr_above_no_better_than_constant() -> None:
    # GIVEN a BCE-only run crawling at the constant level with updates 1e-6 (tiny-lr)
    b = Builder(segmentation_schema(config={"loss": "bce"})).dataset(foreground_ratio=0.1, target_mean=0.1)
    b.steps(400, loss__total=lambda r: 0.34 - 0.00001 * r, loss__bce=lambda r: 0.34 - 0.00001 * r,
            opt__lr=1e-6, opt__update_ratio=3e-6)
    verdicts = evaluate_rules(b.history)
    codes = [v.code for v in verdicts]
    # THEN the lr is the root cause: its fix (sized to the healthy update: ~1e-3) is what `f` applies
    assert codes[:2] == ["lr_too_small", "no_better_than_constant"], codes
    assert verdicts[0].fixes == (make_command("set_lr", lr=0.001),)
    assert verdicts[1].caused_by == "lr_too_small"


def test_an_amp_run_nan_loss_gives_fp16_advice() -> None:
    v = {x.code: x for x in evaluate_rules(amp_nan_loss())}["nonfinite"]
    assert "float16" in v.cause and "bfloat16" in v.instruction


def test_dataset_verdicts_need_no_steps() -> None:
    # GIVEN only a data set report, before training starts
    history = (
        Builder().dataset(unique_mask_values=256, mask_values=(0.0, 1.0), foreground_ratio=0.005).history
    )
    # THEN its verdicts already show, at step -1
    codes = {v.code: v.step for v in evaluate_rules(history)}
    assert codes == {"masks_not_binary": -1, "class_imbalance": -1}


def test_an_empty_history_gives_no_verdict() -> None:
    assert evaluate_rules(Builder().history) == []


def test_nan_values_in_the_window_do_not_break_levels() -> None:
    # GIVEN a BCE-only run stuck at the constant level with a few NaN losses long ago
    b = Builder(segmentation_schema(config={"loss": "bce"})).dataset(foreground_ratio=0.1, target_mean=0.1)
    b.steps(300, loss__total=0.33, loss__bce=lambda r: np.where(r % 50 == 0, np.nan, 0.33))
    codes = {v.code for v in evaluate_rules(b.history)}
    # THEN the level is read from the finite values
    assert "no_better_than_constant" in codes


def test_a_fix_the_trainer_would_refuse_is_not_offered() -> None:
    # GIVEN BCE high late in a run whose schedule decayed the lr to 7e-19 (the plateau scenario)
    b = Builder(segmentation_schema(config={"epochs": 10, "steps_per_epoch": 100})).dataset()
    b.steps(900, loss__bce=0.45, opt__lr=6.9e-19)
    # WHEN the rules run THEN nothing raises; lr x 2 (1.4e-18, below set_lr's floor) is not offered
    verdict = {v.code: v for v in evaluate_rules(b.history)}["bce_not_settled"]
    assert verdict.fixes == () and verdict.instruction
