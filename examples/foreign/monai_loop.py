"""A MONAI segmentation loop in the style of MONAI's tutorials: BasicUNet or UNet, DiceCELoss.

Someone else's training script, kept as its author would write it: nothing in it knows
about octa-tui. A plain PyTorch loop over a MONAI network and loss (``monai.losses.DiceCELoss``
with ``sigmoid=True``: BCE-with-logits plus Dice on the sigmoid), Adam, and a validation pass
with ``monai.metrics.DiceMetric`` every ``--val-interval`` epochs. The data are noisy discs
with their masks, drawn in memory. Watch it without changing a line::

    octa-tui run -- python examples/foreign/monai_loop.py --network basicunet
"""

import argparse

import torch
from monai.data import DataLoader, Dataset
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric
from monai.networks.nets import BasicUNet, UNet
from monai.transforms import Activations, AsDiscrete, Compose


def make_items(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    items = []
    for _ in range(n):
        centre = torch.randint(8, size - 8, (2,), generator=g)
        radius = int(torch.randint(4, 8, (1,), generator=g))
        label = (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) < radius**2).float()[None]
        image = label * 0.8 + 0.35 * torch.randn(label.shape, generator=g)
        items.append({"image": image, "label": label})
    return items


def build_network(name, width):
    if name == "basicunet":
        return BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                         features=(width, width, 2 * width, 4 * width, 8 * width, width))
    return UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=(width, 2 * width, 4 * width),
                strides=(2, 2), num_res_units=1)


def main():
    parser = argparse.ArgumentParser(description="MONAI 2D segmentation of discs")
    parser.add_argument("--network", choices=("basicunet", "unet"), default="basicunet")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--val-interval", type=int, default=1)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    torch.manual_seed(0)
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    train_loader = DataLoader(Dataset(make_items(args.images, seed=0)), batch_size=8, shuffle=True)
    val_loader = DataLoader(Dataset(make_items(16, seed=1)), batch_size=8)

    model = build_network(args.network, args.width).to(device)
    loss_function = DiceCELoss(sigmoid=True)
    optimizer = torch.optim.Adam(model.parameters(), args.lr)
    dice_metric = DiceMetric(include_background=True, reduction="mean")
    post_pred = Compose([Activations(sigmoid=True), AsDiscrete(threshold=0.5)])

    best_metric, best_metric_epoch = -1, -1
    for epoch in range(args.epochs):
        print("-" * 10)
        print(f"epoch {epoch + 1}/{args.epochs}")
        model.train()
        epoch_loss = 0
        step = 0
        for batch_data in train_loader:
            step += 1
            inputs, labels = batch_data["image"].to(device), batch_data["label"].to(device)
            optimizer.zero_grad()
            outputs = model(inputs)
            loss = loss_function(outputs, labels)
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()
        epoch_loss /= step
        print(f"epoch {epoch + 1} average loss: {epoch_loss:.4f}")

        if (epoch + 1) % args.val_interval == 0:
            model.eval()
            with torch.no_grad():
                for val_data in val_loader:
                    val_inputs, val_labels = val_data["image"].to(device), val_data["label"].to(device)
                    val_outputs = post_pred(model(val_inputs))
                    dice_metric(y_pred=val_outputs, y=val_labels)
                metric = dice_metric.aggregate().item()
                dice_metric.reset()
                if metric > best_metric:
                    best_metric, best_metric_epoch = metric, epoch + 1
                print(f"current epoch: {epoch + 1} current mean dice: {metric:.4f} "
                      f"best mean dice: {best_metric:.4f} at epoch: {best_metric_epoch}")
    print(f"train completed, best_metric: {best_metric:.4f} at epoch: {best_metric_epoch}")


if __name__ == "__main__":
    main()
