"""Framework metric mappings become the monitor's epoch summaries; each epoch is published once,
with the validation metrics of that epoch, whichever order the framework calls its hooks in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from octa_tui.trainer.integrations.epochs import EpochGate
from octa_tui.trainer.integrations.metrics import as_float, split_metrics


def test_lightning_callback_metrics_split_into_train_and_val_named_as_the_monitor_names_them():
    train, val = split_metrics({
        "val_dice": torch.tensor(0.8), "val_loss": torch.tensor(0.4), "train_bce_step": torch.tensor(0.5),
        "train_bce_epoch": torch.tensor(0.45), "train_bce": torch.tensor(0.5), "epoch": 3,
        "val/iou": 0.7, "images": torch.zeros(2, 2),
    })
    assert val == pytest.approx({"dice": 0.8, "loss": 0.4, "iou": 0.7})
    assert train == pytest.approx({"train_bce": 0.5})  # the epoch aggregate replaced the last value
    assert set(train) == {"train_bce"}


def test_hf_evaluation_metrics_drop_the_bookkeeping():
    train, val = split_metrics({"eval_loss": 0.61, "eval_dice": 0.3, "eval_runtime": 0.01,
                                "eval_samples_per_second": 1300.0, "eval_steps_per_second": 160.0, "epoch": 1.0})
    assert train == {} and val == pytest.approx({"loss": 0.61, "dice": 0.3})


def test_a_single_dice_named_otherwise_is_also_the_dice():
    assert split_metrics({"val_mean_dice": 0.7})[1] == pytest.approx({"mean_dice": 0.7, "dice": 0.7})
    # two candidates: which one is "the" Dice is not ours to guess
    assert "dice" not in split_metrics({"val_mean_dice": 0.7, "val_dice_fg": 0.6})[1]


@pytest.mark.parametrize(("value", "number"), [(1, 1.0), (0.5, 0.5), (torch.tensor([2.0]), 2.0),
                                               (np.float32(3.0), 3.0), (np.array([4.0]), 4.0)])
def test_single_numbers_are_floats(value, number):
    assert as_float(value) == number


@pytest.mark.parametrize("value", [True, "0.3", None, torch.zeros(3), [1.0]])
def test_anything_else_is_not_a_metric(value):
    assert as_float(value) is None


def test_nan_stays_nan():
    assert math.isnan(as_float(float("nan")))


class Published:
    def __init__(self):
        self.epochs: list[tuple[dict, dict]] = []

    def end_epoch(self, train, val):
        self.epochs.append((dict(train), dict(val)))


def test_validation_before_the_epoch_end_goes_into_that_epoch():  # Lightning's order
    watch = Published()
    gate = EpochGate(watch)
    gate.val_done({"dice": 0.5})
    gate.train_done({"loss": 1.0})
    gate.train_done({"loss": 0.9})  # no validation this epoch
    assert watch.epochs == [({"loss": 1.0}, {"dice": 0.5}), ({"loss": 0.9}, {})]


def test_validation_after_the_epoch_end_completes_the_held_epoch():  # the HF Trainer's order
    watch = Published()
    gate = EpochGate(watch)
    gate.train_done({"loss": 1.0}, expect_val=True)
    assert watch.epochs == []
    gate.val_done({"loss": 0.8})
    gate.train_done({"loss": 0.9}, expect_val=True)
    gate.flush()  # the run ended before the second evaluation
    gate.flush()
    assert watch.epochs == [({"loss": 1.0}, {"loss": 0.8}), ({"loss": 0.9}, {})]

