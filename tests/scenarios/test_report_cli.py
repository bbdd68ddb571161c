"""GIVEN `octa-tui scenarios` WHEN it runs a scenario THEN it prints the table a user reads:
the scenario, the verdict expected and found, the step, the fix and pass/fail; a wrong name is
refused with the list of names."""

from __future__ import annotations

from pathlib import Path

import pytest

from octa_tui.tui.cli import main


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_report_runs_a_scenario_and_prints_its_row(capfd: pytest.CaptureFixture[str], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    assert main(["scenarios", "soft-masks"]) == 0
    out = capfd.readouterr().out
    assert "| scenario | expected verdict | verdict found |" in out
    row = next(line for line in out.splitlines() if line.startswith("| soft-masks"))
    assert "masks_not_binary" in row and "binarize_masks" in row and row.rstrip().endswith("pass |")
    assert "1/1 scenarios pass" in out


def test_an_unknown_scenario_is_refused_with_the_names(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["scenarios", "nope"]) != 0
    err = capfd.readouterr().err
    assert "'nope' is unknown" in err and "tiny-lr" in err


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_the_demo_starts_a_scenario_trainer_that_says_where_to_attach(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from octa_tui.tui.demo import DemoTrainer, demo_trainer_args

    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    args = demo_trainer_args(steps=5, extra=["--scenario", "tiny-lr", "--device", "cpu"])
    with DemoTrainer(args, run_dir=str(tmp_path)) as trainer:
        trainer.start()
        assert trainer.telemetry.startswith("tcp://127.0.0.1:") and trainer.control.startswith("tcp://")
    log = (tmp_path / "trainer.log").read_text()
    assert "UNet" in log and "error" not in log.lower()
