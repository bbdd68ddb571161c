"""The MONAI/Ignite handler on real engines (CPU, small).

GIVEN MONAI's SupervisedTrainer with a ValidationHandler (examples/foreign/monai_ignite.py), or a
plain Ignite engine whose step runs fp16 autocast with a GradScaler, WHEN ``OctaHandler`` is
attached in one line THEN the monitor sees every step with the true (unscaled) gradient norms,
the scaler's skipped steps as skipped (never non-finite), epochs with the evaluator's metrics,
and set_lr and stop act on the running engine.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("monai")
from ignite.engine import Engine, Events  # noqa: E402

from octa_tui.protocol.recording import read_recording  # noqa: E402
from octa_tui.trainer.integrations.ignite import OctaHandler  # noqa: E402

from .monitor import Monitor, find_run, wait_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "foreign"))
import monai_ignite as foreign  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run"))
    yield
    torch.set_num_threads(threads)


def _column(history, key):
    return np.asarray(history.steps.column(history.schema.index(key)), dtype=np.float64)


@pytest.mark.slow
def test_a_monai_supervised_trainer_is_watched_with_its_validation(tmp_path):
    torch.manual_seed(0)
    trainer, evaluator = foreign.build(epochs=2)
    record = tmp_path / "monai.octa"
    OctaHandler(task="segmentation", record=str(record)).attach(trainer)
    trainer.run()

    history = read_recording(record).history
    schema = history.schema
    assert schema.model.name == "BasicUNet" and schema.config["framework"] == "monai"
    assert len(history.steps) == trainer.state.iteration == 12
    assert schema.grad[0].startswith("conv_0") and schema.grad[-1].startswith("final_conv")
    assert schema.loss == ("total", "bce") and not schema.loss_expects_probabilities  # DiceCELoss(sigmoid=True)
    assert np.all(_column(history, "loss/total") > _column(history, "loss/bce"))  # + its Dice term
    assert np.all(np.isfinite(_column(history, "gradstat/total_norm")))
    assert [e.epoch for e in history.epochs] == [0, 1]
    last = history.epochs[-1]
    assert math.isclose(last.val["dice"], evaluator.state.metrics["val_mean_dice"], rel_tol=1e-6)
    assert math.isclose(last.train["loss"], float(np.mean(_column(history, "loss/total")[6:])), rel_tol=1e-5)
    assert history.events[-1].kind == "run_finished" and history.events[-1].data["state"] == "finished"


@pytest.mark.slow
def test_the_monitor_sets_the_lr_and_stops_a_running_engine(tmp_path):
    torch.manual_seed(0)
    trainer, _ = foreign.build(epochs=300)
    record = tmp_path / "steer.octa"
    OctaHandler(task="segmentation", record=str(record)).attach(trainer)
    failures: list[BaseException] = []
    seen: dict = {}

    @trainer.on(Events.ITERATION_COMPLETED)
    def _abort(engine):
        if failures:
            engine.terminate()

    def monitor_side():
        try:
            monitor = Monitor(find_run(tmp_path / "run"))
            try:
                monitor.wait_steps(4)
                reply = monitor.request("set_lr", lr=1e-3)
                assert reply.status == "ok", reply.reason
                seen["lr"] = reply
                wait_for(lambda: monitor.steps()[-1] > reply.step + 3, "steps after set_lr", tick=monitor.poll)
                reply = monitor.request("stop")
                assert reply.status == "ok", reply.reason
                seen["stop"] = reply
            finally:
                monitor.close()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    thread = threading.Thread(target=monitor_side, daemon=True)
    thread.start()
    trainer.run()
    thread.join(timeout=60)
    if failures:
        raise failures[0]

    assert trainer.state.epoch < 300
    history = read_recording(record).history
    assert len(history.steps) <= seen["stop"].step + 2
    lr = _column(history, "opt/lr")
    steps = np.asarray(history.steps.step)
    at = seen["lr"].step
    assert seen["lr"].data["groups"] == [{"old": pytest.approx(3e-3), "new": pytest.approx(1e-3)}]
    np.testing.assert_allclose(lr[steps < at], 3e-3, rtol=1e-6)
    np.testing.assert_allclose(lr[steps >= at], 1e-3, rtol=1e-6)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3)  # the optimizer's own value is kept
    finished = [e for e in history.events if e.kind == "run_finished"]
    assert finished and finished[-1].data["state"] == "stopped"


@pytest.mark.slow
def test_an_ignite_fp16_step_is_measured_unscaled_and_its_skips_are_not_faults(tmp_path):
    # GIVEN a plain Ignite engine whose step is the PyTorch AMP recipe on the CPU, with a
    # GradScaler that starts huge and grows every 2 steps (it overflows again and again)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, growth_interval=2)
    truth: list[tuple[float, bool]] = []  # each step's true gradient norm, and whether the scaler skipped it

    def train_step(engine, batch):
        x, y = batch
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        # what BACKWARD_COMPLETED would see: scaled gradients; the truth is them / scale
        norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))) / scale
        scaler.step(optimizer)
        scaler.update()
        truth.append((norm, scaler.get_scale() < scale))
        return loss.item()

    engine = Engine(train_step)
    record = tmp_path / "amp.octa"
    OctaHandler(model, optimizer, scaler=scaler, record=str(record)).attach(engine)
    data = [(torch.randn(4, 1, 12, 12), (torch.rand(4, 1, 12, 12) > 0.7).float()) for _ in range(10)]
    engine.run(data, max_epochs=4)

    history = read_recording(record).history
    assert history.schema.config["amp"] == "fp16"
    skipped = _column(history, "gradstat/amp_skipped").astype(bool)
    assert len(history.steps) == len(truth) == 40
    assert list(skipped) == [s for _, s in truth] and skipped.sum() >= 5
    norms = _column(history, "gradstat/total_norm")
    np.testing.assert_allclose(norms[~skipped], [n for n, s in truth if not s], rtol=1e-4)
    assert np.all(np.isnan(norms[skipped]))  # a skipped step has no gradient numbers ...
    assert np.all(_column(history, "gradstat/nonfinite") == 0)  # ... and is not a non-finite step
    assert np.all(np.isfinite(_column(history, "loss/total")))
    assert [e.epoch for e in history.epochs] == [0, 1, 2, 3]
