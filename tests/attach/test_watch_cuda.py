"""``watch`` on CUDA adds no host-device synchronisation per step, nor at ``model.eval()``.

A watched loop with a live lr scale and a live loss-term weight in force, and a validation
pass (``eval()``, loss calls under no_grad) in the middle, runs under CUDA's sync debug mode
set to raise. The one synchronisation left is at an epoch's end (its summary is read once).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import octa_tui
from octa_tui.protocol.messages import Command


class Pending:
    def __init__(self, op: str, **args):
        self.command = Command(op, args, request_id="t")
        self.answer = None

    def ok(self, step, data=None):
        self.answer = ("ok", step, data)

    def error(self, reason, step):
        self.answer = ("error", step, reason)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_watch_adds_no_synchronisation_per_step_nor_at_eval_on_cuda():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(4, 1, 16, 16, device=device)
    y = (torch.rand(4, 1, 16, 16, device=device) > 0.8).float()
    w = octa_tui.watch(model, optimizer, telemetry=None, control=None)
    try:
        for step in range(10):
            strict = step >= 3 and step != 7  # set-up steps, and the step that ends the epoch, may read
            if strict:
                torch.cuda.set_sync_debug_mode("error")
            try:
                model.train()
                loss = F.binary_cross_entropy_with_logits(model(x), y) + F.mse_loss(torch.sigmoid(model(x)), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step == 6:  # a validation pass: eval() and loss calls under no_grad
                    model.eval()
                    with torch.no_grad():
                        F.binary_cross_entropy_with_logits(model(x), y)
            finally:
                torch.cuda.set_sync_debug_mode("default")
            if step == 2:
                assert w.controller.apply(Pending("set_lr", lr=5e-4))
                assert w.controller.apply(Pending("set_loss_weights", bce=0.5))
    finally:
        w.close()
    assert w.failed is None
    assert w.probe.epoch == 1  # the validation ended the first epoch at the next training step
