"""The probe's cost on the demo model: training steps with and without it, in one process.

The demo configuration: UNet (base width 16, 0.48M parameters) on 64x64 synthetic vessels,
batch 8, Adam, Dice+BCE. Plain steps and probed steps (the probe's gradient norms, output
statistics, one vector published to a real TrainerLink that also records to a file) run
in alternating blocks, so drift in machine load hits both alike. Reported:

- median step time of each, and the overhead in % of the plain step time;
- the time spent inside the probe's calls per step (a direct, less noisy measure);
- the publish path: assembling the step vector and ``TrainerLink.publish_step`` (send,
  keep for late joiners, record), in microseconds per step.

Usage: python bench/bench_probe.py [--device cpu|cuda] [--blocks 15] [--steps 10] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from octa_tui.trainer.losses import DiceBCELoss
from octa_tui.trainer.models import UNet, count_parameters
from octa_tui.trainer.probe import Probe
from octa_tui.trainer.synthetic import synthetic_vessels

DEMO = {"base_width": 16, "image_size": 64, "batch_size": 8}


def make_batches(device: torch.device, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, masks = synthetic_vessels(count * DEMO["batch_size"], size=DEMO["image_size"], seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
    y = torch.from_numpy(masks).float().div(255)[:, None].to(device)
    b = DEMO["batch_size"]
    return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--blocks", type=int, default=15, help="blocks of each kind, alternating")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = UNet(base_width=DEMO["base_width"]).to(device)
    criterion = DiceBCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = make_batches(device)
    tmp = tempfile.TemporaryDirectory()
    probe = Probe.start(model, task="segmentation", loss_components=("bce", "dice"), optimizer=optimizer,
                        criterion=criterion, record=str(Path(tmp.name) / "bench.octa"))
    in_probe: list[float] = []

    def plain_step(images: torch.Tensor, masks: torch.Tensor) -> None:
        logits = model(images)
        loss = criterion(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    def probed_step(images: torch.Tensor, masks: torch.Tensor) -> None:
        logits = model(images)
        loss = criterion(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        t0 = time.perf_counter()
        probe.clip_(0.0)  # measures; clipping off (the demo's default)
        t1 = time.perf_counter()
        optimizer.step()
        t2 = time.perf_counter()
        probe.end_step(loss=loss.total, components=loss.components, outputs=logits, activated=torch.sigmoid(logits))
        in_probe.append((t1 - t0) + (time.perf_counter() - t2))

    def block(step_fn, steps: int) -> float:
        sync(device)
        start = time.perf_counter()
        for i in range(steps):
            step_fn(*batches[i % len(batches)])
        sync(device)
        return (time.perf_counter() - start) / steps

    for step_fn in (plain_step, probed_step):  # warm-up: allocator, kernels, pinned buffers
        block(step_fn, 5)
    in_probe.clear()
    plain, probed = [], []
    for _ in range(args.blocks):
        plain.append(block(plain_step, args.steps))
        probed.append(block(probed_step, args.steps))
    probe.flush()

    # The publish path alone: vector assembly and TrainerLink.publish_step, on realistic values.
    device_values = np.random.default_rng(0).random(len(probe._device_pos)).astype(np.float32)
    host_values = np.random.default_rng(1).random(len(probe._host_pos)).astype(np.float32)
    rounds = 20000
    start = time.perf_counter()
    for i in range(rounds):
        probe._publish(i, 0, device_values, host_values)
    publish_us = (time.perf_counter() - start) / rounds * 1e6
    vector = probe.last_values.copy()
    start = time.perf_counter()
    for i in range(rounds):
        probe.link.publish_step(rounds + i, 0, vector)
    link_us = (time.perf_counter() - start) / rounds * 1e6
    probe.close()
    tmp.cleanup()

    p_plain, p_probe = statistics.median(plain), statistics.median(probed)
    inside = statistics.median(in_probe)
    print(f"demo model: UNet base width {DEMO['base_width']} ({count_parameters(model):,} parameters), "
          f"{DEMO['image_size']}x{DEMO['image_size']}, batch {DEMO['batch_size']}, device {device}, "
          f"torch threads {torch.get_num_threads()}, {len(probe.layer_names)} gradient layers, "
          f"step vector {probe.schema.width} floats")
    print(f"blocks: {args.blocks} x {args.steps} steps each, alternating")
    print(f"median step time without probe: {p_plain * 1e3:8.2f} ms")
    print(f"median step time with probe:    {p_probe * 1e3:8.2f} ms")
    print(f"overhead (difference of medians): {(p_probe - p_plain) / p_plain * 100:+.2f} %")
    print(f"time inside the probe's calls:  {inside * 1e3:8.3f} ms/step = {inside / p_plain * 100:.2f} % of the step")
    print(f"publish path (vector + TrainerLink.publish_step, recording on): {publish_us:.2f} us/step, "
          f"of which TrainerLink.publish_step {link_us:.2f} us")


if __name__ == "__main__":
    main()
