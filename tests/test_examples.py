"""GIVEN the README's example of instrumenting one's own loop WHEN it runs as a user would run it
THEN it trains, streams and leaves a recording that replays the steps it took."""

import subprocess
import sys
from pathlib import Path

from octa_tui.protocol.recording import read_recording

ROOT = Path(__file__).resolve().parents[1]


def test_own_loop_example_runs_and_records(tmp_path: Path) -> None:
    record = tmp_path / "own.octa"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "own_loop.py"), "--steps", "30", "--record", str(record)],
        capture_output=True, text=True, timeout=180, env={"OCTA_TUI_RUN_DIR": str(tmp_path / "run"), "PATH": "/usr/bin:/bin",
                                                          "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "telemetry tcp://127.0.0.1:" in result.stdout
    recording = read_recording(record)
    assert len(recording.history.steps) == 30
    assert recording.history.schema.grad == ("encoder.0", "encoder.2", "head")  # shallow to deep
    assert not recording.warnings
