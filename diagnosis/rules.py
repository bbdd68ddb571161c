"""The seeds' rules: each reads a windowed view of the run and returns a verdict or None.

A rule fires only on what it can see in the data; when a channel or a report it needs is
missing it stays silent rather than guess. Rules share measured quantities (the gradient
state, the plateau test, the constant baseline) through one :class:`Context` that computes
each at most once per evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from octa_tui.protocol import channels as ch
from octa_tui.protocol.commands import make_command
from octa_tui.protocol.messages import Command
from octa_tui.protocol.run import RunHistory

from .baseline import bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline
from .signals import (
    SLIGHT,
    ExplosionSummary,
    GradientState,
    PlateauTest,
    block_means,
    explosion_summary,
    finite_median,
    gradient_state,
    plateau_test,
)
from .texts import say, word
from .thresholds import Thresholds
from .verdict import HYPOTHESIS, MEASURED, Severity, Verdict, check_lang
from .view import DICE_KEYS, TRAIN_LOSS_KEYS, VAL_LOSS_KEYS, RunView, finite_mean, metric

LR_MAX = 1.0  # set_lr's accepted upper bound
LOSS_NAMES = {"mse": "MSE", "bce": "BCE", "dice_bce": "Dice+BCE"}


def suggested(value: float) -> float:
    """A setting to propose, rounded to 3 significant digits (1e-4, not 1.0000000475e-4)."""
    return float(f"{value:.3g}")


@dataclass(frozen=True)
class PlateauFinding:
    """A flat loss and how it was found: over epochs, or over blocks of the step window."""

    test: PlateauTest
    source: str  # "epochs" | "steps"
    evidence_values: dict


@dataclass(frozen=True)
class BaselineComparison:
    """The run's recent loss next to the best constant predictor's."""

    what: str  # the channel compared, e.g. "loss/total"
    loss: float
    baseline: float
    how_key: str  # "how_constant" | "how_mean"
    constant: float


class Context:
    """One evaluation's inputs and the quantities the rules share, each computed on first use."""

    def __init__(self, history: RunHistory, thresholds: Thresholds, lang: str, unseen_steps: int = 0) -> None:
        self.t = thresholds
        self.lang = check_lang(lang)
        # Steps no earlier evaluation read: the event rules (explosion, non-finite) look at all
        # of them, so a burst streamed between two evaluations is not missed.
        self.explosion_steps = max(thresholds.recent_steps, unseen_steps)
        self.nonfinite_steps = max(thresholds.nonfinite_steps, unseen_steps)
        window = max(thresholds.window_steps, thresholds.plateau_epochs * thresholds.plateau_block_steps)
        self.view = RunView(history, window)

    # --- helpers --------------------------------------------------------------------------
    def say(self, code: str, key: str, **values: object) -> str:
        """One sentence of a rule in the evaluation's language."""
        return say(self.lang, code, key, **values)

    def verdict(
        self,
        code: str,
        severity: Severity,
        evidence: str,
        *,
        confidence: str,
        title: dict | None = None,
        title_key: str = "title",
        cause_key: str = "cause",
        cause: dict | None = None,
        fixes: tuple[Command, ...] = (),
        instruction_key: str = "instruction",
        instruction: dict | None = None,
    ) -> Verdict:
        """A verdict of rule ``code`` with its title, cause and instruction in the evaluation's language."""
        return Verdict(
            code=code,
            severity=severity,
            title=self.say(code, title_key, **(title or {})),
            evidence=evidence,
            cause=self.say(code, cause_key, **(cause or {})),
            fixes=fixes,
            instruction=self.say(code, instruction_key, **(instruction or {})),
            confidence=confidence,
            step=self.view.step,
        )

    def recent_mean(self, key: str, rows: int | None = None) -> float:
        """Mean of a channel's finite values over the window (NaN when absent or all non-finite)."""
        values = self.view.recent(key, rows)
        return math.nan if values is None else finite_mean(values)

    # --- settings in force ----------------------------------------------------------------
    @cached_property
    def lr(self) -> float:
        """The learning rate in force."""
        return self.view.setting(ch.OPT_LR)

    @cached_property
    def loss_weights(self) -> tuple[float, float]:
        """(BCE, Dice) weights in force, from the opt channels or else the config (NaN if unknown)."""
        bce, dice = self.view.setting(ch.OPT_BCE_WEIGHT), self.view.setting(ch.OPT_DICE_WEIGHT)
        if not (math.isfinite(bce) and math.isfinite(dice)):
            bce, dice = self.view.config_number("bce_weight"), self.view.config_number("dice_weight")
        return bce, dice

    @cached_property
    def pos_weight(self) -> float:
        """The BCE foreground weight in force (1.0 when none is set)."""
        value = self.view.setting(ch.OPT_POS_WEIGHT)
        return value if math.isfinite(value) and value > 0 else 1.0

    @cached_property
    def foreground(self) -> float:
        """Mean target (foreground ratio) from the data set report, NaN when unknown."""
        report = self.view.dataset
        if report is None:
            return math.nan
        for value in (report.target_mean, report.foreground_ratio):
            if math.isfinite(value) and 0.0 <= value <= 1.0:
                return float(value)
        return math.nan

    # --- shared measurements --------------------------------------------------------------
    @cached_property
    def grads(self) -> GradientState | None:
        """Per-layer gradient norms graded (None before ``min_steps`` or without grad channels)."""
        keys = self.view.group("grad")
        if not keys or self.view.n_steps < self.t.min_steps:
            return None
        t = self.t
        recent = self.view.recent_matrix(keys, t.grad_steps)
        layers = tuple(k.split("/", 1)[1] for k in keys)
        return gradient_state(
            layers, recent, t.grad_layer_min, t.grad_ratio_slight, t.grad_ratio_moderate, t.grad_ratio_strong
        )

    @cached_property
    def bound(self) -> float:
        """The parameter gradient norm counted as exploding (config ``grad_bound`` or the seed's 10)."""
        bound = self.view.config_number("grad_bound")
        return bound if math.isfinite(bound) and bound > 0 else self.t.explosion_param_norm

    @cached_property
    def explosion(self) -> ExplosionSummary | None:
        """Recent steps over the bound."""
        if self.view.n_steps == 0:
            return None
        rows = self.explosion_steps
        return explosion_summary(
            self.view.steps[-rows:],
            self.view.recent(ch.GRAD_N_OVER_BOUND, rows),
            self.view.recent(ch.GRAD_MAX_PARAM_NORM, rows),
            self.bound,
        )

    @cached_property
    def exploding(self) -> bool:
        """Whether enough recent steps exceeded the bound to call it an explosion (a run's very first
        steps count only once there are that many: one large first gradient is not an explosion)."""
        e = self.explosion
        return e is not None and e.steps_over >= self.t.explosion_min_steps

    @cached_property
    def nonfinite_rows(self) -> tuple[int, list[str], int]:
        """(count of bad rows, channels bad at the newest bad row, its step) in the newest steps."""
        view = self.view
        if view.n_steps == 0:
            return 0, [], -1
        keys = list(view.group("loss"))
        stats = [k for k in (ch.GRAD_TOTAL_NORM,) if view.has(k)]
        keys += stats if stats or view.has(ch.GRAD_NONFINITE) else list(view.group("grad"))
        rows = self.nonfinite_steps
        bad = (
            ~np.isfinite(view.recent_matrix(keys, rows))
            if keys
            else np.zeros((min(rows, view.window), 0), bool)
        )
        flag = view.recent(ch.GRAD_NONFINITE, rows)
        flagged = np.zeros(bad.shape[0], bool) if flag is None else np.nan_to_num(flag, nan=1.0) > 0
        any_bad = bad.any(axis=1) | flagged
        if not any_bad.any():
            return 0, [], -1
        last = int(np.flatnonzero(any_bad)[-1])
        names = [keys[j] for j in np.flatnonzero(bad[last])]
        if flagged[last] and ch.GRAD_NONFINITE not in names:
            names.append(ch.GRAD_NONFINITE)
        return int(any_bad.sum()), names, int(view.steps[-bad.shape[0] :][last])

    @cached_property
    def baseline(self) -> BaselineComparison | None:
        """The recent loss against the best constant predictor, when the data allow computing it."""
        view, kind = self.view, self.view.loss_kind
        report = view.dataset
        if report is None or view.n_steps == 0:
            return None
        if kind == "mse":
            if not math.isfinite(report.target_var):
                return None
            terms = [k for k in view.group("loss") if k != ch.LOSS_TOTAL]
            if view.has(ch.LOSS_TOTAL):
                key = ch.LOSS_TOTAL
                n_terms = 1 if ch.LOSS_MSE in terms else max(1, len(terms))
            elif view.has(ch.LOSS_MSE):
                key, n_terms = ch.LOSS_MSE, 1
            else:
                return None
            base = mse_baseline(report.target_var, n_terms)
            return BaselineComparison(key, self.recent_mean(key), base.loss, "how_mean", base.constant)
        p = self.foreground
        if not math.isfinite(p):
            return None
        if kind == "bce":
            key = ch.LOSS_BCE if view.has(ch.LOSS_BCE) else ch.LOSS_TOTAL
            base = bce_baseline(p, self.pos_weight)
            return BaselineComparison(key, self.recent_mean(key), base.loss, "how_constant", base.constant)
        if kind == "dice_bce":
            bce_w, dice_w = self.loss_weights
            if (
                view.has(ch.LOSS_TOTAL)
                and math.isfinite(bce_w)
                and math.isfinite(dice_w)
                and bce_w + dice_w > 0
            ):
                base = dice_bce_baseline(p, bce_w, dice_w, self.pos_weight)
                return BaselineComparison(
                    ch.LOSS_TOTAL, self.recent_mean(ch.LOSS_TOTAL), base.loss, "how_constant", base.constant
                )
            if view.has(ch.LOSS_DICE):  # weights unknown: the Dice term alone against its baseline
                base = dice_loss_baseline(p)
                return BaselineComparison(
                    ch.LOSS_DICE, self.recent_mean(ch.LOSS_DICE), base.loss, "how_constant", base.constant
                )
        return None

    @cached_property
    def plateau(self) -> PlateauFinding | None:
        """Seed 000's plateau over the last epochs, or over step blocks when epochs are long."""
        t, view = self.t, self.view
        n = t.plateau_epochs
        epochs, losses = view.epoch_train_losses(n)
        if losses.size == n:
            test = plateau_test(losses, t.plateau_variance, t.plateau_improvement, t.plateau_noise_sigmas)
            if test.flat:
                values = ", ".join(f"{v:.6f}" for v in losses)
                return PlateauFinding(test, "epochs", {"n": n, "values": values})
        per_epoch = view.steps_per_epoch
        long_epochs = not math.isfinite(per_epoch) or per_epoch >= t.plateau_block_steps
        total = view.recent(ch.LOSS_TOTAL)
        if long_epochs and total is not None:
            means = block_means(total, n, t.plateau_block_steps)
            if means is not None:
                test = plateau_test(means, t.plateau_variance, t.plateau_improvement, t.plateau_noise_sigmas)
                if test.flat:
                    first = int(view.steps[-n * t.plateau_block_steps])
                    return PlateauFinding(
                        test,
                        "steps",
                        {"n": n, "block": t.plateau_block_steps, "first": first, "last": view.step},
                    )
        return None

    @cached_property
    def gradients_healthy(self) -> bool:
        """No vanishing beyond slight, no explosion, nothing non-finite: the seed's "✓正常"."""
        g = self.grads
        return (g is None or not g.vanishing) and not self.exploding and self.nonfinite_rows[0] == 0


# --- the rules ----------------------------------------------------------------------------
def rule_nonfinite(ctx: Context) -> Verdict | None:
    """NaN/Inf in the loss or the gradients of the newest steps: critical (training is lost)."""
    count, names, step = ctx.nonfinite_rows
    if count == 0:
        return None
    what = ", ".join(names[:4]) or "gradients"
    evidence = ctx.say(
        "nonfinite",
        "evidence",
        what=what,
        step=step,
        count=count,
        window=min(ctx.nonfinite_steps, ctx.view.window),
    )
    return ctx.verdict(
        "nonfinite", Severity.CRIT, evidence, confidence=MEASURED, fixes=(make_command("pause"),)
    )


def rule_missing_sigmoid(ctx: Context) -> Verdict | None:
    """A loss that expects probabilities is fed values outside [0, 1] (seed 002's root cause)."""
    view, t = ctx.view, ctx.t
    if not view.schema.loss_expects_probabilities or view.n_steps < min(t.min_steps, t.recent_steps):
        return None
    rows = t.recent_steps
    lo_key, hi_key = ch.OUT_ACT_MIN, ch.OUT_ACT_MAX
    no_activation = view.config.get("output_activation") == "none" and view.loss_kind == "mse"
    if not (view.has(lo_key) and view.has(hi_key)) and no_activation:
        lo_key, hi_key = ch.OUT_RAW_MIN, ch.OUT_RAW_MAX  # MSE on raw outputs: they are what the loss sees
    lo, hi, frac = (
        view.recent(lo_key, rows),
        view.recent(hi_key, rows),
        view.recent(ch.OUT_FRAC_OUTSIDE_01, rows),
    )
    outside = False
    if lo is not None and hi is not None:  # medians: one odd step does not make a verdict
        tol = t.probability_tolerance
        outside = bool(finite_median(lo) < -tol) or bool(finite_median(hi) > 1.0 + tol)
    frac_now = math.nan if frac is None else float(finite_median(frac))
    if math.isfinite(frac_now) and frac_now > t.probability_tolerance:
        outside = True
    if not outside:
        return None
    loss = LOSS_NAMES.get(view.loss_kind, view.loss_kind) or word(ctx.lang, "loss")
    low = float(np.nanmin(lo)) if lo is not None and np.isfinite(lo).any() else math.nan
    high = float(np.nanmax(hi)) if hi is not None and np.isfinite(hi).any() else math.nan
    values = {"loss": loss, "lo": low, "hi": high, "window": min(rows, view.window)}
    key = "evidence_frac" if math.isfinite(frac_now) else "evidence"
    evidence = ctx.say("missing_sigmoid", key, frac=frac_now, **values)
    return ctx.verdict("missing_sigmoid", Severity.WARN, evidence, confidence=MEASURED, cause={"loss": loss})


def rule_gradient_explosion(ctx: Context) -> Verdict | None:
    """Parameters with gradient norm above the bound in several recent steps (seed 002)."""
    e, t = ctx.explosion, ctx.t
    if e is None or not ctx.exploding:
        return None
    values = {
        "bound": ctx.bound,
        "max": e.max_norm,
        "step": e.worst_step,
        "steps": e.steps_over,
        "window": e.window,
    }
    if e.count_at_worst >= 0:
        evidence = ctx.say("gradient_explosion", "evidence", count=e.count_at_worst, **values)
    else:
        evidence = ctx.say("gradient_explosion", "evidence_nocount", **values)
    clip = ctx.view.setting(ch.OPT_CLIP)
    fixes: list[Command] = []
    clipped = math.isfinite(clip) and 0 < clip <= t.explosion_clip
    if not clipped:
        fixes.append(make_command("set_clip", clip=t.explosion_clip))
    if math.isfinite(ctx.lr) and ctx.lr > 0:
        fixes.append(make_command("set_lr", lr=suggested(min(LR_MAX, ctx.lr / t.explosion_lr_divisor))))
    return ctx.verdict(
        "gradient_explosion",
        Severity.WARN,
        evidence,
        confidence=MEASURED,
        fixes=tuple(fixes),
        instruction_key="instruction_clipped" if clipped else "instruction",
        instruction={"clip": clip if clipped else t.explosion_clip, "divisor": t.explosion_lr_divisor},
    )


def rule_vanishing_gradients(ctx: Context) -> Verdict | None:
    """A layer's gradient below 1e-4, or a shallow/deep spread above 10x, graded by strength."""
    g, t = ctx.grads, ctx.t
    if g is None or g.strength == "none":
        return None
    parts = [
        ctx.say("vanishing_gradients", "evidence_floor", layer=name, norm=norm, floor=t.grad_layer_min)
        for name, norm in g.below_floor[:3]
    ]
    if math.isfinite(g.ratio) and g.ratio > t.grad_ratio_slight:
        present = [i for i, v in enumerate(g.norms) if math.isfinite(v)]
        first, last = present[0], present[-1]
        parts.append(
            ctx.say(
                "vanishing_gradients",
                "evidence_ratio",
                direction=word(ctx.lang, g.direction),
                ratio=g.ratio,
                shallow=g.layers[first],
                shallow_norm=g.norms[first],
                deep=g.layers[last],
                deep_norm=g.norms[last],
                slight=t.grad_ratio_slight,
            )
        )
    parts.append(ctx.say("vanishing_gradients", "evidence_window", window=min(t.grad_steps, ctx.view.window)))
    slight = g.strength == SLIGHT
    return ctx.verdict(
        "vanishing_gradients",
        Severity.INFO if slight else Severity.WARN,
        word(ctx.lang, "; ").join(parts),
        confidence=MEASURED,
        title={"strength": word(ctx.lang, g.strength)},
        cause_key=("cause_small_layer" if g.below_floor else "cause_slight") if slight else "cause",
    )


def rule_masks_not_binary(ctx: Context) -> Verdict | None:
    """The data set report counts more than two distinct mask values (seed 000 §1a)."""
    report, t = ctx.view.dataset, ctx.t
    if report is None or ctx.view.loss_kind == "mse" or report.unique_mask_values <= t.mask_unique_values_max:
        return None
    shown = ", ".join(f"{v:g}" for v in report.mask_values[:6])
    more = ", ..." if report.unique_mask_values > min(6, len(report.mask_values)) else ""
    evidence = ctx.say(
        "masks_not_binary",
        "evidence",
        count=report.unique_mask_values,
        expected=t.mask_unique_values_max,
        values=f"[{shown}{more}]",
    )
    return ctx.verdict("masks_not_binary", Severity.WARN, evidence, confidence=MEASURED)


def rule_class_imbalance(ctx: Context) -> Verdict | None:
    """Mean foreground ratio below 2% with no compensating pos_weight (seed 000 §1b)."""
    report, t = ctx.view.dataset, ctx.t
    if report is None or ctx.view.loss_kind == "mse":
        return None
    ratio = report.foreground_ratio
    if not (math.isfinite(ratio) and 0.0 <= ratio < t.foreground_ratio_min):
        return None
    weight = report.suggested_pos_weight
    if ratio > 0 and not (math.isfinite(weight) and weight > 0):
        weight = (1.0 - ratio) / ratio
    evidence = ctx.say(
        "class_imbalance", "evidence", ratio=ratio, min=t.foreground_ratio_min, pos_weight=ctx.pos_weight
    )
    if ratio == 0:
        return ctx.verdict(
            "class_imbalance",
            Severity.WARN,
            evidence,
            confidence=MEASURED,
            instruction_key="instruction_empty",
        )
    weight = min(t.pos_weight_max, weight)
    if ctx.pos_weight >= 0.5 * weight:
        return None  # already compensated
    return ctx.verdict(
        "class_imbalance",
        Severity.WARN,
        evidence,
        confidence=MEASURED,
        fixes=(make_command("set_pos_weight", pos_weight=suggested(weight)),),
        instruction={"suggested": weight},
    )


def rule_no_better_than_constant(ctx: Context) -> Verdict | None:
    """The recent loss is no lower than what the best constant output would score on this data."""
    t, b = ctx.t, ctx.baseline
    if b is None or ctx.view.n_steps < t.baseline_min_steps or not math.isfinite(b.loss):
        return None
    if b.loss < (1.0 - t.baseline_margin) * b.baseline:
        return None
    how = ctx.say("no_better_than_constant", b.how_key, constant=b.constant)
    evidence = ctx.say(
        "no_better_than_constant",
        "evidence",
        what=b.what,
        loss=b.loss,
        window=ctx.view.window,
        baseline=b.baseline,
        how=how,
    )
    return ctx.verdict("no_better_than_constant", Severity.WARN, evidence, confidence=MEASURED)


def rule_plateau(ctx: Context) -> Verdict | None:
    """Seed 000's plateau: last 5 epoch losses (or 5 step blocks for long epochs) flat."""
    p, t = ctx.plateau, ctx.t
    if p is None:
        return None
    test = p.test
    numbers = {
        "variance": test.variance,
        "variance_max": t.plateau_variance,
        "improvement": test.improvement,
        "improvement_max": t.plateau_improvement,
        "trend": test.trend,
        "noise": test.noise,
    }
    evidence = ctx.say("plateau", f"evidence_{p.source}", **numbers, **p.evidence_values)
    level = float(np.mean(test.values))
    dice, b = ctx.view.val_dice, ctx.baseline
    why = None
    if math.isfinite(dice) and dice >= t.val_dice_good:
        why = ctx.say("plateau", "why_dice", dice=dice)
    elif b is not None and math.isfinite(b.baseline) and level <= t.converged_fraction * b.baseline:
        why = ctx.say("plateau", "why_baseline", baseline=b.baseline)
    if why is not None:
        return ctx.verdict(
            "plateau",
            Severity.INFO,
            evidence,
            confidence=MEASURED,
            title_key="title_converged",
            cause_key="cause_converged",
            cause={"level": level, "why": why},
            instruction_key="instruction_converged",
        )
    return ctx.verdict("plateau", Severity.WARN, evidence, confidence=MEASURED, cause={"level": level})


def rule_loss_weights_unbalanced(ctx: Context) -> Verdict | None:
    """Seed 000 §3, with all its symptoms: Dice term high, BCE low, plateau, poor val Dice, healthy grads."""
    view, t = ctx.view, ctx.t
    if view.loss_kind != "dice_bce" or not (view.has(ch.LOSS_DICE) and view.has(ch.LOSS_BCE)):
        return None
    dice, bce, val_dice = ctx.recent_mean(ch.LOSS_DICE), ctx.recent_mean(ch.LOSS_BCE), view.val_dice
    bce_w, dice_w = ctx.loss_weights
    if not (dice > t.dice_term_high and bce <= t.bce_low and val_dice < t.val_dice_poor):
        return None
    if ctx.plateau is None or not ctx.gradients_healthy:
        return None
    target = 0.5
    if math.isfinite(bce_w) and math.isfinite(dice_w) and dice_w <= bce_w:
        return None  # the Dice term already weighs no more than BCE: the fix would change nothing
    evidence = ctx.say(
        "loss_weights_unbalanced",
        "evidence",
        dice=dice,
        dice_max=t.dice_term_high,
        bce=bce,
        bce_max=t.bce_low,
        val_dice=val_dice,
        val_dice_max=t.val_dice_poor,
        bce_weight=bce_w,
        dice_weight=dice_w,
    )
    return ctx.verdict(
        "loss_weights_unbalanced",
        Severity.WARN,
        evidence,
        confidence=HYPOTHESIS,
        cause={"dice_weight": dice_w},
        fixes=(make_command("set_loss_weights", bce=target, dice=target),),
        instruction={"bce_to": target, "dice_to": target},
    )


def rule_lr_too_small(ctx: Context) -> Verdict | None:
    """Seed 000 §2: the loss fell a little, then crawls at a high level, with tiny updates."""
    view, t = ctx.view, ctx.t
    if view.n_steps < t.lr_min_steps or ctx.exploding or ctx.nonfinite_rows[0]:
        return None
    start = view.first(ch.LOSS_TOTAL, t.lr_initial_steps)
    total = view.recent(ch.LOSS_TOTAL)
    lr = ctx.lr
    if start is None or total is None or not (math.isfinite(lr) and lr > 0):
        return None
    start_loss = finite_mean(start)
    # The recent stretch: the window, or the second half of a run shorter than it.
    recent = total[-min(view.window, view.n_steps // 2) :]
    blocks = block_means(recent, 5, recent.size // 5)
    if blocks is None or not (math.isfinite(start_loss) and start_loss > 0 and blocks[0] > 0):
        return None
    now = float(blocks[-1])
    fraction = now / start_loss
    decline = (float(blocks[0]) - now) / float(blocks[0])
    if fraction < t.lr_high_loss_fraction or abs(decline) >= t.lr_flat_decline:
        return None
    ratio = ctx.recent_mean(ch.OPT_UPDATE_RATIO)
    if math.isfinite(ratio):
        if ratio >= t.lr_update_ratio_small:
            return None
        update = ctx.say(
            "lr_too_small", "update_ratio", ratio=ratio, ratio_max=t.lr_update_ratio_small, lr=lr
        )
    else:
        if lr > t.lr_small:
            return None
        update = ctx.say("lr_too_small", "update_lr", lr=lr, lr_small=t.lr_small)
    new = suggested(min(LR_MAX, lr * t.lr_raise_factor))
    evidence = ctx.say(
        "lr_too_small",
        "evidence",
        now=now,
        fraction=fraction,
        start=start_loss,
        decline=decline,
        window=recent.size,
        update=update,
    )
    return ctx.verdict(
        "lr_too_small",
        Severity.WARN,
        evidence,
        confidence=HYPOTHESIS,
        title={"factor": t.lr_raise_factor},
        fixes=(make_command("set_lr", lr=new),),
        instruction={"factor": t.lr_raise_factor, "lr": lr, "new": new},
    )


def rule_bce_not_settled(ctx: Context) -> Verdict | None:
    """Seed 000's matrix: BCE still above 0.3 late in training (more epochs or a higher lr)."""
    view, t = ctx.view, ctx.t
    if not view.is_segmentation or not view.has(ch.LOSS_BCE) or view.n_steps < t.min_steps:
        return None
    progress = view.progress
    finished = max(len(view.epochs), view.epoch)
    if math.isfinite(progress):
        if progress < t.late_fraction:
            return None
        when = ctx.say("bce_not_settled", "when_progress", progress=min(progress, 1.0))
    elif finished >= t.late_epochs:
        when = ctx.say("bce_not_settled", "when_epoch", epoch=view.epoch)
    else:
        return None
    threshold, note = t.bce_settled_max, ""
    if ctx.pos_weight > 1.0:  # a weighted BCE is larger for the same predictions
        p = ctx.foreground
        if not math.isfinite(p):
            return None
        threshold *= p * ctx.pos_weight + (1.0 - p)
        note = ctx.say("bce_not_settled", "threshold_weighted", pos_weight=ctx.pos_weight)
    bce = ctx.recent_mean(ch.LOSS_BCE)
    if not (math.isfinite(bce) and bce > threshold):
        return None
    evidence = (
        ctx.say("bce_not_settled", "evidence", bce=bce, bce_max=threshold, window=view.window, when=when)
        + note
    )
    lr = ctx.lr
    if math.isfinite(lr) and lr > 0:
        new = suggested(min(LR_MAX, lr * t.bce_lr_factor))
        return ctx.verdict(
            "bce_not_settled",
            Severity.WARN,
            evidence,
            confidence=HYPOTHESIS,
            fixes=(make_command("set_lr", lr=new),),
            instruction={"factor": t.bce_lr_factor, "lr": lr, "new": new},
        )
    return ctx.verdict(
        "bce_not_settled", Severity.WARN, evidence, confidence=HYPOTHESIS, instruction_key="instruction_no_lr"
    )


def rule_model_too_large(ctx: Context) -> Verdict | None:
    """Seed 000 §4: a large model on < 50 images; a warning once a train/val gap shows."""
    view, t = ctx.view, ctx.t
    images, params = view.train_images, view.schema.model.parameters
    if not (0 < images < t.small_dataset_images and params >= t.large_model_params):
        return None
    gap_text, severity = ctx.say("model_too_large", "gap_none"), Severity.INFO
    for summary in reversed(view.epochs[-20:]):
        train_loss, val_loss = metric(summary.train, TRAIN_LOSS_KEYS), metric(summary.val, VAL_LOSS_KEYS)
        train_dice, val_dice = metric(summary.train, DICE_KEYS), metric(summary.val, DICE_KEYS)
        measured = False
        if math.isfinite(train_loss) and math.isfinite(val_loss):
            measured = True
            if val_loss - train_loss >= t.overfit_loss_gap:
                gap_text = ctx.say(
                    "model_too_large",
                    "gap_loss",
                    val=val_loss,
                    train=train_loss,
                    gap=val_loss - train_loss,
                    gap_max=t.overfit_loss_gap,
                )
                severity = Severity.WARN
                break
        if math.isfinite(train_dice) and math.isfinite(val_dice):
            measured = True
            if train_dice - val_dice >= t.overfit_dice_gap:
                gap_text = ctx.say(
                    "model_too_large",
                    "gap_dice",
                    val=val_dice,
                    train=train_dice,
                    gap=train_dice - val_dice,
                    gap_max=t.overfit_dice_gap,
                )
                severity = Severity.WARN
                break
        if measured:
            return None  # train and validation agree: no sign of memorising
    evidence = ctx.say(
        "model_too_large",
        "evidence",
        params=f"{params:,}",
        images=images,
        min_images=t.small_dataset_images,
        gap=gap_text,
    )
    return ctx.verdict(
        "model_too_large",
        severity,
        evidence,
        confidence=HYPOTHESIS,
        cause={"min_images": t.small_dataset_images},
        instruction={"min_images": t.small_dataset_images},
    )


Rule = Callable[[Context], "Verdict | None"]

# Order breaks ties between verdicts of equal severity: faults first, then data, then tuning.
RULES: tuple[Rule, ...] = (
    rule_nonfinite,
    rule_missing_sigmoid,
    rule_gradient_explosion,
    rule_no_better_than_constant,
    rule_masks_not_binary,
    rule_class_imbalance,
    rule_plateau,
    rule_loss_weights_unbalanced,
    rule_lr_too_small,
    rule_bce_not_settled,
    rule_model_too_large,
    rule_vanishing_gradients,
)

RULE_CODES: tuple[str, ...] = tuple(rule.__name__.removeprefix("rule_") for rule in RULES)


def evaluate_rules(
    history: RunHistory, thresholds: Thresholds | None = None, lang: str = "en", unseen_steps: int = 0
) -> list[Verdict]:
    """Every rule once over ``history``, no hysteresis: the raw verdicts, most severe first.

    ``unseen_steps``: how many of the newest steps no earlier evaluation read; the explosion
    and non-finite rules look at all of them (at least their usual windows)."""
    ctx = Context(history, thresholds or Thresholds(), lang, unseen_steps)
    verdicts = [v for rule in RULES if (v := rule(ctx)) is not None]
    verdicts.sort(key=lambda v: -v.severity)  # stable: rule order breaks ties
    return verdicts
