"""Instrument your own PyTorch training loop so octa-tui can watch and steer it.

A complete, runnable example of the explicit Probe API (full control over what is measured
and when): a small segmentation net and loss of "your own", trained on random blobs. The
lines marked ``# octa-tui`` are all it takes. While it runs, open the monitor in another
terminal with ``octa-tui`` (it lists the trainers on this machine).

    python examples/own_loop.py --steps 2000

Fewer lines: ``octa_tui.watch(model, optimizer)`` before the loop observes the same things
(examples/attach/), and ``octa-tui run -- python train.py`` needs no change at all.
"""

import argparse

import torch
from torch import nn

from octa_tui.trainer.control import Controller  # octa-tui
from octa_tui.trainer.probe import Probe  # octa-tui


class TinySegNet(nn.Module):
    """Stands in for your model: any nn.Module works."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(16, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def batch_of_blobs(n: int = 8, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with a bright disc; the mask is the disc."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(8, size - 8, (n, 2, 1, 1))
    masks = (((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) < 36).float().unsqueeze(1)
    return masks + 0.3 * torch.randn_like(masks), masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--record", default="runs/own_loop.octa")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = TinySegNet()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.BCEWithLogitsLoss()

    probe = Probe.start(model, task="segmentation", optimizer=optimizer, record=args.record)  # octa-tui
    controller = Controller(probe, optimizer)  # octa-tui: set_lr scales the lr around optimizer.step()
    print(f"telemetry {probe.link.telemetry_endpoint}  control {probe.link.control_endpoint}")
    try:
        for _ in range(args.steps):
            controller.poll()  # octa-tui: apply lr/clip/pause/stop commands at the step boundary
            if controller.stop_requested:
                break
            images, masks = batch_of_blobs()
            logits = model(images)
            loss = criterion(logits, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            probe.clip_(controller.clip)  # octa-tui: gradient norms per layer (clips when clip > 0)
            optimizer.step()
            # octa-tui: activation="sigmoid" because BCEWithLogitsLoss applies one; with a loss on the raw
            # outputs (e.g. MSE) leave it out, or the probe would hide a missing sigmoid
            probe.end_step(loss=loss, outputs=logits, activation="sigmoid")
    finally:
        controller.close()  # octa-tui
        probe.close()  # octa-tui
    print(f"recorded {probe.published} steps to {args.record}")


if __name__ == "__main__":
    main()
