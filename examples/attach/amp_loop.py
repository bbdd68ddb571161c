"""A plain mixed-precision loop (fp16 autocast + GradScaler) that knows nothing about octa-tui.

Runs on the CPU too. ``--init-scale`` and ``--growth-interval`` make the scaler overflow and
skip steps often, which is its normal working:

    octa-tui run -- python examples/attach/amp_loop.py --steps 60 --growth-interval 2
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--init-scale", type=float, default=2.0**24)
    parser.add_argument("--growth-interval", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler(device, init_scale=args.init_scale, growth_interval=args.growth_interval)
    skipped = 0
    for _ in range(args.steps):
        x, y = torch.randn(32, 16, device=device), torch.randn(32, 1, device=device)
        with torch.autocast(device, dtype=torch.float16):
            out = model(x)
        loss = F.mse_loss(out.float(), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        before = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < before
    print(f"skipped {skipped} of {args.steps} steps", flush=True)


if __name__ == "__main__":
    main()
