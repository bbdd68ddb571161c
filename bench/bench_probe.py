"""The probe's cost on the demo model: training steps with and without it, in one process.

The demo configuration: UNet (base width 16, 0.48M parameters) on 64x64 synthetic vessels,
batch 8, Adam, Dice+BCE. Plain steps and probed steps (the probe's gradient norms, output
statistics, one vector published to a real TrainerLink that also records to a file) run in
alternating blocks, ABBA order, so drift in machine load hits both alike. For each torch
thread count asked for, the table gives:

- plain / probed: the median over blocks of each block's median step time;
- overhead: the median over block pairs of (probed - plain) block medians, in % of plain;
- inside: time spent inside the probe's calls per step, measured directly with
  ``perf_counter`` around them (block mean, so work done every N steps counts; median over
  blocks), in ms and in % of the plain step. It includes the activation computed only for
  the probe: by default ``end_step(..., activation="sigmoid")`` applies it inside the probe;
  with ``--pass-activated`` the loop computes ``sigmoid(logits)`` and passes it as
  ``activated=`` (timed as the probe's too, and shown in its own column);
- publisher: CPU time per step of the probe's publisher thread, which reads, lays out and
  publishes each step off the training thread (``TrainerLink.publish_steps``: send, keep
  for late joiners, record), mean over the probed blocks; this work is not in "inside" (it
  runs beside the loop, and competes with it for the interpreter and the cores);
- Adam: ``optimizer.step`` in plain and in probed steps, median (the probe's pass over the
  gradients leaves them in cache for the optimizer, so part of its cost is not extra).

Then the publish path alone in a tight loop: laying out the step vector and publishing it, one
step at a time and in batches of 64 (what the publisher thread does per step when it finds
one step, or many, pending).

``--attach watch`` and ``--attach run`` measure the same demo steps instead with
``octa_tui.watch(model, optimizer)`` (per-optimizer step hooks, loss observed at the
``torch.nn.functional`` losses) or the way ``octa-tui run`` attaches (global step hooks,
model found from the optimizer): plain blocks run with the Watch suspended (no hooks, no
loss observation), watched blocks with it on; overhead as above (with-minus-without), and
inside: the time spent in the Watch's step hooks and loss observers per step.

Usage: python bench/bench_probe.py [--device cpu|cuda] [--blocks 20] [--steps 8] [--threads 1,0]
                                   [--pass-activated] [--attach probe|watch|run]
(``--threads`` is a comma-separated list; 0 is torch's default thread count.)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from octa_tui.trainer.losses import DiceBCELoss
from octa_tui.trainer.models import UNet, count_parameters
from octa_tui.trainer.probe import Probe
from octa_tui.trainer.synthetic import synthetic_vessels

DEMO = {"base_width": 16, "image_size": 64, "batch_size": 8}
WARMUP_STEPS = 6


def make_batches(device: torch.device, count: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    images, masks = synthetic_vessels(count * DEMO["batch_size"], size=DEMO["image_size"], seed=0)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255).to(device)
    y = torch.from_numpy(masks).float().div(255)[:, None].to(device)
    b = DEMO["batch_size"]
    return [(x[i : i + b], y[i : i + b]) for i in range(0, len(x), b)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timings:
    """Per-step seconds of one block: the step, time inside the probe, the probe-only activation, the optimizer."""

    def __init__(self) -> None:
        self.step: list[float] = []
        self.inside: list[float] = []
        self.activation: list[float] = []
        self.optimizer: list[float] = []


class Demo:
    """The demo model, its optimizer and a probe publishing to a recorded TrainerLink."""

    def __init__(self, device: torch.device, folder: str, pass_activated: bool = False) -> None:
        torch.manual_seed(0)
        self.pass_activated = pass_activated
        self.device = device
        self.model = UNet(base_width=DEMO["base_width"]).to(device)
        self.criterion = DiceBCELoss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.batches = make_batches(device)
        self.probe = Probe.start(self.model, task="segmentation", loss_components=("bce", "dice"),
                                 optimizer=self.optimizer, criterion=self.criterion,
                                 record=str(Path(folder) / "bench.octa"), announce=False)
        self.timings = Timings()

    def plain_step(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        logits = self.model(images)
        loss = self.criterion(logits, masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        start = time.perf_counter()
        self.optimizer.step()
        self.timings.optimizer.append(time.perf_counter() - start)

    def probed_step(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        probe, timings = self.probe, self.timings
        logits = self.model(images)
        loss = self.criterion(logits, masks)
        self.optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        t0 = time.perf_counter()
        probe.clip_(0.0)  # measures; clipping off (the demo's default)
        t1 = time.perf_counter()
        self.optimizer.step()
        t2 = time.perf_counter()
        if self.pass_activated:
            activated = torch.sigmoid(logits)  # computed only for the probe: counted as its cost
            t3 = time.perf_counter()
            probe.end_step(loss=loss.total, components=loss.components, outputs=logits, activated=activated)
        else:
            t3 = time.perf_counter()
            probe.end_step(loss=loss.total, components=loss.components, outputs=logits, activation="sigmoid")
        timings.inside.append((t1 - t0) + (time.perf_counter() - t2))
        timings.activation.append(t3 - t2)
        timings.optimizer.append(t2 - t1)

    def block(self, step_fn: Callable[[torch.Tensor, torch.Tensor], None], steps: int) -> Timings:
        self.timings = timings = Timings()
        sync(self.device)
        for i in range(steps):
            start = time.perf_counter()
            step_fn(*self.batches[i % len(self.batches)])
            if i == steps - 1:
                sync(self.device)
            timings.step.append(time.perf_counter() - start)
        return timings


def run_config(demo: Demo, threads: int, blocks: int, steps: int) -> dict[str, float]:
    """Alternate plain and probed blocks (ABBA) at ``threads`` torch threads; the table's figures."""
    torch.set_num_threads(threads)
    for step_fn in (demo.plain_step, demo.probed_step):  # warm-up: allocator, kernels, buffers
        demo.block(step_fn, WARMUP_STEPS)
    plain: list[Timings] = []
    probed: list[Timings] = []
    publisher = demo.probe.publisher
    publisher.drain()
    cpu0, handled0 = publisher.cpu_s, publisher.handled
    for b in range(blocks):
        order = (False, True) if b % 2 == 0 else (True, False)
        for with_probe in order:
            if with_probe:
                probed.append(demo.block(demo.probed_step, steps))
            else:
                plain.append(demo.block(demo.plain_step, steps))
    demo.probe.flush()
    publisher_us = (publisher.cpu_s - cpu0) / max(1, publisher.handled - handled0) * 1e6
    plain_med = [statistics.median(t.step) for t in plain]
    probed_med = [statistics.median(t.step) for t in probed]
    base = statistics.median(plain_med)
    return {
        "threads": threads,
        "plain_ms": base * 1e3,
        "probed_ms": statistics.median(probed_med) * 1e3,
        "overhead_pct": statistics.median(p - q for p, q in zip(probed_med, plain_med)) / base * 100,
        "inside_ms": statistics.median(statistics.fmean(t.inside) for t in probed) * 1e3,
        "activation_ms": statistics.median(statistics.fmean(t.activation) for t in probed) * 1e3,
        "publish_us": publisher_us,
        "adam_plain_ms": statistics.median(x for t in plain for x in t.optimizer) * 1e3,
        "adam_probed_ms": statistics.median(x for t in probed for x in t.optimizer) * 1e3,
    }


def attach_overhead(device: torch.device, folder: str, how: str, threads: int, blocks: int,
                    steps: int) -> dict[str, float]:
    """Plain steps vs the same steps under a Watch (``how``: watch or run), alternating ABBA blocks."""
    from octa_tui.trainer.watch import Watch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet(base_width=DEMO["base_width"]).to(device)
    criterion = DiceBCELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = make_batches(device)
    if how == "watch":
        watch = Watch(model, optimizer, task="segmentation", record=str(Path(folder) / f"{how}.octa"),
                      announce=False)
    else:
        watch = Watch(None, None, task="segmentation", record=str(Path(folder) / f"{how}.octa"), announce=False)

    spent = [0.0]  # seconds inside the Watch's hooks and loss observers

    def timed(fn: Callable[..., object]) -> Callable[..., object]:
        def wrapper(*args: object, **kwargs: object) -> object:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - start
        return wrapper

    for name in ("_pre_step", "_post_step", "loss_called", "backward_called", "clip_called"):
        setattr(watch, name, timed(getattr(watch, name)))  # used from the first resume() on

    def step(images: torch.Tensor, masks: torch.Tensor) -> None:
        loss = criterion(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()

    def block(count: int) -> list[float]:
        times = []
        sync(device)
        for i in range(count):
            start = time.perf_counter()
            step(*batches[i % len(batches)])
            if i == count - 1:
                sync(device)
            times.append(time.perf_counter() - start)
        return times

    block(WARMUP_STEPS)  # watched warm-up: the run starts at its first step
    watch.suspend()
    block(WARMUP_STEPS)
    plain_med, watched_med, inside = [], [], []
    for b in range(blocks):
        for watched in ((False, True) if b % 2 == 0 else (True, False)):
            if watched:
                watch.resume()
                spent[0] = 0.0
                watched_med.append(statistics.median(block(steps)))
                inside.append(spent[0] / steps)
                watch.suspend()
            else:
                plain_med.append(statistics.median(block(steps)))
    published = watch.probe.published if watch.probe is not None else 0
    watch.close()
    base = statistics.median(plain_med)
    return {
        "threads": threads,
        "plain_ms": base * 1e3,
        "watched_ms": statistics.median(watched_med) * 1e3,
        "overhead_pct": statistics.median(p - q for p, q in zip(watched_med, plain_med)) / base * 100,
        "inside_ms": statistics.median(inside) * 1e3,
        "published": published,
    }


def publish_path(probe: Probe, rounds: int = 20000, batch: int = 64) -> tuple[float, float, float]:
    """Microseconds per step for the vector layout + publishing, one step at a time and in
    batches of ``batch``, and TrainerLink.publish_steps alone (batches)."""
    from octa_tui.trainer.probe import HostPart, OutputsPart

    rng = np.random.default_rng(0)
    layout = probe.layout
    measured = rng.random((batch, layout.device_count)).astype(np.float32)
    count = DEMO["batch_size"] * DEMO["image_size"] ** 2
    part = HostPart(rng.random(len(layout.host_keys)).tolist(), [], OutputsPart(count, count, None, True),
                    frozenset(), time.time())
    start = time.perf_counter()
    for i in range(rounds):
        probe._assemble(i, 0, measured[0], part)
    single_us = (time.perf_counter() - start) / rounds * 1e6
    batches = max(1, rounds // batch)
    start = time.perf_counter()
    for b in range(batches):
        first = rounds + b * batch
        probe._assemble_rows(measured, [(first + i, 0, part.ended, None, None, part) for i in range(batch)])
    batch_us = (time.perf_counter() - start) / (batches * batch) * 1e6
    vectors = np.repeat(probe.last_values[None, :], batch, axis=0)
    times = [time.time()] * batch
    start = time.perf_counter()
    for b in range(batches):
        first = rounds * 2 + b * batch
        probe.link.publish_steps(list(range(first, first + batch)), [0] * batch, times, vectors)
    link_us = (time.perf_counter() - start) / (batches * batch) * 1e6
    return single_us, batch_us, link_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--blocks", type=int, default=20, help="blocks of each kind, alternating ABBA")
    parser.add_argument("--steps", type=int, default=8, help="steps per block")
    parser.add_argument("--threads", default="1,0", help="torch CPU thread counts, comma-separated (0: default)")
    parser.add_argument("--pass-activated", action="store_true",
                        help="compute sigmoid(logits) in the loop and pass it as activated= (default: activation=)")
    parser.add_argument("--attach", choices=("probe", "watch", "run"), default="probe",
                        help="what instruments the steps: the explicit Probe (default), watch(), or run's global hooks")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    try:
        wanted = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads takes comma-separated integers such as 1,0, got {args.threads!r}")
    thread_counts = list(dict.fromkeys(t if t > 0 else default_threads for t in wanted))
    device = torch.device(args.device)
    if args.attach != "probe":
        with tempfile.TemporaryDirectory() as folder:
            rows = [attach_overhead(device, folder, args.attach, threads, args.blocks, args.steps)
                    for threads in thread_counts]
        torch.set_num_threads(default_threads)
        print(f"demo model: UNet base width {DEMO['base_width']}, {DEMO['image_size']}x{DEMO['image_size']}, "
              f"batch {DEMO['batch_size']}, device {device}; instrumented by "
              f"{'octa_tui.watch(model, optimizer)' if args.attach == 'watch' else 'octa-tui run (global hooks)'}")
        print(f"{args.blocks} blocks of each kind x {args.steps} steps, ABBA order; plain blocks with the Watch suspended")
        header = (f"{'threads':>7} | {'plain ms':>8} | {'watched ms':>10} | {'overhead':>8} | {'inside ms':>9} | "
                  f"{'inside':>7} | {'steps published':>15}")
        print(header)
        print("-" * len(header))
        for r in rows:
            print(f"{r['threads']:>7} | {r['plain_ms']:8.2f} | {r['watched_ms']:10.2f} | {r['overhead_pct']:+7.2f}% | "
                  f"{r['inside_ms']:9.3f} | {r['inside_ms'] / r['plain_ms'] * 100:6.2f}% | {r['published']:>15}")
        return
    with tempfile.TemporaryDirectory() as folder:
        demo = Demo(device, folder, pass_activated=args.pass_activated)
        rows = [run_config(demo, threads, args.blocks, args.steps) for threads in thread_counts]
        torch.set_num_threads(default_threads)
        demo.probe.flush()
        single_us, batch_us, link_us = publish_path(demo.probe)
        probe = demo.probe
        probe.close()

    print(f"demo model: UNet base width {DEMO['base_width']} ({count_parameters(demo.model):,} parameters), "
          f"{DEMO['image_size']}x{DEMO['image_size']}, batch {DEMO['batch_size']}, device {device}; "
          f"{len(probe.layer_names)} gradient layers, step vector {probe.schema.width} floats; "
          f"torch default threads {default_threads}")
    how = "activated=sigmoid(logits) from the loop" if args.pass_activated else 'activation="sigmoid" in the probe'
    print(f"{args.blocks} blocks of each kind x {args.steps} steps, ABBA order; outputs: {how}")
    header = (f"{'threads':>7} | {'plain ms':>8} | {'probed ms':>9} | {'overhead':>8} | "
              f"{'inside ms':>9} | {'inside':>7} | {'of it sigmoid':>13} | {'publisher us':>12} | "
              f"{'Adam ms plain / probed':>22}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['threads']:>7} | {r['plain_ms']:8.2f} | {r['probed_ms']:9.2f} | {r['overhead_pct']:+7.2f}% | "
              f"{r['inside_ms']:9.3f} | {r['inside_ms'] / r['plain_ms'] * 100:6.2f}% | "
              f"{r['activation_ms'] / r['plain_ms'] * 100:12.2f}% | {r['publish_us']:12.1f} | "
              f"{r['adam_plain_ms']:6.2f} / {r['adam_probed_ms']:6.2f}")
    print(f"publish path alone (tight loop, recording on): {single_us:.2f} us/step one step at a time, "
          f"{batch_us:.2f} us/step in batches of 64, of which TrainerLink.publish_steps {link_us:.2f} us")


if __name__ == "__main__":
    main()
