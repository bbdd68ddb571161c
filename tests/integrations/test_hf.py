"""The Hugging Face Trainer callback on real Trainer runs (CPU, a small custom model).

GIVEN a Trainer script as HF users write one for a custom model (examples/foreign/hf_trainer.py:
linear warm-up schedule, max_grad_norm clipping, evaluation every epoch) WHEN it trains with
``callbacks=[OctaTrainerCallback()]`` THEN the monitor sees every optimizer step (one per
accumulation window) with the gradients the optimizer steps with, which the Trainer has already
clipped (and the run says so), the loss observed inside the model's forward, epochs with the
evaluation metrics; set_lr scales the warm-up schedule without breaking it and stop ends the run.
"""

from __future__ import annotations

import math
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
from transformers import TrainerCallback  # noqa: E402

from octa_tui.protocol.recording import read_recording  # noqa: E402
from octa_tui.trainer.integrations.hf import OctaTrainerCallback  # noqa: E402

from .monitor import Monitor, find_run, wait_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "foreign"))
import hf_trainer as foreign  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run"))
    yield
    torch.set_num_threads(threads)


class Witness(TrainerCallback):
    """Notes, just before each optimizer step, the gradients' total norm (already clipped by the
    Trainer) and the scheduler's own lr; ``abort`` ends the run when the monitor side failed."""

    def __init__(self, abort=None):
        self.abort = abort if abort is not None else []
        self.norms: list[float] = []
        self.scheduled: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, lr_scheduler=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))
        self.scheduled.append(float(lr_scheduler.get_last_lr()[0]))

    def on_step_end(self, args, state, control, **kwargs):
        if self.abort:
            control.should_training_stop = True


def _column(history, key):
    return np.asarray(history.steps.column(history.schema.index(key)), dtype=np.float64)


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_every_optimizer_step_is_published_and_the_clipping_before_it_is_said(tmp_path, accumulation):
    record = tmp_path / "hf.octa"
    witness = Witness()
    trainer = foreign.build(str(tmp_path / "out"), epochs=2, accumulation=accumulation,
                            callbacks=[OctaTrainerCallback(task="segmentation", record=str(record)), witness])
    trainer.train()

    history = read_recording(record).history
    schema = history.schema
    assert trainer.state.global_step == 16 // accumulation == len(history.steps) == len(witness.norms)
    assert schema.grad == ("encoder.0", "encoder.2", "head")
    assert schema.config["framework"] == "transformers"
    assert schema.config["grads_clipped_before_probe"] == 1.0  # the panel says the norms are post-clipping
    np.testing.assert_allclose(_column(history, "gradstat/total_norm"), witness.norms, rtol=1e-4)
    assert schema.loss == ("total", "bce") and not schema.loss_expects_probabilities  # observed in forward
    np.testing.assert_allclose(_column(history, "loss/total"), _column(history, "loss/bce"), rtol=1e-5)
    np.testing.assert_allclose(_column(history, "opt/lr"), witness.scheduled, rtol=1e-6, atol=1e-12)
    assert [e.epoch for e in history.epochs] == [0, 1]
    final = next(h for h in reversed(trainer.state.log_history) if "eval_dice" in h)
    assert math.isclose(history.epochs[-1].val["dice"], final["eval_dice"], rel_tol=1e-6)
    assert math.isclose(history.epochs[-1].val["loss"], final["eval_loss"], rel_tol=1e-6)
    assert history.events[-1].kind == "run_finished" and history.events[-1].data["state"] == "finished"


@pytest.mark.slow
def test_the_monitor_scales_the_warm_up_schedule_and_stops_the_trainer(tmp_path):
    failures: list[BaseException] = []
    witness = Witness(abort=failures)
    record = tmp_path / "steer.octa"
    trainer = foreign.build(str(tmp_path / "out"), epochs=300,
                            callbacks=[OctaTrainerCallback(task="segmentation", record=str(record)), witness])
    seen: dict = {}

    def monitor_side():
        try:
            monitor = Monitor(find_run(tmp_path / "run"))
            try:
                monitor.wait_steps(6)  # past the warm-up's first step at lr 0
                reply = monitor.request("set_lr", lr=1e-3)
                assert reply.status == "ok", reply.reason
                seen["lr"] = reply
                wait_for(lambda: monitor.steps()[-1] > reply.step + 10, "steps after set_lr", tick=monitor.poll)
                reply = monitor.request("stop")
                assert reply.status == "ok", reply.reason
                seen["stop"] = reply
            finally:
                monitor.close()
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    thread = threading.Thread(target=monitor_side, daemon=True)
    thread.start()
    trainer.train()
    thread.join(timeout=60)
    if failures:
        raise failures[0]

    history = read_recording(record).history
    assert trainer.state.global_step < 300 * 8
    assert len(history.steps) <= seen["stop"].step + 2
    reply = seen["lr"]
    scale = reply.data["groups"][0]["new"] / reply.data["groups"][0]["old"]
    lr, scheduled = _column(history, "opt/lr"), np.asarray(witness.scheduled)
    np.testing.assert_allclose(lr[: reply.step], scheduled[: reply.step], rtol=1e-6)
    np.testing.assert_allclose(lr[reply.step:], scheduled[reply.step:] * scale, rtol=1e-6)
    assert len(np.unique(np.round(scheduled[reply.step:], 12))) > 5  # the schedule went on underneath
    finished = [e for e in history.events if e.kind == "run_finished"]
    assert finished and finished[-1].data["state"] == "stopped"


@pytest.mark.slow
def test_a_resumed_trainer_goes_on_counting_from_its_checkpoint(tmp_path):
    from transformers.trainer_utils import SaveStrategy

    out = str(tmp_path / "out")
    first = foreign.build(out, epochs=1)
    first.args.save_strategy = SaveStrategy.EPOCH
    first.train()
    record = tmp_path / "resumed.octa"
    second = foreign.build(out, epochs=2, callbacks=[OctaTrainerCallback(record=str(record))])
    second.train(resume_from_checkpoint=True)
    history = read_recording(record).history
    assert list(history.steps.step) == list(range(8, 16))  # the Trainer's global steps 8..15
    assert set(history.steps.epoch) == {1} and [e.epoch for e in history.epochs] == [1]
