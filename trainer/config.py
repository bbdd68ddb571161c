"""The settings of one training run, in one dataclass, checked before anything starts.

``octa-train`` fills a :class:`TrainConfig` from its flags, the demo and the fault
scenarios build one in code, and the loop reads it. :meth:`TrainConfig.check` turns a bad
combination into one :class:`ConfigError` naming the setting and the fix.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

TASKS = ("segmentation", "heatmap")
MODELS_BY_TASK = {
    "segmentation": ("unet", "unet_transformer", "plain_sigmoid", "unet_double_sigmoid", "unet_relu_head",
                     "unet_softmax_head"),
    "heatmap": ("craft", "craft_vgg16"),
}
OUTPUT_ACTIVATIONS = ("sigmoid", "none")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adam", "sgd", "adamw")
LOSSES_BY_TASK = {"segmentation": ("dice_bce",), "heatmap": ("mse", "mse_ohem")}  # the first is the default


class ConfigError(ValueError):
    """A setting that cannot work; the message names the setting and what would."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs: data, model, loss, optimisation, output and endpoints.

    ``pos_weight`` is a number, ``"auto"`` (background/foreground of the training masks)
    or None (unweighted BCE). ``max_steps`` stops early (0: run all epochs). ``telemetry``
    and ``control`` are endpoints to bind (None: no link, e.g. in tests). ``record`` and
    ``checkpoint_dir`` default to a run folder under ``runs_dir``.
    """

    # data
    data_dir: str | None = None
    synthetic: int = 0
    soft_masks: bool = False
    low_foreground: bool = False
    contrast: float = 1.0
    binarize_masks: bool = False
    skip_bad: bool = False
    image_size: int = 64
    normalize: bool = True
    # False: the validation images skip the /255 scaling that training applies (they reach the model
    # as raw 0-255 values): the val-collapse scenario's preprocessing bug
    val_normalize: bool = True
    val_fraction: float = 0.2
    # model and loss
    task: str = "segmentation"
    model: str = "unet"
    base_width: int = 16
    batch_norm: bool = True  # BatchNorm in the UNet and the CRAFT-like model (off: seed 002's plain net)
    output_activation: str = "sigmoid"
    loss: str = ""  # "": the task's default (dice_bce, or mse for heatmaps); mse_ohem: CRAFT-style hard-negative MSE
    bce_weight: float = 0.3
    dice_weight: float = 0.7
    pos_weight: float | str | None = None
    # optimisation
    optimizer: str = "adam"  # adam, sgd (momentum 0.9), or adamw (decoupled weight decay)
    weight_decay: float = 0.0  # the optimizer's weight decay (adamw: decoupled, scaled by the lr)
    batch_size: int = 8
    epochs: int = 10
    max_steps: int = 0
    lr: float = 1e-3
    step_size: int = 20
    gamma: float = 0.8
    clip: float = 0.0
    amp: bool = False
    seed: int = 0
    device: str = "auto"
    # output
    runs_dir: str = "runs"
    checkpoint_dir: str | None = None
    record: str | None = None
    resume: str | None = None
    preview_every: int = 50
    telemetry: str | None = "tcp://127.0.0.1:0"
    control: str | None = "tcp://127.0.0.1:0"
    keys: str | None = None  # CurveZMQ key folder (trainer.key_secret, authorized/): see protocol/keys.py
    insecure: bool = False  # accept a non-loopback endpoint without keys
    scenario: str = ""

    @classmethod
    def demo(cls, **changes: Any) -> TrainConfig:
        """The demo run: a width-16 UNet on 256 synthetic 64x64 vessel images, batch 8."""
        return replace(cls(synthetic=256, epochs=30, base_width=16, batch_size=8, image_size=64), **changes)

    def check(self) -> TrainConfig:
        """Return self if the settings can work together, else raise ConfigError."""
        if self.task not in TASKS:
            raise ConfigError(f"--task {self.task!r} is unknown; choose one of {', '.join(TASKS)}")
        models = MODELS_BY_TASK[self.task]
        if self.model not in models:
            raise ConfigError(
                f"--model {self.model!r} does not fit --task {self.task}; choose one of {', '.join(models)}"
            )
        if (self.data_dir is None) == (self.synthetic <= 0):
            raise ConfigError("give exactly one data source: --data DIR or --synthetic N (N >= 1)")
        if self.data_dir is not None and self.task == "heatmap":
            raise ConfigError("--task heatmap trains on synthetic heatmaps only; use --synthetic N")
        if self.output_activation not in OUTPUT_ACTIVATIONS:
            raise ConfigError(f"--output-activation must be one of {', '.join(OUTPUT_ACTIVATIONS)}")
        losses = LOSSES_BY_TASK[self.task]
        if self.loss and self.loss not in losses:
            raise ConfigError(f"--loss {self.loss!r} does not fit --task {self.task}; choose one of {', '.join(losses)}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"--device must be one of {', '.join(DEVICES)}")
        divisor = {"craft": 4, "craft_vgg16": 16}.get(self.model, 8)
        _at_least("--image-size", self.image_size, divisor)
        if self.image_size % divisor:
            raise ConfigError(f"--image-size {self.image_size} must be divisible by {divisor} for --model {self.model}")
        for flag, value in (("--base-width", self.base_width), ("--batch-size", self.batch_size),
                            ("--epochs", self.epochs), ("--step-size", self.step_size)):
            _at_least(flag, value, 1)
        for flag, value in (("--max-steps", self.max_steps), ("--preview-every", self.preview_every)):
            _at_least(flag, value, 0)
        if self.model == "unet_transformer" and self.base_width % 4:
            raise ConfigError("--model unet_transformer needs --base-width divisible by 4 (attention heads)")
        _in_range("--lr", self.lr, 0.0, 1.0, open_low=True)
        _in_range("--gamma", self.gamma, 0.0, 1.0, open_low=True)
        _in_range("--weight-decay", self.weight_decay, 0.0, 1.0)
        _in_range("--clip", self.clip, 0.0, 1e6)
        _in_range("--bce-weight", self.bce_weight, 0.0, 1.0)
        _in_range("--dice-weight", self.dice_weight, 0.0, 1.0)
        _in_range("--val-fraction", self.val_fraction, 0.0, 0.9, open_low=True)
        _in_range("--contrast", self.contrast, 0.0, 2.0, open_low=True)
        if self.contrast != 1.0 and (self.data_dir is not None or self.task == "heatmap"):
            raise ConfigError("--contrast applies to synthetic vessels only (--synthetic N, --task segmentation)")
        if not self.val_normalize and not self.normalize:
            raise ConfigError("val_normalize=False leaves validation images unscaled while training scales them; "
                              "with --no-normalize neither is scaled, so there is no difference to reproduce")
        if self.binarize_masks and self.task == "heatmap":
            raise ConfigError("--binarize-masks applies to segmentation masks; heatmap targets are continuous")
        if self.bce_weight + self.dice_weight <= 0:
            raise ConfigError("--bce-weight and --dice-weight cannot both be 0; the loss would be zero")
        if isinstance(self.pos_weight, str):
            if self.pos_weight != "auto":
                raise ConfigError(f"--pos-weight must be a number > 0 or 'auto', got {self.pos_weight!r}")
        elif self.pos_weight is not None:
            _in_range("--pos-weight", self.pos_weight, 0.0, 10000.0, open_low=True)
        if self.pos_weight is not None and self.task == "heatmap":
            raise ConfigError("--pos-weight applies to --task segmentation only (the heatmap loss is MSE)")
        return self

    @property
    def loss_name(self) -> str:
        """The loss the run trains with: ``loss`` if set, else ``dice_bce`` for segmentation, ``mse`` for heatmaps."""
        return self.loss or LOSSES_BY_TASK.get(self.task, ("dice_bce",))[0]

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for checkpoints (so a resumed run can tell what it resumes)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict`; unknown keys (from a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def _at_least(flag: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{flag} must be a whole number >= {low}, got {value!r}")


def _in_range(flag: str, value: Any, low: float, high: float, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    if (value <= low if open_low else value < low) or value > high:
        bracket = "(" if open_low else "["
        raise ConfigError(f"{flag} = {value!r} is out of range; use a value in {bracket}{low:g}, {high:g}]")
