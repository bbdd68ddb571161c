"""GIVEN real (small, CPU) training runs recorded by the trainer WHEN today's diagnosis engine
reads them step by step as a monitor would THEN a healthy run raises no verdict at all (notes
included), and a CRAFT-like run without its sigmoid is diagnosed as such (seed 002). A network
and loop not of the built-in trainer (the zoo's ResNet-encoder UNet, a double sigmoid) are read
the same way."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from octa_tui.diagnosis import Severity, diagnose_growing
from octa_tui.protocol.recording import read_recording
from octa_tui.protocol.run import RunHistory
from octa_tui.trainer.config import TrainConfig
from octa_tui.trainer.loop import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

EVERY = 10  # steps between evaluations, as a monitor refreshing during a fast run would


def _train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **changes) -> RunHistory:
    torch.set_num_threads(1)
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    config = TrainConfig.demo(
        synthetic=64, image_size=32, base_width=8, epochs=1000,
        runs_dir=str(tmp_path), record=str(tmp_path / "run.octa"), preview_every=0, **changes,
    )
    Trainer(config).run()
    recording = read_recording(tmp_path / "run.octa")
    assert not recording.warnings
    return recording.history


def _verdicts_as_the_run_grows(full: RunHistory) -> list[tuple[int, list]]:
    """Feed the recorded run to a live engine EVERY steps, with the epochs finished so far."""
    return list(diagnose_growing(full, EVERY))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_healthy_run_raises_no_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    history = _train(tmp_path, monkeypatch, seed=seed, max_steps=300)
    assert len(history.steps) == 300
    shown = [(step, v.code, v.evidence) for step, verdicts in _verdicts_as_the_run_grows(history)
             for v in verdicts if v.severity >= Severity.INFO]
    assert shown == [], f"a rule fired on a healthy run (seed {seed}): {shown[:3]}"


def test_a_resnet_encoder_unet_in_a_plain_loop_raises_no_verdict() -> None:
    from octa_tui.trainer.scenario_check import check_zoo_run

    result = check_zoo_run("res_unet", seed=0)
    assert result.passed, result.shown


def test_a_double_sigmoid_in_a_plain_loop_is_named_first() -> None:
    from octa_tui.trainer.scenario_check import check_zoo_run

    result = check_zoo_run("double-sigmoid", seed=0)
    assert result.ranked_first == "squashed_outputs" and result.step is not None, result


def test_a_heatmap_model_without_sigmoid_is_diagnosed_missing_sigmoid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    history = _train(tmp_path, monkeypatch, task="heatmap", model="craft", output_activation="none", max_steps=120)
    found: dict[str, int] = {}  # verdict code -> first step at which the monitor showed it
    for step, verdicts in _verdicts_as_the_run_grows(history):
        for v in verdicts:
            found.setdefault(v.code, step)
    assert "missing_sigmoid" in found, f"verdicts seen: {sorted(found)}"
    assert found["missing_sigmoid"] <= 60
