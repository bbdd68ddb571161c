"""A run's facts, read one way for everyone: the rules, the charts, the header and the console.

Before this module the loss chart and the constant-predictor rule each computed the baseline
their own way, and the settings in force and the run's length were read twice, differently;
in a user's own loop a verdict could fire while the chart drew no line. Everything here is a
pure function of a :class:`~octa_tui.protocol.run.RunHistory` that reads at most the newest
64 step rows, so a monitor may call it on every refresh.

API (stable; the monitor and the rules import these names)::

    facts = run_facts(history)          # RunFacts: everything below in one record
    facts.loss_kind                     # "dice_bce" | "bce" | "mse" | "" (unknown)
    facts.loss_functions                # ("binary_cross_entropy_with_logits", ...) as observed
    facts.expects_probabilities         # the loss compares outputs with [0, 1] targets
    facts.amp                           # "fp16" | "bf16" | "" (no mixed precision known)
    facts.settings                      # Settings(lr, bce_weight, dice_weight, pos_weight, clip,
                                        #          amp_scale): newest finite value, NaN = unknown
    facts.length                        # RunLength(planned_steps, planned_epochs, steps_per_epoch,
                                        #           max_steps, step, epoch, progress)
    facts.baseline                      # ConstantBaseline | None: the best constant predictor

    baseline = constant_baseline(history)   # the same ConstantBaseline | None, alone
    baseline.loss       # the value to beat, in the units of ``baseline.channel``
    baseline.channel    # the step channel it is comparable with ("loss/total", "loss/bce", ...)
    baseline.constant   # the constant that achieves it (NaN for MSE: one mean per channel)
    baseline.how        # "constant" (one value everywhere) | "mean" (each target channel's mean)

The loss chart draws ``baseline.loss`` as its constant line when ``baseline.channel`` is the
channel it plots (``loss/total`` in every built-in run); the "no better than a constant" rule
compares the recent level of the same channel with the same number.

Loss kind: the run's ``config["loss"]`` when it says; else the loss functions the probe saw
called (``config["loss_functions"]``: ``mse_loss`` -> "mse"; ``binary_cross_entropy*`` ->
"bce", or "dice_bce" when a ``loss/dice`` channel is streamed too); else the loss channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from octa_tui.protocol import channels as ch
from octa_tui.protocol.run import RunHistory

from .baseline import bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline

OPT_AMP_SCALE = "opt/amp_scale"  # the GradScaler's scale in force (present only with a scaler)
GRAD_AMP_SKIPPED = "gradstat/amp_skipped"  # 1.0 when the scaler skipped this step's optimizer.step

SEGMENTATION_LOSSES = ("dice_bce", "bce")
SETTINGS_ROWS = 64  # the newest rows a setting is read from

_BCE_FUNCTIONS = ("binary_cross_entropy", "binary_cross_entropy_with_logits")
_MSE_FUNCTIONS = ("mse_loss",)


@dataclass(frozen=True)
class Settings:
    """The training settings in force at the newest step (NaN where the run does not say)."""

    lr: float
    bce_weight: float
    dice_weight: float
    pos_weight: float
    clip: float
    amp_scale: float = math.nan

    @property
    def effective_pos_weight(self) -> float:
        """pos_weight as the loss applies it: 1.0 when none is set or the value is unusable."""
        return self.pos_weight if math.isfinite(self.pos_weight) and self.pos_weight > 0 else 1.0


@dataclass(frozen=True)
class RunLength:
    """How long the run is planned to be and where it is: steps, epochs, progress.

    ``planned_steps``: epochs x steps per epoch, or ``max_steps`` when that stops it sooner
    (None when the config says neither). ``steps_per_epoch`` is the config's, else measured
    from the last whole epoch stored (NaN when unknown). ``progress`` = (step + 1) /
    planned_steps (NaN when unknown).
    """

    planned_steps: int | None
    planned_epochs: int | None
    steps_per_epoch: float
    max_steps: int
    step: int
    epoch: int
    progress: float


@dataclass(frozen=True)
class ConstantBaseline:
    """The loss of the best constant prediction on this run's data, and what it compares with."""

    loss: float
    channel: str
    constant: float
    how: str  # "constant" | "mean"


@dataclass(frozen=True)
class RunFacts:
    """Everything the panels and the rules read about a run besides its curves."""

    loss_kind: str
    loss_functions: tuple[str, ...]
    expects_probabilities: bool
    amp: str
    settings: Settings
    length: RunLength
    baseline: ConstantBaseline | None
    grads_clipped_before_probe: float  # max_norm a framework clipped at before the probe measured (NaN: none)

    @property
    def is_segmentation(self) -> bool:
        """Whether the targets are masks (BCE or Dice+BCE)."""
        return self.loss_kind in SEGMENTATION_LOSSES


# --- small readers ------------------------------------------------------------------------
def config_of(history: RunHistory) -> Mapping[str, Any]:
    """The run's config mapping (empty when it sent none)."""
    return history.schema.config or {}


def config_number(config: Mapping[str, Any], key: str) -> float:
    """A numeric config value, NaN when absent or not a number."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def float32_value(value: float) -> float:
    """What was set, from its float32 copy: 1e-3 travels as 0.0010000000475; 7 digits give it back."""
    return float(f"{value:.7g}") if math.isfinite(value) else value


def setting(history: RunHistory, key: str, rows: int = SETTINGS_ROWS) -> float:
    """The newest finite value of a channel over the newest ``rows`` steps (NaN if unknown)."""
    schema, store = history.schema, history.steps
    n = len(store)
    if n == 0 or not schema.has(key):
        return math.nan
    column = store.values[max(0, n - rows) : n, schema.index(key)]
    finite = column[np.isfinite(column)]
    return float32_value(float(finite[-1])) if finite.size else math.nan


def settings_in_force(history: RunHistory) -> Settings:
    """lr, loss weights, pos_weight, clip and the AMP scale the trainer reported most recently.

    The loss weights fall back to the config's ``bce_weight``/``dice_weight`` when the run
    streams no weight channels.
    """
    config = config_of(history)
    bce, dice = setting(history, ch.OPT_BCE_WEIGHT), setting(history, ch.OPT_DICE_WEIGHT)
    if not (math.isfinite(bce) and math.isfinite(dice)):
        bce, dice = config_number(config, "bce_weight"), config_number(config, "dice_weight")
    return Settings(
        lr=setting(history, ch.OPT_LR),
        bce_weight=bce,
        dice_weight=dice,
        pos_weight=setting(history, ch.OPT_POS_WEIGHT),
        clip=setting(history, ch.OPT_CLIP),
        amp_scale=setting(history, OPT_AMP_SCALE),
    )


def loss_term_weight(history: RunHistory, settings: Settings, term: str) -> float:
    """The weight in force of loss term ``term`` (``loss/<term>``): BCE and Dice as the settings
    read them (streamed, else the config), any other from its ``opt/<term>_weight`` channel or the
    config's ``<term>_weight``; NaN when the run says nothing."""
    if term == "bce":
        return settings.bce_weight
    if term == "dice":
        return settings.dice_weight
    streamed = setting(history, f"opt/{term}_weight")
    return streamed if math.isfinite(streamed) else config_number(config_of(history), f"{term}_weight")


def loss_functions(history: RunHistory) -> tuple[str, ...]:
    """The torch.nn.functional losses the probe saw called (``config["loss_functions"]``)."""
    value = config_of(history).get("loss_functions")
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence):
        return tuple(str(v) for v in value if isinstance(v, str))
    return ()


def loss_kind(history: RunHistory) -> str:
    """``dice_bce`` | ``bce`` | ``mse`` | ``""``: the config, else the observed losses, else the channels."""
    schema = history.schema
    kind = config_of(history).get("loss")
    if isinstance(kind, str) and kind:
        return kind
    has_dice = schema.has(ch.LOSS_DICE)
    observed = loss_functions(history)
    if any(f in _BCE_FUNCTIONS for f in observed):
        return "dice_bce" if has_dice else "bce"
    if any(f in _MSE_FUNCTIONS for f in observed):
        return "mse"
    if has_dice and schema.has(ch.LOSS_BCE):
        return "dice_bce"
    if schema.has(ch.LOSS_BCE):
        return "bce"
    if schema.has(ch.LOSS_MSE):
        return "mse"
    return ""


def amp_mode(history: RunHistory) -> str:
    """"fp16" | "bf16" from ``config["amp"]``; "fp16" when a GradScaler's scale is streamed; else ""."""
    value = config_of(history).get("amp")
    if isinstance(value, str) and value in ("fp16", "bf16"):
        return value
    if history.schema.has(OPT_AMP_SCALE) or history.schema.has(GRAD_AMP_SKIPPED):
        return "fp16"  # a GradScaler is only needed for float16
    return ""


def measured_steps_per_epoch(history: RunHistory) -> float:
    """Rows of the last whole epoch stored (NaN until one epoch has ended)."""
    store = history.steps
    n = len(store)
    if n == 0:
        return math.nan
    column = store.epoch
    last = column[n - 1]
    start = int(np.searchsorted(column[:n], last, side="left"))
    previous = int(np.searchsorted(column[:n], last - 1, side="left"))
    if start > previous and start <= n:
        return float(start - previous)
    return math.nan


def run_length(history: RunHistory) -> RunLength:
    """The run's plan (config ``epochs``, ``steps_per_epoch``, ``max_steps``) and its position."""
    config = config_of(history)
    epochs = config_number(config, "epochs")
    per_epoch = config_number(config, "steps_per_epoch")
    if not (math.isfinite(per_epoch) and per_epoch > 0):
        per_epoch = measured_steps_per_epoch(history)
    max_steps = config_number(config, "max_steps")
    max_steps_i = int(max_steps) if math.isfinite(max_steps) and max_steps > 0 else 0
    planned: int | None = None
    if math.isfinite(epochs) and epochs > 0 and math.isfinite(per_epoch) and per_epoch > 0:
        planned = int(epochs * per_epoch)
    if max_steps_i:
        planned = min(planned, max_steps_i) if planned is not None else max_steps_i
    planned_epochs: int | None = int(epochs) if math.isfinite(epochs) and epochs > 0 else None
    if planned_epochs is not None and max_steps_i and math.isfinite(per_epoch) and per_epoch > 0:
        planned_epochs = min(planned_epochs, int(math.ceil(max_steps_i / per_epoch)))
    n = len(history.steps)
    step = int(history.steps.step[n - 1]) if n else -1
    epoch = int(history.steps.epoch[n - 1]) if n else -1
    progress = (step + 1) / planned if planned and step >= 0 else math.nan
    return RunLength(planned, planned_epochs, per_epoch, max_steps_i, step, epoch, progress)


def foreground(history: RunHistory) -> float:
    """Mean target (foreground ratio) from the data set report, NaN when unknown."""
    report = history.dataset
    if report is None:
        return math.nan
    for value in (report.target_mean, report.foreground_ratio):
        if math.isfinite(value) and 0.0 <= value <= 1.0:
            return float(value)
    return math.nan


def mse_terms(history: RunHistory) -> int:
    """How many per-channel MSEs ``loss/total`` sums: 1 with a ``loss/mse`` term, else the terms."""
    terms = [name for name in history.schema.loss if name != "total"]
    return 1 if "mse" in terms else max(1, len(terms))


def constant_baseline(
    history: RunHistory, kind: str | None = None, settings: Settings | None = None
) -> ConstantBaseline | None:
    """The best constant predictor's loss for this run's data (see the module doc); None when
    the run sent no data set report, its statistics are missing or the loss has no known baseline."""
    report = history.dataset
    if report is None:
        return None
    schema = history.schema
    kind = loss_kind(history) if kind is None else kind
    settings = settings_in_force(history) if settings is None else settings
    try:
        if kind == "mse":
            if not math.isfinite(report.target_var):
                return None
            if schema.has(ch.LOSS_TOTAL):
                key, terms = ch.LOSS_TOTAL, mse_terms(history)
            elif schema.has(ch.LOSS_MSE):
                key, terms = ch.LOSS_MSE, 1
            else:
                return None
            base = mse_baseline(float(report.target_var), terms)
            return ConstantBaseline(base.loss, key, base.constant, "mean")
        p = foreground(history)
        if not math.isfinite(p):
            return None
        pos_weight = settings.effective_pos_weight
        if kind == "bce":
            key = ch.LOSS_BCE if schema.has(ch.LOSS_BCE) else ch.LOSS_TOTAL
            if not schema.has(key):
                return None
            base = bce_baseline(p, pos_weight)
            return ConstantBaseline(base.loss, key, base.constant, "constant")
        if kind == "dice_bce":
            bce_w, dice_w = settings.bce_weight, settings.dice_weight
            if schema.has(ch.LOSS_TOTAL) and math.isfinite(bce_w) and math.isfinite(dice_w) and bce_w + dice_w > 0:
                base = dice_bce_baseline(p, bce_w, dice_w, pos_weight)
                return ConstantBaseline(base.loss, ch.LOSS_TOTAL, base.constant, "constant")
            if schema.has(ch.LOSS_DICE):  # weights unknown: the Dice term alone against its baseline
                base = dice_loss_baseline(p)
                return ConstantBaseline(base.loss, ch.LOSS_DICE, base.constant, "constant")
    except ValueError:
        return None
    return None


def grads_clipped_before_probe(history: RunHistory) -> float:
    """The max_norm a framework clipped gradients at before the probe measured them (NaN: none)."""
    value = config_number(config_of(history), "grads_clipped_before_probe")
    return value if math.isfinite(value) and value > 0 else math.nan


def run_facts(history: RunHistory) -> RunFacts:
    """All of a run's facts in one record (cheap: the newest 64 rows at most)."""
    kind = loss_kind(history)
    settings = settings_in_force(history)
    return RunFacts(
        loss_kind=kind,
        loss_functions=loss_functions(history),
        expects_probabilities=bool(history.schema.loss_expects_probabilities),
        amp=amp_mode(history),
        settings=settings,
        length=run_length(history),
        baseline=constant_baseline(history, kind, settings),
        grads_clipped_before_probe=grads_clipped_before_probe(history),
    )
