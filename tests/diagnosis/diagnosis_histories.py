"""Builds run histories for the diagnosis tests: a schema like the trainer's, rows appended directly.

Every channel has a healthy default; a test overrides the channels its case is about with a
number (every row), an array (one value per row) or a function of the row index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from octa_tui.protocol.messages import DatasetReport, EpochSummary, ModelSummary, Schema
from octa_tui.protocol.run import RunHistory

RUN = "00000000000000d1"
UNET_LAYERS = ("enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1", "out")
GRADSTAT = ("total_norm", "n_over_bound", "max_param_norm", "nonfinite")
OUT = ("raw_min", "raw_max", "raw_mean", "act_min", "act_max", "act_mean", "frac_outside_01")
OPT = ("lr", "bce_weight", "dice_weight", "pos_weight", "clip", "update_ratio")
TIME = ("step_s", "samples_per_s", "memory_mb")

HEALTHY_GRADS = {f"grad/{name}": 0.02 - 0.002 * i for i, name in enumerate(UNET_LAYERS)}
HEALTHY_ROW: dict[str, float] = {
    "loss/total": 0.35,
    "loss/bce": 0.10,
    "loss/dice": 0.38,
    **HEALTHY_GRADS,
    "gradstat/total_norm": 0.3,
    "gradstat/n_over_bound": 0.0,
    "gradstat/max_param_norm": 0.5,
    "gradstat/nonfinite": 0.0,
    "out/raw_min": -7.0,
    "out/raw_max": 5.0,
    "out/raw_mean": -2.0,
    "out/act_min": 0.001,
    "out/act_max": 0.993,
    "out/act_mean": 0.12,
    "out/frac_outside_01": 0.0,
    "opt/lr": 1e-3,
    "opt/bce_weight": 0.3,
    "opt/dice_weight": 0.7,
    "opt/pos_weight": 1.0,
    "opt/clip": 0.0,
    "opt/update_ratio": 1e-3,
    "time/step_s": 0.05,
    "time/samples_per_s": 160.0,
    "time/memory_mb": 900.0,
}

Value = float | np.ndarray | Callable[[np.ndarray], np.ndarray]


def segmentation_schema(
    *,
    grad: tuple[str, ...] = UNET_LAYERS,
    parameters: int = 470_000,
    model: str = "UNet",
    config: Mapping[str, Any] | None = None,
    loss_expects_probabilities: bool = True,
    gradstat: tuple[str, ...] = GRADSTAT,
    opt: tuple[str, ...] = OPT,
    out: tuple[str, ...] = OUT,
    run_id: str = RUN,
) -> Schema:
    """A Dice+BCE vessel-segmentation run's schema, as the trainer announces it."""
    base = {"loss": "dice_bce", "output_activation": "none", "train_images": 200, "batch_size": 8}
    return Schema(
        run_id=run_id,
        task="segmentation",
        model=ModelSummary(model, parameters),
        loss=("total", "bce", "dice"),
        grad=grad,
        gradstat=gradstat,
        out=out,
        opt=opt,
        time=TIME,
        loss_expects_probabilities=loss_expects_probabilities,
        config={**base, **(config or {})},
    )


def heatmap_schema(
    *,
    config: Mapping[str, Any] | None = None,
    grad: tuple[str, ...] = ("conv1", "conv2", "head"),
    out: tuple[str, ...] = OUT,
) -> Schema:
    """Seed 002's CRAFT-like run: region + affinity MSE on heatmaps."""
    base = {"loss": "mse", "output_activation": "none", "train_images": 400}
    return Schema(
        run_id=RUN,
        task="heatmap",
        model=ModelSummary("CraftLike", 120_000),
        loss=("total", "region", "affinity"),
        grad=grad,
        gradstat=GRADSTAT,
        out=out,
        opt=OPT,
        time=TIME,
        loss_expects_probabilities=True,
        config={**base, **(config or {})},
    )


class Builder:
    """Appends rows and records to a fresh :class:`RunHistory`."""

    def __init__(self, schema: Schema | None = None) -> None:
        self.schema = schema or segmentation_schema()
        self.history = RunHistory(self.schema)
        self._keys = self.schema.channels
        self._defaults = np.array([HEALTHY_ROW.get(k, 0.0) for k in self._keys], dtype=np.float64)
        if self.schema.task == "heatmap":
            self._set_default("loss/total", 0.05)
            self._set_default("loss/region", 0.03)
            self._set_default("loss/affinity", 0.02)
        for i, name in enumerate(self.schema.grad):  # healthy: a gentle spread, shallow to deep
            self._set_default(f"grad/{name}", 0.02 - 0.01 * i / max(1, len(self.schema.grad) - 1))
        self.seq = 0

    def _set_default(self, key: str, value: float) -> None:
        if key in self._keys:
            self._defaults[self._keys.index(key)] = value

    def steps(
        self, n: int, epoch: int | Callable[[np.ndarray], np.ndarray] | None = None, **channels: Value
    ) -> Builder:
        """Append ``n`` steps; keyword ``loss__total`` sets channel ``loss/total`` and so on."""
        first = len(self.history.steps)
        rows = np.arange(first, first + n)
        block = np.tile(self._defaults, (n, 1))
        for name, value in channels.items():
            key = name.replace("__", "/", 1)
            if key not in self._keys:
                raise KeyError(f"{key} is not a channel of this schema")
            j = self._keys.index(key)
            block[:, j] = value(rows) if callable(value) else value
        per_epoch = int(self.schema.config.get("steps_per_epoch", 100))
        epochs = (
            rows // per_epoch if epoch is None else (epoch(rows) if callable(epoch) else np.full(n, epoch))
        ).astype(int)
        for k in range(n):
            self.history.steps.append(
                self.seq, int(rows[k]), int(epochs[k]), 1.7e9 + rows[k], block[k].astype(np.float32)
            )
            self.seq += 1
        return self

    def epoch(
        self, epoch: int, train: Mapping[str, float] | None = None, val: Mapping[str, float] | None = None
    ) -> Builder:
        """Record one finished epoch's summary."""
        step = int(self.history.steps.step[-1]) if len(self.history.steps) else 0
        self.history.add(
            EpochSummary(self.schema.run_id, epoch, step, 1.7e9 + step, dict(train or {}), dict(val or {}))
        )
        return self

    def epochs(self, train_losses: list[float], val_dice: float | list[float] = float("nan")) -> Builder:
        """Record epoch summaries with these training losses (and validation Dice)."""
        for i, loss in enumerate(train_losses):
            dice = val_dice[i] if isinstance(val_dice, list) else val_dice
            self.epoch(i + 1, {"loss": loss}, {} if dice != dice else {"dice": dice})
        return self

    def dataset(self, **fields: Any) -> Builder:
        """Attach a data set report (healthy binary masks, 10% foreground, unless overridden)."""
        values: dict[str, Any] = {
            "run_id": self.schema.run_id,
            "source": "synthetic",
            "pairs": 250,
            "unique_mask_values": 2,
            "mask_values": (0.0, 255.0),
            "foreground_ratio": 0.10,
            "foreground_ratios": (0.10,),
            "suggested_pos_weight": 9.0,
            "train_images": 200,
            "val_images": 50,
            "target_mean": 0.10,
            "target_var": 0.09,
        }
        values.update(fields)
        self.history.add(DatasetReport(**values))
        return self


def decaying(
    start: float, end: float, tau: float, noise: float = 0.0, seed: int = 0
) -> Callable[[np.ndarray], np.ndarray]:
    """A loss curve ``end + (start - end) exp(-step / tau)`` with optional Gaussian noise."""

    def curve(rows: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(seed + int(rows[0]))
        return end + (start - end) * np.exp(-rows / tau) + noise * rng.standard_normal(rows.size)

    return curve


def healthy_run(steps: int = 1000, run_id: str = RUN) -> Builder:
    """A run going well: loss falling from 0.85 towards 0.3, val Dice rising to 0.80, clean data.

    Its Dice term sits near 0.38 at the end, as measured on thin synthetic vessels.
    """
    b = Builder(segmentation_schema(config={"epochs": 20, "steps_per_epoch": 100}, run_id=run_id))
    b.dataset()
    b.steps(
        steps,
        loss__total=decaying(0.85, 0.28, 250, noise=0.01),
        loss__bce=decaying(0.70, 0.06, 150, noise=0.005, seed=1),
        loss__dice=decaying(0.95, 0.37, 300, noise=0.01, seed=2),
    )
    per_epoch = 100
    for e in range(steps // per_epoch):
        end = (e + 1) * per_epoch
        train = 0.28 + 0.57 * np.exp(-(end - 50) / 250)
        b.epoch(
            e,
            {"loss": float(train)},
            {"loss": float(train + 0.03), "dice": float(0.8 - 0.5 * np.exp(-end / 300))},
        )
    return b
