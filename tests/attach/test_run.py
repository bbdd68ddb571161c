"""``octa-tui run`` on an unmodified script: the monitor sees it and steers it mid-run.

The script (examples/attach/heatmap_onecycle.py) is a plain loop with OneCycleLR, two
parameter groups and MSE on raw outputs against heatmap targets in [0, 1] (the seed-002
missing sigmoid); it imports nothing of octa-tui. A monitor-side follower and control client
(as the monitor uses them) check layers, loss terms, outputs, epochs, and that set_lr, clip,
pause, checkpoint and stop take effect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from octa_tui.protocol.commands import make_command
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.recording import read_recording
from octa_tui.protocol.runfiles import list_run_files
from octa_tui.tui.run_command import RunUsageError, build_argv, choose_interpreter, has_octa_tui

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "attach" / "heatmap_onecycle.py"


def _wait_for(condition, what: str, timeout_s: float = 120.0, poll=None):
    deadline = time.monotonic() + timeout_s
    while True:
        if poll is not None:
            poll()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OCTA_TUI_RUN_DIR=str(tmp_path / "run-files"), OMP_NUM_THREADS="1")
    return env


@pytest.mark.slow
def test_run_streams_an_unmodified_script_and_takes_every_command(tmp_path: Path):
    record = tmp_path / "rec" / "run.octa"
    command = build_argv(["--record", str(record), "--", "python", str(SCRIPT), "--epochs", "1000",
                          "--steps-per-epoch", "8", "--sleep", "0.005"])
    command[0] = sys.executable
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    follower = None
    try:
        [info] = _wait_for(lambda: list_run_files(tmp_path / "run-files"), "the run file")
        follower = RunFollower(info.telemetry, info.control, timeout_s=20.0)
        history = follower.connect()

        def poll():
            follower.poll(0.02)

        schema = history.schema
        # THEN the monitor sees the model's layers, the loss as observed, and the missing sigmoid
        assert schema.grad == ("encoder.0", "encoder.2", "head")
        assert schema.loss == ("total", "mse")
        assert schema.config["loss_functions"] == ["mse_loss"]
        assert schema.loss_expects_probabilities  # MSE against targets in [0, 1]
        _wait_for(lambda: len(follower.history.epochs) >= 2, "two inferred epochs", poll=poll)
        values = follower.history.steps.values
        assert np.nanmax(values[:, schema.index("out/frac_outside_01")]) > 0.3  # raw outputs outside [0, 1]
        assert np.all(np.isfinite(values[:, schema.index("loss/mse")]))
        assert values[-1, schema.index("loss/total")] == pytest.approx(values[-1, schema.index("loss/mse")])
        first = follower.history.epochs[0]
        assert "loss" in first.train and first.val["loss"] == pytest.approx(first.val["mse"])  # MSE is the whole loss

        # WHEN the lr is set: both groups are scaled, the reply names each group's old and new lr
        reply = follower.request(make_command("set_lr", lr=0.02))
        assert reply.ok, reply.reason
        groups = reply.data["groups"]
        assert len(groups) == 2 and groups[0]["new"] == pytest.approx(0.02)
        assert groups[1]["new"] / groups[0]["new"] == pytest.approx(groups[1]["old"] / groups[0]["old"])
        lr = schema.index("opt/lr")
        steps = follower.history.steps
        _wait_for(lambda: (steps.step[-1] > reply.step + 2), "steps after set_lr", poll=poll)
        rows = follower.history.steps
        after = rows.values[rows.step > reply.step, lr]
        scale = 0.02 / groups[0]["old"]
        assert np.all(after > rows.values[rows.step == reply.step - 1, lr][0] * scale * 0.5)  # scaled, still

        # WHEN clipping is set, THEN the steps report it
        assert follower.request(make_command("set_clip", clip=0.5)).ok
        _wait_for(lambda: follower.history.steps.values[-1, schema.index("opt/clip")] == 0.5, "clip 0.5", poll=poll)

        # WHEN paused, THEN no step runs until resumed
        paused = follower.request(make_command("pause"))
        assert paused.ok
        time.sleep(0.5)
        follower.poll(0.1)
        count = len(follower.history.steps)
        time.sleep(1.0)
        follower.poll(0.1)
        assert len(follower.history.steps) == count
        assert follower.request(make_command("resume")).ok
        _wait_for(lambda: len(follower.history.steps) > count, "steps after resume", poll=poll)

        # WHEN a checkpoint is asked for, THEN the model and optimizer state are saved
        saved = follower.request(make_command("checkpoint"))
        assert saved.ok, saved.reason
        state = torch.load(saved.data["new"], weights_only=True)
        assert set(state["model"]) == {"encoder.0.weight", "encoder.0.bias", "encoder.2.weight",
                                       "encoder.2.bias", "head.weight", "head.bias"}
        assert len(state["optimizer"]["param_groups"]) == 2
        assert Path(saved.data["new"]).parent == record.parent

        # WHEN stopped, THEN the script ends cleanly at the next step boundary
        assert follower.request(make_command("stop")).ok
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "stopped from the monitor" in err
    finally:
        if follower is not None:
            follower.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    recording = read_recording(record)
    ops = [e.data["op"] for e in recording.history.events if e.kind == "command_applied"]
    assert ops == ["set_lr", "set_clip", "pause", "resume", "checkpoint", "stop"]
    assert recording.history.events[-1].kind == "run_finished"
    assert recording.history.events[-1].data["state"] == "stopped"
    assert list_run_files(tmp_path / "run-files") == []


def test_the_command_line_becomes_python_dash_m_octa_tui_run():
    argv = build_argv(["--record", "r.octa", "--name", "x", "--", "python3", "train.py", "--lr", "1"])
    assert argv[1:] == ["-m", "octa_tui.run", "--record", "r.octa", "--name", "x", "--", "train.py", "--lr", "1"]
    assert os.path.basename(argv[0]).startswith("python")
    assert build_argv(["train.py"])[0] == sys.executable
    assert build_argv(["--", "python", "-m", "pkg.train", "a"])[-4:] == ["--", "-m", "pkg.train", "a"]
    with pytest.raises(RunUsageError, match="torchrun"):
        build_argv(["--", "torchrun", "train.py"])
    with pytest.raises(RunUsageError, match="no command"):
        build_argv(["--record", "r.octa"])


def test_a_python_on_path_without_octa_tui_gives_way_to_octa_tuis_own_interpreter(tmp_path: Path):
    # GIVEN a shell whose `python` is another environment's (no octa-tui there: exits 3 on the check)
    other = tmp_path / "bin" / "python"
    other.parent.mkdir()
    other.write_text("#!/bin/sh\nexit 3\n")
    other.chmod(0o755)
    assert not has_octa_tui(str(other)) and has_octa_tui(sys.executable)
    words = ["--", "python", "train.py"]
    command = [str(other), "-m", "octa_tui.run", "--", "train.py"]
    # WHEN the interpreter is chosen THEN a bare `python` falls back to octa-tui's, and says so
    chosen, notice = choose_interpreter(command, words)
    assert chosen == [sys.executable, "-m", "octa_tui.run", "--", "train.py"]
    assert "has no octa-tui" in notice and sys.executable in notice
    # AND an interpreter named by its path is refused with the fix, never silently replaced
    with pytest.raises(RunUsageError, match="cannot import octa-tui") as err:
        choose_interpreter(command, ["--", str(other), "train.py"])
    assert "pip install octa-tui" in str(err.value) and sys.executable in str(err.value)
    # AND an interpreter that has octa-tui is kept as it is
    assert choose_interpreter(command, words, can_run=lambda python: True) == (command, "")


def test_a_script_that_fails_keeps_its_exit_code_and_closes_the_run(tmp_path: Path):
    script = tmp_path / "broken.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\nraise SystemExit(3)\n")
    result = subprocess.run([sys.executable, "-m", "octa_tui.run", "--no-record", "--", str(script), "a", "b"],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert result.returncode == 3
    assert "args ['a', 'b']" in result.stdout
    assert "without an optimizer step" in result.stderr


def _run_example(tmp_path: Path, name: str, *args: str) -> tuple[subprocess.CompletedProcess, object]:
    record = tmp_path / f"{name}.octa"
    result = subprocess.run([sys.executable, "-m", "octa_tui.run", "--record", str(record), "--",
                             str(ROOT / "examples" / "attach" / f"{name}.py"), *args],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result, read_recording(record)


@pytest.mark.slow
def test_run_under_fp16_gradscaler_overflow_reports_skipped_steps_never_non_finite(tmp_path: Path):
    # GIVEN an fp16 loop whose GradScaler overflows often (huge scale, growth every 2 steps)
    result, recording = _run_example(tmp_path, "amp_loop", "--steps", "60", "--growth-interval", "2")
    skipped_by_script = int(result.stdout.split("skipped ")[1].split()[0])
    history = recording.history
    schema, values = history.schema, history.steps.values
    # THEN every step is there, the skipped ones (even those before any step was applied) marked
    assert len(history.steps) == 60 and schema.config["amp"] == "fp16"
    skipped = values[:, schema.index("gradstat/amp_skipped")]
    assert skipped.sum() == skipped_by_script >= 3
    # AND no step is non-finite: the losses were finite, and the skipped steps have no gradient numbers
    assert np.all(values[:, schema.index("gradstat/nonfinite")] == 0)
    assert np.all(np.isfinite(values[:, schema.index("loss/total")]))
    assert values[:, schema.index("loss/total")] == pytest.approx(values[:, schema.index("loss/mse")], rel=1e-5)
    assert np.all(np.isnan(values[skipped == 1, schema.index("gradstat/total_norm")]))
    assert np.all(np.isfinite(values[skipped == 0, schema.index("gradstat/total_norm")]))
    scale = values[:, schema.index("opt/amp_scale")]
    assert np.all(scale[1:][skipped[:-1] == 1] == scale[:-1][skipped[:-1] == 1] / 2)  # each skip halved it
    kinds = [e.kind for e in history.events]
    assert "amp_step_skipped" in kinds


@pytest.mark.slow
def test_run_under_lightning_sees_the_closure_steps_and_its_epochs(tmp_path: Path):
    # GIVEN a LightningModule trained with automatic optimization (forward and backward inside the step)
    _, recording = _run_example(tmp_path, "lightning_seg", "--epochs", "3")
    history = recording.history
    schema, values = history.schema, history.steps.values
    # THEN the model is the LightningModule, every step is measured, epochs come from its validation
    assert schema.model.name == "SegModule" and schema.grad == ("net.0", "net.2")
    assert len(history.steps) == 12 and list(history.steps.epoch) == [0] * 4 + [1] * 4 + [2] * 4
    assert np.all(np.isfinite(values[:, schema.index("gradstat/total_norm")]))
    assert [e.epoch for e in history.epochs] == [0, 1, 2]
    assert all("bce" in e.val for e in history.epochs)
    # AND the loss with logits is observed as not expecting probabilities
    assert schema.loss == ("total", "bce") and not schema.loss_expects_probabilities


@pytest.mark.slow
def test_run_on_a_monai_loop_sees_its_layers_and_the_observed_part_of_dice_ce(tmp_path: Path):
    # GIVEN MONAI's BasicUNet with DiceCELoss (a hand-written Dice beside BCE-with-logits)
    _, recording = _run_example(tmp_path, "monai_unet", "--epochs", "2", "--steps-per-epoch", "4")
    history = recording.history
    schema, values = history.schema, history.steps.values
    assert schema.model.name == "BasicUNet" and len(schema.grad) > 20
    assert schema.loss == ("total", "bce") and not schema.loss_expects_probabilities
    total, bce = values[:, schema.index("loss/total")], values[:, schema.index("loss/bce")]
    assert np.all(total > bce + 0.1)  # the Dice term is in the total, not a component of its own
    assert [e.epoch for e in history.epochs] == [0, 1]
    # AND the validation summary names the observed term only: no "loss" that would leave out the Dice
    assert "bce" in history.epochs[0].val and "loss" not in history.epochs[0].val


@pytest.mark.slow
def test_stop_from_the_monitor_ends_a_lightning_fit_under_run(tmp_path: Path):
    # GIVEN a long Lightning fit under octa-tui run
    record = tmp_path / "l.octa"
    proc = subprocess.Popen([sys.executable, "-m", "octa_tui.run", "--record", str(record), "--",
                             str(ROOT / "examples" / "attach" / "lightning_seg.py"), "--epochs", "100000"],
                            cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    follower = None
    try:
        [info] = _wait_for(lambda: list_run_files(tmp_path / "run-files"), "the run file", timeout_s=240)
        follower = RunFollower(info.telemetry, info.control, timeout_s=20.0)
        follower.connect()
        _wait_for(lambda: len(follower.history.epochs) >= 1, "an epoch", poll=lambda: follower.poll(0.02))
        # WHEN the lr is set and then the run stopped
        reply = follower.request(make_command("set_lr", lr=0.005))
        assert reply.ok and reply.data["groups"][0]["new"] == pytest.approx(0.005)
        assert follower.request(make_command("stop")).ok
        _, err = proc.communicate(timeout=180)
        # THEN Lightning tore down and the script ended with exit code 0, the run recorded as stopped
        assert proc.returncode == 0, err
    finally:
        if follower is not None:
            follower.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    events = read_recording(record).history.events
    assert events[-1].kind == "run_finished" and events[-1].data["state"] == "stopped"


@pytest.mark.slow
def test_run_under_the_hugging_face_trainer_sees_its_clipping_warmup_and_evaluations(tmp_path: Path):
    # GIVEN the HF Trainer with its defaults (AdamW, linear warm-up from 0, clipping at 1.0, eval each epoch)
    _, recording = _run_example(tmp_path, "hf_trainer", "--epochs", "2")
    history = recording.history
    schema, values = history.schema, history.steps.values
    # THEN every optimizer step is measured, and the clipping done before it is a stated fact
    assert schema.model.name == "Regressor" and schema.grad == ("body.0", "body.2")
    assert len(history.steps) == 16 and schema.config["grads_clipped_before_probe"] == 1.0
    assert np.all(values[:, schema.index("gradstat/total_norm")] <= 1.0 + 1e-5)
    assert values[0, schema.index("opt/lr")] == 0.0 and values[4, schema.index("opt/lr")] > 0  # the warm-up
    # AND its evaluations close the epochs
    assert [e.epoch for e in history.epochs] == [0, 1] and all("mse" in e.val for e in history.epochs)
