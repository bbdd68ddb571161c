"""Every number the rules compare against, in one frozen configuration record.

Defaults come from the two seeds (000: the UNet/OCTA field guide; 002: the CRAFT fix) where
they give one; the rest are chosen so a healthy run raises nothing and are named here so a
user can change them (``Thresholds(plateau_variance=1e-5)``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Thresholds:
    """The rules' configuration; see each field's comment for its origin and unit."""

    # --- how much history a rule looks at (the engine is windowed: cost does not grow with the run)
    window_steps: int = 1000  # the step window for levels and trends (loss, BCE, Dice term)
    recent_steps: int = 20  # "now": output range, explosions
    nonfinite_steps: int = 5  # a NaN/Inf in any of these newest steps is critical
    grad_steps: int = 50  # per-layer gradient norms: median over these newest steps
    min_steps: int = 10  # no step-based rule speaks before this many steps
    level_steps: int = 50  # "where the loss is": the mean of these newest steps, with its noise band
    level_sigmas: float = 2.0  # a level is past a bound only when it is this many standard errors past
    float_rtol: float = 1e-6  # values travel as float32: 0.3 arrives as 0.30000001

    # --- data (seed 000 §1)
    mask_unique_values_max: int = 2  # 000 §1a: a binary mask has 2 values
    foreground_ratio_min: float = 0.02  # 000 §1b: mean foreground below 2% is severe imbalance
    pos_weight_max: float = 10000.0  # the trainer's accepted range for set_pos_weight

    # --- plateau (seed 000, "Loss 平台期诊断")
    plateau_epochs: int = 5  # last 5 epoch losses
    plateau_variance: float = 1e-6  # variance of those losses below this ...
    plateau_improvement: float = 1e-4  # ... and improvement below this (beyond noise, see below)
    plateau_noise_sigmas: float = 2.0  # a trend within this many standard errors is noise
    plateau_reference_level: float = 0.6  # the bounds above are the seed's for a loss at 0.6; scaled below it
    plateau_block_steps: int = 200  # step-window test: 5 blocks of this many steps (long epochs)
    val_dice_good: float = 0.7  # a flat loss with a validation Dice this good is convergence
    converged_fraction: float = 0.5  # ... as is a flat loss below half the constant baseline (it learned)

    # --- loss weights (seed 000 §3 and its matrix, row 1)
    dice_term_high: float = 0.35  # 000: "Dice > 0.35 -> the model has not learned the shape"
    bce_low: float = 0.3  # the BCE term at or below this is "settled"
    val_dice_poor: float = 0.5  # seed 000's stuck run: val Dice 0.40; a healthy one: 0.80

    # --- learning rate too small (seed 000 §2: 0.8 -> 0.65 in 3 epochs, then flat)
    lr_min_steps: int = 200  # judge the curve only after this many steps (weak evidence: updates near 1e-4)
    lr_early_steps: int = 40  # ... or after this many when the updates are tiny (strong evidence, see below)
    lr_update_ratio_tiny: float = 1e-5  # |dw|/|w| 300x below the healthy 3e-3: decided at lr_early_steps
    lr_steady_rtol: float = 1e-4  # the lr is held (no warm-up, no decay) when it changed less than this
    # (float32 noise is 1e-7; a cosine warm-up moves it 4e-3 over its first 50 steps)
    lr_rising_steps: int = 50  # the lr rose over these newest steps: a warm-up at work, judged once it ends
    lr_initial_steps: int = 20  # the starting loss: mean over the first steps
    lr_high_loss_fraction: float = 0.7  # still above 70% of the starting loss ...
    lr_flat_decline: float = 0.05  # ... and declining less than 5% over the step window ...
    lr_update_ratio_small: float = 1e-4  # ... with updates |dw|/|w| below this (when measured)
    lr_small: float = 1e-4  # without an update ratio: the seed's too-small Adam lr
    lr_raise_factor: float = 5.0  # 000: lr 0.0001 -> 0.0005 (when the update size is not measured)
    update_ratio_target: float = 3e-3  # the healthy demo (Adam lr 1e-3) measures |dw|/|w| 2.8e-3 - 3.2e-3
    lr_max_factor: float = 1000.0  # an lr fix changes the lr by at most this factor at once

    # --- learning rate too high without exploding: the loss oscillates with no trend
    update_ratio_high: float = 3e-2  # |dw|/|w| ten times the healthy target
    lr_high_min_steps: int = 200
    dead_grad_norm: float = 1e-8  # a total gradient norm at or below this reaches no weight (Adam's eps)

    # --- BCE not settled (seed 000: "BCE > 0.3 -> pixel classification unstable, more epochs")
    bce_settled_max: float = 0.3
    late_fraction: float = 0.5  # "late": past half of the planned steps ...
    late_epochs: int = 10  # ... or, with no plan known, after this many epochs
    bce_lr_factor: float = 2.0  # the trial fix: a higher lr
    bce_trend_steps: int = 100  # BCE still falling over these steps fast enough to pass the bound by the planned end

    # --- vanishing gradients (seed 000's gradient hint)
    grad_layer_min: float = 1e-4  # 000: "all layers > 1e-4" is healthy
    grad_ratio_slight: float = 10.0  # 000: shallow/deep > 10x is "slight" vanishing
    grad_ratio_moderate: float = 100.0
    grad_ratio_strong: float = 1000.0
    grad_ratio_vanishing: float = 1000.0  # first/last weight layer beyond this, either way, in two windows
    grad_floor_spread: float = 100.0  # an end below the floor with the other end this far above it

    # --- outputs and loss terms that cannot learn
    output_steps: int = 50  # the output and loss-term signatures must hold over these newest steps
    output_min_steps: int = 30  # ... in a run at least this long (every step of it: a fresh healthy net's logits
    # take both signs within a few steps; the healthy zoo's 5 nets x 3 seeds never hold (0, 1] or min = 0 that long)
    constant_rtol: float = 1e-6  # a loss term whose spread is below this (relative) is constant
    ln2_tolerance: float = 0.02  # BCE within this of ln 2 = 0.693 is "pinned"

    # --- mixed precision (float16 with a GradScaler)
    amp_skip_fraction: float = 0.5  # the scaler skipping more than half the recent steps
    amp_scale_min: float = 1.0  # a loss scale that collapsed below this

    # --- validation collapse / train-val divergence
    val_collapse_drop: float = 0.15  # validation Dice this far below its best ...
    val_collapse_epochs: int = 3  # ... for this many epochs in a row ...
    val_collapse_steps: int = 100  # ... spanning at least this many steps
    val_dice_learned: float = 0.3  # the best validation Dice must have reached this (it learned)
    val_all_background: float = 0.05  # validation Dice below this while training Dice is fine
    val_loss_rise: float = 0.1  # validation loss risen this much (relative) from its best while training falls

    # --- gradient explosion (seed 002: 16 parameters with norm > 10, max 32.3)
    explosion_param_norm: float = 10.0
    explosion_min_steps: int = 3  # of the recent steps, this many must show it
    explosion_clip: float = 1.0  # 002: clip 5.0 -> 1.0
    explosion_lr_divisor: float = 10.0  # 002: lr 1e-3 -> 1e-4

    # --- missing sigmoid (seed 002: outputs [-8.489, 1.476] fed to MSE)
    probability_tolerance: float = 1e-3  # float noise allowed outside [0, 1]

    # --- model too large for the data (seed 000 §4)
    small_dataset_images: int = 50  # 000: "< 50 images"
    large_model_params: int = 10_000_000  # between 000's 8.5M UNet (its fix) and 31M UNet_Transformer
    overfit_loss_gap: float = 0.1  # validation loss above training loss by this much ...
    overfit_dice_gap: float = 0.15  # ... or training Dice above validation Dice by this much

    # --- no better than a constant predictor (seed 002's "theoretical baseline", computed from data)
    baseline_min_steps: int = 200  # every model starts worse than a constant; judge after this
    baseline_margin: float = 0.05  # within 5% of the baseline counts as "no better"

    # --- the seed's diagnosis matrix
    matrix_near: float = 0.35  # a normalised distance up to this is a close match

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value == value:
                raise ValueError(f"threshold {f.name} must be a number, got {value!r}")
            if value < 0:
                raise ValueError(f"threshold {f.name} must be >= 0, got {value!r}")
        for name in ("window_steps", "recent_steps", "nonfinite_steps", "grad_steps", "plateau_block_steps",
                     "level_steps", "output_steps", "lr_early_steps", "lr_rising_steps", "bce_trend_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"threshold {name} must be at least 1 step, got {getattr(self, name)!r}")
        if self.plateau_epochs < 3:
            raise ValueError(f"plateau_epochs must be at least 3 to fit a trend, got {self.plateau_epochs}")
