"""Run facts: one baseline, one reading of the settings and of the run's length."""

from __future__ import annotations

import math

import pytest
from diagnosis_histories import Builder, heatmap_schema, segmentation_schema

from octa_tui.diagnosis import facts
from octa_tui.diagnosis.baseline import bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline


def test_settings_are_the_newest_values_as_set() -> None:
    b = Builder().steps(10, opt__lr=1e-3).steps(5, opt__lr=3e-4, opt__clip=1.0)
    s = facts.settings_in_force(b.history)
    assert s.lr == 3e-4  # float32 0.000300000014 read back as set
    assert s.clip == 1.0 and s.bce_weight == 0.3 and s.dice_weight == 0.7
    assert math.isnan(s.amp_scale)


def test_dice_bce_baseline_uses_the_weights_in_force() -> None:
    b = Builder().dataset().steps(20, opt__bce_weight=0.5, opt__dice_weight=0.5)
    base = facts.constant_baseline(b.history)
    assert base is not None and base.channel == "loss/total" and base.how == "constant"
    assert base.loss == pytest.approx(dice_bce_baseline(0.10, 0.5, 0.5).loss)


def test_dice_alone_when_weights_are_unknown() -> None:
    schema = segmentation_schema(opt=("lr", "pos_weight", "clip", "update_ratio"))
    b = Builder(schema).dataset().steps(5)
    base = facts.constant_baseline(b.history)
    assert base is not None and base.channel == "loss/dice"
    assert base.loss == pytest.approx(dice_loss_baseline(0.10).loss)


def test_bce_baseline_with_pos_weight() -> None:
    b = Builder(segmentation_schema(config={"loss": "bce"})).dataset().steps(5, opt__pos_weight=9.0)
    base = facts.constant_baseline(b.history)
    assert base is not None and base.channel == "loss/bce"
    assert base.loss == pytest.approx(bce_baseline(0.10, 9.0).loss)


def test_mse_baseline_counts_the_summed_terms() -> None:
    b = Builder(heatmap_schema()).dataset(target_var=0.05).steps(5)
    base = facts.constant_baseline(b.history)
    assert base is not None and base.channel == "loss/total" and base.how == "mean"
    assert base.loss == pytest.approx(mse_baseline(0.05, 2).loss)


def test_no_report_no_baseline() -> None:
    assert facts.constant_baseline(Builder().steps(5).history) is None


def test_loss_kind_from_observed_functions() -> None:
    schema = segmentation_schema(config={"loss": "", "loss_functions": ["mse_loss"]})
    assert facts.loss_kind(Builder(schema).history) == "mse"
    schema = segmentation_schema(config={"loss": "", "loss_functions": ["binary_cross_entropy_with_logits"]})
    assert facts.loss_kind(Builder(schema).history) == "dice_bce"  # a loss/dice channel is streamed too
    assert facts.loss_kind(Builder(segmentation_schema()).history) == "dice_bce"


def test_run_length_from_the_plan_and_measured_epochs() -> None:
    b = Builder(segmentation_schema(config={"epochs": 10, "steps_per_epoch": 100})).steps(250)
    length = facts.run_length(b.history)
    assert length.planned_steps == 1000 and length.planned_epochs == 10
    assert length.progress == pytest.approx(0.25) and length.step == 249 and length.epoch == 2
    b = Builder(segmentation_schema(config={"epochs": 10, "max_steps": 300})).steps(250)
    length = facts.run_length(b.history)
    assert length.steps_per_epoch == 100.0  # measured: epoch 1 ended after 100 rows
    assert length.planned_steps == 300 and length.planned_epochs == 3


def test_amp_mode() -> None:
    schema = segmentation_schema(config={"amp": "bf16"})
    assert facts.amp_mode(Builder(schema).history) == "bf16"
    assert facts.amp_mode(Builder().history) == ""


def test_run_facts_bundle() -> None:
    b = Builder().dataset().steps(20)
    f = facts.run_facts(b.history)
    assert f.is_segmentation and f.baseline is not None and f.baseline == facts.constant_baseline(b.history)
    assert math.isnan(f.grads_clipped_before_probe)
