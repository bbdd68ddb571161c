"""A segmentation LightningModule, written the way Lightning's own examples write one.

Someone else's code, kept as its author would write it: nothing in it knows about
octa-tui. Automatic optimization (or ``--manual`` for manual optimization), optional
gradient accumulation (``--accumulate``), mixed precision (``--precision bf16-mixed``),
a validation step that logs ``val_dice`` and ``val_loss``, AdamW with a cosine schedule.
The data are noisy discs and their masks, drawn in memory. With octa-tui, the one line
is the callback::

    trainer = L.Trainer(..., callbacks=[OctaCallback()])

or, without touching the code at all::

    octa-tui run -- python examples/foreign/lightning_module.py --max-epochs 3
"""

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def discs(n, size=32, seed=0):
    """Noisy images with bright discs, and the discs' masks."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centres = torch.randint(6, size - 6, (n, 2, 2), generator=g)
    radii = torch.randint(3, 7, (n, 2), generator=g)
    dist = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2
    masks = (dist < radii[..., None, None] ** 2).any(dim=1, keepdim=True).float()
    return masks * 0.8 + 0.35 * torch.randn(masks.shape, generator=g), masks


class DiscDataModule(L.LightningDataModule):
    def __init__(self, n_train=64, n_val=16, size=32, batch_size=8):
        super().__init__()
        self.save_hyperparameters()

    def setup(self, stage=None):
        self.train_set = TensorDataset(*discs(self.hparams.n_train, self.hparams.size, seed=0))
        self.val_set = TensorDataset(*discs(self.hparams.n_val, self.hparams.size, seed=1))

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size)


def block(c_in, c_out):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SegModel(L.LightningModule):
    def __init__(self, width=8, lr=3e-3, manual=False):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = not manual
        self.enc1 = block(1, width)
        self.enc2 = nn.Sequential(nn.MaxPool2d(2), block(width, width * 2))
        self.dec = block(width * 3, width)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = F.interpolate(self.enc2(e1), size=e1.shape[-2:], mode="nearest")
        return self.head(self.dec(torch.cat([e1, e2], dim=1)))

    def _loss(self, logits, masks):
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        probs = torch.sigmoid(logits)
        dice = 1 - (2 * (probs * masks).sum() + 1) / (probs.sum() + masks.sum() + 1)
        return bce, dice

    def training_step(self, batch, batch_idx):
        images, masks = batch
        bce, dice = self._loss(self(images), masks)
        loss = bce + dice
        self.log_dict({"train_bce": bce, "train_dice_loss": dice}, prog_bar=False)
        if self.automatic_optimization:
            return loss
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        sch = self.lr_schedulers()
        if sch is not None:
            sch.step()
        return loss

    def validation_step(self, batch, batch_idx):
        images, masks = batch
        logits = self(images)
        bce, dice = self._loss(logits, masks)
        pred = (logits > 0).float()
        val_dice = (2 * (pred * masks).sum() + 1) / (pred.sum() + masks.sum() + 1)
        self.log("val_loss", bce + dice)
        self.log("val_dice", val_dice, prog_bar=True)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=200)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build_trainer(args, callbacks=()):
    return L.Trainer(
        max_epochs=args.max_epochs,
        accelerator="cpu",
        devices=1,
        precision=args.precision,
        accumulate_grad_batches=args.accumulate,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=list(callbacks),
    )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train a small segmentation LightningModule")
    parser.add_argument("--max-epochs", type=int, default=3)
    parser.add_argument("--accumulate", type=int, default=1, help="accumulate_grad_batches")
    parser.add_argument("--precision", default="32-true", help="32-true, bf16-mixed or 16-mixed")
    parser.add_argument("--manual", action="store_true", help="manual optimization")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-images", type=int, default=64)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    L.seed_everything(0, verbose=False)
    model = SegModel(width=args.width, lr=args.lr, manual=args.manual)
    data = DiscDataModule(n_train=args.train_images, batch_size=args.batch_size)
    trainer = build_trainer(args)
    trainer.fit(model, datamodule=data)
    print(f"finished: {trainer.global_step} optimizer steps, val_dice {float(trainer.callback_metrics['val_dice']):.3f}")
