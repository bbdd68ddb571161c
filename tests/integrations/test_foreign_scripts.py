"""GIVEN training scripts written in other people's styles (examples/foreign) WHEN they run as
their authors run them, without octa-tui THEN they train and finish: they are valid inputs for
``octa-tui run`` and the framework callbacks, not scripts that only work under our tools."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOREIGN = ROOT / "examples" / "foreign"


def run_script(name: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OCTA_TUI_RUN_DIR": str(tmp_path / "run")}
    return subprocess.run([sys.executable, str(FOREIGN / name), *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("script", "args", "finished"),
    [
        ("plain_onecycle.py", ("--epochs", "2"), r"finished after 18 steps"),
        ("lightning_module.py", ("--max-epochs", "1", "--accumulate", "2"), r"finished: 4 optimizer steps"),
        ("monai_loop.py", ("--epochs", "1", "--network", "unet"), r"train completed"),
        ("monai_ignite.py", ("--epochs", "1"), r"finished: 6 iterations"),
        ("fp16_scaler.py", ("--steps", "30", "--growth-interval", "2"), r"30 steps, [1-9]\d* skipped by the scaler"),
        ("logits_mse.py", ("--steps", "10"), r"done"),
        ("hf_trainer.py", ("--epochs", "1", "--output-dir", "out"), r"finished: 8 optimizer steps"),
    ],
)
def test_foreign_script_trains_on_its_own(script: str, args: tuple[str, ...], finished: str, tmp_path: Path) -> None:
    result = run_script(script, *args, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(finished, result.stdout + result.stderr), (result.stdout + result.stderr)[-3000:]
    # Foreign code knows nothing of octa-tui: no run was announced.
    assert not (tmp_path / "run").exists() or not list((tmp_path / "run").glob("*.json"))
