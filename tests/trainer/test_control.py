"""Live control: commands over the real control channel take effect at the next step, or change nothing."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from octa_tui.protocol.commands import make_command
from octa_tui.protocol.messages import Command, Heartbeat
from octa_tui.protocol.recording import read_recording
from octa_tui.protocol.transport import ControlClient, TelemetrySubscriber
from octa_tui.trainer.config import TrainConfig
from octa_tui.trainer.control import Controller, LrSchedule
from octa_tui.trainer.loop import Trainer
from octa_tui.trainer.losses import DiceBCELoss, HeatmapMSELoss
from octa_tui.trainer.probe import Probe


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def private_run_files(tmp_path, monkeypatch):
    """Run files of the runs started here go to a temporary folder, not the user's."""
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))


@dataclass
class StepLog:
    """A reporter that notes, on the training thread, the lr each step ran with (from the optimizer)."""

    ready: threading.Event = field(default_factory=threading.Event)
    lr_at: dict[int, float] = field(default_factory=dict)
    weights_at: dict[int, tuple[float, float]] = field(default_factory=dict)

    def started(self, trainer):
        self.ready.set()

    def step(self, trainer):
        step = trainer.probe.step - 1
        self.lr_at[step] = trainer.controller.lr_scale.first_used()  # the lr the step really used
        self.weights_at[step] = (trainer.criterion.bce_weight, trainer.criterion.dice_weight)

    def epoch(self, trainer, train, val):
        pass

    def message(self, text):
        pass

    def finished(self, trainer, result):
        pass


def _wait_for(condition, timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _applied_events(trainer: Trainer) -> list:
    return [e for e in list(trainer.probe.link.history.events) if e.kind == "command_applied"]


@pytest.mark.slow
def test_commands_over_the_control_channel_take_effect_at_the_step_they_name(tmp_path: Path):
    # GIVEN a real training run in a background thread, bound to loopback, and a monitor's control client
    config = TrainConfig(synthetic=48, image_size=32, base_width=8, batch_size=4, epochs=200, lr=1e-3,
                         step_size=1000, preview_every=0, checkpoint_dir=str(tmp_path / "ckpt"),
                         record=str(tmp_path / "run.octa"))
    log = StepLog()
    trainer = Trainer(config, reporter=log)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", trainer.run()), daemon=True)
    thread.start()
    assert log.ready.wait(60), "the trainer did not start"
    client = ControlClient(trainer.probe.link.control_endpoint, timeout_s=10.0)
    subscriber = TelemetrySubscriber(trainer.probe.link.telemetry_endpoint)
    try:
        _wait_for(lambda: len(log.lr_at) >= 2, what="two steps")

        # WHEN the lr is set mid-run
        reply = client.request(make_command("set_lr", lr=0.0123))
        # THEN the reply is ok and names a step; that step and every later one run with the new lr
        assert reply.ok, reply.reason
        step = reply.step
        _wait_for(lambda: step + 1 in log.lr_at, what=f"step {step + 1}")
        assert log.lr_at[step - 1] == pytest.approx(1e-3)
        assert log.lr_at[step] == pytest.approx(0.0123)
        assert log.lr_at[step + 1] == pytest.approx(0.0123)
        assert reply.data["new"] == pytest.approx(0.0123)
        event = _applied_events(trainer)[-1]
        assert (event.data["op"], event.data["old"], event.data["new"]) == ("set_lr", pytest.approx(1e-3), pytest.approx(0.0123))

        # WHEN invalid commands arrive
        applied_before = len(_applied_events(trainer))
        weights_before = (trainer.criterion.bce_weight, trainer.criterion.dice_weight)
        invalid = [
            Command("set_lr", {"lr": -1.0}),
            Command("set_lr", {"lr": math.nan}),
            Command("set_lr", {"lr": "fast"}),
            Command("explode", {}),
            Command("set_loss_weights", {"bce": 0.5}),
            Command("set_loss_weights", {"bce": 0.0, "dice": 0.0}),
            Command("set_clip", {"clip": -2.0}),
            Command("resume", {}),  # not paused
        ]
        replies = [client.request(command) for command in invalid]
        # THEN each is refused with a reason, and nothing changed
        for command, answer in zip(invalid, replies):
            assert answer.status == "error" and answer.reason, (command, answer)
        last = max(log.lr_at)
        _wait_for(lambda: last + 2 in log.lr_at, what="two more steps")
        assert log.lr_at[last + 2] == pytest.approx(0.0123)
        assert (trainer.criterion.bce_weight, trainer.criterion.dice_weight) == weights_before
        assert len(_applied_events(trainer)) == applied_before

        # WHEN paused, THEN steps stop but heartbeats and commands go on
        assert client.request(make_command("pause")).ok
        paused_at = max(log.lr_at)
        heartbeat = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (heartbeat and heartbeat.state == "paused"):
            msg = subscriber.recv(0.2)
            heartbeat = msg if isinstance(msg, Heartbeat) else heartbeat
        assert heartbeat is not None and heartbeat.state == "paused"
        weights = client.request(make_command("set_loss_weights", bce=0.5, dice=0.5))
        assert weights.ok and weights.step == paused_at + 1
        assert max(log.lr_at) == paused_at

        # WHEN resumed, THEN the new weights are in force from the step the reply named
        assert client.request(make_command("resume")).ok
        _wait_for(lambda: paused_at + 1 in log.lr_at, what="the step after the pause")
        assert log.weights_at[paused_at + 1] == (0.5, 0.5)
        assert log.weights_at[paused_at] == weights_before

        # WHEN a checkpoint is asked for, THEN it is written and its path returned
        saved = client.request(make_command("checkpoint"))
        assert saved.ok and Path(saved.data["new"]).is_file()

        # WHEN stop is sent, THEN the run ends cleanly: final checkpoint, recording closed
        assert client.request(make_command("stop")).ok
        thread.join(60)
        assert not thread.is_alive()
    finally:
        client.close()
        subscriber.close()
        if thread.is_alive():
            trainer.stop()
            thread.join(60)
    result = outcome["result"]
    assert result.state == "stopped"
    assert Path(result.last_path).is_file()
    recording = read_recording(tmp_path / "run.octa")
    assert recording.warnings == [] and recording.truncated_bytes == 0
    ops = [e.data["op"] for e in recording.history.events if e.kind == "command_applied"]
    assert ops == ["set_lr", "pause", "set_loss_weights", "resume", "checkpoint", "stop"]
    assert recording.history.events[-1].kind == "run_finished"


# --- the controller's rules, without a network -------------------------------------------------


class Pending:
    """Stands in for the link's PendingCommand: records the one answer it gets."""

    def __init__(self, op: str, **args):
        self.command = Command(op, args, request_id="t")
        self.answer = None

    def ok(self, step, data=None):
        self.answer = ("ok", step, data)

    def error(self, reason, step):
        self.answer = ("error", step, reason)


def _controller(criterion) -> tuple[Controller, torch.optim.Optimizer, Probe]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    probe = Probe(model, optimizer=optimizer, criterion=criterion)
    schedule = LrSchedule((1e-3,), step_size=2, gamma=0.5)
    return Controller(probe, optimizer, schedule, criterion), optimizer, probe


def test_set_lr_is_an_override_that_the_step_schedule_keeps_decaying():
    # GIVEN StepLR halving every 2 epochs, at epoch 1
    controller, optimizer, probe = _controller(DiceBCELoss())
    probe.epoch = 1
    controller.schedule.apply(optimizer, 1)
    # WHEN the lr is set to 5e-3
    pending = Pending("set_lr", lr=5e-3)
    assert controller.apply(pending)
    # THEN it is in force for the next step and the schedule decays from it instead of overwriting it
    assert controller.schedule.apply(optimizer, 1) == pytest.approx(1e-3)  # the schedule's own view
    assert controller.lr_scale.effective() == pytest.approx([5e-3])
    controller.schedule.apply(optimizer, 2)
    assert controller.lr_scale.effective() == pytest.approx([2.5e-3])
    assert pending.answer[0] == "ok" and pending.answer[2]["new"] == pytest.approx(5e-3)
    assert pending.answer[2]["old"] == pytest.approx(1e-3)


def test_loss_settings_are_refused_on_the_heatmap_task_and_nothing_changes():
    controller, _, probe = _controller(HeatmapMSELoss())
    for pending in (Pending("set_pos_weight", pos_weight=9.0), Pending("set_loss_weights", bce=0.5, dice=0.5)):
        assert not controller.apply(pending)
        assert pending.answer[0] == "error" and "nothing was changed" in pending.answer[2]
    assert not hasattr(controller.criterion, "pos_weight")
    assert controller.applied == 0


def test_settings_change_the_loss_and_clip_and_report_old_and_new():
    loss = DiceBCELoss()
    controller, _, probe = _controller(loss)
    probe.step = 7
    pending = Pending("set_pos_weight", pos_weight=9.0)
    assert controller.apply(pending)
    assert loss.pos_weight == 9.0 and pending.answer == ("ok", 7, {"old": None, "new": 9.0})
    assert controller.apply(Pending("set_clip", clip=1.0)) and controller.clip == 1.0
    off = Pending("set_clip", clip=0.0)
    assert controller.apply(off) and controller.clip == 0.0 and off.answer[2] == {"old": 1.0, "new": 0.0}


def test_pause_twice_and_resume_when_running_are_errors():
    controller, _, _ = _controller(DiceBCELoss())
    resume = Pending("resume")
    assert not controller.apply(resume) and "not paused" in resume.answer[2]
    assert controller.apply(Pending("pause")) and controller.paused
    again = Pending("pause")
    assert not controller.apply(again) and "already paused" in again.answer[2]


def test_checkpoint_without_a_place_to_write_is_an_error():
    controller, _, _ = _controller(DiceBCELoss())
    pending = Pending("checkpoint")
    assert not controller.apply(pending) and "no checkpoint directory" in pending.answer[2]


def test_a_run_announces_itself_while_it_runs_and_not_after(tmp_path: Path):
    # GIVEN a run with a link (its run file goes to the temporary folder of the fixture)
    from octa_tui.protocol.runfiles import list_run_files

    config = TrainConfig(synthetic=8, image_size=32, base_width=8, batch_size=4, epochs=1, preview_every=0,
                         checkpoint_dir=str(tmp_path / "c"), record=str(tmp_path / "r.octa"))
    trainer = Trainer(config)
    trainer.setup()
    try:
        # THEN a monitor listing this machine's trainers finds it, with its endpoints
        [info] = list_run_files()
        assert info.run_id == trainer.run_id and info.control == trainer.probe.link.control_endpoint
        assert info.recording == str(tmp_path / "r.octa")
    finally:
        trainer.cleanup()
    # AND once it is closed the list is empty
    assert list_run_files() == []
