"""Live lr from the monitor composes with every scheduler and any number of parameter groups.

For each scheduler, a run with ``set_lr`` mid-way is compared with the same run without it:
after the command, every step must use exactly the scheduler's lr (as the run without the
command has it) times the scale the command set, in every group; between steps the groups
hold the scheduler's own values; the reply names the true old and new effective lr of
every group.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from octa_tui.protocol.commands import Command
from octa_tui.trainer.control import Controller
from octa_tui.trainer.probe import Probe

STEPS = 24
COMMAND_AT = 9
NEW_LR = 0.037


class Pending:
    def __init__(self, op: str, **args):
        self.command = Command(op, args, request_id="t")
        self.answer = None

    def ok(self, step, data=None):
        self.answer = ("ok", step, data)

    def error(self, reason, step):
        self.answer = ("error", step, reason)


class ManualSchedule:
    """A loop that writes group["lr"] itself every step (no torch scheduler)."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.t = 0

    def step(self):
        self.t += 1
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * 0.93 ** self.t


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=STEPS),
    "CosineAnnealingWarmRestarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=7),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=[0.1 * (i + 1) for i in range(len(o.param_groups))], total_steps=STEPS + 1),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda s: min(1.0, (s + 1) / 6) * 0.97 ** s),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=0.5, patience=1),
    "manual": ManualSchedule,
}


def _model_and_optimizer(groups: int):
    torch.manual_seed(0)
    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(groups)))
    optimizer = torch.optim.SGD(
        [{"params": layer.parameters(), "lr": 0.01 * (i + 1)} for i, layer in enumerate(model)], lr=0.01,
        momentum=0.9)
    return model, optimizer


def _run(name: str, groups: int, command: bool):
    """STEPS steps; returns the lrs each step used, the groups' lrs between steps, and the reply."""
    model, optimizer = _model_and_optimizer(groups)
    scheduler = SCHEDULERS[name](optimizer)
    controller = None
    if command:
        controller = Controller(Probe(model, optimizer=optimizer), optimizer)
    used: list[list[float]] = []
    optimizer.register_step_pre_hook(lambda *_: used.append([float(g["lr"]) for g in optimizer.param_groups]))
    between: list[list[float]] = []
    pending = None
    x = torch.randn(4, 3)
    for step in range(STEPS):
        if controller is not None and step == COMMAND_AT:
            pending = Pending("set_lr", lr=NEW_LR)
            controller.apply(pending)
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if name == "ReduceLROnPlateau":
            scheduler.step(1.0)  # a flat metric: the scheduler cuts the lr every other step
        else:
            scheduler.step()
        between.append([float(g["lr"]) for g in optimizer.param_groups])
    return used, between, pending, controller


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_set_lr_scales_the_schedulers_lr_in_every_group_until_the_end(name: str, groups: int):
    # GIVEN the same run without and with set_lr at step COMMAND_AT
    ref_used, ref_between, _, _ = _run(name, groups, command=False)
    used, between, pending, controller = _run(name, groups, command=True)
    # THEN the command is answered ok with the true old and new effective lr of each group
    assert pending.answer[0] == "ok", pending.answer
    data = pending.answer[2]
    scheduled = ref_used[COMMAND_AT]  # what the scheduler had for this step
    scale = NEW_LR / scheduled[0]
    assert len(data["groups"]) == groups
    for group, lr in zip(data["groups"], scheduled):
        assert group["old"] == pytest.approx(lr)
        assert group["new"] == pytest.approx(lr * scale)
    assert data["old"] == pytest.approx(scheduled[0]) and data["new"] == pytest.approx(NEW_LR)
    # AND the scheduler's own view is untouched (the groups hold its values between steps)
    np.testing.assert_allclose(between, ref_between, rtol=1e-9)
    # AND every step before the command used the scheduler's lr, every step from it on x scale
    np.testing.assert_allclose(used[:COMMAND_AT], ref_used[:COMMAND_AT], rtol=1e-9)
    for step in range(COMMAND_AT, STEPS):
        np.testing.assert_allclose(used[step], [lr * scale for lr in ref_used[step]], rtol=1e-9, err_msg=str(step))
    # AND the probe reports the lr the last step really used
    assert controller.lr_scale.first_used() == pytest.approx(ref_used[-1][0] * scale)


def test_old_lr_after_a_plateau_cut_is_the_cut_value():
    # GIVEN ReduceLROnPlateau that has cut the lr twice
    _, between, pending, _ = _run("ReduceLROnPlateau", 1, command=True)
    ref_used, _, _, _ = _run("ReduceLROnPlateau", 1, command=False)
    assert ref_used[COMMAND_AT][0] < 0.01  # it was cut before the command
    assert pending.answer[2]["old"] == pytest.approx(ref_used[COMMAND_AT][0])


def test_set_lr_while_a_warm_up_is_at_zero_is_an_error_that_changes_nothing():
    model, optimizer = _model_and_optimizer(2)
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: s / 10)  # HF-style warm-up from 0
    controller = Controller(Probe(model, optimizer=optimizer), optimizer)
    pending = Pending("set_lr", lr=0.01)
    assert not controller.apply(pending)
    assert pending.answer[0] == "error" and "warm-up" in pending.answer[2]
    assert controller.lr_scale.scale == 1.0


def test_a_command_that_fails_inside_is_an_error_reply_not_an_exception():
    model, optimizer = _model_and_optimizer(1)
    controller = Controller(Probe(model, optimizer=optimizer), optimizer)
    for pending in (Pending("set_lr"), Pending("set_clip"), Pending("set_lr", lr=math.inf)):
        assert not controller.apply(pending)  # missing or bad arguments: refused, nothing raised
        assert pending.answer[0] == "error"
    assert controller.lr_scale.scale == 1.0 and controller.clip == 0.0
