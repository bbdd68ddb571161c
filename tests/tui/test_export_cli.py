"""GIVEN ``octa-tui export`` run as a user runs it WHEN the recording is whole, torn or not a
recording at all, or the output is in the way THEN it exports what it can and says what it
did not in one line each, with the exit status of the other subcommands."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

GOLDEN = Path(__file__).resolve().parents[1] / "protocol" / "golden" / "session.octa"
GOLDEN_STEPS = 23


def octa_tui(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", *args], capture_output=True, text=True,
                          timeout=100, cwd=cwd)


@pytest.fixture()
def recording(tmp_path: Path) -> Path:
    return Path(shutil.copy(GOLDEN, tmp_path / "session.octa"))


def test_csv_export_writes_steps_epochs_and_events_next_to_the_recording(recording, tmp_path):
    # WHEN a whole recording is exported as CSV with no output named
    result = octa_tui("export", recording.name, "--format", "csv", cwd=tmp_path)
    # THEN it succeeds, names what it wrote, and the step file has one row per step
    assert result.returncode == 0, result.stderr
    assert "exported 23 steps x 9 channels" in result.stderr and "session.epochs.csv" in result.stderr
    with open(tmp_path / "session.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0][:5] == ["seq", "step", "epoch", "time", "loss/total"] and len(rows) == 1 + GOLDEN_STEPS
    assert rows[1 + 5][4 + 3] == "nan" and rows[1 + 11][4 + 5] == "inf"
    assert (tmp_path / "session.epochs.csv").read_text().splitlines()[1].startswith("0,9,")


def test_a_torn_recording_is_exported_with_a_warning(recording, tmp_path):
    # GIVEN a recording cut short in its last record
    recording.write_bytes(recording.read_bytes()[:-20])
    # WHEN it is exported
    result = octa_tui("export", recording.name, "-f", "csv", "-o", "out.csv", cwd=tmp_path)
    # THEN the readable steps are written and stderr warns, once, about the torn tail
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "torn tail" in warnings[0] and "exported what was readable" in warnings[0]
    rows = (tmp_path / "out.csv").read_text().splitlines()
    assert 1 < len(rows) <= 1 + GOLDEN_STEPS


def test_a_file_that_is_not_a_recording_is_one_line_and_exit_1(tmp_path):
    bogus = tmp_path / "bogus.octa"
    bogus.write_bytes(b"hello, not a recording")
    result = octa_tui("export", bogus.name, "-f", "jsonl", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("octa-tui: error:") and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "bogus.jsonl").exists()


def test_an_existing_output_needs_force(recording, tmp_path):
    (tmp_path / "session.jsonl").write_text("precious\n")
    refused = octa_tui("export", recording.name, "-f", "jsonl", cwd=tmp_path)
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert (tmp_path / "session.jsonl").read_text() == "precious\n"
    forced = octa_tui("export", recording.name, "-f", "jsonl", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and (tmp_path / "session.jsonl").read_text().startswith('{"type": "schema"')


def test_jsonl_to_stdout_with_a_channel_selection(recording, tmp_path):
    result = octa_tui("export", recording.name, "-f", "jsonl", "-o", "-", "--channels", "loss/*",
                      "--channels", "opt/lr", "--every", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in io.StringIO(result.stdout)]
    steps = [r for r in records if r["type"] == "step"]
    assert records[0]["channels"] == ["loss/total", "loss/bce", "loss/dice", "opt/lr"]
    assert [s["seq"] for s in steps] == list(range(0, GOLDEN_STEPS, 2))
    assert set(steps[0]["values"]) == {"loss/total", "loss/bce", "loss/dice", "opt/lr"}


def test_csv_to_stdout_says_what_it_left_out(recording, tmp_path):
    result = octa_tui("export", recording.name, "-f", "csv", "-o", "-", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("seq,step,epoch,time,")
    assert "left out" in result.stderr and "epoch summary (1)" in result.stderr


def test_usage_problems_are_one_line(recording, tmp_path):
    to_stdout = octa_tui("export", recording.name, "-f", "tensorboard", "-o", "-", cwd=tmp_path)
    assert to_stdout.returncode == 1 and "-o DIR" in to_stdout.stderr
    no_match = octa_tui("export", recording.name, "-f", "csv", "--channels", "nope/*", cwd=tmp_path)
    assert no_match.returncode == 1 and "'nope/*' matches none" in no_match.stderr
    assert no_match.stderr.strip().count("\n") == 0
    no_format = octa_tui("export", recording.name, cwd=tmp_path)
    assert no_format.returncode == 2 and "--format" in no_format.stderr


def test_tensorboard_export_loads_neither_textual_nor_torch(recording, tmp_path):
    # GIVEN the CLI in a fresh interpreter WHEN it exports for TensorBoard
    code = ("import sys; from octa_tui.tui.cli import main; status = main(['export', 'session.octa', "
            "'-f', 'tensorboard', '-o', 'tb']); print(status, 'textual' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=100,
                            cwd=tmp_path)
    # THEN it succeeds without importing the monitor's or the trainer's heavy libraries
    assert result.stdout.split() == ["0", "False", "False"], result.stderr
    (event_file,) = (tmp_path / "tb").iterdir()
    assert event_file.name.startswith("events.out.tfevents.") and event_file.name.endswith(".octa-tui")


def test_help_says_what_goes_where():
    result = subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", "export", "--help"], capture_output=True,
                            text=True, timeout=100)
    assert result.returncode == 0
    assert "OUT.epochs.csv" in result.stdout and "nonfinite" in result.stdout and "--channels" in result.stdout


def test_a_reader_that_leaves_early_ends_the_export_quietly(recording, tmp_path):
    # GIVEN a pipe whose reader is already gone (as `octa-tui export ... -o - | head -1` ends)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", "export", str(recording), "--format",
                                 "jsonl", "-o", "-"], cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    finally:
        os.close(write_end)
    # THEN no error and no traceback: the shell's status for a writer whose reader left
    assert result.returncode == 141 and result.stderr == ""
