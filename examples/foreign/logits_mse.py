"""A CRAFT-style text detector that regresses region and affinity heatmaps with MSE.

Someone else's training script, with the fault of seed 002 left in: the network ends in a
plain convolution (no sigmoid), and its raw outputs go straight into ``nn.MSELoss`` against
heatmaps in [0, 1]. Nothing in it knows about octa-tui; under ``octa-tui run`` the monitor
sees that the loss compared the outputs with probabilities and that they left [0, 1]::

    octa-tui run -- python examples/foreign/logits_mse.py --steps 80
"""

import argparse

import torch
from torch import nn


def gaussian_heatmaps(n, size=32, boxes=3, seed=0):
    """Images with bright rectangles ("characters") and two heatmaps: region and affinity."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = 0.1 * torch.randn(n, 3, size, size, generator=g)
    region = torch.zeros(n, 1, size, size)
    affinity = torch.zeros(n, 1, size, size)
    for i in range(n):
        y = float(torch.randint(6, size - 6, (1,), generator=g))
        x0 = float(torch.randint(4, size // 2, (1,), generator=g))
        centres = [(y, x0 + 6 * k) for k in range(boxes) if x0 + 6 * k < size - 3]
        for k, (cy, cx) in enumerate(centres):
            images[i, :, int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 2] += 1.0
            region[i, 0] = torch.maximum(region[i, 0], torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8))
            if k:
                ay, ax = cy, cx - 3
                affinity[i, 0] = torch.maximum(affinity[i, 0], torch.exp(-((yy - ay) ** 2 + (xx - ax) ** 2) / 6))
    return images, torch.cat([region, affinity], dim=1)


class CraftLike(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.basenet = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.upconv = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(2 * width, width, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.conv_cls = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2, 1),  # region and affinity scores, no activation
        )

    def forward(self, x):
        return self.conv_cls(self.upconv(self.basenet(x)))


def main():
    parser = argparse.ArgumentParser(description="CRAFT-like heatmap regression")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    torch.manual_seed(0)
    images, heatmaps = gaussian_heatmaps(64)
    net = CraftLike()
    optimizer = torch.optim.Adam(net.parameters(), lr=args.lr)
    criterion = nn.MSELoss()
    net.train()
    for step in range(args.steps):
        idx = torch.randint(0, len(images), (args.batch_size,))
        out = net(images[idx])
        loss = criterion(out, heatmaps[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"step {step}: loss {loss.item():.4f}, outputs [{out.min().item():.2f}, {out.max().item():.2f}]")
    print("done")


if __name__ == "__main__":
    main()
