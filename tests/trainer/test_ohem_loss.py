"""CRAFT's heatmap loss with online hard negative mining (``--loss mse_ohem``): its value on
hand-made maps, which negatives it picks, images without positives, and how a run selects it."""

from __future__ import annotations

import math

import pytest
import torch

from octa_tui.trainer.cli import build_parser, config_from_args
from octa_tui.trainer.config import ConfigError, TrainConfig
from octa_tui.trainer.losses import HeatmapMSELoss, HeatmapOHEMLoss, make_loss, ohem_squared_error


def _maps(values: list[list[float]]) -> torch.Tensor:
    """One image (1, h, w) from rows of values."""
    return torch.tensor([values], dtype=torch.float32)


def test_the_value_is_positives_plus_three_times_as_many_hardest_negatives_over_the_positive_count():
    # GIVEN a 3x3 map with one positive pixel (target 1, predicted 0.5) and eight negatives
    # whose squared errors are 0.01, 0.04, ..., 0.64
    targets = _maps([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    predictions = _maps([[0.5, 0.1, 0.2], [0.3, 0.4, 0.5], [0.6, 0.7, 0.8]])
    # WHEN the OHEM squared error is taken
    value = ohem_squared_error(predictions, targets).item()
    # THEN it is (0.25 + the three worst negatives 0.64 + 0.49 + 0.36) / 1, not a mean over 9 pixels
    assert value == pytest.approx(0.25 + 0.64 + 0.49 + 0.36, rel=1e-6)
    mean = torch.mean((predictions - targets) ** 2).item()
    assert value > 5 * mean


def test_the_hardest_negatives_are_picked_wherever_they_are_and_easy_ones_do_not_count():
    # GIVEN two positives and, among many perfect negatives, one badly wrong negative
    targets = torch.zeros(1, 8, 8)
    targets[0, 0, 0] = targets[0, 0, 1] = 0.9
    predictions = targets.clone()
    predictions[0, 7, 7] = -3.0  # the seed's kind of output: far below 0 on the background
    # WHEN evaluated, and again with the easy negatives made slightly wrong
    hard_only = ohem_squared_error(predictions, targets).item()
    predictions[0, 4, 4] = 0.01
    with_easy = ohem_squared_error(predictions, targets).item()
    # THEN the bad pixel's 9.0 is counted, divided by the 2 positives, and the gradient reaches it
    assert hard_only == pytest.approx(9.0 / 2, rel=1e-6)
    assert with_easy == pytest.approx((9.0 + 0.0001) / 2, rel=1e-5)  # 6 negatives kept: 9, 1e-4 and zeros
    predictions.requires_grad_(True)
    ohem_squared_error(predictions, targets).backward()
    assert predictions.grad[0, 7, 7].item() == pytest.approx(2 * -3.0 / 2, rel=1e-6)


def test_only_three_negatives_per_positive_are_kept():
    # GIVEN one positive and four equally wrong negatives
    targets = _maps([[1.0, 0.0, 0.0, 0.0, 0.0]])
    predictions = _maps([[1.0, 0.5, 0.5, 0.5, 0.5]])
    # THEN three of them count (0.75), not four (1.0)
    assert ohem_squared_error(predictions, targets).item() == pytest.approx(0.75, rel=1e-6)


def test_an_image_without_positives_gets_the_mean_of_its_worst_pixels_not_nan():
    # GIVEN an empty target map (no characters) with a few wrong pixels
    targets = torch.zeros(1, 4, 4)
    predictions = torch.zeros(1, 4, 4)
    predictions[0, 0, 0], predictions[0, 1, 1] = 2.0, 1.0
    # WHEN evaluated with the worst 2 pixels, and with the default 500 (more than the 16 there are)
    worst_two = ohem_squared_error(predictions, targets, no_positive_pixels=2).item()
    default = ohem_squared_error(predictions, targets).item()
    # THEN both are defined: the mean over the 2 worst, or over every pixel
    assert worst_two == pytest.approx((4.0 + 1.0) / 2)
    assert default == pytest.approx(5.0 / 16)
    assert math.isfinite(ohem_squared_error(torch.zeros(1, 4, 4), targets).item())


def test_the_batch_value_is_the_mean_of_the_images():
    targets = torch.cat([_maps([[1.0, 0.0]]), _maps([[0.0, 0.0]])])
    predictions = torch.cat([_maps([[0.0, 1.0]]), _maps([[0.0, 3.0]])])
    # image 1: (1 + 1) / 1 = 2; image 2 (no positives): mean of its 2 pixels = 4.5
    assert ohem_squared_error(predictions, targets).item() == pytest.approx((2.0 + 4.5) / 2)


def test_the_heatmap_loss_reports_region_and_affinity_and_is_larger_than_the_mean_mse():
    # GIVEN seed 002-like outputs (far outside [0, 1]) on sparse heatmaps
    torch.manual_seed(0)
    targets = torch.zeros(2, 2, 16, 16)
    targets[:, :, 4:7, 4:9] = 0.8
    predictions = torch.randn(2, 2, 16, 16) * 3.0
    # WHEN both heatmap losses are evaluated
    ohem = make_loss("mse_ohem")(predictions, targets)
    mse = make_loss("mse")(predictions, targets)
    # THEN the OHEM loss has the same components, sums them, and weighs the errors by the positives
    assert isinstance(make_loss("mse_ohem"), HeatmapOHEMLoss) and isinstance(make_loss("mse"), HeatmapMSELoss)
    assert set(ohem.components) == {"region", "affinity"}
    assert ohem.total.item() == pytest.approx((ohem.components["region"] + ohem.components["affinity"]).item())
    assert ohem.total.item() > 2 * mse.total.item()
    assert HeatmapOHEMLoss.loss_expects_probabilities and not HeatmapOHEMLoss.input_is_logits


def test_bad_shapes_and_settings_are_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"\(n, 2, h, w\)"):
        HeatmapOHEMLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError, match="positive_threshold"):
        HeatmapOHEMLoss(positive_threshold=0.0)
    with pytest.raises(ValueError, match="negative_ratio"):
        HeatmapOHEMLoss(negative_ratio=0)


def test_a_heatmap_run_selects_the_loss_by_name_and_keeps_mse_as_the_default():
    # GIVEN octa-train flags
    parser = build_parser()
    default = config_from_args(parser.parse_args(["--task", "heatmap", "--synthetic", "8"]))
    chosen = config_from_args(parser.parse_args(["--task", "heatmap", "--synthetic", "8", "--loss", "mse_ohem"]))
    # THEN the heatmap default is still the mean MSE and --loss mse_ohem picks CRAFT's loss
    assert default.loss_name == "mse" and chosen.loss_name == "mse_ohem"
    assert TrainConfig(synthetic=8).loss_name == "dice_bce"
    # AND a loss that does not fit the task is refused, naming the ones that do
    with pytest.raises(ConfigError, match="mse_ohem"):
        TrainConfig(synthetic=8, task="heatmap", model="craft", loss="dice_bce").check()
    with pytest.raises(ConfigError, match="dice_bce"):
        TrainConfig(synthetic=8, loss="mse_ohem").check()


def test_a_real_heatmap_run_with_the_ohem_loss_is_recorded_under_its_name_and_diagnosed_as_a_heatmap_run(
    tmp_path, monkeypatch
):
    """GIVEN seed 002's bug (no final sigmoid) trained briefly with ``--loss mse_ohem`` WHEN the
    recording is fed to the engine THEN the run says which loss it used, the missing sigmoid is
    named, and no mask rule (binary masks, class imbalance) fires on its continuous heatmaps."""
    from dataclasses import replace

    from octa_tui.trainer.scenario_check import diagnose_as_it_grows, train_recorded

    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    torch.set_num_threads(1)
    config = replace(TrainConfig.demo(task="heatmap", model="craft", output_activation="none", loss="mse_ohem"),
                     synthetic=32, image_size=32, base_width=8, max_steps=40).check()
    history = train_recorded(config, tmp_path, "ohem")
    seen = diagnose_as_it_grows(history)
    assert history.schema.config["loss"] == "mse_ohem"
    assert [k for k in history.schema.loss] == ["total", "region", "affinity"]
    assert "missing_sigmoid" in seen.first
    assert not {"masks_not_binary", "class_imbalance"} & set(seen.first)
