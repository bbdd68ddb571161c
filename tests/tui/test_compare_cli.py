"""``octa-tui compare``'s command line: what the words name, and the trip to a run's monitor
and back (the same session and choices before and after)."""

from __future__ import annotations

import numpy as np
import pytest

from octa_tui.protocol.messages import ModelSummary, Schema, StepChunk
from octa_tui.protocol.recording import RecordingWriter
from octa_tui.protocol.runfiles import RunFileInfo
from octa_tui.tui.compare import cli
from octa_tui.tui.compare.app import CompareApp, OpenMonitor
from octa_tui.tui.compare.runs import CompareError, resolve_targets


def _record(path, run_id, lr):
    schema = Schema(run_id=run_id, task="segmentation", model=ModelSummary("unet", 10), loss=("total",),
                    grad=("a",), opt=("lr",), config={"lr": lr, "seed": 0})
    n = 50
    step = np.arange(n, dtype=np.int64)
    values = np.stack([np.linspace(1, 0.5, n), np.full(n, 0.1), np.full(n, lr)], axis=1).astype(np.float32)
    with RecordingWriter(path, schema) as writer:
        writer.write(StepChunk(run_id, step.astype(np.uint64), step, (step // 10).astype(np.int32),
                               1000.0 + step, values))
    return path


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "a").mkdir()
    _record(tmp_path / "a" / "one.octa", "00000000000000a1", 1e-3)
    _record(tmp_path / "a" / "two.octa", "00000000000000a2", 1e-4)
    return tmp_path


def test_words_name_recordings_folders_and_running_trainers(folder):
    one = folder / "a" / "one.octa"
    running = [RunFileInfo(pid=4242, run_id="0123456789abcdef", telemetry="tcp://127.0.0.1:5000",
                           control="tcp://127.0.0.1:5001")]
    targets = resolve_targets([str(folder / "a"), str(one), "0123456789abcdef", "4242",
                               "tcp://10.0.0.2:7000,tcp://10.0.0.2:7001"], running=lambda: running)
    assert [t.kind for t in targets] == ["recorded", "recorded", "live", "live"]  # one.octa and 4242 once
    assert targets[2].control == "tcp://127.0.0.1:5001"
    assert targets[3].telemetry == "tcp://10.0.0.2:7000" and targets[3].control == "tcp://10.0.0.2:7001"
    assert len(resolve_targets([], live_all=True, running=lambda: running)) == 1
    with pytest.raises(CompareError, match="no such recording"):
        resolve_targets([str(folder / "nothing.octa")])
    with pytest.raises(CompareError, match="no running trainer"):
        resolve_targets(["fedcba9876543210"], running=lambda: [])
    (folder / "empty").mkdir()
    with pytest.raises(CompareError, match="holds no recordings"):
        resolve_targets([str(folder / "empty")])


def test_enter_opens_the_runs_monitor_and_the_comparison_comes_back(folder, monkeypatch):
    results = [OpenMonitor(2), None]
    states, opened = [], []

    def fake_run(self):
        states.append(self.state)
        return results.pop(0)

    monkeypatch.setattr(CompareApp, "run", fake_run)
    monkeypatch.setattr(cli, "_run_monitor", lambda run: opened.append((run.number, run.label, run.history)))
    assert cli.main([str(folder / "a"), "--group", "seed", "--x", "epoch"]) == 0
    assert [(n, label) for n, label, _ in opened] == [(2, "two")]
    assert opened[0][2] is not None and len(opened[0][2].steps) == 50
    assert len(states) == 2 and states[0] is states[1]  # the same choices after the visit
    assert states[0].group_by == "all but seed" and states[0].mode == "epoch"


def test_a_file_that_is_not_a_recording_is_said_and_the_others_still_open(folder, capsys, monkeypatch):
    bad = folder / "a" / "bad.octa"
    bad.write_text("not a recording")
    monkeypatch.setattr(CompareApp, "run", lambda self: None)
    assert cli.main([str(folder / "a")]) == 0
    err = capsys.readouterr().err
    assert "bad" in err and "not an octa-tui recording" in err
    assert cli.main([str(bad)]) == 1
