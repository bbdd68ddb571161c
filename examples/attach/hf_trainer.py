"""A plain Hugging Face Trainer script that knows nothing about octa-tui.

A tiny regression net (any nn.Module returning {"loss": ...} works with the Trainer) on
random data, with the Trainer's defaults: AdamW, a linear schedule with warm-up, gradient
clipping at 1.0 before each optimizer step, an evaluation each epoch. Streamed with zero
changed lines:

    octa-tui run -- python examples/attach/hf_trainer.py --epochs 2
"""

import argparse
import tempfile

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments


class Pairs(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x.sum(dim=1, keepdim=True).sigmoid()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "labels": self.y[i]}


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        out = self.body(x)
        return {"loss": F.mse_loss(out, labels), "logits": out} if labels is not None else {"logits": out}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as out:
        training = TrainingArguments(output_dir=out, num_train_epochs=args.epochs, per_device_train_batch_size=8,
                                     eval_strategy="epoch", save_strategy="no", report_to=[], warmup_steps=4,
                                     logging_strategy="no", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0)
        Trainer(model=Regressor(), args=training, train_dataset=Pairs(64, 0), eval_dataset=Pairs(16, 1)).train()


if __name__ == "__main__":
    main()
