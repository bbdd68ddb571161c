"""Framework metric dictionaries as the monitor's epoch summaries: plain floats, train vs validation.

Frameworks keep their logged numbers in one flat mapping (Lightning's
``trainer.callback_metrics``, the Hugging Face Trainer's ``metrics``, Ignite's
``engine.state.metrics``), with tensors for values and a prefix for validation. The
monitor's :class:`~octa_tui.protocol.messages.EpochSummary` has ``train`` and ``val``
mappings of floats, named as the built-in trainer names them (``loss``, ``dice``), so the
panels and the diagnosis rules read a framework's run as they read ours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

VAL_PREFIXES = ("val_", "val/", "valid_", "valid/", "validation_", "validation/", "eval_", "eval/")
# Bookkeeping numbers frameworks log next to the metrics; they are not metrics of the model.
NOT_METRICS = frozenset({"epoch", "step", "runtime", "samples_per_second", "steps_per_second", "total_flos",
                         "learning_rate", "lr", "grad_norm"})


def as_float(value: Any) -> float | None:
    """A metric value as a float: Python numbers, 0-d or one-element tensors/arrays; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    try:
        count = numel() if callable(numel) else numel
        if count != 1:
            return None
        item = value.item() if hasattr(value, "item") else value
        return float(item)
    except (TypeError, ValueError, RuntimeError):
        return None


def _strip(name: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix):]
    return None


def _clean(name: str) -> str:
    """Lightning's ``x_epoch`` (the epoch aggregate of a value logged per step too) is ``x``."""
    return name[: -len("_epoch")] if name.endswith("_epoch") else name


def split_metrics(metrics: Mapping[str, Any], val_prefixes: tuple[str, ...] = VAL_PREFIXES
                  ) -> tuple[dict[str, float], dict[str, float]]:
    """``(train, val)`` from a framework's flat metric mapping.

    Validation metrics are those with a validation prefix (``val_dice``, ``eval_loss``,
    ``val/dice``), named without it (``dice``, ``loss``); the rest are training metrics.
    Per-step copies (``x_step``) and bookkeeping numbers (runtime, throughput, epoch) are
    left out, as are values that are not single numbers. When the validation metrics have no
    ``dice`` but exactly one name containing "dice" (MONAI's ``val_mean_dice``), it is also
    given as ``dice``: the monitor's Dice panel and rules read that name.
    """
    train: dict[str, float] = {}
    val: dict[str, float] = {}
    for raw_name, value in metrics.items():
        name = str(raw_name)
        if name.endswith("_step"):
            continue
        number = as_float(value)
        if number is None:
            continue
        stripped = _strip(name, val_prefixes)
        target, key = (val, stripped) if stripped is not None else (train, name)
        key = _clean(key)
        if key in NOT_METRICS or key.split("/")[-1] in NOT_METRICS:
            continue
        target[key] = number
    dice_like = [k for k in val if "dice" in k.lower()]
    if "dice" not in val and len(dice_like) == 1:
        val["dice"] = val[dice_like[0]]
    return train, val


def mean(values: list[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
