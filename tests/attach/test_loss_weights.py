"""Live loss-term weights under ``watch``/``run``: a factor on what an observed loss function returns.

The commands are applied as the link hands them over (after the protocol's check), on a real
loop: the factor changes the value the user's code gets back, the gradients, the published
terms and the total; the reply names the true old and new factors; sending the old factors
back undoes it; a term that was not observed is refused and nothing changes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octa_tui
from octa_tui.protocol.messages import Command
from octa_tui.trainer import observe
from octa_tui.trainer.core.loss_weights import TermWeightError, TermWeights


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    assert not observe.installed()


class Pending:
    """Stands in for the link's PendingCommand: records the one answer it gets."""

    def __init__(self, op: str, **args):
        self.command = Command(op, args, request_id="t")
        self.answer = None

    def ok(self, step, data=None):
        self.answer = ("ok", step, data)

    def error(self, reason, step):
        self.answer = ("error", step, reason)


def test_term_weights_check_before_they_change():
    weights = TermWeights(("bce", "mse"))
    assert weights.set({"bce": 0.5}) == ({"bce": 1.0}, {"bce": 0.5})
    assert weights.factor("bce") == 0.5 and weights.factor("mse") == 1.0
    for bad, reason in (({"dice": 0.5}, "not a loss term observed"), ({"bce": -1.0}, "finite number"),
                        ({"bce": float("nan")}, "finite number"), ({"bce": 0.0, "mse": 0.0}, "weighted 0"),
                        ({}, "at least one")):
        with pytest.raises(TermWeightError, match=reason):
            weights.set(bad)
    assert weights.all_factors() == {"bce": 0.5, "mse": 1.0}  # nothing changed by the refusals
    assert weights.set({"bce": 1.0}) == ({"bce": 0.5}, {"bce": 1.0})
    assert weights.factors == {}  # back to the script as written
    with pytest.raises(TermWeightError, match="no loss term was observed"):
        TermWeights().set({"mse": 2.0})


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


@pytest.mark.parametrize("autocast", [False, True])
def test_a_weight_command_scales_the_observed_term_its_gradients_and_the_stream(autocast):
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same model
    criterion = nn.BCEWithLogitsLoss()  # a loss module: it calls F.binary_cross_entropy_with_logits
    x = torch.randn(4, 1, 8, 8)
    y = (torch.rand(4, 1, 8, 8) > 0.7).float()
    w = octa_tui.watch(model, optimizer, telemetry=None, control=None)
    raw_bce = F.binary_cross_entropy_with_logits.__wrapped__  # the original, under the observer
    seen: list[tuple[float, float, float, torch.Tensor]] = []

    def step() -> None:
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)
            bce = criterion(logits, y)
            mse = F.mse_loss(torch.sigmoid(logits), y)
            loss = 0.7 * bce + 0.3 * mse  # the script's own weights
        loss.backward()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            reference = float(raw_bce(model(x), y))
        seen.append((float(bce.detach()), reference, float(loss.detach()), model.head.weight.grad.clone()))
        optimizer.step()

    step()
    controller = w.controller
    # WHEN the BCE term is weighted x0.25 from the monitor
    pending = Pending("set_loss_weights", bce=0.25)
    assert controller.apply(pending), pending.answer
    status, at_step, data = pending.answer
    assert status == "ok" and at_step == 1
    assert data["old"] == {"bce": 1.0} and data["new"] == {"bce": 0.25}
    assert data["factors"] == {"bce": 0.25, "mse": 1.0}
    step()
    values, schema = w.probe.last_values, w.probe.schema
    bce_value, reference, total, grad = seen[-1]
    # THEN the loss module returns the term x0.25, the total and the published term follow
    assert bce_value == pytest.approx(0.25 * reference, rel=1e-2 if autocast else 1e-5)
    assert values[schema.index("loss/bce")] == pytest.approx(bce_value, rel=1e-5)
    assert values[schema.index("loss/total")] == pytest.approx(total, rel=1e-5)
    # AND the gradients are those of 0.7 * 0.25 * bce + 0.3 * mse
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)
        expected = 0.7 * 0.25 * raw_bce(logits, y) + 0.3 * F.mse_loss.__wrapped__(torch.sigmoid(logits), y)
    expected.backward()
    assert torch.allclose(grad, model.head.weight.grad, rtol=1e-2 if autocast else 1e-5, atol=1e-6)
    # WHEN the old factor is sent back (undo), THEN the script's loss is as written again
    undo = Pending("set_loss_weights", **data["old"])
    assert controller.apply(undo) and undo.answer[2]["old"] == {"bce": 0.25}
    step()
    assert seen[-1][0] == pytest.approx(seen[-1][1], rel=1e-2 if autocast else 1e-5)
    # AND a term that is not observed is refused with the reason; nothing changes
    refused = Pending("set_loss_weights", bce=0.5, dice=0.5)
    assert not controller.apply(refused)
    assert refused.answer[0] == "error" and "'dice' is not a loss term observed" in refused.answer[2]
    assert "bce, mse" in refused.answer[2] and "nothing was changed" in refused.answer[2]
    assert w.term_weights.all_factors() == {"bce": 1.0, "mse": 1.0}
    w.close()


def test_the_second_call_of_a_function_is_its_own_term():
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = torch.randn(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    got = []
    with octa_tui.watch(model, optimizer, telemetry=None, control=None) as w:
        for i in range(3):
            optimizer.zero_grad()
            out = model(x)
            first, second = F.mse_loss(out, y), F.mse_loss(out.mean(dim=(2, 3)), y.mean(dim=(2, 3)))
            (first + second).backward()
            got.append((float(first.detach()), float(second.detach())))
            optimizer.step()
            if i == 0:
                pending = Pending("set_loss_weights", mse_2=3.0)
                assert w.controller.apply(pending), pending.answer
    assert got[1][0] == pytest.approx(got[0][0]) and got[1][1] == pytest.approx(3 * got[0][1])
    assert w.probe.schema.loss == ("total", "mse", "mse_2")


def test_a_criterion_given_to_watch_is_steered_by_its_own_weights():
    from octa_tui.trainer.losses import DiceBCELoss

    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    criterion = DiceBCELoss()
    x, y = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.7).float()
    with octa_tui.watch(model, optimizer, criterion=criterion, telemetry=None, control=None) as w:
        optimizer.zero_grad()
        criterion(model(x), y).total.backward()
        optimizer.step()
        pair = Pending("set_loss_weights", bce=0.5, dice=0.5)
        assert w.controller.apply(pair), pair.answer
        assert w.controller.apply(Pending("set_pos_weight", pos_weight=4.0))
        half = Pending("set_loss_weights", bce=0.5)  # the pair is this loss's weights: both are needed
        assert not w.controller.apply(half) and "'dice' is missing" in half.answer[2]
    assert (criterion.bce_weight, criterion.dice_weight, criterion.pos_weight) == (0.5, 0.5, 4.0)
    assert pair.answer[2]["old"] == {"bce": 0.3, "dice": 0.7}
