"""A plain PyTorch training script that knows nothing about octa-tui.

A small heatmap regressor (CRAFT-style: region map in [0, 1]) trained with MSE on the raw
outputs (no final sigmoid: the seed-002 fault), Adam with two parameter groups (a lower lr
for the encoder), OneCycleLR stepped every batch, a validation pass each epoch. Run it as is,
or streamed to the monitor with zero changed lines:

    octa-tui run -- python examples/attach/heatmap_onecycle.py --epochs 3
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn


class HeatmapNet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)  # raw outputs: no sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def batch(n: int = 8, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy images with a bright blob; the target is a Gaussian heatmap in [0, 1]."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(4, size - 4, (n, 2, 1, 1)).float()
    heat = torch.exp(-((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) / 8.0).unsqueeze(1)
    return heat + 0.2 * torch.randn_like(heat), heat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step (to watch it live)")
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = HeatmapNet()
    optimizer = torch.optim.Adam([
        {"params": model.encoder.parameters(), "lr": 1e-4},
        {"params": model.head.parameters(), "lr": 1e-3},
    ])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[1e-3, 1e-2], total_steps=args.epochs * args.steps_per_epoch)
    for epoch in range(args.epochs):
        model.train()
        for _ in range(args.steps_per_epoch):
            images, heat = batch()
            loss = F.mse_loss(model(images), heat)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            if args.sleep:
                time.sleep(args.sleep)
        model.eval()
        with torch.no_grad():
            images, heat = batch()
            val = F.mse_loss(model(images), heat).item()
        print(f"epoch {epoch}: train loss {loss.item():.4f}, val loss {val:.4f}", flush=True)


if __name__ == "__main__":
    main()
