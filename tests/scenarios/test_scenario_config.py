"""GIVEN the scenario names WHEN `octa-train --scenario NAME` builds its configuration THEN each
is a valid run with its fault in place, session flags still apply, and a wrong name is one clear
error naming the choices."""

from __future__ import annotations

import pytest

from octa_tui.trainer.cli import build_parser, config_from_args, main
from octa_tui.trainer.scenarios import SCENARIOS, ScenarioError, scenario_config, scenario_names


def _config(*argv: str):
    return config_from_args(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_builds_a_valid_configuration_with_its_fault(name: str) -> None:
    config = scenario_config(name)
    assert config.scenario == name
    for key, value in SCENARIOS[name].changes.items():
        assert getattr(config, key) == value


def test_the_flag_keeps_session_settings_and_applies_the_fault() -> None:
    config = _config("--scenario", "tiny-lr", "--max-steps", "7", "--seed", "3", "--telemetry", "tcp://127.0.0.1:0")
    assert (config.lr, config.max_steps, config.seed, config.scenario) == (1e-6, 7, 3, "tiny-lr")
    assert config.synthetic > 0  # the scenario brings its own data


def test_binarize_masks_is_the_soft_masks_restart_fix() -> None:
    config = _config("--scenario", "soft-masks", "--binarize-masks")
    assert config.soft_masks and config.binarize_masks


def test_an_unknown_scenario_is_one_error_listing_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--scenario", "nope"]) == 2
    err = capsys.readouterr().err
    assert "'nope' is unknown" in err and "low-foreground" in err and "plateau" in err
    with pytest.raises(ScenarioError):
        scenario_config("nope")


def test_scenario_with_a_data_folder_is_refused(tmp_path) -> None:
    assert main(["--scenario", "healthy", "--data", str(tmp_path)]) == 2


def test_new_flags_are_checked() -> None:
    assert _config("--synthetic", "8", "--contrast", "0.35").contrast == 0.35
    assert main(["--synthetic", "8", "--contrast", "3"]) == 2
    assert main(["--task", "heatmap", "--synthetic", "8", "--binarize-masks"]) == 2
    assert _config("--synthetic", "8", "--optimizer", "sgd", "--no-batch-norm").optimizer == "sgd"


@pytest.mark.parametrize(
    ("with_fix", "without", "expected"),
    [
        (0.5, 1.0, "helped"),  # half the twin's loss
        (1.5, 1.0, "hurt"),
        (0.99, 1.0, "no effect"),  # within the margin
        (0.5, float("nan"), "helped"),  # the twin diverged, the fixed run did not
        (0.5, float("inf"), "helped"),
        (float("nan"), 0.5, "hurt"),  # the fix made it diverge
        (float("nan"), float("nan"), "no effect"),  # both diverged: nothing to tell apart
        (1e-9, 0.0, "no effect"),  # a twin at exactly 0: the difference is judged, not a ratio
        (0.5, 0.0, "hurt"),
    ],
)
def test_the_twin_comparison_counts_a_diverged_run_as_the_worse_one(with_fix, without, expected) -> None:
    from octa_tui.diagnosis.trial import TrialThresholds
    from octa_tui.trainer.scenario_check import loss_twin_outcome

    _, outcome = loss_twin_outcome(with_fix, without, noise=0.0, t=TrialThresholds())
    assert outcome == expected


def test_val_collapse_scales_training_images_but_not_validation_images() -> None:
    # GIVEN the val-collapse scenario's data WHEN a training and a validation image are read
    from octa_tui.trainer.run_data import load_data

    data = load_data(scenario_config("val-collapse", small=True))
    train_image, _ = data.train[0]
    val_image, val_target = data.val[0]
    # THEN training sees [0, 1], validation the raw 0-255 values of the same stored images; targets are unchanged
    assert 0.0 <= float(train_image.min()) and float(train_image.max()) <= 1.0
    assert float(val_image.max()) > 1.0
    stored = data.val.dataset.images[data.val.indices[0]]
    assert float(val_image.max()) == float(stored.max())
    assert 0.0 <= float(val_target.min()) and float(val_target.max()) <= 1.0
    assert "validation not normalised" in data.source
    # AND the restart fix gives validation the training preprocessing back
    fixed = load_data(scenario_config("val-collapse", small=True, **SCENARIOS["val-collapse"].restart_fix))
    assert float(fixed.val[0][0].max()) <= 1.0


def test_an_unscaled_validation_needs_a_scaled_training() -> None:
    from octa_tui.trainer.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="no difference to reproduce"):
        TrainConfig.demo(normalize=False, val_normalize=False).check()
