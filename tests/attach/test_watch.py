"""``watch``: one call in a plain loop; what it observes and that it never breaks the loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octa_tui
from octa_tui.protocol.recording import read_recording
from octa_tui.trainer import observe
from octa_tui.trainer.watch import Watch, find_model


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    assert not observe.installed()  # every test closes its watch: the loss functions are the originals


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Conv2d(4, 1, 1)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def _values(w: Watch) -> list[tuple[int, int, np.ndarray]]:
    rows: list = []
    w.probe.on_values.append(lambda step, epoch, vector: rows.append((step, epoch, vector.copy())))
    return rows


def _batch(n: int = 4):
    x = torch.randn(n, 1, 8, 8)
    return x, (torch.rand(n, 1, 8, 8) > 0.7).float()


def test_three_lines_give_steps_loss_terms_epochs_and_accumulation():
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    w = octa_tui.watch(model, optimizer, telemetry=None, control=None)  # the one added line (+ close)
    rows = None
    totals = []
    for _epoch in range(2):
        model.train()
        for _ in range(3):
            optimizer.zero_grad()
            step_total = 0.0
            for _ in range(2):  # gradient accumulation: two micro-batches per step
                x, y = _batch()
                logits = model(x)
                loss = (F.binary_cross_entropy_with_logits(logits, y) + F.mse_loss(torch.sigmoid(logits), y)) / 2
                loss.backward()
                step_total += float(loss.detach())
            optimizer.step()
            totals.append(step_total)
            if rows is None:
                rows = _values(w)
        model.eval()
        with torch.no_grad():
            x, y = _batch()
            F.binary_cross_entropy_with_logits(model(x), y)
    w.close()
    schema = w.probe.schema
    assert schema.loss == ("total", "bce", "mse")
    assert schema.config["loss_functions"] == ["binary_cross_entropy_with_logits", "mse_loss"]
    assert not schema.loss_expects_probabilities  # the first loss takes logits
    rows = [r for r in rows if r[0] >= 1]  # step 0 may be published after the callback was added
    assert len(rows) == 5  # steps 1..5 (the first step built the probe before the callback was added)
    total = [r[2][schema.index("loss/total")] for r in rows]
    assert total == pytest.approx(totals[1:], rel=1e-5)  # the sum over micro-batches of what was backwarded
    assert [r[1] for r in rows] == [0, 0, 1, 1, 1]  # the epoch ended at the first step after validation
    assert w.probe.epoch == 2  # and the last one at close, after its validation
    assert all(np.isfinite(r[2][schema.index("loss/bce")]) for r in rows)


def test_loss_expects_probabilities_is_observed():
    cases = {
        "bce on probabilities": (lambda out, y: F.binary_cross_entropy(torch.sigmoid(out), y), True),
        "bce with logits": (lambda out, y: F.binary_cross_entropy_with_logits(out, y), False),
        "mse on a [0, 1] target": (lambda out, y: F.mse_loss(out, y), True),
        "mse on a free target": (lambda out, y: F.mse_loss(out, y * 5 - 2), False),
        "cross entropy": (lambda out, y: F.cross_entropy(out.flatten(1), y.flatten(1).argmax(1)), False),
    }
    for name, (loss_fn, expected) in cases.items():
        model = Net()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with octa_tui.watch(model, optimizer, telemetry=None, control=None) as w:
            x, y = _batch()
            loss_fn(model(x), y).backward()
            optimizer.step()
        assert w.probe.schema.loss_expects_probabilities is expected, name


def test_the_outputs_are_what_the_loss_saw_not_a_sigmoid_the_loss_never_applied():
    # GIVEN raw outputs into MSE against a [0, 1] target (the README's activation="sigmoid" trap)
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.head.bias.fill_(-3.0)  # outputs well below 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    w = octa_tui.watch(model, optimizer, telemetry=None, control=None)
    x, y = _batch()
    F.mse_loss(model(x), y).backward()
    optimizer.step()
    w.close()
    values, schema = w.probe.last_values, w.probe.schema
    # THEN the outputs outside [0, 1] show: the missing-sigmoid signal
    assert values[schema.index("out/act_max")] < 0
    assert values[schema.index("out/frac_outside_01")] == pytest.approx(1.0)


def test_data_report_and_recording(tmp_path: Path):
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray((np.random.rand(16, 16) * 255).astype(np.uint8)).save(tmp_path / "data" / "images" / f"{i}.png")
        Image.fromarray(((np.random.rand(16, 16) > 0.9) * 255).astype(np.uint8)).save(
            tmp_path / "data" / "masks" / f"{i}.png")
    model = Net()
    optimizer = torch.optim.Adam(model.parameters())
    record = tmp_path / "run" / "w.octa"
    w = octa_tui.watch(model, optimizer, data=tmp_path / "data", record=record)
    for _ in range(20):
        x, y = _batch()
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimizer.step()
        optimizer.zero_grad()
        w._scan_done.wait(30)  # the scan runs beside the loop; its report goes out at a step boundary
    w.close()
    history = read_recording(record).history
    assert len(history.steps) == 20
    assert history.dataset is not None and history.dataset.pairs == 3 and history.dataset.run_id == history.run_id


def test_a_data_folder_that_is_not_one_is_a_warning_not_an_exception(tmp_path: Path):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    w = octa_tui.watch(model, optimizer, data=tmp_path / "missing", record=tmp_path / "w.octa")
    for _ in range(5):
        x, y = _batch()
        F.mse_loss(model(x), y).backward()
        optimizer.step()
        w._scan_done.wait(30)
    w.close()
    events = read_recording(tmp_path / "w.octa").history.events
    assert any(e.kind == "warning" and "dataset report" in e.message for e in events)


def test_an_internal_failure_is_said_once_and_the_loop_goes_on(capsys, monkeypatch):
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    w = octa_tui.watch(model, optimizer, telemetry=None, control=None)
    x, y = _batch()
    F.mse_loss(model(x), y).backward()
    optimizer.step()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(w.probe, "end_step", broken)
    before = [p.detach().clone() for p in model.parameters()]
    for _ in range(3):
        optimizer.zero_grad()
        F.mse_loss(model(x), y).backward()
        optimizer.step()  # nothing raised into the loop
    w.close()
    assert w.failed and "boom" in w.failed
    assert capsys.readouterr().err.count("stopped watching this run") == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # training went on


def test_note_loss_overrides_and_no_optimizer_finds_the_model():
    torch.manual_seed(0)
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert find_model(optimizer) is model
    w = octa_tui.watch(telemetry=None, control=None, loss_components=("main",))  # neither model nor optimizer
    x, y = _batch()
    loss = F.mse_loss(model(x), y)
    loss.backward()
    w.note_loss(loss * 3, {"main": 7.0})
    optimizer.step()
    w.close()
    assert w.probe.model is model
    values, schema = w.probe.last_values, w.probe.schema
    assert values[schema.index("loss/total")] == pytest.approx(float(loss.detach()) * 3)
    assert values[schema.index("loss/main")] == 7.0
    assert math.isfinite(values[schema.index("gradstat/total_norm")])


def test_clipping_before_the_step_is_a_fact_in_the_schema():
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with octa_tui.watch(model, optimizer, telemetry=None, control=None) as w:
        x, y = _batch()
        F.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)  # as the HF Trainer and Lightning do
        optimizer.step()
    assert w.probe.schema.config["grads_clipped_before_probe"] == 0.25
    assert w.probe.last_values[w.probe.schema.index("gradstat/total_norm")] <= 0.25 + 1e-6


def test_clipping_that_starts_later_is_said_once_in_an_event():
    model = Net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    events = []
    with octa_tui.watch(model, optimizer, telemetry=None, control=None) as w:
        for step in range(4):
            x, y = _batch()
            optimizer.zero_grad()
            F.mse_loss(model(x), y).backward()
            if step == 1:  # the probe was built at the first step
                def noted(kind, message, _original=w.probe.event, **data):
                    events.append((kind, message, data))
                    return _original(kind, message, **data)

                w.probe.event = noted
            if step >= 2:  # a warm-up without clipping, then clip_grad_value_ (Lightning's "value" algorithm)
                torch.nn.utils.clip_grad_value_(model.parameters(), 0.01)
            optimizer.step()
    assert "grads_clipped_before_probe" not in w.probe.schema.config
    warnings = [e for e in events if e[0] == "warning" and e[2].get("source") == "clipping"]
    assert len(warnings) == 1 and "clip_grad_value_ at 0.01) from step 2" in warnings[0][1]
    assert warnings[0][2]["grads_clip_kind"] == "value"
