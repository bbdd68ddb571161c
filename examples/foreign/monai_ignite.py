"""A MONAI workflow: SupervisedTrainer and SupervisedEvaluator (PyTorch Ignite engines).

Someone else's code, in the style of MONAI's workflow tutorials; nothing in it knows about
octa-tui. A BasicUNet, ``DiceCELoss(sigmoid=True)``, Adam, a ``ValidationHandler`` that runs
the evaluator every epoch with a ``MeanDice`` metric, and ``StatsHandler`` logging. With
octa-tui, the one line is the handler::

    OctaHandler().attach(trainer)   # from octa_tui.trainer.integrations.ignite

or, without touching the code at all::

    octa-tui run -- python examples/foreign/monai_ignite.py --epochs 3
"""

import argparse
import logging

import torch
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import MeanDice, StatsHandler, ValidationHandler, from_engine
from monai.inferers import SimpleInferer
from monai.losses import DiceCELoss
from monai.networks.nets import BasicUNet
from monai.transforms import Activationsd, AsDiscreted, Compose


def make_items(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    items = []
    for _ in range(n):
        centre = torch.randint(8, size - 8, (2,), generator=g)
        radius = int(torch.randint(4, 8, (1,), generator=g))
        label = (((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) < radius**2).float()[None]
        items.append({"image": label * 0.8 + 0.35 * torch.randn(label.shape, generator=g), "label": label})
    return items


def build(epochs=3, images=48, width=8, lr=3e-3, amp=False, device=None):
    """The trainer and its evaluator, ready to ``run()``."""
    device = device or torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    train_loader = DataLoader(Dataset(make_items(images, seed=0)), batch_size=8, shuffle=True)
    val_loader = DataLoader(Dataset(make_items(16, seed=1)), batch_size=8)
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1,
                    features=(width, width, 2 * width, 4 * width, 8 * width, width)).to(device)
    post = Compose([Activationsd(keys="pred", sigmoid=True), AsDiscreted(keys="pred", threshold=0.5)])
    evaluator = SupervisedEvaluator(
        device=device,
        val_data_loader=val_loader,
        network=net,
        inferer=SimpleInferer(),
        postprocessing=post,
        key_val_metric={"val_mean_dice": MeanDice(include_background=True, output_transform=from_engine(["pred", "label"]))},
    )
    trainer = SupervisedTrainer(
        device=device,
        max_epochs=epochs,
        train_data_loader=train_loader,
        network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr),
        loss_function=DiceCELoss(sigmoid=True),
        inferer=SimpleInferer(),
        amp=amp,
        train_handlers=[
            ValidationHandler(validator=evaluator, interval=1, epoch_level=True),
            StatsHandler(tag_name="train_loss", output_transform=from_engine(["loss"], first=True)),
        ],
    )
    return trainer, evaluator


def main():
    parser = argparse.ArgumentParser(description="MONAI workflow: 2D segmentation of discs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--amp", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    torch.manual_seed(0)
    trainer, evaluator = build(args.epochs, args.images, args.width, amp=args.amp)
    trainer.run()
    print(f"finished: {trainer.state.iteration} iterations, "
          f"val_mean_dice {evaluator.state.metrics.get('val_mean_dice', float('nan')):.3f}")


if __name__ == "__main__":
    main()
