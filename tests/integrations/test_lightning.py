"""The Lightning callback on real fits (CPU, a small segmentation module from examples/foreign).

GIVEN a LightningModule written as Lightning users write them, WHEN it is fitted with
``callbacks=[OctaCallback()]`` THEN the monitor sees every real optimizer step with the
gradients Lightning steps with (not the previous step's, not a half-accumulated sum), the loss
and its terms, the outputs, the epochs with their validation metrics, and the monitor's
set_lr, clip, pause, checkpoint and stop take effect in the running fit.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightning")
import lightning as L  # noqa: E402

from octa_tui.protocol.recording import read_recording  # noqa: E402
from octa_tui.trainer.integrations.lightning import OctaCallback  # noqa: E402

from .monitor import Monitor, find_run, wait_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "foreign"))
import lightning_module as foreign  # noqa: E402

LAYERS = ("enc1.0", "enc1.1", "enc2.1.0", "enc2.1.1", "dec.0", "dec.1", "head")


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run"))
    yield
    torch.set_num_threads(threads)


class Witness(L.Callback):
    """Notes, at every optimizer step, what Lightning really steps with: the gradients' total
    norm, the lr in the parameter group, the scheduler's own lr, and the loss given to backward."""

    def __init__(self, abort: list | None = None):
        self.abort = abort if abort is not None else []  # a failed monitor side ends the fit early
        self.norms: list[float] = []
        self.lrs: list[float] = []
        self.scheduled: list[float] = []
        self.losses: list[float] = []
        self._pending = 0.0

    def on_fit_start(self, trainer, pl_module):
        # The lr the update really uses is written just before it (at the end of Lightning's
        # closure, inside optimizer.step): read it there, from a pre-hook registered after the
        # callback's that wraps the closure it was handed.
        def read_lr_in_step(optimizer, args, kwargs):
            closure = kwargs.get("closure")

            def closure_then_read(*a, **k):
                result = closure(*a, **k)
                self.lrs.append(float(optimizer.param_groups[0]["lr"]))
                return result

            if closure is None:
                self.lrs.append(float(optimizer.param_groups[0]["lr"]))
                return None
            return args, {**kwargs, "closure": closure_then_read}

        trainer.optimizers[0].register_step_pre_hook(read_lr_in_step)

    def on_before_backward(self, trainer, pl_module, loss):
        self._pending += float(loss.detach())

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self.scheduled.append(float(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0]))
        self.losses.append(self._pending)
        self._pending = 0.0

    def on_train_batch_end(self, trainer, pl_module, *args):
        if self.abort:
            trainer.should_stop = True


def _fit(tmp_path: Path, *, epochs: int, accumulate: int = 1, manual: bool = False, callbacks=(), clip=None,
         precision: str = "32-true"):
    L.seed_everything(0, verbose=False)
    model = foreign.SegModel(width=8, lr=3e-3, manual=manual)
    data = foreign.DiscDataModule(n_train=64, n_val=16, batch_size=8)
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", devices=1, accumulate_grad_batches=accumulate, precision=precision,
        gradient_clip_val=clip, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, logger=False, default_root_dir=str(tmp_path), callbacks=list(callbacks),
    )
    trainer.fit(model, datamodule=data)
    return trainer


def _column(history, key):
    return np.asarray(history.steps.column(history.schema.index(key)), dtype=np.float64)


@pytest.mark.slow
@pytest.mark.parametrize(("accumulate", "manual", "precision"),
                         [(1, False, "32-true"), (2, False, "32-true"), (1, True, "32-true"), (1, False, "bf16-mixed")],
                         ids=["automatic", "accumulate-2", "manual", "bf16-mixed"])
def test_every_optimizer_step_is_published_with_the_gradients_lightning_steps_with(tmp_path, accumulate, manual,
                                                                                   precision):
    record = tmp_path / "fit.octa"
    witness = Witness()
    trainer = _fit(tmp_path, epochs=2, accumulate=accumulate, manual=manual, clip=None if manual else 0.5,
                   precision=precision, callbacks=[OctaCallback(task="segmentation", record=str(record)), witness])
    history = read_recording(record).history
    schema = history.schema

    # one published step per real optimizer step: 8 batches an epoch, 2 epochs, / accumulate
    assert trainer.global_step == 16 // accumulate
    assert len(history.steps) == trainer.global_step == len(witness.norms)
    assert schema.grad == LAYERS
    assert schema.config["framework"] == "lightning"
    assert schema.config["accumulate_grad_batches"] == accumulate
    assert schema.config.get("amp") == ("bf16" if precision == "bf16-mixed" else None)
    # measured on the step's own, complete gradients, before Lightning's gradient_clip_val
    np.testing.assert_allclose(_column(history, "gradstat/total_norm"), witness.norms, rtol=1e-4)
    if not manual:
        assert max(witness.norms) > 0.5  # the clip had something to clip: the norms are the unclipped ones
    # the loss of the step is the mean over its accumulated micro-batches, as backward saw it
    np.testing.assert_allclose(_column(history, "loss/total"), witness.losses, rtol=1e-4)
    # its BCE term was observed at the loss function; Dice is hand-written, so total > bce
    assert "bce" in schema.loss
    assert np.all(_column(history, "loss/total") > _column(history, "loss/bce"))
    assert schema.loss_expects_probabilities is False  # BCE with logits: observed, not declared
    assert np.all(np.isfinite(_column(history, "out/raw_min")))
    np.testing.assert_allclose(_column(history, "opt/lr"), witness.lrs, rtol=1e-6)

    # each epoch ends in a summary with Lightning's validation metrics
    assert [e.epoch for e in history.epochs] == [0, 1]
    last = history.epochs[-1]
    assert math.isclose(last.val["dice"], float(trainer.callback_metrics["val_dice"]), rel_tol=1e-6)
    assert math.isclose(last.val["loss"], float(trainer.callback_metrics["val_loss"]), rel_tol=1e-6)
    assert math.isfinite(last.train["loss"])
    assert [e.kind for e in history.events if e.kind == "run_finished"] == ["run_finished"]


@pytest.mark.slow
def test_the_monitor_steers_a_running_fit(tmp_path):
    # GIVEN a long fit with the callback, and a monitor attached from another thread
    failures: list[BaseException] = []
    witness = Witness(abort=failures)
    callback = OctaCallback(task="segmentation", record=str(tmp_path / "steer.octa"))
    seen: dict = {}

    def monitor_side():
        try:
            monitor = Monitor(find_run(tmp_path / "run"))
            try:
                monitor.wait_steps(5)
                # set_lr: a scale on whatever CosineAnnealingLR sets, from the step the reply names
                reply = monitor.request("set_lr", lr=1e-4)
                assert reply.status == "ok", reply.reason
                seen["lr_reply"] = reply
                # clip: the gradients Lightning steps with are clipped to the monitor's norm
                reply = monitor.request("set_clip", clip=0.05)
                assert reply.status == "ok", reply.reason
                seen["clip_step"] = reply.step
                reply = monitor.request("checkpoint")
                assert reply.status == "ok", reply.reason
                seen["checkpoint"] = reply
                # pause: no step is taken until resume
                reply = monitor.request("pause")
                assert reply.status == "ok", reply.reason
                wait_for(lambda: callback.watch is not None and callback.watch.paused, "the fit to pause")
                paused_at = len(witness.norms)
                wait_for(lambda: monitor.follower.trainer is not None and monitor.follower.trainer.state == "paused",
                         "a 'paused' heartbeat", tick=monitor.poll)
                seen["steps_while_paused"] = len(witness.norms) - paused_at
                assert monitor.request("resume").status == "ok"
                wait_for(lambda: len(witness.norms) > paused_at + 3, "steps after resume")
                reply = monitor.request("stop")
                assert reply.status == "ok", reply.reason
                seen["stop_step"] = reply.step
            finally:
                monitor.close()
        except BaseException as exc:  # noqa: BLE001 - reported on the test's thread
            failures.append(exc)

    thread = threading.Thread(target=monitor_side, daemon=True)
    thread.start()
    trainer = _fit(tmp_path, epochs=100, callbacks=[callback, witness])
    thread.join(timeout=60)
    if failures:
        raise failures[0]

    # THEN the fit stopped early, cleanly, at the monitor's stop
    assert trainer.should_stop and trainer.current_epoch < 99
    assert seen["steps_while_paused"] == 0
    history = read_recording(tmp_path / "steer.octa").history
    published = len(history.steps)
    assert published == len(witness.norms) <= seen["stop_step"] + 2
    finished = [e for e in history.events if e.kind == "run_finished"]
    assert finished and finished[-1].data["state"] == "stopped"

    # set_lr: from the step it names, every step's lr is the scheduler's lr x the same scale
    reply = seen["lr_reply"]
    groups = reply.data["groups"]
    assert len(groups) == 1 and math.isclose(groups[0]["new"], 1e-4, rel_tol=1e-6)
    scale = groups[0]["new"] / groups[0]["old"]
    lrs, scheduled = np.asarray(witness.lrs), np.asarray(witness.scheduled)
    np.testing.assert_allclose(lrs[: reply.step], scheduled[: reply.step], rtol=1e-6)
    np.testing.assert_allclose(lrs[reply.step:], scheduled[reply.step:] * scale, rtol=1e-6)
    assert len(set(np.round(scheduled, 12))) > 5  # the scheduler kept its own schedule going
    np.testing.assert_allclose(_column(history, "opt/lr"), lrs, rtol=1e-6)

    # clip: published norms are measured before clipping; the step's gradients were clipped
    clip = _column(history, "opt/clip")
    assert np.all(clip[seen["clip_step"]:] == np.float32(0.05))
    assert np.all(np.asarray(witness.norms[seen["clip_step"]:]) <= 0.05 * 1.001)
    assert np.any(_column(history, "gradstat/total_norm")[seen["clip_step"]:] > 0.05)

    # checkpoint: a file with the module's state, named in the reply
    path = Path(str(seen["checkpoint"].data.get("new") or seen["checkpoint"].data.get("path")))
    assert path.is_file()
    assert "model" in torch.load(path, weights_only=False)


@pytest.mark.slow
def test_fp16_mixed_precision_skipped_steps_are_marked_never_non_finite(tmp_path):
    # GIVEN precision "16-mixed" on the CPU (Lightning's MixedPrecision plugin with a CPU GradScaler
    # that starts huge and grows every 2 steps, so it overflows and skips again and again)
    from lightning.pytorch.plugins.precision import MixedPrecision

    record = tmp_path / "fp16.octa"
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)
    skips: list[bool] = []

    class ScaleWitness(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.scale = scaler.get_scale()

        def on_train_batch_end(self, trainer, pl_module, *args):
            skips.append(scaler.get_scale() < self.scale)

    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler)],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, logger=False,
                        callbacks=[OctaCallback(record=str(record)), ScaleWitness()])
    trainer.fit(foreign.SegModel(), datamodule=foreign.DiscDataModule())

    history = read_recording(record).history
    schema = history.schema
    assert schema.config["amp"] == "fp16" and schema.config["precision"] == "16-mixed"
    skipped = _column(history, "gradstat/amp_skipped").astype(bool)
    assert len(history.steps) == len(skips) == 24
    assert list(skipped) == skips and skipped.sum() >= 3
    assert np.all(_column(history, "gradstat/nonfinite") == 0)
    assert np.all(np.isfinite(_column(history, "loss/total")))
    assert np.all(np.isfinite(_column(history, "gradstat/total_norm")[~skipped]))
    assert any(e.kind == "amp_step_skipped" for e in history.events)
    assert [e.epoch for e in history.epochs] == [0, 1, 2]


class HeatmapModule(L.LightningModule):
    """A CRAFT-like LightningModule with seed 002's fault: raw outputs into MSE against heatmaps in [0, 1]."""

    def __init__(self):
        super().__init__()
        import logits_mse

        self.net = logits_mse.CraftLike()

    def training_step(self, batch, batch_idx):
        images, heatmaps = batch
        return torch.nn.functional.mse_loss(self.net(images), heatmaps)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _verdict_codes(history) -> dict[str, int]:
    from .monitor import verdicts_as_the_run_grows

    found: dict[str, int] = {}
    for step, verdicts in verdicts_as_the_run_grows(history):
        for verdict in verdicts:
            found.setdefault(verdict.code, step)
    return found


@pytest.mark.slow
def test_a_lightning_module_without_its_sigmoid_is_diagnosed_missing_sigmoid(tmp_path):
    import logits_mse
    from torch.utils.data import DataLoader, TensorDataset

    L.seed_everything(0, verbose=False)
    images, heatmaps = logits_mse.gaussian_heatmaps(64)
    record = tmp_path / "heatmap.octa"
    trainer = L.Trainer(max_steps=80, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[OctaCallback(task="heatmap", record=str(record))])
    trainer.fit(HeatmapModule(), DataLoader(TensorDataset(images, heatmaps), batch_size=8, shuffle=True))
    history = read_recording(record).history
    assert history.schema.loss == ("total", "mse") and history.schema.loss_expects_probabilities
    assert "missing_sigmoid" in _verdict_codes(history)


@pytest.mark.slow
def test_a_healthy_lightning_fit_raises_no_warning(tmp_path):
    from octa_tui.diagnosis import Severity

    from .monitor import verdicts_as_the_run_grows

    record = tmp_path / "healthy.octa"
    _fit(tmp_path, epochs=12, callbacks=[OctaCallback(task="segmentation", record=str(record))])
    history = read_recording(record).history
    assert len(history.steps) == 96 and len(history.epochs) == 12
    loud = [(step, v.code, v.evidence) for step, verdicts in verdicts_as_the_run_grows(history)
            for v in verdicts if v.severity >= Severity.WARN]
    assert loud == []


class ScenarioModule(L.LightningModule):
    """One of the fault scenarios' configurations, written as a LightningModule."""

    def __init__(self, net, loss, optimizer):
        super().__init__()
        self.net, self.loss, self.make_optimizer = net, loss, optimizer

    def training_step(self, batch, batch_idx):
        images, targets = batch
        return self.loss(self.net(images), targets)

    def configure_optimizers(self):
        return self.make_optimizer(self.parameters())


def _vanishing():
    from octa_tui.trainer.models import PlainSigmoidCNN

    images, masks = foreign.discs(64, size=32)
    return (ScenarioModule(PlainSigmoidCNN(depth=12, width=16, in_channels=1),
                           torch.nn.functional.binary_cross_entropy_with_logits,
                           lambda p: torch.optim.Adam(p, lr=1e-3)), images, masks)


def _nan():
    # seed 002's conditions: no normalisation, 0-255 inputs, MSE on raw outputs; SGD at lr 0.02 diverges
    from octa_tui.trainer.models import CraftLike
    from octa_tui.trainer.synthetic import synthetic_heatmaps

    images, region, affinity = synthetic_heatmaps(64, size=32, seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    y = torch.from_numpy(np.stack([region, affinity], axis=1))
    return (ScenarioModule(CraftLike(base_width=16, output_activation="none", batch_norm=False),
                           torch.nn.functional.mse_loss,
                           lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9)), x, y)


@pytest.mark.slow
@pytest.mark.parametrize(("scenario", "verdict"), [(_vanishing, "vanishing_gradients"), (_nan, "nonfinite")],
                         ids=["vanishing", "nan"])
def test_a_scenario_fault_in_a_lightning_module_gets_the_scenarios_verdict(tmp_path, scenario, verdict):
    from torch.utils.data import DataLoader, TensorDataset

    L.seed_everything(0, verbose=False)
    module, x, y = scenario()
    record = tmp_path / "fault.octa"
    trainer = L.Trainer(max_steps=60, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[OctaCallback(record=str(record))])
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True))
    found = _verdict_codes(read_recording(record).history)
    assert verdict in found, sorted(found)


@pytest.mark.slow
def test_a_resumed_fit_goes_on_counting_from_its_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    L.seed_everything(0, verbose=False)
    data = foreign.DiscDataModule(n_train=64, n_val=16, batch_size=8)
    common = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                  default_root_dir=str(tmp_path))
    first = L.Trainer(max_epochs=1, callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt")], **common)
    first.fit(foreign.SegModel(), datamodule=data)
    [checkpoint] = (tmp_path / "ckpt").glob("*.ckpt")

    record = tmp_path / "resumed.octa"
    second = L.Trainer(max_epochs=2, enable_checkpointing=False, callbacks=[OctaCallback(record=str(record))],
                       **common)
    second.fit(foreign.SegModel(), datamodule=data, ckpt_path=str(checkpoint))
    history = read_recording(record).history
    assert list(history.steps.step) == list(range(8, 16))  # Lightning's global steps 8..15
    assert set(history.steps.epoch) == {1} and [e.epoch for e in history.epochs] == [1]
