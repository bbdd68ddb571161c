"""Real warm-up schedules raise no verdict: a healthy UNet trained in a plain loop whose lr a
schedule raises from a small start (OneCycleLR's lr/25; a linear warm-up from 0).

GIVEN a real small run (CPU, one thread) instrumented with the Probe as a user's loop would be
WHEN the engine reads it as it grew THEN nothing is shown at all: the warm-up's small first
updates are not "lr too small". (On these data Adam still moves the loss during such a
warm-up; warm-ups slow enough to hold the loss still are tested on recorded shapes in
test_lr_early.py.)
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from octa_tui.diagnosis import diagnose_growing
from octa_tui.protocol.run import RunHistory
from octa_tui.trainer.config import TrainConfig
from octa_tui.trainer.losses import DiceBCELoss
from octa_tui.trainer.models import UNet
from octa_tui.trainer.probe import Probe
from octa_tui.trainer.run_data import load_data

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STEPS = 160  # trained here: the start of a run planned for PLANNED steps
PLANNED = 10000
BATCH = 8


def train_with_schedule(make_schedule, seed: int = 0) -> RunHistory:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    config = replace(TrainConfig.demo(synthetic=64, image_size=32, base_width=8, batch_size=BATCH, seed=seed),
                     telemetry=None, control=None).check()
    data = load_data(config)
    model = UNet(base_width=8)
    criterion = DiceBCELoss(0.3, 0.7)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    schedule = make_schedule(optimizer)
    per_epoch = data.steps_per_epoch(BATCH)
    probe = Probe(model, task="segmentation", loss_components=("bce", "dice"), optimizer=optimizer,
                  criterion=criterion, model_name="UNet",
                  config={"loss": "dice_bce", "train_images": data.train_size, "batch_size": BATCH,
                          "steps_per_epoch": per_epoch, "epochs": math.ceil(PLANNED / per_epoch)})
    history = RunHistory(probe.schema)
    if data.report is not None:
        history.dataset = data.report(probe.run_id)
    seq = [0]

    def collect(step: int, epoch: int, values: np.ndarray) -> None:
        history.steps.append(seq[0], step, epoch, time.time(), np.asarray(values, dtype=np.float32))
        seq[0] += 1

    probe.on_values.append(collect)
    step = 0
    try:
        for epoch in range(math.ceil(STEPS / per_epoch)):
            for images, targets in data.train_batches(BATCH, epoch, seed):
                outputs = model(images)
                loss = criterion(outputs, targets)
                optimizer.zero_grad(set_to_none=True)
                loss.total.backward()
                probe.after_backward()
                optimizer.step()
                schedule.step()
                probe.end_step(loss.total, loss.components, outputs=outputs, activation="sigmoid")
                step += 1
                if step >= STEPS:
                    break
            probe.flush()
    finally:
        probe.close()
    return history


SCHEDULES = {
    # Over a long run, so these steps are all warm-up: the lr is far below its peak throughout.
    "OneCycleLR over 10000 steps": lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=PLANNED),
    # A language-model style warm-up (lr x step / warm-up steps) of the whole planned run.
    "linear warm-up from 0 over 10000 steps": lambda opt: torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / PLANNED),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_a_warm_up_raises_no_verdict(name: str) -> None:
    history = train_with_schedule(SCHEDULES[name])
    ratio = history.steps.values[:, history.schema.index("opt/update_ratio")]
    # The evidence the early decision reads is there: updates far below the healthy ~3e-3 ...
    assert float(np.nanmedian(ratio[:50])) < 3e-4, name
    shown = [(step, v.code) for step, verdicts in diagnose_growing(history, 5) for v in verdicts]
    # ... and yet nothing is shown.
    assert not shown, (name, shown[:5])
