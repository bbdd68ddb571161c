"""Several optimizers in one loop (an encoder's and a decoder's, a GAN's two), watched as one run.

With neither model nor optimizer given (what ``octa-tui run`` does), the optimizers that update
the same network are followed together: every layer is measured, one step is published per
iteration, and a live lr scales every group of every optimizer, the reply naming each.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octa_tui
from octa_tui.protocol.messages import Command
from octa_tui.trainer import observe
from octa_tui.trainer.watch import sibling_optimizers


@pytest.fixture(autouse=True)
def one_thread(tmp_path, monkeypatch):
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    assert not observe.installed()


class Pending:
    def __init__(self, op: str, **args):
        self.command = Command(op, args, request_id="t")
        self.answer = None

    def ok(self, step, data=None):
        self.answer = ("ok", step, data)

    def error(self, reason, step):
        self.answer = ("error", step, reason)


class AutoEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.decoder = nn.Sequential(nn.ReLU(), nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def _rows(w):
    rows: list = []
    w.probe.on_values.append(lambda step, epoch, vector: rows.append((step, vector.copy())))
    return rows


def test_an_encoder_and_a_decoder_optimizer_are_one_run_and_set_lr_scales_both():
    torch.manual_seed(0)
    model = AutoEncoder()
    stray = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)  # another model's optimizer: not followed
    enc = torch.optim.Adam(model.encoder.parameters(), lr=1e-3)
    dec = torch.optim.SGD(model.decoder.parameters(), lr=1e-2)
    schedulers = [torch.optim.lr_scheduler.StepLR(enc, 2, 0.5), torch.optim.lr_scheduler.LambdaLR(dec, lambda s: 1.0)]
    assert sibling_optimizers(enc, [model, *model.modules()]) == [enc, dec]
    used: dict[str, list[float]] = {"enc": [], "dec": []}
    enc.register_step_pre_hook(lambda o, *_: used["enc"].append(o.param_groups[0]["lr"]))
    dec.register_step_pre_hook(lambda o, *_: used["dec"].append(o.param_groups[0]["lr"]))
    w = octa_tui.watch(telemetry=None, control=None)  # neither model nor optimizer, as under octa-tui run
    rows = None
    x = torch.randn(4, 1, 8, 8)
    for step in range(6):
        enc.zero_grad()
        dec.zero_grad()
        F.mse_loss(model(x), x).backward()
        enc.step()
        dec.step()
        for s in schedulers:
            s.step()
        if rows is None:
            rows = _rows(w)
        if step == 2:
            pending = Pending("set_lr", lr=5e-4)
            assert w.controller.apply(pending)
            groups = pending.answer[2]["groups"]
    w.close()
    assert w.probe.model is model and w.optimizers == [enc, dec] and stray not in w.optimizers
    schema = w.probe.schema
    assert schema.grad == ("encoder.0", "encoder.2", "decoder.1")
    # THEN one step per iteration, every layer measured (none "unused")
    steps = [r[0] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] == 5
    values = np.stack([r[1] for r in rows])
    assert np.all(np.isfinite(values[:, [schema.index(f"grad/{n}") for n in schema.grad]]))
    # AND set_lr named each group of each optimizer, and every step after it used scheduler's lr x scale
    assert [g["optimizer"] for g in groups] == [0, 1]
    scale = groups[0]["new"] / groups[0]["old"]
    assert groups[0]["new"] == pytest.approx(5e-4) and groups[1]["new"] == pytest.approx(groups[1]["old"] * scale)
    assert used["enc"][3] == pytest.approx(1e-3 * 0.5 * scale)  # StepLR at step 3: halved once
    assert used["dec"][3:] == pytest.approx([1e-2 * scale] * 3)
    assert dec.param_groups[0]["lr"] == pytest.approx(1e-2)  # the scheduler's own value between steps


class Gan(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generator = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 6))
        self.discriminator = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 1))


def test_a_gan_with_a_backward_per_optimizer_measures_both_networks_every_iteration():
    torch.manual_seed(0)
    gan = Gan()
    opt_g = torch.optim.Adam(gan.generator.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(gan.discriminator.parameters(), lr=2e-4)
    w = octa_tui.watch(telemetry=None, control=None)
    rows = None
    for _ in range(5):
        real, noise = torch.randn(8, 6), torch.randn(8, 4)
        # discriminator step
        opt_d.zero_grad(set_to_none=True)
        fake = gan.generator(noise)
        d_loss = F.binary_cross_entropy_with_logits(gan.discriminator(real), torch.ones(8, 1)) + \
            F.binary_cross_entropy_with_logits(gan.discriminator(fake.detach()), torch.zeros(8, 1))
        d_loss.backward()
        opt_d.step()
        # generator step
        opt_g.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(gan.discriminator(fake), torch.ones(8, 1)).backward()
        opt_g.step()
        if rows is None:
            rows = _rows(w)
    w.close()
    assert w.probe.model is gan and w.optimizers == [opt_d, opt_g]
    schema = w.probe.schema
    assert set(schema.grad) == {"generator.0", "generator.2", "discriminator.0", "discriminator.2"}
    values = np.stack([r[1] for r in rows])
    assert [r[0] for r in rows if r[0] >= 1] == [1, 2, 3, 4]  # one step per iteration
    # THEN the generator's gradients are measured too (never "no gradient"), and no layer is called unused
    assert np.all(np.isfinite(values[:, [schema.index(f"grad/{n}") for n in schema.grad]]))
    assert math.isfinite(w.probe.last_values[schema.index("gradstat/total_norm")])


def test_a_later_optimizer_over_followed_parameters_is_not_followed_twice():
    # GIVEN a run whose optimizer is followed, and a second optimizer over the same parameters later
    # (a wrapper such as Accelerate's, or an lr finder's): following it too would scale the lr twice
    torch.manual_seed(0)
    model = AutoEncoder()
    first = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(2, 1, 8, 8)
    later_lrs: list[float] = []

    def step(optimizer) -> None:
        optimizer.zero_grad()
        F.mse_loss(model(x), x).backward()
        optimizer.step()

    with octa_tui.watch(telemetry=None, control=None) as w:
        step(first)
        step(first)
        later = torch.optim.SGD(model.parameters(), lr=0.1)
        later.register_step_pre_hook(lambda o, *_: later_lrs.append(o.param_groups[0]["lr"]))
        assert w.controller.apply(Pending("set_lr", lr=0.05))
        step(later)
        step(later)
    assert w.optimizers == [first]
    assert later_lrs == [0.1, 0.1]  # not scaled: it is not the run's


def test_watch_takes_a_list_of_optimizers():
    torch.manual_seed(0)
    model = AutoEncoder()
    enc = torch.optim.SGD(model.encoder.parameters(), lr=0.01)
    dec = torch.optim.SGD(model.decoder.parameters(), lr=0.1)
    x = torch.randn(2, 1, 8, 8)
    with octa_tui.watch(model, [enc, dec], telemetry=None, control=None) as w:
        for _ in range(3):
            enc.zero_grad()
            dec.zero_grad()
            F.mse_loss(model(x), x).backward()
            enc.step()
            dec.step()
        pending = Pending("set_lr", lr=0.02)
        assert w.controller.apply(pending)
    assert w.optimizers == [enc, dec] and w.probe.step == 3
    assert [(g["optimizer"], g["new"]) for g in pending.answer[2]["groups"]] == [(0, pytest.approx(0.02)),
                                                                                (1, pytest.approx(0.2))]
