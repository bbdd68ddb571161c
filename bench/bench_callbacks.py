"""The framework callbacks' cost on the demo step: with-minus-without, alternating blocks, one process.

The demo step (as in bench_probe.py): UNet base width 16 (0.48M parameters), 64x64 synthetic
vessels, batch 8, Adam, Dice+BCE; on the CPU. Each framework trains it with its integration
attached for the whole run: Lightning (``OctaCallback``), the Hugging Face Trainer
(``OctaTrainerCallback``) and MONAI's ``SupervisedTrainer`` (``OctaHandler``), each recording
to a file through a real TrainerLink. Blocks of ``--steps`` steps alternate, ABBA, between the
integration suspended (its Watch's hooks and loss observation off; the callback's own methods
still run and return at once) and active, so drift in machine load hits both alike. A step is
timed from the framework's batch-start hook to its batch-end hook (forward, backward,
optimizer step and whatever the framework does around them).

For each framework the table gives the median over blocks of each block's median step time
without and with, and the overhead: the median over block pairs of (with - without), in %
of without. On a loaded machine that difference is noisy, so the table also gives the time
spent inside the integration's own work per step, measured directly with ``perf_counter``
around every entry point (the optimizer step hooks, the callback's boundary, the loss and
backward observers): the mean per step of each watched block (so work done every N steps
counts), median over blocks, in ms and in % of the step without. Usage: python bench/bench_callbacks.py [--blocks 20] [--steps 8] [--threads 1]
                                                   [--only lightning,hf,monai]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from octa_tui.trainer.losses import DiceBCELoss
from octa_tui.trainer.models import UNet
from octa_tui.trainer.synthetic import synthetic_vessels

DEMO = {"base_width": 16, "image_size": 64, "batch_size": 8}
WARMUP_STEPS = 6


def demo_data(count: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    images, masks = synthetic_vessels(count * DEMO["batch_size"], size=DEMO["image_size"], seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    y = torch.from_numpy(masks).float().div(255)[:, None]
    return x, y


class Blocks:
    """Times steps and switches the integration off and on every ``steps`` steps (ABBA)."""

    def __init__(self, blocks: int, steps: int) -> None:
        self.steps = steps
        self.schedule = [WARMUP_STEPS * [True], WARMUP_STEPS * [False]]
        for b in range(blocks):
            order = (False, True) if b % 2 == 0 else (True, False)
            for watched in order:
                self.schedule.append(steps * [watched])
        self.plan = [w for block in self.schedule for w in block]
        self.total = len(self.plan)
        self.times: list[tuple[bool, float]] = []
        self.inside: list[float] = []  # seconds inside the integration, per step (0 when suspended)
        self._inside = 0.0
        self._start = 0.0
        self._timed: set[int] = set()

    def _time_entry_points(self, watch) -> None:
        """Wrap the watch's entry points (on the instance) so the time spent in them is summed."""
        if id(watch) in self._timed:
            return
        self._timed.add(id(watch))
        for name in ("_pre_step", "_post_step", "boundary", "loss_called", "backward_called", "_scaler_updated"):
            original = getattr(watch, name, None)
            if original is None:
                continue

            def timed(*args, _original=original, **kwargs):
                start = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self._inside += time.perf_counter() - start

            setattr(watch, name, timed)

    def begin(self, watch) -> None:
        index = len(self.times)
        if index >= self.total or watch is None:
            return
        self._time_entry_points(watch)
        if self.plan[index]:
            watch.resume()
        else:
            watch.suspend()
        self._inside = 0.0
        self._start = time.perf_counter()

    def end(self) -> None:
        if len(self.times) < self.total:
            self.times.append((self.plan[len(self.times)], time.perf_counter() - self._start))
            self.inside.append(self._inside)

    def figures(self) -> dict[str, float]:
        measured = self.times[2 * WARMUP_STEPS:]
        inside = self.inside[2 * WARMUP_STEPS:]
        plain, watched, inside_means = [], [], []
        for i in range(0, len(measured) - self.steps + 1, self.steps):
            block = measured[i:i + self.steps]
            (watched if block[0][0] else plain).append(statistics.median(t for _, t in block))
            if block[0][0]:
                inside_means.append(statistics.fmean(inside[i:i + self.steps]))
        base = statistics.median(plain)
        return {
            "inside_ms": statistics.median(inside_means) * 1e3,
            "inside_pct": statistics.median(inside_means) / base * 100,
            "plain_ms": base * 1e3,
            "watched_ms": statistics.median(watched) * 1e3,
            "overhead_pct": statistics.median(w - p for w, p in zip(watched, plain)) / base * 100,
            "steps": len(measured),
        }


def bench_lightning(folder: str, blocks: Blocks) -> dict[str, float]:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from octa_tui.trainer.integrations.lightning import OctaCallback

    class Demo(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = UNet(base_width=DEMO["base_width"])
            self.criterion = DiceBCELoss()

        def training_step(self, batch, batch_idx):
            images, masks = batch
            return self.criterion(self.net(images), masks).total

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    class Timer(L.Callback):
        def __init__(self, octa):
            self.octa = octa

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            blocks.begin(self.octa.watch)

        def on_train_batch_end(self, trainer, pl_module, *args):
            blocks.end()
            if len(blocks.times) >= blocks.total:
                trainer.should_stop = True

    octa = OctaCallback(task="segmentation", record=str(Path(folder) / "lightning.octa"), announce=False)
    x, y = demo_data()
    loader = DataLoader(TensorDataset(x, y), batch_size=DEMO["batch_size"], shuffle=False)
    torch.manual_seed(0)
    trainer = L.Trainer(max_epochs=10**6, max_steps=blocks.total, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[octa, Timer(octa)])
    trainer.fit(Demo(), loader)
    return blocks.figures()


def bench_hf(folder: str, blocks: Blocks) -> dict[str, float]:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from octa_tui.trainer.integrations.hf import OctaTrainerCallback

    class Demo(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = UNet(base_width=DEMO["base_width"])
            self.criterion = DiceBCELoss()

        def forward(self, pixel_values, labels=None):
            logits = self.net(pixel_values)
            return {"logits": logits, "loss": self.criterion(logits, labels).total}

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            self.x, self.y = demo_data()

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return {"pixel_values": self.x[i], "labels": self.y[i]}

    class Timer(TrainerCallback):
        def __init__(self, octa):
            self.octa = octa

        def on_step_begin(self, args, state, control, **kwargs):
            blocks.begin(self.octa.watch)

        def on_step_end(self, args, state, control, **kwargs):
            blocks.end()

    octa = OctaTrainerCallback(task="segmentation", record=str(Path(folder) / "hf.octa"), announce=False)
    args = TrainingArguments(output_dir=str(Path(folder) / "hf"), max_steps=blocks.total,
                             per_device_train_batch_size=DEMO["batch_size"], learning_rate=1e-3,
                             lr_scheduler_type="constant", max_grad_norm=0.0, save_strategy="no", report_to=[],
                             use_cpu=True, disable_tqdm=True, logging_steps=10**6, seed=0,
                             dataloader_num_workers=0)
    trainer = Trainer(model=Demo(), args=args, train_dataset=Data(), callbacks=[octa, Timer(octa)])
    trainer.train()
    return blocks.figures()


def bench_monai(folder: str, blocks: Blocks) -> dict[str, float]:
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    from octa_tui.trainer.integrations.ignite import OctaHandler

    x, y = demo_data()
    loader = [{"image": x[i:i + DEMO["batch_size"]], "label": y[i:i + DEMO["batch_size"]]}
              for i in range(0, len(x), DEMO["batch_size"])]
    torch.manual_seed(0)
    net = UNet(base_width=DEMO["base_width"])
    criterion = DiceBCELoss()
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=10**6, train_data_loader=loader, network=net,
                                optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
                                loss_function=lambda pred, target: criterion(pred, target).total)
    octa = OctaHandler(task="segmentation", record=str(Path(folder) / "monai.octa"), announce=False).attach(trainer)

    @trainer.on(Events.ITERATION_STARTED)
    def _begin(engine):
        blocks.begin(octa.watch)

    @trainer.on(Events.ITERATION_COMPLETED)
    def _end(engine):
        blocks.end()
        if len(blocks.times) >= blocks.total:
            engine.terminate()

    trainer.run()
    return blocks.figures()


BENCHES = {"lightning": bench_lightning, "hf": bench_hf, "monai": bench_monai}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=20)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", default=",".join(BENCHES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("OCTA_TUI_RUN_DIR", tempfile.mkdtemp(prefix="octa-bench-run-"))
    print(f"demo step: UNet base width {DEMO['base_width']}, {DEMO['image_size']}x{DEMO['image_size']}, "
          f"batch {DEMO['batch_size']}, Adam, Dice+BCE; CPU, {args.threads} thread(s); "
          f"{args.blocks} ABBA block pairs of {args.steps} steps")
    print(f"{'framework':<12}{'without ms':>12}{'with ms':>10}{'overhead':>10}{'inside ms':>11}{'inside':>9}")
    for name in args.only.split(","):
        with tempfile.TemporaryDirectory() as folder:
            figures = BENCHES[name](folder, Blocks(args.blocks, args.steps))
        print(f"{name:<12}{figures['plain_ms']:>12.2f}{figures['watched_ms']:>10.2f}{figures['overhead_pct']:>9.2f}%"
              f"{figures['inside_ms']:>11.3f}{figures['inside_pct']:>8.2f}%")


if __name__ == "__main__":
    main()
