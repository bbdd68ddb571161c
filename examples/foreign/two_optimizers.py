"""Train a small segmentation network with one optimizer for the encoder and one for the decoder.

Someone else's training script, kept as its author would write it: nothing in it knows about
octa-tui. The pretrained-encoder habit: the encoder gets its own Adam at a low lr with a cosine
schedule, the decoder an SGD with momentum and a step decay; one backward, then both step.
BCE-with-logits on noisy bars, and a validation pass with ``model.eval()`` after every epoch.
Watch it without changing a line::

    octa-tui run -- python examples/foreign/two_optimizers.py --epochs 3
"""

import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


class Encoder(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)

    def forward(self, x):
        return F.relu(self.down(F.relu(self.stem(x))))


class Decoder(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, z):
        return self.head(F.relu(self.up(z)))


class SegNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.encoder = Encoder(width)
        self.decoder = Decoder(width)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def bars(n, size, generator):
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        column = int(torch.randint(0, size - 4, (1,), generator=generator))
        masks[i, :, :, column:column + 3] = 1.0
    images = masks + 0.4 * torch.randn(masks.shape, generator=generator)
    return images, masks


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()

    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = SegNet()
    encoder_optimizer = torch.optim.Adam(model.encoder.parameters(), lr=1e-4)
    decoder_optimizer = torch.optim.SGD(model.decoder.parameters(), lr=0.05, momentum=0.9)
    total = args.epochs * args.steps_per_epoch
    encoder_scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(encoder_optimizer, T_max=total)
    decoder_scheduler = torch.optim.lr_scheduler.StepLR(decoder_optimizer, step_size=args.steps_per_epoch, gamma=0.7)
    criterion = nn.BCEWithLogitsLoss()
    val_images, val_masks = bars(16, args.size, generator)

    for epoch in range(args.epochs):
        model.train()
        running = 0.0
        for _ in range(args.steps_per_epoch):
            images, masks = bars(args.batch_size, args.size, generator)
            loss = criterion(model(images), masks)
            encoder_optimizer.zero_grad()
            decoder_optimizer.zero_grad()
            loss.backward()
            encoder_optimizer.step()
            decoder_optimizer.step()
            encoder_scheduler.step()
            decoder_scheduler.step()
            running += loss.item()
        model.eval()
        with torch.no_grad():
            val_loss = criterion(model(val_images), val_masks).item()
        print(f"epoch {epoch}: train {running / args.steps_per_epoch:.4f} val {val_loss:.4f}", flush=True)


if __name__ == "__main__":
    main()
