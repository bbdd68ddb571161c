"""``octa-tui run`` on other people's scripts (examples/foreign), unmodified.

GIVEN training scripts in the styles users bring (a Pytorch-UNet-style loop with OneCycleLR
and two parameter groups, a LightningModule with gradient accumulation, MONAI's BasicUNet in a
plain loop and in its Ignite workflow, an fp16 GradScaler loop, raw logits into MSE) WHEN each
runs under ``python -m octa_tui.run`` THEN the monitor sees its layers, loss terms, outputs and
epochs, the live commands act on it, and the diagnosis engine gives the scenarios' verdicts:
missing_sigmoid for the raw logits, nothing for the scaler's normal skipped steps. (A Hugging Face
Trainer script runs too.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from octa_tui.diagnosis import Severity
from octa_tui.protocol.recording import read_recording

from .monitor import Monitor, find_run, verdicts_as_the_run_grows, wait_for

ROOT = Path(__file__).resolve().parents[2]
FOREIGN = ROOT / "examples" / "foreign"
UNET_LAYERS = 21  # Pytorch-UNet style: 5 DoubleConvs of (conv, BN, conv, BN), and outc.conv
STEPS_PER_EPOCH = 9  # 77 training images, batch 8, drop_last


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}


def _command(record: Path, script: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "octa_tui.run", "--record", str(record), "--", str(FOREIGN / script), *args]


def _run_to_the_end(tmp_path: Path, script: str, *args: str):
    record = tmp_path / "run.octa"
    result = subprocess.run(_command(record, script, *args), cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    recording = read_recording(record)
    return result, recording.history


def _column(history, key: str) -> np.ndarray:
    return np.asarray(history.steps.column(history.schema.index(key)), dtype=np.float64)


def _loud(history) -> list:
    return [(step, v.code, v.evidence) for step, verdicts in verdicts_as_the_run_grows(history)
            for v in verdicts if v.severity >= Severity.WARN]


def _onecycle_lrs(epochs: int, lr: float = 1e-3) -> np.ndarray:
    """Group 0's lr at each step under the script's OneCycleLR, as its scheduler computes it."""
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": [params[0]], "lr": lr / 10}, {"params": [params[1]], "lr": lr}])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[lr / 10, lr], epochs=epochs,
                                                    steps_per_epoch=STEPS_PER_EPOCH)
    lrs = []
    for _ in range(epochs * STEPS_PER_EPOCH):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs)


@pytest.mark.slow
def test_a_pytorch_unet_style_loop_is_watched_and_steered(tmp_path: Path):
    # GIVEN the Pytorch-UNet-style script: OneCycleLR, AdamW with an encoder group at lr/10,
    # BCE-with-logits + a hand-written Dice, GradScaler (disabled), clip_grad_norm_, evaluate()
    epochs = 150
    record = tmp_path / "unet.octa"
    proc = subprocess.Popen(_command(record, "plain_onecycle.py", "--epochs", str(epochs)), cwd=tmp_path,
                            env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = None
    try:
        monitor = Monitor(find_run(tmp_path / "run", alive=lambda: proc.poll() is None))
        schema = monitor.schema
        # THEN the monitor sees the UNet's layers shallow to deep, and the loss as the script computes it
        assert len(schema.grad) == UNET_LAYERS
        assert schema.grad[0] == "inc.double_conv.0" and schema.grad[-1] == "outc.conv"
        assert schema.model.name == "UNet"
        assert schema.loss == ("total", "bce") and not schema.loss_expects_probabilities
        wait_for(lambda: len(monitor.history.epochs) >= 2, "two epochs (inferred from evaluate()'s eval/train)",
                 tick=monitor.poll)
        assert np.all(_column(monitor.history, "loss/total") > _column(monitor.history, "loss/bce"))  # + Dice
        assert np.all(np.isfinite(_column(monitor.history, "out/raw_min")))
        first = monitor.history.epochs[0]
        assert first.epoch == 0 and first.step == STEPS_PER_EPOCH - 1 and np.isfinite(first.train["loss"])

        # WHEN the lr is set: both groups scaled alike, each group's old and new lr in the reply
        reply = monitor.request("set_lr", lr=2e-4)
        assert reply.status == "ok", reply.reason
        groups = reply.data["groups"]
        assert len(groups) == 2
        assert groups[0]["new"] == pytest.approx(2e-4)
        assert groups[1]["new"] / groups[0]["new"] == pytest.approx(10.0)
        scale = groups[0]["new"] / groups[0]["old"]
        wait_for(lambda: monitor.steps()[-1] > reply.step + 5, "steps after set_lr", tick=monitor.poll)

        # WHEN paused THEN no step runs; WHEN resumed THEN steps run again
        assert monitor.request("pause").status == "ok"
        wait_for(lambda: monitor.follower.trainer is not None and monitor.follower.trainer.state == "paused",
                 "a 'paused' heartbeat", tick=monitor.poll)
        count = monitor.n_steps
        for _ in range(30):
            monitor.poll()
        assert monitor.n_steps == count
        assert monitor.request("resume").status == "ok"
        wait_for(lambda: monitor.n_steps > count + 2, "steps after resume", tick=monitor.poll)

        # WHEN a checkpoint is asked for THEN the UNet's state is saved where the reply says
        saved = monitor.request("checkpoint")
        assert saved.status == "ok", saved.reason
        state = torch.load(saved.data["new"], weights_only=True)
        assert "inc.double_conv.0.weight" in state["model"] and len(state["optimizer"]["param_groups"]) == 2

        # WHEN stopped THEN the script ends at the next step boundary, exit code 0
        assert monitor.request("stop").status == "ok"
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if monitor is not None:
            monitor.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    history = read_recording(record).history
    steps = np.asarray(history.steps.step)
    lr = _column(history, "opt/lr")
    expected = _onecycle_lrs(epochs)[steps]
    # the lr channel is the scheduler's lr before set_lr, and the scheduler's lr x the scale after it:
    # OneCycleLR kept its own schedule underneath (it was not overwritten at its next step)
    before, after = steps < reply.step, steps >= reply.step
    np.testing.assert_allclose(lr[before], expected[before], rtol=1e-5)
    np.testing.assert_allclose(lr[after], expected[after] * scale, rtol=1e-5)
    assert len(np.unique(np.round(lr[after], 12))) > 3
    finished = [e for e in history.events if e.kind == "run_finished"]
    assert finished and finished[-1].data["state"] == "stopped"


@pytest.mark.slow
def test_a_healthy_foreign_loop_raises_no_warning(tmp_path: Path):
    # lr 3e-3: the run converges (val Dice 0.96, BCE 0.24 at the end). At the script's default
    # 1e-3 its BCE is still 0.38 after 12 epochs (val Dice 0.92) and "BCE not settled" (more
    # epochs or a higher lr) is the seed's fair verdict, not a false alarm.
    _, history = _run_to_the_end(tmp_path, "plain_onecycle.py", "--epochs", "12", "--learning-rate", "3e-3")
    assert len(history.steps) == 12 * STEPS_PER_EPOCH
    assert [e.epoch for e in history.epochs] == list(range(12))
    assert _loud(history) == []


@pytest.mark.slow
def test_lightning_with_gradient_accumulation_publishes_real_optimizer_steps(tmp_path: Path):
    result, history = _run_to_the_end(tmp_path, "lightning_module.py", "--max-epochs", "2", "--accumulate", "2")
    assert "finished: 8 optimizer steps" in result.stdout
    assert len(history.steps) == 8  # 8 batches an epoch, 2 epochs, one step per 2 batches
    assert history.schema.model.name == "SegModel"
    assert np.all(np.isfinite(_column(history, "gradstat/total_norm")))
    assert [e.epoch for e in history.epochs] == [0, 1]


@pytest.mark.slow
@pytest.mark.parametrize("network", ["basicunet", "unet"])
def test_a_monai_loop_is_watched(tmp_path: Path, network: str):
    _, history = _run_to_the_end(tmp_path, "monai_loop.py", "--network", network, "--epochs", "2")
    schema = history.schema
    assert schema.model.name == {"basicunet": "BasicUNet", "unet": "UNet"}[network]
    assert len(history.steps) == 12  # 48 images, batch 8, 2 epochs
    assert len(schema.grad) > 8
    # DiceCELoss(sigmoid=True): its BCE-with-logits term is observed; the Dice term is MONAI's own code
    assert "bce" in schema.loss and not schema.loss_expects_probabilities
    assert np.all(_column(history, "loss/total") > _column(history, "loss/bce"))
    assert np.all(np.isfinite(_column(history, "gradstat/total_norm")))
    assert [e.epoch for e in history.epochs] == [0, 1]


@pytest.mark.slow
def test_a_monai_ignite_workflow_is_watched(tmp_path: Path):
    result, history = _run_to_the_end(tmp_path, "monai_ignite.py", "--epochs", "2")
    assert "finished: 12 iterations" in result.stdout
    assert history.schema.model.name == "BasicUNet"
    assert len(history.steps) == 12
    assert "bce" in history.schema.loss
    assert [e.epoch for e in history.epochs] == [0, 1]


@pytest.mark.slow
def test_a_hugging_face_trainer_is_watched(tmp_path: Path):
    result, history = _run_to_the_end(tmp_path, "hf_trainer.py", "--epochs", "2", "--output-dir", str(tmp_path / "out"))
    assert "finished: 16 optimizer steps" in result.stdout
    assert history.schema.model.name == "DiscSegmenter" and history.schema.grad == ("encoder.0", "encoder.2", "head")
    assert len(history.steps) == 16 and history.schema.loss == ("total", "bce")
    assert np.all(np.isfinite(_column(history, "gradstat/total_norm")))
    assert [e.epoch for e in history.epochs] == [0, 1]
    assert "loss" in history.epochs[-1].val  # the evaluation's loss, observed at the loss function


@pytest.mark.slow
def test_fp16_gradscaler_skipped_steps_are_facts_not_faults(tmp_path: Path):
    # GIVEN autocast fp16 + a GradScaler that overflows often (growth every 2 steps)
    result, history = _run_to_the_end(tmp_path, "fp16_scaler.py", "--steps", "150", "--growth-interval", "2")
    skipped_by_script = int(result.stdout.split(" skipped by the scaler")[0].rsplit(", ", 1)[1])
    assert history.schema.config["amp"] == "fp16"
    skipped = _column(history, "gradstat/amp_skipped")
    assert skipped.sum() == skipped_by_script >= 10
    assert np.all(_column(history, "gradstat/nonfinite") == 0)
    assert np.all(np.isfinite(_column(history, "loss/total")))
    assert any(e.kind == "amp_step_skipped" for e in history.events)
    # THEN the engine, reading the run as it grows, never calls it non-finite or an explosion
    codes = {code for _, code, _ in _loud(history)}
    assert not codes & {"nonfinite", "gradient_explosion"}, codes


@pytest.mark.slow
def test_raw_logits_into_mse_is_diagnosed_missing_sigmoid(tmp_path: Path):
    _, history = _run_to_the_end(tmp_path, "logits_mse.py", "--steps", "80")
    schema = history.schema
    assert schema.loss == ("total", "mse") and schema.config["loss_functions"] == ["mse_loss"]
    assert schema.loss_expects_probabilities  # observed: MSE against targets in [0, 1]
    found: dict[str, int] = {}
    for step, verdicts in verdicts_as_the_run_grows(history):
        for verdict in verdicts:
            found.setdefault(verdict.code, step)
    assert "missing_sigmoid" in found, sorted(found)


CALLBACK_SCRIPT = '''
import sys
sys.path.insert(0, {foreign!r})
import lightning as L
import lightning_module as lm
from octa_tui.trainer.integrations.lightning import OctaCallback

L.seed_everything(0, verbose=False)
args = lm.parse_args(["--max-epochs", "2"])
trainer = lm.build_trainer(args, callbacks=[OctaCallback(record={record!r})])
trainer.fit(lm.SegModel(), datamodule=lm.DiscDataModule())
print("fit done", trainer.global_step)
'''


@pytest.mark.slow
def test_a_script_with_a_callback_under_run_streams_one_run(tmp_path: Path):
    # GIVEN a Lightning script that already has the callback, started under octa-tui run
    script = tmp_path / "with_callback.py"
    script.write_text(CALLBACK_SCRIPT.format(foreign=str(FOREIGN), record=str(tmp_path / "callback.octa")))
    record = tmp_path / "run.octa"
    result = subprocess.run([sys.executable, "-m", "octa_tui.run", "--record", str(record), "--", str(script)],
                            cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "fit done 16" in result.stdout
    # THEN the callback streams the run, and octa-tui run's own watch stepped aside: one run, not two
    assert "watched by its callback" in result.stderr
    assert not record.exists() or len(read_recording(record).history.steps) == 0
    history = read_recording(tmp_path / "callback.octa").history
    assert len(history.steps) == 16 and history.schema.config["framework"] == "lightning"
