"""Train a UNet on a segmentation data set, in the style of the popular Pytorch-UNet repository.

Someone else's training script, kept as its author would write it: nothing in it knows
about octa-tui. AdamW with two parameter groups (the encoder at a tenth of the decoder's
lr), OneCycleLR stepped every batch, BCE-with-logits plus soft Dice, optional mixed
precision through a GradScaler, gradient clipping, and a Dice evaluation with
``model.eval()`` after every epoch. The data set draws noisy discs and their masks, so the
script runs anywhere in seconds. Watch it without changing a line::

    octa-tui run -- python examples/foreign/plain_onecycle.py --epochs 3
"""

import argparse
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import optim
from torch.utils.data import DataLoader, Dataset, random_split


class DoubleConv(nn.Module):
    """(convolution => [BN] => ReLU) * 2"""

    def __init__(self, in_channels, out_channels, mid_channels=None):
        super().__init__()
        if not mid_channels:
            mid_channels = out_channels
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x):
        return self.double_conv(x)


class Down(nn.Module):
    """Downscaling with maxpool then double conv"""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels))

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Upscaling then double conv"""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2)

    def forward(self, x1, x2):
        x1 = self.up(x1)
        diff_y = x2.size()[2] - x1.size()[2]
        diff_x = x2.size()[3] - x1.size()[3]
        x1 = F.pad(x1, [diff_x // 2, diff_x - diff_x // 2, diff_y // 2, diff_y - diff_y // 2])
        return self.conv(torch.cat([x2, x1], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x):
        return self.conv(x)


class UNet(nn.Module):
    def __init__(self, n_channels, n_classes, width=8):
        super().__init__()
        self.n_channels = n_channels
        self.n_classes = n_classes
        self.inc = DoubleConv(n_channels, width)
        self.down1 = Down(width, width * 2)
        self.down2 = Down(width * 2, width * 4)
        self.up1 = Up(width * 6, width * 2)
        self.up2 = Up(width * 3, width)
        self.outc = OutConv(width, n_classes)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x = self.up1(x3, x2)
        x = self.up2(x, x1)
        return self.outc(x)

    def encoder_parameters(self):
        return [*self.inc.parameters(), *self.down1.parameters(), *self.down2.parameters()]

    def decoder_parameters(self):
        return [*self.up1.parameters(), *self.up2.parameters(), *self.outc.parameters()]


class DiscDataset(Dataset):
    """Noisy grey images, each with a few bright discs; the mask marks the discs."""

    def __init__(self, n, size=32, seed=0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        centres = torch.randint(6, size - 6, (n, 3, 2), generator=g)
        radii = torch.randint(3, 7, (n, 3), generator=g)
        dist = (yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2
        self.masks = (dist < radii[..., None, None] ** 2).any(dim=1, keepdim=True).float()
        self.images = self.masks * 0.8 + 0.35 * torch.randn(self.masks.shape, generator=g)

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, idx):
        return {"image": self.images[idx], "mask": self.masks[idx]}


def dice_coeff(input, target, epsilon=1e-6):
    sum_dim = (-1, -2, -3)
    inter = 2 * (input * target).sum(dim=sum_dim)
    sets_sum = input.sum(dim=sum_dim) + target.sum(dim=sum_dim)
    sets_sum = torch.where(sets_sum == 0, inter, sets_sum)
    return ((inter + epsilon) / (sets_sum + epsilon)).mean()


def dice_loss(input, target):
    return 1 - dice_coeff(input, target)


@torch.inference_mode()
def evaluate(net, dataloader, device, amp):
    net.eval()
    dice_score = 0
    with torch.autocast(device.type, enabled=amp):
        for batch in dataloader:
            image, mask_true = batch["image"].to(device), batch["mask"].to(device)
            mask_pred = (torch.sigmoid(net(image)) > 0.5).float()
            dice_score += dice_coeff(mask_pred, mask_true)
    net.train()
    return dice_score / max(len(dataloader), 1)


def train_model(model, device, epochs=5, batch_size=8, learning_rate=1e-3, val_percent=0.2,
                amp=False, weight_decay=1e-4, gradient_clipping=1.0, n_images=96, size=32):
    dataset = DiscDataset(n_images, size)
    n_val = int(len(dataset) * val_percent)
    n_train = len(dataset) - n_val
    train_set, val_set = random_split(dataset, [n_train, n_val], generator=torch.Generator().manual_seed(0))
    train_loader = DataLoader(train_set, shuffle=True, batch_size=batch_size, drop_last=True)
    val_loader = DataLoader(val_set, shuffle=False, batch_size=batch_size, drop_last=False)

    logging.info(f"Starting training: epochs {epochs}, batch size {batch_size}, lr {learning_rate}, "
                 f"training size {n_train}, validation size {n_val}, mixed precision {amp}")

    optimizer = optim.AdamW(
        [
            {"params": model.encoder_parameters(), "lr": learning_rate / 10},
            {"params": model.decoder_parameters(), "lr": learning_rate},
        ],
        weight_decay=weight_decay,
    )
    scheduler = optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[learning_rate / 10, learning_rate], epochs=epochs, steps_per_epoch=len(train_loader)
    )
    grad_scaler = torch.amp.GradScaler(device.type, enabled=amp)
    criterion = nn.CrossEntropyLoss() if model.n_classes > 1 else nn.BCEWithLogitsLoss()
    global_step = 0

    for epoch in range(1, epochs + 1):
        model.train()
        epoch_loss = 0
        for batch in train_loader:
            images, true_masks = batch["image"].to(device), batch["mask"].to(device)
            with torch.autocast(device.type, enabled=amp):
                masks_pred = model(images)
                loss = criterion(masks_pred, true_masks)
                loss += dice_loss(torch.sigmoid(masks_pred), true_masks)

            optimizer.zero_grad(set_to_none=True)
            grad_scaler.scale(loss).backward()
            grad_scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clipping)
            grad_scaler.step(optimizer)
            grad_scaler.update()
            scheduler.step()

            global_step += 1
            epoch_loss += loss.item()

        val_score = evaluate(model, val_loader, device, amp)
        logging.info(f"epoch {epoch}: train loss {epoch_loss / len(train_loader):.4f}, "
                     f"validation Dice {float(val_score):.4f}, lr {scheduler.get_last_lr()}")
    return global_step


def get_args():
    parser = argparse.ArgumentParser(description="Train the UNet on images and target masks")
    parser.add_argument("--epochs", "-e", type=int, default=5, help="Number of epochs")
    parser.add_argument("--batch-size", "-b", dest="batch_size", type=int, default=8, help="Batch size")
    parser.add_argument("--learning-rate", "-l", dest="lr", type=float, default=1e-3, help="Learning rate")
    parser.add_argument("--validation", "-v", dest="val", type=float, default=20.0,
                        help="Percent of the data that is used as validation (0-100)")
    parser.add_argument("--images", type=int, default=96, help="Number of images in the data set")
    parser.add_argument("--size", type=int, default=32, help="Image side in pixels")
    parser.add_argument("--width", type=int, default=8, help="Channels of the first UNet level")
    parser.add_argument("--amp", action="store_true", default=False, help="Use mixed precision")
    return parser.parse_args()


if __name__ == "__main__":
    args = get_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    torch.manual_seed(0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    logging.info(f"Using device {device}")
    model = UNet(n_channels=1, n_classes=1, width=args.width).to(device=device)
    steps = train_model(model=model, device=device, epochs=args.epochs, batch_size=args.batch_size,
                        learning_rate=args.lr, val_percent=args.val / 100, amp=args.amp,
                        n_images=args.images, size=args.size)
    logging.info(f"finished after {steps} steps")
