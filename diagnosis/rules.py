"""The seeds' rules and the pitfalls of real runs: each reads a windowed view and returns a verdict or None.

A rule fires only on what it can see in the data; when a channel or a report it needs is
missing it stays silent rather than guess. Rules share measured quantities (the gradient
health, the plateau test, the constant baseline, recent levels) through one :class:`Context`
that computes each at most once per evaluation.

Levels are recent levels: a rule that judges where the loss *is* (the constant baseline,
BCE settled, the loss weights, the matrix row) reads the mean of the newest ``level_steps``
steps and its noise band (:meth:`Context.level`), not a long mean that still holds the early
descent; trends (plateau, lr too small) keep their windows. Bounds are compared with a float32
tolerance (0.3 travels as 0.30000001).

Verdicts come out in cause order (:data:`~octa_tui.diagnosis.verdict.STAGES`): data, then an
output/loss mismatch, then the optimisation, then consequences; a consequence names its
likely cause (``caused_by``) when one is measured in the same evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from octa_tui.protocol import channels as ch
from octa_tui.protocol.commands import make_command as _make_command
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.messages import Command
from octa_tui.protocol.run import RunHistory

from .facts import GRAD_AMP_SKIPPED, OPT_AMP_SCALE, RunFacts, foreground, loss_term_weight, run_facts
from .gradients import GradientHealth, format_ratio, gradient_health
from .signals import (
    ExplosionSummary,
    PlateauTest,
    block_means,
    explosion_summary,
    finite_median,
    plateau_test,
)
from .texts import get_language, say, word
from .thresholds import Thresholds
from .verdict import (
    CONSEQUENCE,
    DATA,
    HYPOTHESIS,
    MEASURED,
    OPTIMISATION,
    OUTPUT,
    Severity,
    Verdict,
    check_lang,
    sort_key,
)
from .view import DICE_KEYS, TRAIN_LOSS_KEYS, VAL_LOSS_KEYS, RunView, finite_mean, metric

LR_MAX = 1.0  # set_lr's accepted upper bound
LOSS_NAMES = {"mse": "MSE", "bce": "BCE", "dice_bce": "Dice+BCE"}
LN2 = math.log(2.0)
SIGMOID_1 = 1.0 / (1.0 + math.exp(-1.0))  # 0.731: the most a sigmoid of a probability can give


def make_command(op: str, **args: object) -> Command | None:
    """A fix command, or None when the trainer would refuse it (an lr below what set_lr accepts,
    e.g. twice an lr that a schedule has decayed to 1e-19): the verdict then offers no key."""
    try:
        return _make_command(op, **args)
    except (ProtocolError, ValueError, TypeError):
        return None


def commands(*candidates: Command | None) -> tuple[Command, ...]:
    """The fix commands that could be built (see :func:`make_command`)."""
    return tuple(c for c in candidates if c is not None)


def suggested(value: float) -> float:
    """A setting to propose, rounded to 3 significant digits (1e-4, not 1.0000000475e-4)."""
    return float(f"{value:.3g}")


def above(value: float, bound: float, rtol: float = 1e-6) -> bool:
    """``value > bound`` beyond float32 noise (0.30000001 is not above 0.3)."""
    return value > bound + rtol * max(abs(bound), 1e-30)


def at_most(value: float, bound: float, rtol: float = 1e-6) -> bool:
    """``value <= bound`` within float32 noise (0.30000001 is at most 0.3)."""
    return not above(value, bound, rtol)


@dataclass(frozen=True)
class Level:
    """Where a channel is now: the mean of its newest finite values and that mean's standard error."""

    mean: float
    se: float
    n: int

    def low(self, sigmas: float) -> float:
        """The lower edge of the noise band."""
        return self.mean - sigmas * self.se

    def high(self, sigmas: float) -> float:
        """The upper edge of the noise band."""
        return self.mean + sigmas * self.se


NO_LEVEL = Level(math.nan, math.nan, 0)


@dataclass(frozen=True)
class PlateauFinding:
    """A flat loss and how it was found: over epochs, or over blocks of the step window."""

    test: PlateauTest
    source: str  # "epochs" | "steps"
    evidence_values: dict


@dataclass(frozen=True)
class BaselineComparison:
    """The run's recent loss level next to the best constant predictor's."""

    what: str  # the channel compared, e.g. "loss/total"
    loss: float  # the recent level (mean of the newest level_steps steps)
    se: float  # its standard error
    rows: int  # how many steps the level is the mean of
    baseline: float
    how_key: str  # "how_constant" | "how_mean"
    constant: float


class Context:
    """One evaluation's inputs and the quantities the rules share, each computed on first use."""

    def __init__(
        self, history: RunHistory, thresholds: Thresholds, lang: str | None = None, unseen_steps: int = 0
    ) -> None:
        self.t = thresholds
        self.lang = check_lang(lang or get_language())
        # Steps no earlier evaluation read: the event rules (explosion, non-finite) look at all
        # of them, so a burst streamed between two evaluations is not missed.
        self.explosion_steps = max(thresholds.recent_steps, unseen_steps)
        self.nonfinite_steps = max(thresholds.nonfinite_steps, unseen_steps)
        window = max(
            thresholds.window_steps,
            thresholds.plateau_epochs * thresholds.plateau_block_steps,
            2 * thresholds.grad_steps,
        )
        self.view = RunView(history, window)
        self.history = history

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
        stage: str,
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
            stage=stage,
        )

    def recent_mean(self, key: str, rows: int | None = None) -> float:
        """Mean of a channel's finite values over the newest ``rows`` (default: the level's rows)."""
        values = self.view.recent(key, self.t.level_steps if rows is None else rows)
        return math.nan if values is None else finite_mean(values)

    def level(self, key: str, rows: int | None = None) -> Level:
        """Where channel ``key`` is now: mean and standard error of its newest ``level_steps`` values."""
        values = self.view.recent(key, self.t.level_steps if rows is None else rows)
        if values is None:
            return NO_LEVEL
        finite = values[np.isfinite(values)]
        n = int(finite.size)
        if n == 0:
            return NO_LEVEL
        se = float(finite.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
        return Level(float(finite.mean()), se, n)

    def above(self, value: float, bound: float) -> bool:
        return above(value, bound, self.t.float_rtol)

    def at_most(self, value: float, bound: float) -> bool:
        return at_most(value, bound, self.t.float_rtol)

    # --- run facts ------------------------------------------------------------------------
    @cached_property
    def facts(self) -> RunFacts:
        """Baseline, settings, length, loss kind, AMP: read once, the same way the panels read them."""
        return run_facts(self.history)

    @cached_property
    def lr(self) -> float:
        """The learning rate in force."""
        return self.facts.settings.lr

    @cached_property
    def loss_weights(self) -> tuple[float, float]:
        """(BCE, Dice) weights in force, from the opt channels or else the config (NaN if unknown)."""
        s = self.facts.settings
        return s.bce_weight, s.dice_weight

    @cached_property
    def pos_weight(self) -> float:
        """The BCE foreground weight in force (1.0 when none is set)."""
        return self.facts.settings.effective_pos_weight

    @cached_property
    def foreground(self) -> float:
        """Mean target (foreground ratio) from the data set report, NaN when unknown."""
        return foreground(self.history)

    @cached_property
    def update_ratio(self) -> float:
        """The measured update size |dw|/|w| now (median of the level's rows; NaN when not measured)."""
        values = self.view.recent(ch.OPT_UPDATE_RATIO, self.t.level_steps)
        if values is None or not np.isfinite(values).any():
            return math.nan
        return float(finite_median(values))

    def lr_for_target_update(self, lower_only: bool = False, raise_only: bool = False) -> float:
        """The lr that brings the measured update size to the healthy target (NaN when not measured).

        Adam's and SGD's updates scale with the lr, so lr x target / measured; the change is
        capped at ``lr_max_factor`` either way and at set_lr's bound.
        """
        ratio, lr, t = self.update_ratio, self.lr, self.t
        if not (math.isfinite(ratio) and ratio > 0 and math.isfinite(lr) and lr > 0):
            return math.nan
        factor = min(t.lr_max_factor, max(1.0 / t.lr_max_factor, t.update_ratio_target / ratio))
        if lower_only:
            factor = min(factor, 1.0)
        if raise_only:
            factor = max(factor, 1.0)
        return suggested(min(LR_MAX, lr * factor))

    @cached_property
    def no_gradient(self) -> bool:
        """Whether the total gradient norm is ~0 now (median of the level's rows at or below
        ``dead_grad_norm``): nothing reaches the weights, whatever the lr. False when not measured."""
        values = self.view.recent(ch.GRAD_TOTAL_NORM, self.t.level_steps)
        if values is None or not np.isfinite(values).any():
            return False
        return bool(finite_median(values) <= self.t.dead_grad_norm)

    @cached_property
    def amp_skipped(self) -> np.ndarray | None:
        """Per-row 1.0 where a GradScaler skipped the optimizer step (over the window), or None."""
        return self.view.recent(GRAD_AMP_SKIPPED)

    # --- shared measurements --------------------------------------------------------------
    @cached_property
    def grads(self) -> GradientHealth | None:
        """Per-layer gradient health (None before ``min_steps`` or without grad channels)."""
        keys = self.view.group("grad")
        if not keys or self.view.n_steps < self.t.min_steps:
            return None
        t = self.t
        both = self.view.recent_matrix(keys, 2 * t.grad_steps)
        recent = both[-t.grad_steps :]
        earlier = both[: -t.grad_steps] if both.shape[0] >= 2 * t.grad_steps else None
        layers = tuple(k.split("/", 1)[1] for k in keys)
        kinds = self.view.config.get("layer_kinds")
        kinds = tuple(str(k) for k in kinds) if isinstance(kinds, (list, tuple)) else ()
        return gradient_health(
            layers,
            recent,
            earlier,
            kinds,
            floor=t.grad_layer_min,
            vanishing_ratio=t.grad_ratio_vanishing,
            floor_spread=t.grad_floor_spread,
            slight_ratio=t.grad_ratio_moderate,
        )

    @cached_property
    def bound(self) -> float:
        """The parameter gradient norm counted as exploding (config ``grad_bound`` or the seed's 10)."""
        bound = self.view.config_number("grad_bound")
        return bound if math.isfinite(bound) and bound > 0 else self.t.explosion_param_norm

    @cached_property
    def explosion(self) -> ExplosionSummary | None:
        """Recent steps over the bound (steps a GradScaler skipped are not counted: nothing was applied)."""
        if self.view.n_steps == 0:
            return None
        rows = self.explosion_steps
        n_over = self.view.recent(ch.GRAD_N_OVER_BOUND, rows)
        peak = self.view.recent(ch.GRAD_MAX_PARAM_NORM, rows)
        skipped = self.view.recent(GRAD_AMP_SKIPPED, rows)
        if skipped is not None:
            applied = ~(np.nan_to_num(skipped, nan=0.0) > 0)
            n_over = None if n_over is None else np.where(applied, n_over, 0.0)
            peak = None if peak is None else np.where(applied, peak, np.nan)
        return explosion_summary(self.view.steps[-rows:], n_over, peak, self.bound)

    @cached_property
    def exploding(self) -> bool:
        """Whether enough recent steps exceeded the bound to call it an explosion (a run's very first
        steps count only once there are that many: one large first gradient is not an explosion)."""
        e = self.explosion
        return e is not None and e.steps_over >= self.t.explosion_min_steps

    @cached_property
    def nonfinite_rows(self) -> tuple[int, list[str], int]:
        """(count of bad rows, channels bad at the newest bad row, its step) in the newest steps.

        A step a GradScaler skipped (its gradients overflowed float16 and nothing was applied) is
        not a non-finite step unless its loss was; a layer whose channel is NaN on every row
        never received a gradient (unused parameters) and is not counted either.
        """
        view = self.view
        if view.n_steps == 0:
            return 0, [], -1
        rows = self.nonfinite_steps
        loss_keys = list(view.group("loss"))
        stats = [k for k in (ch.GRAD_TOTAL_NORM,) if view.has(k)]
        grad_keys = stats if stats or view.has(ch.GRAD_NONFINITE) else list(view.group("grad"))
        if grad_keys and not stats:  # per-layer fallback: leave out layers with no gradient at all
            block = view.recent_matrix(grad_keys, max(rows, self.t.grad_steps))
            grad_keys = [k for j, k in enumerate(grad_keys) if np.isfinite(block[:, j]).any()]
        keys = loss_keys + grad_keys
        bad = (
            ~np.isfinite(view.recent_matrix(keys, rows))
            if keys
            else np.zeros((min(rows, view.window), 0), bool)
        )
        flag = view.recent(ch.GRAD_NONFINITE, rows)
        flagged = np.zeros(bad.shape[0], bool) if flag is None else np.nan_to_num(flag, nan=1.0) > 0
        skipped = view.recent(GRAD_AMP_SKIPPED, rows)
        if skipped is not None and bad.shape[1]:
            was_skipped = np.nan_to_num(skipped, nan=0.0) > 0
            bad[:, len(loss_keys) :] &= ~was_skipped[:, None]
            flagged &= ~was_skipped
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
        """The recent loss level against the best constant predictor (the one :mod:`.facts` computes)."""
        base = self.facts.baseline
        if base is None or self.view.n_steps == 0:
            return None
        lv = self.level(base.channel)
        how = "how_mean" if base.how == "mean" else "how_constant"
        return BaselineComparison(base.channel, lv.mean, lv.se, lv.n, base.loss, how, base.constant)

    def plateau_bounds(self, level: float) -> tuple[float, float]:
        """Seed 000's variance and improvement bounds, scaled to the loss level.

        The seed set 1e-6 and 1e-4 for a loss stuck at 0.6; a loss ten times lower moves ten
        times less for the same relative change, so below 0.6 the bounds shrink with the level
        (variance with its square). At 0.6 and above they are the seed's own numbers.
        """
        t = self.t
        scale = min(1.0, abs(level) / t.plateau_reference_level) if math.isfinite(level) else 1.0
        return t.plateau_variance * scale * scale, t.plateau_improvement * scale

    @cached_property
    def plateau(self) -> PlateauFinding | None:
        """Seed 000's plateau over the last epochs, or over step blocks when epochs are long."""
        t, view = self.t, self.view
        n = t.plateau_epochs
        epochs, losses = view.epoch_train_losses(n)
        if losses.size == n:
            var_max, imp_max = self.plateau_bounds(float(np.mean(losses)))
            test = plateau_test(losses, var_max, imp_max, t.plateau_noise_sigmas)
            if test.flat:
                values = ", ".join(f"{v:.6f}" for v in losses)
                return PlateauFinding(test, "epochs", {"n": n, "values": values})
        per_epoch = self.facts.length.steps_per_epoch
        long_epochs = not math.isfinite(per_epoch) or per_epoch >= t.plateau_block_steps
        total = view.recent(ch.LOSS_TOTAL)
        if long_epochs and total is not None:
            means = block_means(total, n, t.plateau_block_steps)
            if means is not None:
                var_max, imp_max = self.plateau_bounds(float(np.mean(means)))
                test = plateau_test(means, var_max, imp_max, t.plateau_noise_sigmas)
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
        """No vanishing, no explosion, nothing non-finite: the seed's "✓正常"."""
        g = self.grads
        return (g is None or not g.vanishing) and not self.exploding and self.nonfinite_rows[0] == 0

    @cached_property
    def loss_takes_logits(self) -> bool:
        """Whether the loss applies a sigmoid to what the probe reports as raw outputs.

        Measured where it can be: the activated range is the sigmoid of the raw range.
        """
        view = self.view
        keys = (ch.OUT_RAW_MIN, ch.OUT_RAW_MAX, ch.OUT_ACT_MIN, ch.OUT_ACT_MAX)
        if view.n_steps == 0 or not all(view.has(k) for k in keys):
            return "binary_cross_entropy_with_logits" in self.facts.loss_functions
        rows = view.recent_matrix(keys, self.t.output_steps)
        med = np.asarray(finite_median(rows, axis=0), dtype=np.float64)
        if not np.isfinite(med).all():
            return False
        sig = 1.0 / (1.0 + np.exp(-np.clip(med[:2], -60, 60)))
        return bool(np.allclose(sig, med[2:], atol=2e-3)) and not np.allclose(med[:2], med[2:], atol=1e-4)


# --- the rules: data ----------------------------------------------------------------------
def rule_masks_not_binary(ctx: Context) -> Verdict | None:
    """The data set report counts more than two distinct mask values (seed 000 §1a)."""
    report, t = ctx.view.dataset, ctx.t
    if report is None or ctx.facts.loss_kind == "mse" or report.unique_mask_values <= t.mask_unique_values_max:
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
    return ctx.verdict("masks_not_binary", Severity.WARN, evidence, confidence=MEASURED, stage=DATA)


def rule_class_imbalance(ctx: Context) -> Verdict | None:
    """Mean foreground ratio below 2% with no compensating pos_weight (seed 000 §1b)."""
    report, t = ctx.view.dataset, ctx.t
    if report is None or ctx.facts.loss_kind == "mse":
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
            stage=DATA,
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
        stage=DATA,
        fixes=commands(make_command("set_pos_weight", pos_weight=suggested(weight))),
        instruction={"suggested": weight},
    )


# --- the rules: output / loss mismatch ----------------------------------------------------
def rule_missing_sigmoid(ctx: Context) -> Verdict | None:
    """A loss that expects probabilities is fed values outside [0, 1] (seed 002's root cause)."""
    view, t = ctx.view, ctx.t
    # A measured fact on every step: a few steps suffice (an explosion it causes shows from step 3).
    if not view.schema.loss_expects_probabilities or view.n_steps < min(t.explosion_min_steps, t.recent_steps):
        return None
    rows = t.recent_steps
    lo_key, hi_key = ch.OUT_ACT_MIN, ch.OUT_ACT_MAX
    no_activation = view.config.get("output_activation") == "none" and ctx.facts.loss_kind == "mse"
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
    loss = LOSS_NAMES.get(ctx.facts.loss_kind, ctx.facts.loss_kind) or word(ctx.lang, "loss")
    low = float(np.nanmin(lo)) if lo is not None and np.isfinite(lo).any() else math.nan
    high = float(np.nanmax(hi)) if hi is not None and np.isfinite(hi).any() else math.nan
    values = {"loss": loss, "lo": low, "hi": high, "window": min(rows, view.window)}
    key = "evidence_frac" if math.isfinite(frac_now) else "evidence"
    evidence = ctx.say("missing_sigmoid", key, frac=frac_now, **values)
    return ctx.verdict(
        "missing_sigmoid", Severity.WARN, evidence, confidence=MEASURED, stage=OUTPUT, cause={"loss": loss}
    )


def _logit_ranges(ctx: Context) -> tuple[float, float, float, float] | None:
    """(raw min, raw max, activated min, activated max) over the newest ``output_steps``: the
    lowest minimum and the highest maximum seen. None unless a segmentation loss applies the
    sigmoid to the raw outputs, and before ``output_min_steps`` or without the output channels."""
    if not ctx.facts.is_segmentation or not ctx.loss_takes_logits:
        return None
    view, t = ctx.view, ctx.t
    keys = (ch.OUT_RAW_MIN, ch.OUT_RAW_MAX, ch.OUT_ACT_MIN, ch.OUT_ACT_MAX)
    if view.n_steps < t.output_min_steps or not all(view.has(k) for k in keys):
        return None
    rows = view.recent_matrix(keys, t.output_steps)
    if not np.isfinite(rows).all():
        return None
    return float(rows[:, 0].min()), float(rows[:, 1].max()), float(rows[:, 2].min()), float(rows[:, 3].max())


def rule_squashed_outputs(ctx: Context) -> Verdict | None:
    """The loss sees outputs squashed into [0.5, 0.73]: a sigmoid applied twice (the model's and the loss's)."""
    ranges = _logit_ranges(ctx)
    if ranges is None:
        return None
    raw_lo, raw_hi, act_lo, act_hi = ranges
    tol = ctx.t.probability_tolerance
    # Logits that never leave (0, 1] are probabilities already; exact zeros are a ReLU's (see bce_at_ln2).
    if not (raw_lo > 1e-6 and raw_hi <= 1.0 + tol) or raw_hi - raw_lo <= ctx.t.constant_rtol * max(1.0, raw_hi):
        return None  # (one value everywhere is the constant-output fault, told by constant_loss)
    evidence = ctx.say(
        "squashed_outputs", "evidence", raw_lo=raw_lo, raw_hi=raw_hi, act_lo=act_lo, act_hi=act_hi,
        window=min(ctx.t.output_steps, ctx.view.window), top=SIGMOID_1,
    )
    return ctx.verdict("squashed_outputs", Severity.WARN, evidence, confidence=MEASURED, stage=OUTPUT)


def rule_bce_at_ln2(ctx: Context) -> Verdict | None:
    """The logits never go below 0 (a final ReLU before BCEWithLogits): BCE stays near ln 2 = 0.693."""
    ranges = _logit_ranges(ctx)
    if ranges is None:
        return None
    raw_lo, raw_hi, _, _ = ranges
    if not (-1e-6 <= raw_lo <= 1e-6):  # exact zeros and nothing below: a ReLU's output
        return None
    key = ch.LOSS_BCE if ctx.view.has(ch.LOSS_BCE) else ch.LOSS_TOTAL
    bce = ctx.level(key)
    evidence = ctx.say(
        "bce_at_ln2", "evidence", raw_lo=raw_lo, raw_hi=raw_hi, what=key, bce=bce.mean, ln2=LN2,
        window=min(ctx.t.output_steps, ctx.view.window),
    )
    return ctx.verdict("bce_at_ln2", Severity.WARN, evidence, confidence=MEASURED, stage=OUTPUT)


def rule_constant_loss(ctx: Context) -> Verdict | None:
    """A loss term that is exactly 0 or constant, or a model whose output is one value everywhere and
    gets no gradient (a softmax over a single channel is always 1)."""
    view, t = ctx.view, ctx.t
    rows = t.output_steps
    if view.n_steps < max(t.min_steps, min(rows, t.output_min_steps)):
        return None
    window = min(rows, view.window)
    # The model's output: one value everywhere, and no gradient.
    lo, hi = view.recent(ch.OUT_RAW_MIN, rows), view.recent(ch.OUT_RAW_MAX, rows)
    total = view.recent(ch.GRAD_TOTAL_NORM, rows)
    if lo is not None and hi is not None and np.isfinite(lo).all() and np.isfinite(hi).all():
        flat = np.abs(hi - lo) <= t.constant_rtol * np.maximum(1.0, np.abs(hi))
        no_grad = total is not None and np.isfinite(total).all() and bool((total == 0).all())
        if flat.all() and (no_grad or total is None):
            evidence = ctx.say("constant_loss", "evidence_output", value=float(hi[-1]), window=window)
            return ctx.verdict(
                "constant_loss", Severity.WARN, evidence, confidence=MEASURED, stage=OUTPUT,
                title_key="title_output", cause_key="cause_output",
            )
    # A loss term that is exactly 0 on every step while the total is not: it contributes nothing.
    # (A term weighted 0 on purpose is left alone; a fed-in constant is not evidence of anything.)
    total_loss = view.recent(ch.LOSS_TOTAL, rows)
    if total_loss is None or not np.isfinite(total_loss).all() or (total_loss == 0).all():
        return None
    for key in view.group("loss"):
        if key == ch.LOSS_TOTAL:
            continue
        weight = loss_term_weight(ctx.history, ctx.facts.settings, key.split("/", 1)[1])
        values = view.recent(key, rows)
        if weight == 0 or values is None or values.size < window or not (values == 0).all():
            continue
        evidence = ctx.say("constant_loss", "evidence_zero", what=key, window=window)
        return ctx.verdict("constant_loss", Severity.WARN, evidence, confidence=MEASURED, stage=OUTPUT)
    return None


def rule_loss_weights_unbalanced(ctx: Context) -> Verdict | None:
    """Seed 000 §3, with all its symptoms: Dice term high, BCE low, plateau, poor val Dice, healthy grads."""
    view, t = ctx.view, ctx.t
    if ctx.facts.loss_kind != "dice_bce" or not (view.has(ch.LOSS_DICE) and view.has(ch.LOSS_BCE)):
        return None
    dice, bce, val_dice = ctx.level(ch.LOSS_DICE).mean, ctx.level(ch.LOSS_BCE).mean, view.val_dice
    bce_w, dice_w = ctx.loss_weights
    if not (ctx.above(dice, t.dice_term_high) and ctx.at_most(bce, t.bce_low) and val_dice < t.val_dice_poor):
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
        rows=min(t.level_steps, view.window),
    )
    return ctx.verdict(
        "loss_weights_unbalanced",
        Severity.WARN,
        evidence,
        confidence=HYPOTHESIS,
        stage=OUTPUT,
        cause={"dice_weight": dice_w},
        fixes=commands(make_command("set_loss_weights", bce=target, dice=target)),
        instruction={"bce_to": target, "dice_to": target},
    )


# --- the rules: optimisation --------------------------------------------------------------
def rule_amp_overflow(ctx: Context) -> Verdict | None:
    """A float16 GradScaler skipping most steps, or its scale collapsed: the fp16 range overflows."""
    view, t = ctx.view, ctx.t
    skipped = view.recent(GRAD_AMP_SKIPPED, t.level_steps)
    scale = view.recent(OPT_AMP_SCALE, t.level_steps)
    if skipped is None or view.n_steps < t.min_steps:
        return None
    done = skipped[np.isfinite(skipped)]
    if done.size == 0:
        return None
    fraction = float((done > 0).mean())
    now = float(scale[np.isfinite(scale)][-1]) if scale is not None and np.isfinite(scale).any() else math.nan
    collapsed = math.isfinite(now) and now < t.amp_scale_min
    if fraction <= t.amp_skip_fraction and not collapsed:
        return None
    evidence = ctx.say("amp_overflow", "evidence", skipped=int((done > 0).sum()), rows=int(done.size),
                       fraction=fraction, scale=now)
    return ctx.verdict("amp_overflow", Severity.WARN, evidence, confidence=MEASURED, stage=OPTIMISATION)


def lr_evidence_steps(ratio: float, t: Thresholds) -> int:
    """How many steps of a loss that does not move the lr-too-small rule needs: strong evidence
    decides early, weak evidence late.

    Updates at or below ``lr_update_ratio_tiny`` (|dw|/|w| 300x below the healthy size: at
    that pace the weights need thousands of steps to change by 1%) are strong evidence and
    decide after ``lr_early_steps``; updates just below ``lr_update_ratio_small`` are weak and
    wait ``lr_min_steps``, as does a run whose update size is not measured. In between the
    steps fall log-linearly with the ratio.
    """
    if not (math.isfinite(ratio) and ratio > 0) or ratio >= t.lr_update_ratio_small:
        return t.lr_min_steps
    if ratio <= t.lr_update_ratio_tiny or t.lr_update_ratio_tiny >= t.lr_update_ratio_small:
        return min(t.lr_early_steps, t.lr_min_steps)
    span = math.log(t.lr_update_ratio_small / t.lr_update_ratio_tiny)
    strength = math.log(t.lr_update_ratio_small / ratio) / span  # 0 (weak) .. 1 (strong)
    steps = t.lr_min_steps - strength * (t.lr_min_steps - t.lr_early_steps)
    return max(min(t.lr_early_steps, t.lr_min_steps), math.ceil(steps))


def lr_schedule_moving(ctx: Context) -> bool:
    """Whether a schedule is changing the lr in a way that forbids calling it too small now.

    Rising over the newest ``lr_rising_steps``: a warm-up (linear, OneCycleLR's lr/25 start)
    at work, judged once it ends. Before ``lr_min_steps``, the early decision also needs the lr
    held since the run's start: an lr that a schedule moves in the first steps is the schedule's.
    """
    view, t = ctx.view, ctx.t
    lrs = view.recent(ch.OPT_LR)
    if lrs is None:
        return False
    lrs = lrs[np.isfinite(lrs) & (lrs > 0)]
    if lrs.size < 2:
        return False
    now, before = float(lrs[-1]), float(lrs[-min(lrs.size, t.lr_rising_steps)])
    if now > before * (1.0 + t.lr_steady_rtol):
        return True
    if view.n_steps < t.lr_min_steps:
        low, high = float(lrs.min()), float(lrs.max())
        return high > low * (1.0 + t.lr_steady_rtol)
    return False


def rule_lr_too_small(ctx: Context) -> Verdict | None:
    """Seed 000 §2: the loss fell a little, then crawls at a high level, with tiny updates.

    Sooner when the evidence is strong (:func:`lr_evidence_steps`); never while a schedule
    raises the lr, nor early while one moves it (:func:`lr_schedule_moving`)."""
    view, t = ctx.view, ctx.t
    if view.n_steps < min(t.lr_early_steps, t.lr_min_steps) or ctx.exploding or ctx.nonfinite_rows[0]:
        return None
    ratio = ctx.update_ratio
    if view.n_steps < lr_evidence_steps(ratio, t) or lr_schedule_moving(ctx):
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
    if math.isfinite(ratio):
        if ratio >= t.lr_update_ratio_small or ratio == 0 or ctx.no_gradient:
            return None  # normal steps, or none at all (no gradient reaches the weights: not the lr)
        update = ctx.say(
            "lr_too_small", "update_ratio", ratio=ratio, ratio_max=t.lr_update_ratio_small, lr=lr
        )
        new = ctx.lr_for_target_update(raise_only=True)
        sized = ctx.say("lr_too_small", "sized", target=t.update_ratio_target, new=new)
        if not math.isfinite(new):
            return None
    else:
        if lr > t.lr_small:
            return None
        update = ctx.say("lr_too_small", "update_lr", lr=lr, lr_small=t.lr_small)
        new = suggested(min(LR_MAX, lr * t.lr_raise_factor))
        sized = ctx.say("lr_too_small", "sized_seed", factor=t.lr_raise_factor)
    factor = new / lr
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
        stage=OPTIMISATION,
        title={"new": new},
        fixes=commands(make_command("set_lr", lr=new)),
        instruction={"factor": factor, "lr": lr, "new": new, "sized": sized},
    )


def _killed_by_lr(ctx: Context) -> Verdict | None:
    """The first steps' updates were far too large and the network died: since then no gradient
    reaches the weights (or the updates fell 1000x at an lr that did not) and the loss is flat.

    Lowering the lr now cannot revive it, so the fix is a restart with the lr that would have
    kept the first updates near the healthy size."""
    view, t = ctx.view, ctx.t
    if view.n_steps < max(t.lr_early_steps, 2 * t.lr_initial_steps):
        return None
    early_ratios = view.first(ch.OPT_UPDATE_RATIO, t.lr_initial_steps)
    early_lrs = view.first(ch.OPT_LR, t.lr_initial_steps)
    if early_ratios is None or early_lrs is None or not np.isfinite(early_ratios).any():
        return None
    early, early_lr, now, lr = float(finite_median(early_ratios)), float(finite_median(early_lrs)), ctx.update_ratio, ctx.lr
    if not (early > t.update_ratio_high and math.isfinite(early_lr) and early_lr > 0 and math.isfinite(lr)):
        return None
    stalled = math.isfinite(now) and now <= early / t.lr_max_factor and lr >= early_lr / t.explosion_lr_divisor
    if not (ctx.no_gradient or stalled):
        return None
    total = view.recent(ch.LOSS_TOTAL)
    if total is None:
        return None
    recent = total[-min(view.window, view.n_steps // 2) :]
    blocks = block_means(recent, 5, recent.size // 5)
    if blocks is None or not (math.isfinite(blocks[0]) and blocks[0] != 0 and math.isfinite(blocks[-1])):
        return None
    if abs((float(blocks[0]) - float(blocks[-1])) / float(blocks[0])) >= t.lr_flat_decline:
        return None  # still learning
    grad = ctx.view.recent(ch.GRAD_TOTAL_NORM, t.level_steps)
    grad_now = float(finite_median(grad)) if grad is not None and np.isfinite(grad).any() else math.nan
    new = suggested(early_lr * max(1.0 / t.lr_max_factor, t.update_ratio_target / early))
    evidence = ctx.say("lr_too_high", "evidence_dead", first=min(t.lr_initial_steps, view.n_steps), early=early,
                       ratio_max=t.update_ratio_high, early_lr=early_lr, grad=grad_now, now=now, window=recent.size)
    return ctx.verdict(
        "lr_too_high", Severity.WARN, evidence, confidence=HYPOTHESIS, stage=OPTIMISATION,
        title_key="title_dead", cause_key="cause_dead", instruction_key="instruction_dead",
        instruction={"new": new, "target": t.update_ratio_target},
    )


def rule_lr_too_high(ctx: Context) -> Verdict | None:
    """Updates ten times the healthy size while the loss oscillates with no downward trend (no explosion);
    or the first steps' updates were so large that the network died (:func:`_killed_by_lr`)."""
    view, t = ctx.view, ctx.t
    if ctx.exploding or ctx.nonfinite_rows[0]:
        return None
    dead = _killed_by_lr(ctx)
    if dead is not None:
        return dead
    if view.n_steps < t.lr_high_min_steps:
        return None
    ratio, lr = ctx.update_ratio, ctx.lr
    if not (math.isfinite(ratio) and ratio > t.update_ratio_high and math.isfinite(lr) and lr > 0):
        return None
    total = view.recent(ch.LOSS_TOTAL)
    if total is None:
        return None
    recent = total[-min(view.window, view.n_steps // 2) :]
    blocks = block_means(recent, 5, recent.size // 5)
    if blocks is None:
        return None
    test = plateau_test(blocks, math.inf, 0.0, t.plateau_noise_sigmas)
    finite = recent[np.isfinite(recent)]
    if not math.isfinite(test.trend) or finite.size < 10:
        return None
    # No trend beyond the noise: the loss is not going down.
    if test.improvement > 0.02 * abs(float(np.mean(blocks))):
        return None
    swing = float(np.std(finite) / max(1e-12, abs(float(np.mean(finite)))))
    new = ctx.lr_for_target_update(lower_only=True)
    evidence = ctx.say("lr_too_high", "evidence", ratio=ratio, ratio_max=t.update_ratio_high, lr=lr,
                       window=recent.size, trend=test.trend, noise=test.noise, swing=swing)
    return ctx.verdict(
        "lr_too_high",
        Severity.WARN,
        evidence,
        confidence=HYPOTHESIS,
        stage=OPTIMISATION,
        fixes=commands(make_command("set_lr", lr=new)),
        instruction={"lr": lr, "new": new, "target": t.update_ratio_target},
    )


def rule_bce_not_settled(ctx: Context) -> Verdict | None:
    """Seed 000's matrix: BCE still above 0.3 late in training (more epochs or a higher lr)."""
    view, t = ctx.view, ctx.t
    if not ctx.facts.is_segmentation or not view.has(ch.LOSS_BCE) or view.n_steps < t.min_steps:
        return None
    progress = ctx.facts.length.progress
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
    # The segmentation itself is good (in training: the Dice term; or at validation): the seed's
    # rule of thumb has nothing to add. (Training is what BCE measures; a broken validation is
    # the validation-collapse rule's.)
    dice_term = ctx.level(ch.LOSS_DICE).mean if view.has(ch.LOSS_DICE) else math.nan
    if math.isfinite(dice_term) and dice_term <= 1.0 - t.val_dice_good:
        return None
    if math.isfinite(view.val_dice) and view.val_dice >= t.val_dice_good:
        return None
    _, train_dice = view.latest_epoch_metric("train", DICE_KEYS)
    if math.isfinite(train_dice) and train_dice >= t.val_dice_good:
        return None
    bce = ctx.level(ch.LOSS_BCE)
    # The recent level, and even the low edge of its noise band, must be above the bound.
    if not (math.isfinite(bce.mean) and ctx.above(bce.low(t.level_sigmas), threshold)):
        return None
    if _settles_before_the_end(ctx, bce.mean, threshold):
        return None
    evidence = (
        ctx.say("bce_not_settled", "evidence", bce=bce.mean, se=bce.se, bce_max=threshold, window=bce.n, when=when)
        + note
    )
    lr = ctx.lr
    if math.isfinite(lr) and lr > 0:
        # The seed's x2, or more where the measured updates are smaller than healthy (an lr a schedule spent).
        new = suggested(min(LR_MAX, lr * t.bce_lr_factor))
        sized = ctx.lr_for_target_update(raise_only=True)
        if math.isfinite(sized) and sized > new:
            new = sized
        return ctx.verdict(
            "bce_not_settled",
            Severity.WARN,
            evidence,
            confidence=HYPOTHESIS,
            stage=OPTIMISATION,
            fixes=commands(make_command("set_lr", lr=new)),
            instruction={"factor": float(f"{new / lr:.3g}"), "lr": lr, "new": new},
        )
    return ctx.verdict(
        "bce_not_settled", Severity.WARN, evidence, confidence=HYPOTHESIS, stage=OPTIMISATION,
        instruction_key="instruction_no_lr",
    )


def _settles_before_the_end(ctx: Context, level: float, bound: float) -> bool:
    """Whether BCE, still falling, reaches ``bound`` before the planned end at even the slowest
    pace its recent steps allow (the fitted slope plus ``level_sigmas`` standard errors): a short
    run halfway through its descent is settling, not stuck. False when the plan is unknown."""
    t, view = ctx.t, ctx.view
    planned = ctx.facts.length.planned_steps
    values = view.recent(ch.LOSS_BCE, t.bce_trend_steps)
    if planned is None or values is None:
        return False
    x = view.steps[-values.size :].astype(np.float64)
    keep = np.isfinite(values)
    x, y = x[keep], values[keep]
    if y.size < max(10, t.bce_trend_steps // 2):
        return False
    x = x - x.mean()
    sxx = float((x * x).sum())
    if sxx <= 0:
        return False
    slope = float((x * (y - y.mean())).sum() / sxx)
    resid = y - y.mean() - slope * x
    se = math.sqrt(float((resid * resid).sum()) / max(1, y.size - 2) / sxx)
    slowest = slope + t.level_sigmas * se
    remaining = planned - 1 - view.step
    return slowest < 0 and remaining > 0 and level + slowest * remaining <= bound


def rule_vanishing_gradients(ctx: Context) -> Verdict | None:
    """The input side starves: the first weight layer's gradient orders of magnitude below the last's, sustained."""
    g, t = ctx.grads, ctx.t
    if g is None or not g.vanishing:
        return None
    window = min(t.grad_steps, ctx.view.window)
    evidence = ctx.say(
        "vanishing_gradients",
        "evidence",
        name=word(ctx.lang, "shallow/deep"),
        ratio=format_ratio(g.ratio),
        first=g.first_name,
        first_norm=g.norms[g.first],
        last=g.last_name,
        last_norm=g.norms[g.last],
        window=window,
    )
    if math.isfinite(g.earlier_ratio):
        evidence += ctx.say("vanishing_gradients", "evidence_earlier", ratio=format_ratio(g.earlier_ratio))
    if g.starving_end:
        name = g.first_name if g.starving_end == "first" else g.last_name
        evidence += word(ctx.lang, "; ") + ctx.say(
            "vanishing_gradients", "evidence_floor", layer=name,
            norm=g.norms[g.first if g.starving_end == "first" else g.last], floor=t.grad_layer_min,
        )
    return ctx.verdict(
        "vanishing_gradients", Severity.WARN, evidence, confidence=MEASURED, stage=OPTIMISATION,
    )


def rule_unused_parameters(ctx: Context) -> Verdict | None:
    """Layers whose gradient channel is NaN on every recent step: they never receive a gradient."""
    g = ctx.grads
    names: list[str] = list(g.unused) if g is not None else []
    for event in ctx.view.history.events[-50:]:
        if event.kind == "unused_parameters":
            layers = event.data.get("layers") if isinstance(event.data, dict) else None
            if isinstance(layers, (list, tuple)):
                names += [str(x) for x in layers if str(x) not in names]
    if not names or (g is None and ctx.view.n_steps < ctx.t.min_steps):
        return None
    if g is not None and len(g.unused) == len(g.layers):
        return None  # nothing measured at all: not a statement about some layers
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    evidence = ctx.say("unused_parameters", "evidence", count=len(names), layers=shown)
    return ctx.verdict("unused_parameters", Severity.INFO, evidence, confidence=MEASURED, stage=OPTIMISATION)


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
        stage=OPTIMISATION,
        cause={"min_images": t.small_dataset_images},
        instruction={"min_images": t.small_dataset_images},
    )


# --- the rules: consequences --------------------------------------------------------------
def rule_gradient_explosion(ctx: Context) -> Verdict | None:
    """Parameters with gradient norm above the bound in several recent steps (seed 002): a symptom."""
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
    clip = ctx.facts.settings.clip
    fixes: list[Command | None] = []
    clipped = math.isfinite(clip) and 0 < clip <= t.explosion_clip
    if not clipped:
        fixes.append(make_command("set_clip", clip=t.explosion_clip))
    lr = ctx.lr
    if math.isfinite(lr) and lr > 0:
        # The seed's lr / 10, or lower where the measured update size says the steps are larger still.
        sized = ctx.lr_for_target_update(lower_only=True)
        new = suggested(min(LR_MAX, lr / t.explosion_lr_divisor))
        if math.isfinite(sized):
            new = min(new, sized)
        fixes.append(make_command("set_lr", lr=new))
    return ctx.verdict(
        "gradient_explosion",
        Severity.WARN,
        evidence,
        confidence=MEASURED,
        stage=CONSEQUENCE,
        fixes=commands(*fixes),
        instruction_key="instruction_clipped" if clipped else "instruction",
        instruction={"clip": clip if clipped else t.explosion_clip, "divisor": t.explosion_lr_divisor},
    )


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
    fp16 = ctx.facts.amp == "fp16"
    return ctx.verdict(
        "nonfinite", Severity.CRIT, evidence, confidence=MEASURED, stage=CONSEQUENCE,
        fixes=commands(make_command("pause")),
        cause_key="cause_fp16" if fp16 else "cause",
        instruction_key="instruction_fp16" if fp16 else "instruction",
    )


def rule_no_better_than_constant(ctx: Context) -> Verdict | None:
    """The recent loss level is no lower than what the best constant output would score on this data."""
    t, b = ctx.t, ctx.baseline
    if b is None or ctx.view.n_steps < t.baseline_min_steps or not math.isfinite(b.loss):
        return None
    # Better than the constant as soon as the noise band's low edge is clearly below it.
    if b.loss - t.level_sigmas * b.se < (1.0 - t.baseline_margin) * b.baseline:
        return None
    how = ctx.say("no_better_than_constant", b.how_key, constant=b.constant)
    evidence = ctx.say(
        "no_better_than_constant",
        "evidence",
        what=b.what,
        loss=b.loss,
        se=b.se,
        window=b.rows,
        baseline=b.baseline,
        how=how,
    )
    return ctx.verdict(
        "no_better_than_constant", Severity.WARN, evidence, confidence=MEASURED, stage=CONSEQUENCE
    )


def rule_plateau(ctx: Context) -> Verdict | None:
    """Seed 000's plateau: last 5 epoch losses (or 5 step blocks for long epochs) flat.

    A flat loss that is good (validation Dice at or above 0.7, or far below the constant
    baseline) is convergence: it is no verdict at all, since there is nothing to fix.
    """
    p, t = ctx.plateau, ctx.t
    if p is None:
        return None
    test = p.test
    level = float(np.mean(test.values))
    dice, b = ctx.view.val_dice, ctx.baseline
    if math.isfinite(dice) and dice >= t.val_dice_good:
        return None
    if b is not None and math.isfinite(b.baseline) and level <= t.converged_fraction * b.baseline:
        return None
    var_max, imp_max = ctx.plateau_bounds(level)
    numbers = {
        "variance": test.variance,
        "variance_max": float(f"{var_max:.2g}"),
        "improvement": test.improvement,
        "improvement_max": float(f"{imp_max:.2g}"),
        "trend": test.trend,
        "noise": test.noise,
    }
    evidence = ctx.say("plateau", f"evidence_{p.source}", **numbers, **p.evidence_values)
    return ctx.verdict(
        "plateau", Severity.WARN, evidence, confidence=MEASURED, stage=CONSEQUENCE, cause={"level": level}
    )


def rule_val_collapse(ctx: Context) -> Verdict | None:
    """Training goes on while validation collapses: val Dice falls from its best, or predicts all
    background while training Dice is fine, or val loss rises while training loss falls."""
    view, t = ctx.view, ctx.t
    rows = [(s.epoch, s.train, s.val) for s in view.epochs[-50:]]
    dice = [(e, metric(v, DICE_KEYS)) for e, _, v in rows if math.isfinite(metric(v, DICE_KEYS))]
    # At least val_collapse_epochs epochs, and at least val_collapse_steps steps: with short epochs
    # a small validation set dips for a few epochs at a high lr and recovers.
    per_epoch = ctx.facts.length.steps_per_epoch
    k = t.val_collapse_epochs
    if math.isfinite(per_epoch) and per_epoch > 0:
        k = max(k, math.ceil(t.val_collapse_steps / per_epoch))
    if len(dice) >= k + 1:
        best_epoch, best = max(dice, key=lambda x: x[1])
        tail = [d for _, d in dice[-k:]]
        if (
            best >= t.val_dice_learned
            and all(d < best - t.val_collapse_drop for d in tail)
            and best_epoch < dice[-k][0]
        ):
            evidence = ctx.say("val_collapse", "evidence_dice", best=best, best_epoch=best_epoch, now=tail[-1],
                               epochs=k, drop=t.val_collapse_drop)
            return _collapse(ctx, evidence, best_epoch)
    if len(rows) >= k:
        # Validation predicts (almost) nothing while training segments, epoch after epoch.
        tail = [(e, metric(tr, DICE_KEYS), metric(v, DICE_KEYS)) for e, tr, v in rows[-k:]]
        if all(
            math.isfinite(train_dice) and math.isfinite(val_dice)
            and train_dice >= t.val_dice_learned and val_dice < t.val_all_background
            for _, train_dice, val_dice in tail
        ):
            epoch, train_dice, val_dice = tail[-1]
            evidence = ctx.say("val_collapse", "evidence_background", train=train_dice, val=val_dice, epoch=epoch)
            return _collapse(ctx, evidence, -1)
    losses = [(e, metric(tr, TRAIN_LOSS_KEYS), metric(v, VAL_LOSS_KEYS)) for e, tr, v in rows]
    losses = [x for x in losses if math.isfinite(x[1]) and math.isfinite(x[2])]
    if len(losses) >= k + 2:
        best_epoch, _, best_val = min(losses, key=lambda x: x[2])
        tail = losses[-k:]
        rising = all(v > best_val * (1 + t.val_loss_rise) for _, _, v in tail)
        train_falls = tail[-1][1] < losses[-k - 1][1]
        if rising and train_falls and best_epoch < tail[0][0]:
            evidence = ctx.say("val_collapse", "evidence_loss", best=best_val, best_epoch=best_epoch,
                               now=tail[-1][2], train=tail[-1][1], epochs=k)
            return _collapse(ctx, evidence, best_epoch)
    return None


def _collapse(ctx: Context, evidence: str, best_epoch: int) -> Verdict:
    return ctx.verdict(
        "val_collapse", Severity.WARN, evidence, confidence=MEASURED, stage=CONSEQUENCE,
        instruction={"best_epoch": best_epoch if best_epoch >= 0 else "-"},
    )


Rule = Callable[[Context], "Verdict | None"]

# In cause order: the data, then output/loss mismatches, then optimisation, then consequences.
# Within a stage the order breaks ties between verdicts of equal severity.
RULES: tuple[Rule, ...] = (
    rule_masks_not_binary,
    rule_class_imbalance,
    rule_missing_sigmoid,
    rule_squashed_outputs,
    rule_bce_at_ln2,
    rule_constant_loss,
    rule_loss_weights_unbalanced,
    rule_amp_overflow,
    rule_lr_too_high,
    rule_lr_too_small,
    rule_bce_not_settled,
    rule_vanishing_gradients,
    rule_model_too_large,
    rule_unused_parameters,
    rule_gradient_explosion,
    rule_nonfinite,
    rule_no_better_than_constant,
    rule_plateau,
    rule_val_collapse,
)

RULE_CODES: tuple[str, ...] = tuple(rule.__name__.removeprefix("rule_") for rule in RULES)

# The causes a consequence may name, most specific first; any other cause found comes after.
LIKELY_CAUSES: dict[str, tuple[str, ...]] = {
    "gradient_explosion": ("missing_sigmoid", "amp_overflow", "lr_too_high"),
    "nonfinite": ("amp_overflow", "gradient_explosion", "missing_sigmoid", "lr_too_high"),
    "no_better_than_constant": (),
    "plateau": (),
    "val_collapse": ("model_too_large",),
}


def link_causes(verdicts: list[Verdict], lang: str) -> list[Verdict]:
    """Name each consequence's likely cause (another verdict of the same evaluation), in its cause text."""
    by_code = {v.code: v for v in verdicts}
    causes = [v for v in verdicts if not v.is_consequence and v.severity >= Severity.WARN]
    out = []
    for v in verdicts:
        if v.is_consequence:
            preferred = [by_code[c] for c in LIKELY_CAUSES.get(v.code, ()) if c in by_code and c != v.code]
            preferred.sort(key=lambda c: c.is_consequence)  # a root cause before another symptom
            found = next(iter(preferred + causes), None)
            if found is not None:
                cause = v.cause + say(lang, "links", "likely_cause", title=found.title)
                v = replace(v, caused_by=found.code, cause=cause)
        out.append(v)
    return out


def evaluate_rules(
    history: RunHistory, thresholds: Thresholds | None = None, lang: str | None = None, unseen_steps: int = 0
) -> list[Verdict]:
    """Every rule once over ``history``, no hysteresis: the raw verdicts in cause order.

    Root causes first (data -> output/loss -> optimisation -> consequences), notes (info)
    after everything that needs action; each consequence names its likely cause.
    ``unseen_steps``: how many of the newest steps no earlier evaluation read; the explosion
    and non-finite rules look at all of them (at least their usual windows)."""
    ctx = Context(history, thresholds or Thresholds(), lang, unseen_steps)
    verdicts = []
    for rule in RULES:
        try:
            verdict = rule(ctx)
        except (ArithmeticError, ValueError, ProtocolError):  # odd numbers from a user's run: no verdict
            verdict = None
        if verdict is not None:
            verdicts.append(verdict)
    order = {v.code: i for i, v in enumerate(verdicts)}
    verdicts.sort(key=lambda v: sort_key(v, order[v.code]))
    return link_causes(verdicts, ctx.lang)
