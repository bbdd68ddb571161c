"""A zoo of real training runs in a user's own loop, for measuring the diagnosis engine's accuracy.

The fault scenarios (:mod:`.scenarios`) run the built-in trainer. Users run their own loops and
their own networks, so the accuracy benchmark also trains here, in a plain loop instrumented
with the :class:`~octa_tui.trainer.probe.Probe` the way a user would: healthy runs of five
architectures (the seed's UNet and UNet_Transformer, a CRAFT-like heatmap net with a sigmoid, a
plain small CNN with BatchNorm, a ResNet-encoder UNet) and faults from segmentation projects'
issue trackers (a sigmoid applied twice, a ReLU before BCEWithLogits, a softmax over a single
channel, validation preprocessed differently from training, an lr too high that oscillates without
exploding). On these data BatchNorm nets train well even at Adam lr 0.3 or SGD lr 1.0, because their
weights grow and the relative update shrinks (measured); a weight decay holds the weights' size, so
AdamW at lr 1.0 with weight decay 0.1 keeps |dw|/|w| ten times the healthy size and the loss swings
around a level.

:func:`train_own_loop` returns the run's :class:`~octa_tui.protocol.run.RunHistory` as the
monitor would have received it; :mod:`.scenario_check` feeds it to the engine as it grows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from octa_tui.protocol.run import RunHistory

from .config import TrainConfig
from .losses import DiceBCELoss, HeatmapMSELoss, soft_dice_score
from .models import CraftLike, ResUNet, SmallBNCNN, UNet, UNet_Transformer, UNetHeadFault
from .probe import Probe
from .run_data import load_data


@dataclass(frozen=True)
class ZooRun:
    """One run of the zoo: a network, its task and settings, and the verdict it should get ("" = none)."""

    name: str
    build: Callable[[int], nn.Module]  # base width -> model
    task: str = "segmentation"
    expected: str = ""
    lr: float = 1e-3
    optimizer: str = "adam"  # or "sgd" (momentum 0.9), "adamw"
    weight_decay: float = 0.0
    steps: int = 300
    width: int = 8
    images: int = 64
    size: int = 32
    batch: int = 8
    val_transform: Callable[[torch.Tensor], torch.Tensor] | None = None  # a validation-only preprocessing bug
    data: dict[str, Any] = field(default_factory=dict)  # TrainConfig changes for the data


def _craft_sigmoid(width: int) -> nn.Module:
    return CraftLike(base_width=width, output_activation="sigmoid", batch_norm=True)


HEALTHY: tuple[ZooRun, ...] = (
    ZooRun("unet", lambda w: UNet(base_width=w)),
    ZooRun("unet_transformer", lambda w: UNet_Transformer(base_width=w)),
    ZooRun("craft_sigmoid", _craft_sigmoid, task="heatmap"),
    ZooRun("small_bn_cnn", lambda w: SmallBNCNN(base_width=w)),
    ZooRun("res_unet", lambda w: ResUNet(base_width=w)),
)

FAULTS: tuple[ZooRun, ...] = (
    ZooRun("double-sigmoid", lambda w: UNetHeadFault("sigmoid", base_width=w), expected="squashed_outputs",
           steps=200),
    ZooRun("relu-before-bce-logits", lambda w: UNetHeadFault("relu", base_width=w), expected="bce_at_ln2",
           steps=200),
    ZooRun("softmax-one-channel", lambda w: UNetHeadFault("softmax", base_width=w), expected="constant_loss",
           steps=200),
    ZooRun("val-preprocessing", lambda w: UNet(base_width=w), expected="val_collapse", steps=200,
           val_transform=lambda x: x * 255.0),
    ZooRun("lr-too-high-adamw", lambda w: UNet(base_width=w), expected="lr_too_high", steps=300,
           optimizer="adamw", lr=1.0, weight_decay=0.1),
)


def _optimizer(run: ZooRun, model: nn.Module) -> torch.optim.Optimizer:
    params, decay = model.parameters(), run.weight_decay
    if run.optimizer == "sgd":
        return torch.optim.SGD(params, lr=run.lr, momentum=0.9, weight_decay=decay)
    if run.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=run.lr, weight_decay=decay)
    return torch.optim.Adam(params, lr=run.lr, weight_decay=decay)


class _Tap:
    """Keeps what enters and leaves ``model.out_activation`` (raw outputs and what the loss sees)."""

    def __init__(self, model: nn.Module) -> None:
        self.raw: torch.Tensor | None = None
        self.activated: torch.Tensor | None = None
        module = getattr(model, "out_activation", None)
        self.handle = module.register_forward_hook(self._hook) if isinstance(module, nn.Module) else None

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.raw, self.activated = inputs[0].detach(), output.detach()


def train_own_loop(run: ZooRun, seed: int = 0) -> RunHistory:
    """Train ``run`` in a plain loop with a Probe (no link) and return what the monitor would have."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    heatmap = run.task == "heatmap"
    config = TrainConfig.demo(
        synthetic=run.images, image_size=run.size, base_width=run.width, batch_size=run.batch, seed=seed,
        task=run.task, model="craft" if heatmap else "unet", **run.data,
    )
    config = replace(config, telemetry=None, control=None).check()
    data = load_data(config)
    model = run.build(run.width)
    criterion: nn.Module = HeatmapMSELoss() if heatmap else DiceBCELoss(0.3, 0.7)
    optimizer = _optimizer(run, model)
    components = ("region", "affinity") if heatmap else ("bce", "dice")
    per_epoch = data.steps_per_epoch(run.batch)
    epochs = math.ceil(run.steps / per_epoch)
    probe = Probe(
        model, task=run.task, loss_components=components, optimizer=optimizer, criterion=criterion,
        model_name=type(model).__name__,
        config={"loss": "mse" if heatmap else "dice_bce", "train_images": data.train_size,
                "val_images": data.val_size, "batch_size": run.batch, "steps_per_epoch": per_epoch,
                "epochs": epochs, "output_activation": "sigmoid", "zoo": run.name, "seed": seed},
    )
    history = RunHistory(probe.schema)
    if data.report is not None:
        history.dataset = data.report(probe.run_id)
    seq = [0]

    def collect(step: int, epoch: int, values: np.ndarray) -> None:
        history.steps.append(seq[0], step, epoch, time.time(), np.asarray(values, dtype=np.float32))
        seq[0] += 1

    probe.on_values.append(collect)
    tap = _Tap(model)
    step = 0
    try:
        for epoch in range(epochs):
            model.train()
            for images, targets in data.train_batches(run.batch, epoch, seed):
                outputs = model(images)
                loss = criterion(outputs, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                probe.after_backward()
                optimizer.step()
                raw = tap.raw if tap.raw is not None else outputs
                if heatmap:
                    probe.end_step(loss.total, loss.components, outputs=raw, activated=tap.activated)
                else:
                    probe.end_step(loss.total, loss.components, outputs=raw, activation="sigmoid")
                step += 1
                if step >= run.steps:
                    break
            probe.flush()
            history.add(probe.end_epoch(*_evaluate(model, criterion, data, run, heatmap)))
            if step >= run.steps:
                break
    finally:
        if tap.handle is not None:
            tap.handle.remove()
        probe.close()
    return history


@torch.no_grad()
def _evaluate(model: nn.Module, criterion: nn.Module, data: Any, run: ZooRun,
              heatmap: bool) -> tuple[dict[str, float], dict[str, float]]:
    """(train, val) metrics of the epoch: losses, and Dice for segmentation."""
    model.eval()
    out = []
    for split, batches in (("train", data.train_batches(run.batch, 0, 0)), ("val", data.val_batches(run.batch))):
        losses, dices = [], []
        for images, targets in batches:
            if split == "val" and run.val_transform is not None:
                images = run.val_transform(images)
            outputs = model(images)
            losses.append(float(criterion(outputs, targets).total))
            if not heatmap:
                dices.append(float(soft_dice_score((torch.sigmoid(outputs) > 0.5).float(), targets)))
        metrics = {"loss": float(np.mean(losses))} if losses else {}
        if dices:
            metrics["dice"] = float(np.mean(dices))
        out.append(metrics)
    model.train()
    return out[0], out[1]
