"""Fix trials: did a change made during the run help, do nothing, or hurt?

A change (a ``command_applied`` event: new lr, loss weights, pos_weight, clipping) is a
trial, not a promise. The trend of the loss over the steps before the change is fitted (a
straight line through log(loss), so a decaying curve is extrapolated as a decay and never
below zero) and extrapolated over the steps after it; the loss actually seen there is
compared with that prediction:

- *helped*: lower than the trend predicted, by more than ``helped_margin`` and beyond the
  noise of the fit;
- *hurt*: higher than both the prediction and the level before the change, by more than
  ``hurt_margin`` and beyond the noise (or the loss became NaN/Inf);
- *no effect*: anything in between.

The measure compared is one the change does not redefine: a change of loss weights or of
pos_weight rescales the total (and the weighted BCE), so those trials compare the validation
Dice score of the epochs around the change when the run validates often enough (a straight
line, higher is better, judged in Dice points), else the soft Dice term of the loss, which
neither change touches; every other change compares the total loss. Pure numpy: the monitor
runs it over the history it already has, live and in replay, so a recording replays to the
same outcomes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from octa_tui.protocol import channels as ch
from octa_tui.protocol.run import RunHistory

HELPED, NO_EFFECT, HURT, PENDING = "helped", "no effect", "hurt", "pending"
# Commands that change how the run learns; pause/resume/checkpoint/stop are not trials.
TRIAL_OPS = frozenset({"set_lr", "set_loss_weights", "set_pos_weight", "set_clip"})
# Changes that redefine the loss/total (and the weighted BCE): judged on the Dice term instead.
REWEIGHTING_OPS = frozenset({"set_loss_weights", "set_pos_weight"})


@dataclass(frozen=True)
class TrialThresholds:
    """How a trial is judged; the defaults suit runs of a few hundred steps and up."""

    before_steps: int = 60  # steps before the change the trend is fitted on
    after_steps: int = 60  # steps after the change that are judged (cut at the next change)
    settle_steps: int = 5  # steps right after the change left out (Adam's moments catch up)
    min_steps: int = 10  # fewer steps than this on either side: still pending
    helped_margin: float = 0.05  # relative: 5% below the prediction is "helped"
    hurt_margin: float = 0.05  # relative: 5% above prediction and level is "hurt"
    noise_sigmas: float = 2.0  # ... and beyond this many standard errors of the fit
    min_epochs: int = 3  # validation Dice is used when this many epochs lie on each side
    dice_margin: float = 0.05  # validation Dice points above the trend that count as "helped"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"trial threshold {f.name} must be a finite number, got {value!r}")
            if value < 0:
                raise ValueError(f"trial threshold {f.name} must be >= 0, got {value!r}")
        if self.min_steps < 3:
            raise ValueError(f"trial threshold min_steps must be at least 3 to fit a trend, got {self.min_steps}")


@dataclass(frozen=True)
class TrialOutcome:
    """One change and what followed it.

    ``effect`` is positive when the change did better than the trend predicted: for a loss,
    relative, (predicted - observed) / predicted; for validation Dice, in Dice points. ``noise`` is the relative difference the fit cannot
    tell from chance. ``predicted``/``observed``/``level`` are mean losses over the judged
    window (trend extrapolated, measured) and over the end of the fitted window.
    """

    step: int
    ops: tuple[str, ...]
    messages: tuple[str, ...]
    metric: str
    outcome: str
    predicted: float
    observed: float
    level: float
    effect: float
    noise: float
    steps_judged: int

    @property
    def summary(self) -> str:
        """One line for an event log: ``trial set_lr @150: helped (-42% loss vs trend)``."""
        what = "+".join(self.ops)
        if self.outcome == PENDING:
            return f"trial {what} @{self.step}: pending ({self.steps_judged} steps after the change so far)"
        if not math.isfinite(self.observed):
            return f"trial {what} @{self.step}: {self.outcome} (the {self.metric} became NaN/Inf)"
        if self.metric == VAL_DICE:
            return (f"trial {what} @{self.step}: {self.outcome} ({self.effect:+.2f} {self.metric} vs the trend, "
                    f"noise +/-{self.noise:.2f}, {self.steps_judged} epochs)")
        return (f"trial {what} @{self.step}: {self.outcome} ({-self.effect:+.0%} {self.metric} vs the "
                f"trend, noise +/-{self.noise:.0%}, {self.steps_judged} steps)")


VAL_DICE = "val Dice"


def trial_metric(ops: tuple[str, ...], channels: tuple[str, ...]) -> str:
    """The loss channel a change of ``ops`` is judged on when validation Dice cannot be used."""
    if REWEIGHTING_OPS.intersection(ops) and ch.LOSS_DICE in channels:
        return ch.LOSS_DICE
    return ch.LOSS_TOTAL


def _windows(steps: np.ndarray, change_step: int, t: TrialThresholds, end_step: int | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Masks of the fitted window before the change and of the judged window after it."""
    before = (steps < change_step) & (steps >= _fit_start(change_step, t))
    after = (steps >= change_step + t.settle_steps) & (steps < change_step + t.settle_steps + t.after_steps)
    if end_step is not None:
        after &= steps < end_step
    return before, after


def _extrapolate(xb: np.ndarray, yb: np.ndarray, xa: np.ndarray, sigmas: float) -> tuple[np.ndarray, float]:
    """A least-squares line through (xb, yb) evaluated at ``xa``, and the noise band of the
    difference between the mean of that prediction and an observed mean over ``xa``:
    ``sigmas`` standard errors, in the units of ``yb``."""
    x0 = xb.mean()
    dx = xb - x0
    sxx = float(dx @ dx)
    slope = float(dx @ (yb - yb.mean())) / sxx if sxx > 0 else 0.0
    intercept = float(yb.mean())
    residuals = yb - intercept - slope * dx
    scatter = math.sqrt(float(residuals @ residuals) / max(xb.size - 2, 1))
    lever = (float(xa.mean()) - x0) ** 2 / sxx if sxx > 0 else 0.0
    noise = sigmas * scatter * math.sqrt(1.0 / xb.size + lever + 1.0 / xa.size)
    return intercept + slope * (xa - x0), noise


def judge_score(
    steps: np.ndarray,
    values: np.ndarray,
    change_step: int,
    thresholds: TrialThresholds | None = None,
    end_step: int | None = None,
) -> tuple[str, float, float, float, float, float, int]:
    """Like :func:`judge`, for a score where higher is better (validation Dice per epoch, at
    the epoch's last step): a straight-line trend, the effect in score points."""
    t = thresholds or TrialThresholds()
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    before, after = _windows(steps, change_step, t, end_step)
    before &= np.isfinite(values)
    xb, yb, xa, ya = steps[before], values[before], steps[after], values[after]
    nan = math.nan
    if xb.size < t.min_epochs or xa.size < t.min_epochs:
        return PENDING, nan, nan, nan, nan, nan, int(xa.size)
    level = float(np.mean(yb[-max(2, yb.size // 4):]))
    if not np.isfinite(ya).all():
        return HURT, nan, -math.inf, level, -math.inf, nan, int(xa.size)
    trend, noise = _extrapolate(xb, yb, xa, t.noise_sigmas)
    predicted = float(np.clip(np.mean(trend), 0.0, 1.0))
    observed = float(np.mean(ya))
    effect = observed - predicted
    if effect > max(t.dice_margin, noise):
        outcome = HELPED
    elif observed < min(predicted, level) - max(t.dice_margin, noise):
        outcome = HURT
    else:
        outcome = NO_EFFECT
    return outcome, predicted, observed, level, effect, noise, int(xa.size)


def _val_dice_series(history: RunHistory) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(e.step, float(e.val["dice"])) for e in history.epochs if "dice" in e.val]
    if not pairs:
        return np.zeros(0), np.zeros(0)
    steps, values = zip(*pairs)
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def _fit_start(change_step: int, t: TrialThresholds) -> float:
    """First step of the fitted window: ``before_steps`` back, but never the first half of the
    run before the change (a run's opening steps fall too fast to extrapolate from)."""
    return max(change_step - t.before_steps, change_step / 2)


def judge(
    steps: np.ndarray,
    values: np.ndarray,
    change_step: int,
    thresholds: TrialThresholds | None = None,
    end_step: int | None = None,
) -> tuple[str, float, float, float, float, float, int]:
    """Judge one change at ``change_step`` on a loss series (lower is better).

    ``steps``/``values`` are the run's step numbers and the loss at each (NaN/Inf allowed).
    The steps from ``change_step`` on (up to ``end_step``, exclusive, e.g. the next change)
    are the "after" side. Returns (outcome, predicted, observed, level, effect, noise, n_after).
    """
    t = thresholds or TrialThresholds()
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape or steps.ndim != 1:
        raise ValueError(f"steps and values must be 1-D of one length, got {steps.shape} and {values.shape}")
    before, after = _windows(steps, change_step, t, end_step)
    xb, yb = steps[before], values[before]
    keep = np.isfinite(yb) & (yb > 0)
    xb, yb = xb[keep], yb[keep]
    xa, ya = steps[after], values[after]
    nan = math.nan
    if xb.size < t.min_steps or xa.size < t.min_steps:
        return PENDING, nan, nan, nan, nan, nan, int(xa.size)
    level = float(np.mean(yb[-max(t.min_steps, yb.size // 4):]))
    if not np.isfinite(ya).all():
        return HURT, nan, math.inf, level, -math.inf, nan, int(xa.size)
    # A straight line through log(loss) before the change, extrapolated over the judged window;
    # its noise band is in log units (~relative).
    log_trend, noise = _extrapolate(xb, np.log(yb), xa, t.noise_sigmas)
    predicted = float(np.mean(np.exp(log_trend)))
    observed = float(np.mean(ya))
    effect = (predicted - observed) / predicted
    if effect > max(t.helped_margin, noise):
        outcome = HELPED
    elif observed > max(predicted, level) * (1.0 + max(t.hurt_margin, noise)):
        outcome = HURT
    else:
        outcome = NO_EFFECT
    return outcome, predicted, observed, level, effect, noise, int(xa.size)


def trials(history: RunHistory, thresholds: TrialThresholds | None = None) -> list[TrialOutcome]:
    """Every change in ``history`` (``command_applied`` events of :data:`TRIAL_OPS`) and its
    outcome so far, oldest first. Changes applied at the same step are one trial."""
    t = thresholds or TrialThresholds()
    grouped: dict[int, list] = {}
    for event in history.events:
        if event.kind == "command_applied" and event.data.get("op") in TRIAL_OPS:
            grouped.setdefault(int(event.step), []).append(event)
    if not grouped:
        return []
    channels = history.schema.channels
    steps = history.steps.step
    change_steps = sorted(grouped)
    out = []
    for i, step in enumerate(change_steps):
        events = grouped[step]
        ops = tuple(str(e.data.get("op")) for e in events)
        end = change_steps[i + 1] if i + 1 < len(change_steps) else None
        found = None
        if REWEIGHTING_OPS.intersection(ops):
            epoch_steps, dice = _val_dice_series(history)
            found = judge_score(epoch_steps, dice, step, t, end)
            metric = VAL_DICE
            if found[0] == PENDING and np.sum(epoch_steps < step) < t.min_epochs:
                found = None  # too few epochs before the change to ever judge on them: use the loss
        if found is None:
            metric = trial_metric(ops, channels)
            values = history.steps.column(history.schema.index(metric))
            found = judge(steps, values, step, t, end)
        outcome, predicted, observed, level, effect, noise, n = found
        out.append(TrialOutcome(step, ops, tuple(e.message for e in events), metric, outcome,
                                predicted, observed, level, effect, noise, n))
    return out
