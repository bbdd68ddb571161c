"""The Hugging Face Trainer on a small segmentation model, written as HF users write custom models.

Someone else's script; nothing in it knows about octa-tui. A ``PreTrainedModel``-free custom
module whose ``forward(pixel_values, labels)`` returns ``{"loss", "logits"}`` (the Trainer's
contract), ``TrainingArguments`` with a linear warm-up schedule (LambdaLR underneath),
gradient clipping (``max_grad_norm``), optional gradient accumulation, and an evaluation every
epoch whose ``compute_metrics`` gives a Dice. With octa-tui, the one line is the callback::

    Trainer(..., callbacks=[OctaTrainerCallback()])

or, without touching the code at all::

    octa-tui run -- python examples/foreign/hf_trainer.py --epochs 3
"""

import argparse

import numpy as np
import torch
from torch import nn
from transformers import Trainer, TrainingArguments


class DiscSegmenter(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                     nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(width, 1, 1)

    def forward(self, pixel_values, labels=None):
        logits = self.head(self.encoder(pixel_values))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.binary_cross_entropy_with_logits(logits, labels)
        return out


class DiscDataset(torch.utils.data.Dataset):
    def __init__(self, n, size=24, seed=0):
        g = torch.Generator().manual_seed(seed)
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        c = torch.randint(6, size - 6, (n, 2, 1, 1), generator=g)
        self.labels = (((yy - c[:, 0]) ** 2 + (xx - c[:, 1]) ** 2) < 25).float().unsqueeze(1)
        self.images = self.labels + 0.3 * torch.randn(self.labels.shape, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.images[i], "labels": self.labels[i]}


def compute_metrics(eval_pred):
    logits, labels = eval_pred
    pred = (logits > 0).astype(np.float32)
    inter = (pred * labels).sum()
    return {"dice": float((2 * inter + 1) / (pred.sum() + labels.sum() + 1))}


def build(output_dir, epochs=3, accumulation=1, lr=3e-3, callbacks=()):
    args = TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, per_device_train_batch_size=8,
        per_device_eval_batch_size=8, learning_rate=lr, warmup_steps=4, lr_scheduler_type="linear",
        max_grad_norm=1.0, gradient_accumulation_steps=accumulation, eval_strategy="epoch",
        logging_steps=5, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=0,
    )
    return Trainer(model=DiscSegmenter(), args=args, train_dataset=DiscDataset(64, seed=0),
                   eval_dataset=DiscDataset(16, seed=1), compute_metrics=compute_metrics, callbacks=list(callbacks))


def main():
    parser = argparse.ArgumentParser(description="HF Trainer on a small segmentation model")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--output-dir", default="hf-out")
    args = parser.parse_args()
    trainer = build(args.output_dir, args.epochs, args.accumulation)
    trainer.train()
    print(f"finished: {trainer.state.global_step} optimizer steps, eval {trainer.evaluate()}")


if __name__ == "__main__":
    main()
