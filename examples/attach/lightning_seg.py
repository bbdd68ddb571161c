"""A plain PyTorch Lightning script that knows nothing about octa-tui.

A tiny segmentation LightningModule (BCE-with-logits plus a soft Dice term), Adam,
automatic optimization (the optimizer's step runs the forward and backward in a closure),
a validation loop each epoch. Streamed with zero changed lines:

    octa-tui run -- python examples/attach/lightning_seg.py --epochs 3
"""

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def blobs(n: int, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(4, size - 4, (n, 2, 1, 1), generator=g)
    masks = (((yy - centres[:, 0]) ** 2 + (xx - centres[:, 1]) ** 2) < 9).float().unsqueeze(1)
    return TensorDataset(masks + 0.3 * torch.randn(masks.shape, generator=g), masks)


class SegModule(L.LightningModule):
    def __init__(self, lr: float = 1e-3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _loss(self, batch):
        images, masks = batch
        logits = self(images)
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        probs = torch.sigmoid(logits)
        dice = 1 - (2 * (probs * masks).sum() + 1) / (probs.sum() + masks.sum() + 1)
        return bce + dice

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    trainer.fit(SegModule(), DataLoader(blobs(32), batch_size=8), DataLoader(blobs(16, seed=1), batch_size=8))


if __name__ == "__main__":
    main()
