"""fp16 GradScaler steps on the CPU: the scale and the skipped steps are facts, never a fault.

A GradScaler that starts with a huge scale and grows it every 2 steps overflows again and
again: each overflow makes it skip ``optimizer.step`` and halve the scale. That is its
normal working, and the probe must say exactly that: ``gradstat/amp_skipped`` 1.0 on those
steps, ``gradstat/nonfinite`` 0 and the loss finite everywhere, ``opt/amp_scale`` the
scale in force, and an ``amp_step_skipped`` event.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from octa_tui.trainer.probe import Probe


class CaptureLink:
    """Keeps what a probe publishes (steps and records)."""

    def __init__(self):
        self.steps: list[tuple[int, np.ndarray]] = []
        self.records: list = []

    def publish_step(self, step, epoch, vector):
        self.steps.append((step, vector.copy()))

    def publish(self, msg):
        self.records.append(msg)

    def tick(self, state):
        pass

    def poll_commands(self):
        return []

    def close(self, state):
        pass


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(init_scale: float = 2.0**24):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, growth_interval=2)
    link = CaptureLink()
    probe = Probe(model, optimizer=optimizer, scaler=scaler, link=link)
    return model, optimizer, scaler, probe, link


def _step(model, optimizer, scaler, probe, *, measure_before_unscale: bool = False):
    x, y = torch.randn(16, 8), torch.randn(16, 1)
    with torch.autocast("cpu", dtype=torch.float16):
        out = model(x)
    loss = torch.nn.functional.mse_loss(out.float(), y)
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    if measure_before_unscale:
        probe.after_backward()
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.get_scale() < scale
    probe.end_step(loss=loss, outputs=out)
    return scale, skipped, float(loss.detach())


def test_overflow_steps_are_skipped_steps_not_non_finite_ones():
    model, optimizer, scaler, probe, link = _setup()
    truth = [_step(model, optimizer, scaler, probe) for _ in range(40)]
    probe.flush()  # every step ended so far has reached the link
    schema = probe.schema
    assert schema.config["amp"] == "fp16"
    values = np.stack([v for _, v in link.steps])
    skipped = values[:, schema.index("gradstat/amp_skipped")]
    assert [bool(s) for s in skipped] == [t[1] for t in truth]
    assert 3 <= skipped.sum() < 30 and not skipped[-12:].all() and skipped[-12:].any()  # again after growing
    assert values[:, schema.index("opt/amp_scale")] == pytest.approx([t[0] for t in truth])
    assert np.all(values[:, schema.index("gradstat/nonfinite")] == 0.0)
    assert np.all(np.isfinite(values[:, schema.index("loss/total")]))
    assert np.all(values[:, schema.index("gradstat/n_over_bound")] == 0.0)
    applied = skipped == 0  # a step that was applied has finite, measured gradients
    assert np.all(np.isfinite(values[applied][:, schema.index("gradstat/total_norm")]))
    events = [r for r in link.records if getattr(r, "kind", "") == "amp_step_skipped"]
    assert events and events[0].data["new_scale"] == pytest.approx(events[0].data["scale"] / 2)


def test_measuring_before_unscale_gives_true_norms_and_says_so_once(capsys):
    model, optimizer, scaler, probe, link = _setup(init_scale=2.0**16)
    for _ in range(3):
        x, y = torch.randn(16, 8), torch.randn(16, 1)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        probe.after_backward()  # before unscale_: the gradients are 65536x too large
        scaler.unscale_(optimizer)
        truth = math.sqrt(sum(float(p.grad.norm()) ** 2 for p in model.parameters()))
        scaler.step(optimizer)
        scaler.update()
        probe.end_step(loss=loss)
        probe.flush()
        total = link.steps[-1][1][probe.schema.index("gradstat/total_norm")]
        assert total == pytest.approx(truth, rel=1e-4)
    assert capsys.readouterr().err.count("before scaler.unscale_") == 1
    warnings = [r for r in link.records if getattr(r, "kind", "") == "warning"]
    assert len(warnings) == 1 and warnings[0].data["source"] == "amp"


def test_a_layer_that_never_gets_a_gradient_is_nan_and_named_once():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"used": torch.nn.Linear(4, 1), "spare": torch.nn.Linear(4, 1)})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    link = CaptureLink()
    probe = Probe(model, optimizer=optimizer, link=link)
    for _ in range(3):
        loss = model["used"](torch.randn(2, 4)).square().mean()
        optimizer.zero_grad()
        loss.backward()
        probe.after_backward()
        optimizer.step()
        probe.end_step(loss=loss)
    probe.flush()
    values = np.stack([v for _, v in link.steps])
    assert np.all(np.isnan(values[:, probe.schema.index("grad/spare")]))
    assert np.all(values[:, probe.schema.index("grad/used")] > 0)
    assert np.all(values[:, probe.schema.index("gradstat/nonfinite")] == 0.0)
    events = [r for r in link.records if getattr(r, "kind", "") == "unused_parameters"]
    assert len(events) == 1 and events[0].data["layers"] == ["spare"]
