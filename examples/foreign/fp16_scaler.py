"""Mixed precision the documented way: ``torch.autocast`` plus a ``GradScaler``.

Someone else's training script; nothing in it knows about octa-tui. It follows the
PyTorch AMP recipe: the forward pass under autocast (float16 where the device supports it,
else bfloat16), ``scaler.scale(loss).backward()``, ``scaler.unscale_`` before clipping,
``scaler.step`` and ``scaler.update``. With ``--growth-interval`` small the scaler keeps
doubling its scale until the float16 gradients overflow, then skips that step and halves:
the normal life of a GradScaler, made frequent. A skipped step is not a fault; every loss
stays finite. Watch it without changing a line::

    octa-tui run -- python examples/foreign/fp16_scaler.py --steps 120
"""

import argparse

import torch
from torch import nn


def autocast_dtype(device_type):
    """float16 where autocast supports it on this device, else bfloat16."""
    try:
        with torch.autocast(device_type, dtype=torch.float16):
            torch.ones(2, 2, device=device_type) @ torch.ones(2, 2, device=device_type)
        return torch.float16
    except RuntimeError:
        return torch.bfloat16


class SmallNet(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()
        )
        self.classifier = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        return self.classifier(self.features(x))


def batch(n=8, size=24):
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = torch.randint(6, size - 6, (n, 2, 1, 1))
    masks = (((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) < 25).float().unsqueeze(1)
    return masks + 0.3 * torch.randn_like(masks), masks


def main():
    parser = argparse.ArgumentParser(description="AMP training with a GradScaler")
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--init-scale", type=float, default=2.0**16)
    parser.add_argument("--growth-interval", type=int, default=2000)
    parser.add_argument("--clip", type=float, default=1.0)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = autocast_dtype(device)
    model = SmallNet().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    scaler = torch.amp.GradScaler(device, init_scale=args.init_scale, growth_interval=args.growth_interval)
    criterion = nn.BCEWithLogitsLoss()
    skipped = 0
    for step in range(args.steps):
        images, masks = batch()
        images, masks = images.to(device), masks.to(device)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device, dtype=dtype):
            logits = model(images)
            loss = criterion(logits.float(), masks)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() < scale:
            skipped += 1
        if step % 20 == 0:
            print(f"step {step} loss {loss.item():.4f} scale {scaler.get_scale():.0f}")
    print(f"autocast {dtype}: {args.steps} steps, {skipped} skipped by the scaler, final scale {scaler.get_scale():.0f}")


if __name__ == "__main__":
    main()
