"""A plain MONAI training loop that knows nothing about octa-tui.

MONAI's BasicUNet on random blobs with DiceCELoss (sigmoid Dice + BCE-with-logits), Adam,
CosineAnnealingWarmRestarts, and a validation pass each epoch. Streamed with zero changed
lines:

    octa-tui run -- python examples/attach/monai_unet.py --epochs 2
"""

import argparse

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet


def blobs(n: int = 4, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(8, size - 8, (n, 2, 1, 1))
    masks = (((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) < 25).float().unsqueeze(1)
    return masks + 0.3 * torch.randn_like(masks), masks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    loss_function = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(optimizer, T_0=4)
    for epoch in range(args.epochs):
        model.train()
        for _ in range(args.steps_per_epoch):
            images, masks = blobs()
            optimizer.zero_grad()
            loss = loss_function(model(images), masks)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad():
            images, masks = blobs()
            val = loss_function(model(images), masks).item()
        print(f"epoch {epoch}: val loss {val:.4f}", flush=True)


if __name__ == "__main__":
    main()
