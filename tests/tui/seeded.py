"""A seeded, realistic-looking segmentation run for UI tests, snapshots and the UI benchmark.

The numbers follow the seed's "stuck at 0.6" story (loss flattening near 0.6, Dice term high,
gradients fine) so the panels have something recognisable to draw; every value comes from
a seeded generator, so snapshots are stable.
"""

from __future__ import annotations

import numpy as np

from octa_tui.protocol.messages import (
    DatasetReport,
    EpochSummary,
    Event,
    ModelSummary,
    Preview,
    Schema,
    StepChunk,
)
from octa_tui.protocol.run import RunHistory

RUN_ID = "0123456789abcdef"
LAYERS = (
    "enc1.conv1.weight", "enc1.conv2.weight", "enc2.conv1.weight", "enc2.conv2.weight",
    "bottleneck.conv1.weight", "bottleneck.conv2.weight", "dec2.conv1.weight", "dec2.conv2.weight",
    "dec1.conv1.weight", "dec1.conv2.weight", "head.weight",
)


def seeded_schema(steps_per_epoch: int = 50, epochs: int = 20) -> Schema:
    """The schema a UNet Dice+BCE run announces."""
    return Schema(
        run_id=RUN_ID,
        task="segmentation",
        model=ModelSummary("UNet", 1_940_000, "cpu"),
        loss=("total", "bce", "dice"),
        grad=LAYERS,
        gradstat=("total_norm", "n_over_bound", "max_param_norm", "nonfinite"),
        out=("raw_min", "raw_max", "raw_mean", "act_min", "act_max", "act_mean", "frac_outside_01"),
        opt=("lr", "bce_weight", "dice_weight", "pos_weight", "clip", "update_ratio"),
        time=("step_s", "samples_per_s", "memory_mb"),
        started_at=1_700_000_000.0,
        config={"loss": "dice_bce", "epochs": epochs, "steps_per_epoch": steps_per_epoch, "batch_size": 8,
                "train_images": 400, "val_images": 100, "image_size": 64, "base_width": 16, "scenario": "",
                "seed": 0},
    )


def seeded_chunk(schema: Schema, steps: int, seed: int = 0, start: int = 0, lr_change_at: int | None = None) -> StepChunk:
    """``steps`` rows of plausible values (deterministic for a given seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(start, start + steps, dtype=np.float64)
    progress = t / max(start + steps, 1)
    dice = 0.42 + 0.4 * np.exp(-6 * progress) + rng.normal(0, 0.01, steps)
    bce = 0.30 + 0.4 * np.exp(-8 * progress) + rng.normal(0, 0.01, steps)
    total = 0.3 * bce + 0.7 * dice
    values = np.zeros((steps, schema.width), dtype=np.float32)
    col = {key: i for i, key in enumerate(schema.channels)}
    values[:, col["loss/total"]] = total
    values[:, col["loss/bce"]] = bce
    values[:, col["loss/dice"]] = dice
    for depth, layer in enumerate(schema.grad):
        scale = 0.05 * (0.7 ** depth)
        values[:, col[f"grad/{layer}"]] = scale * np.exp(rng.normal(0, 0.2, steps)) * (1 + np.exp(-5 * progress))
    values[:, col["gradstat/total_norm"]] = values[:, [col[f"grad/{layer}"] for layer in schema.grad]].sum(axis=1)
    values[:, col["gradstat/max_param_norm"]] = values[:, col[f"grad/{schema.grad[0]}"]]
    values[:, col["out/raw_min"]] = -6 + rng.normal(0, 0.1, steps)
    values[:, col["out/raw_max"]] = 4 + rng.normal(0, 0.1, steps)
    values[:, col["out/raw_mean"]] = -2 + rng.normal(0, 0.05, steps)
    values[:, col["out/act_min"]] = 0.002
    values[:, col["out/act_max"]] = 0.98
    values[:, col["out/act_mean"]] = 0.12
    lr = np.full(steps, 1e-4)
    if lr_change_at is not None and start <= lr_change_at < start + steps:
        lr[lr_change_at - start:] = 5e-4
    values[:, col["opt/lr"]] = lr
    values[:, col["opt/bce_weight"]] = 0.3
    values[:, col["opt/dice_weight"]] = 0.7
    values[:, col["opt/pos_weight"]] = 1.0
    values[:, col["opt/clip"]] = 0.0
    values[:, col["opt/update_ratio"]] = 1e-3 * np.exp(rng.normal(0, 0.1, steps))
    values[:, col["time/step_s"]] = 0.05
    values[:, col["time/samples_per_s"]] = 160.0
    values[:, col["time/memory_mb"]] = 512.0
    return StepChunk(
        run_id=schema.run_id,
        seq=np.arange(start, start + steps, dtype=np.uint64),
        step=np.arange(start, start + steps, dtype=np.int64),
        epoch=(np.arange(start, start + steps) // int(schema.config["steps_per_epoch"])).astype(np.int32),
        time=schema.started_at + 0.05 * (np.arange(start, start + steps, dtype=np.float64) + 1),
        values=values,
    )


def seeded_preview(step: int, epoch: int, seed: int = 0) -> Preview:
    """A vessel-like image, its mask and a blurry prediction, 32x32."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    mask = ((np.abs(yy - 0.6 * xx - 6) < 1.5) | (np.abs(xx - 20) < 1.2)).astype(np.uint8) * 255
    image = np.clip(60 + 0.6 * mask + rng.normal(0, 20, (32, 32)), 0, 255).astype(np.uint8)
    prediction = np.clip(0.7 * mask + rng.normal(30, 15, (32, 32)), 0, 255).astype(np.uint8)
    return Preview(RUN_ID, step, epoch, image, mask, prediction)


def seeded_history(steps: int = 600, seed: int = 0, *, lr_change_at: int | None = 400) -> RunHistory:
    """A run ``steps`` long with epochs, a dataset report, a preview, and one lr change."""
    schema = seeded_schema()
    history = RunHistory(schema)
    history.add(seeded_chunk(schema, steps, seed, lr_change_at=lr_change_at))
    per_epoch = int(schema.config["steps_per_epoch"])
    for epoch in range(steps // per_epoch):
        dice = 0.40 - 0.2 * np.exp(-0.5 * epoch)
        step = (epoch + 1) * per_epoch - 1
        history.add(EpochSummary(RUN_ID, epoch, step, schema.started_at + 0.05 * step, {"loss": 0.6},
                                 {"dice": float(dice), "loss": 0.62}))
    history.add(DatasetReport(RUN_ID, "synthetic vessels (seed 0)", 500, 2, (0.0, 1.0), 0.087,
                              tuple([0.087] * 8), 10.5, image_size=(64, 64), train_images=400, val_images=100,
                              target_mean=0.087, target_var=0.079))
    history.add(seeded_preview(steps - 1, steps // per_epoch))
    history.add(Event(RUN_ID, 0, schema.started_at, "run_started", "run started"))
    if lr_change_at is not None and lr_change_at < steps:
        history.add(Event(RUN_ID, lr_change_at, schema.started_at + 0.05 * lr_change_at, "command_applied",
                          "lr 0.0001 -> 0.0005", {"op": "set_lr", "old": 1e-4, "new": 5e-4}))
    return history
