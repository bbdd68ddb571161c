"""octa-tui side by side with the loggers users would otherwise pick, in one run, as ratios.

Four parts, each printed as a table (absolute times on a shared machine are noise; the ratio
to octa-tui measured in the same run is the figure to read):

1. Per-step logging cost on the training thread. Every tool gets the same payload each step
   (128 gradient norms, 8 loss terms, 16 output statistics, all 0-d torch tensors as a real
   loop holds them) and the same number of steps, in blocks whose order rotates and reverses
   every round. octa-tui: ``Probe.end_step`` on a model of 128 single-parameter layers (its
   norms measured by ``after_backward`` outside the timed part, as the peers' norms are made
   outside theirs), publishing to a recorded ``TrainerLink`` with a subscriber process
   connected. The probe reads, lays out, sends and records each step on its publisher
   thread: the row under it gives that thread's CPU time per step (``time.thread_time``,
   mean over the counted blocks, each block's steps all published before the next block
   starts) and the sum of both. Peers: their usual per-step call including each value's
   ``.item()``.
2. End-to-end training on the demo model (UNet width 16, 64x64, batch 8, CPU, one torch
   thread): steps/s with no logging, with octa-tui streaming every step to a connected
   subscriber, and with each peer logging the same values (per-layer gradient norms, the
   loss terms, output statistics) every step; alternating blocks.
3. Replay: octa-tui opening a recording (read + min/max envelope to 200 columns) against
   TensorBoard's ``EventAccumulator`` loading an event file of the same number of scalars
   with every scalar kept; and octa-tui on a 1M-step recording.
4. Crash loss: a trainer process (the demo model with a probe, plus a SummaryWriter with its
   default flush) is killed with SIGKILL at a random step; steps missing from each file.

A peer that is not installed or fails is reported as such in the tables.

Usage: python bench/bench_peers.py [--quick] [--parts 1,2,3,4]
Install the peers with ``pip install -e .[bench]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import io
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from octa_tui.protocol.recording import read_recording
from octa_tui.trainer.config import TrainConfig
from octa_tui.trainer.probe import Probe, find_layers

HERE = Path(__file__).resolve().parent
GRADS, LOSSES, OUTS = 128, 8, 16
PEERS = ("tensorboard", "wandb", "mlflow", "aim", "trackio")


def rotated(names: list[str], round_index: int) -> list[str]:
    """The order of round ``round_index``: rotated by one each round and reversed every other
    round, so no tool always runs first, last or right after the same neighbour."""
    k = round_index % len(names)
    order = names[k:] + names[:k]
    return order[::-1] if round_index % 2 else order

def sibling(name: str) -> types.ModuleType:
    """Load another script of bench/ by path, to reuse its code (bench/ is not on sys.path)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo where there is one, else what platform says."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def spawn_reader(endpoint: str) -> subprocess.Popen:
    """A subscriber in its own process (bench_wire's reader role), reading until its stdin closes."""
    reader = subprocess.Popen([sys.executable, str(HERE / "bench_wire.py"), "--role", "reader", endpoint],
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
    assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # let the subscription reach the publisher
    return reader


def stop_reader(reader: subprocess.Popen) -> int:
    """Close the reader's stdin, wait for it, return how many messages it received."""
    try:
        out, _ = reader.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        reader.kill()
        out, _ = reader.communicate()
    return int(out.split()[-1]) if out.split() else -1


# --- peers ---------------------------------------------------------------------------------


class Peer:
    """One logger's usual per-step call: ``log(step, {name: 0-d tensor})``, then ``close()``."""

    name = ""

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoardPeer(Peer):
    """torch.utils.tensorboard.SummaryWriter.add_scalar per value (the documented usage)."""

    name = "tensorboard"

    def __init__(self, folder: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(os.path.join(folder, "tb"))

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        add = self.writer.add_scalar
        for name, value in values.items():
            add(name, value.item(), step)

    def close(self) -> None:
        self.writer.close()


class WandbPeer(Peer):
    """wandb.log(dict) in offline mode, every value converted with .item()."""

    name = "wandb"

    def __init__(self, folder: str) -> None:
        os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true", WANDB_DIR=folder)
        import wandb

        self.run = wandb.init(project="octa-bench", dir=folder, mode="offline")

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self.run.log({name: value.item() for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class MlflowPeer(Peer):
    """mlflow.log_metrics(dict, step=) against a local SQLite store in the temporary folder (mlflow 3
    refuses its old file store unless told to; SQLite is the local store it recommends)."""

    name = "mlflow"

    def __init__(self, folder: str) -> None:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.ERROR)
        mlflow.set_tracking_uri(f"sqlite:///{Path(folder, 'mlflow.db')}")
        self.mlflow = mlflow
        self.run = mlflow.start_run()

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self.mlflow.log_metrics({name: value.item() for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


class AimPeer(Peer):
    """aim.Run.track per value, repository in the temporary folder."""

    name = "aim"

    def __init__(self, folder: str) -> None:
        import aim

        self.run = aim.Run(repo=folder, system_tracking_interval=None)

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self.run.track(value.item(), name=name, step=step)

    def close(self) -> None:
        self.run.close()


class TrackioPeer(Peer):
    """trackio.log(dict) with a local project."""

    name = "trackio"

    def __init__(self, folder: str) -> None:
        os.environ["TRACKIO_DIR"] = folder
        import trackio

        self.trackio = trackio
        trackio.init(project="octa-bench")

    def log(self, step: int, values: dict[str, torch.Tensor]) -> None:
        self.trackio.log({name: value.item() for name, value in values.items()}, step=step)

    def close(self) -> None:
        self.trackio.finish()


PEER_CLASSES: dict[str, type[Peer]] = {
    "tensorboard": TensorBoardPeer, "wandb": WandbPeer, "mlflow": MlflowPeer, "aim": AimPeer, "trackio": TrackioPeer,
}


def open_peers(folder: str) -> tuple[dict[str, Peer], dict[str, str]]:
    """Every peer that starts, and for the others why not (not installed, or the error)."""
    peers: dict[str, Peer] = {}
    problems: dict[str, str] = {}
    for name in PEERS:
        if version(name) is None:
            problems[name] = "not installed"
            continue
        sub = os.path.join(folder, name)
        os.makedirs(sub, exist_ok=True)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                peers[name] = PEER_CLASSES[name](sub)
        except Exception as exc:  # a peer that fails is reported, not hidden
            problems[name] = f"failed to start: {type(exc).__name__}: {str(exc)[:80]}"
    return peers, problems


def close_peers(peers: dict[str, Peer]) -> dict[str, str]:
    """Close every peer; the ones that failed to, with the error (their figures still stand)."""
    notes = {}
    for name, peer in peers.items():
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                peer.close()
        except Exception as exc:
            notes[name] = f"close failed: {type(exc).__name__}: {str(exc)[:60]}"
    return notes


def peer_label(name: str) -> str:
    return f"{name} {version(name) or ''}".strip()


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print(f"\n{title}")
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)))


# --- part 1: per-step logging cost -------------------------------------------------------------


class Layers128(nn.Module):
    """128 layers of one small parameter each: the payload's 128 gradient norms, one per layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4, bias=False) for _ in range(GRADS))


def payloads(count: int) -> list[tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]]:
    """``count`` steps' worth of (128 norms, 8 losses, 16 output stats) as 0-d tensors / one 16-vector."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        norms = list(torch.rand(GRADS, generator=gen).unbind())
        losses = list(torch.rand(LOSSES, generator=gen).unbind())
        out.append((norms, losses, torch.rand(OUTS, generator=gen)))
    return out


def part_logging_cost(steps: int, rounds: int, folder: str) -> None:
    """Table 1: median / p99 microseconds per step on the training thread, ratio to octa-tui."""
    model = Layers128()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    components = tuple(f"term{i}" for i in range(1, LOSSES))
    probe = Probe.start(model, task="custom", loss_components=components,
                        record=os.path.join(folder, "part1.octa"), announce=False)
    reader = spawn_reader(probe.link.telemetry_endpoint)
    peers, problems = open_peers(folder)
    loss_names = ["loss/total", *(f"loss/{c}" for c in components)]
    grad_names = [f"grad/layer{i:03d}" for i in range(GRADS)]
    out_names = [f"out/stat{i:02d}" for i in range(OUTS)]
    pool = payloads(64)
    link_cpu = [0.0, 0]  # CPU seconds in TrainerLink.publish_steps (on the publisher thread), steps
    publish_steps = probe.link.publish_steps

    def timed_publish_steps(steps: list[int], epochs: list[int], times: Any, values: np.ndarray) -> None:
        start = time.thread_time()
        publish_steps(steps, epochs, times, values)
        link_cpu[0] += time.thread_time() - start
        link_cpu[1] += len(steps)

    probe.link.publish_steps = timed_publish_steps
    publisher = probe.publisher
    publisher_cpu = [0.0, 0]  # the publisher's CPU seconds and steps during the counted rounds

    def octa_step(step: int) -> float:
        norms, losses, outs = pool[step % len(pool)]
        probe.after_backward()  # measures the norms: outside the timed part, like the peers' payload
        start = time.perf_counter()
        probe.end_step(loss=losses[0], components=dict(zip(components, losses[1:])), outputs=outs)
        return time.perf_counter() - start

    def peer_step(peer: Peer) -> Callable[[int], float]:
        def run(step: int) -> float:
            norms, losses, outs = pool[step % len(pool)]
            values = dict(zip(grad_names, norms))
            values.update(zip(loss_names, losses))
            values.update(zip(out_names, outs.unbind()))
            start = time.perf_counter()
            peer.log(step, values)
            return time.perf_counter() - start
        return run

    tools: dict[str, Callable[[int], float]] = {"octa-tui": octa_step}
    tools.update((name, peer_step(peer)) for name, peer in peers.items())
    times: dict[str, list[float]] = {name: [] for name in tools}
    next_step = dict.fromkeys(tools, 0)
    block = max(1, steps // rounds)
    failed: dict[str, str] = {}
    for r in range(rounds + 1):  # round 0 warms every tool up and is not counted
        for name in rotated(list(tools), r):
            if name in failed:
                continue
            if name == "octa-tui":  # its publisher's work for the block, wherever it ran, is counted
                publisher.drain()
                cpu0, handled0 = publisher.cpu_s, publisher.handled
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    spent = [tools[name](next_step[name] + i) for i in range(block)]
                    if name == "octa-tui":
                        publisher.drain()
            except Exception as exc:
                failed[name] = f"failed while logging: {type(exc).__name__}: {str(exc)[:80]}"
                continue
            next_step[name] += block
            if r:
                times[name].extend(spent)
                if name == "octa-tui":
                    publisher_cpu[0] += publisher.cpu_s - cpu0
                    publisher_cpu[1] += publisher.handled - handled0
    probe.close()
    lost = publisher.dropped + publisher.failed_items
    received = stop_reader(reader)
    notes = close_peers(peers)
    problems.update(failed)

    base_med = statistics.median(times["octa-tui"])
    base_p99 = float(np.percentile(times["octa-tui"], 99))
    rows = []
    for name in ["octa-tui", *PEERS]:
        if name in problems:
            rows.append([peer_label(name), "-", "-", "-", "-", problems[name]])
            continue
        t = times[name]
        med, p99 = statistics.median(t), float(np.percentile(t, 99))
        label = "octa-tui (Probe.end_step)" if name == "octa-tui" else peer_label(name)
        note = notes.get(name, f"{len(t)} steps")
        rows.append([label, f"{med * 1e6:.1f}", f"{p99 * 1e6:.1f}", f"{med / base_med:.1f}x",
                     f"{p99 / base_p99:.1f}x", note])
        if name == "octa-tui":
            per_step = publisher_cpu[0] / max(1, publisher_cpu[1]) * 1e6
            link_us = link_cpu[0] / max(1, link_cpu[1]) * 1e6
            rows.append(["  + its publisher thread", f"{per_step:.1f} (mean CPU)", "-", "-", "-",
                         f"{publisher_cpu[1]} steps published off the training thread, {lost} lost; of it "
                         f"TrainerLink.publish_steps {link_us:.1f} us; training thread + publisher "
                         f"{med * 1e6 + per_step:.1f} us"])
    print_table(f"1. per-step logging cost on the training thread: {GRADS} grad norms + {LOSSES} losses + "
                f"{OUTS} output stats, {block}-step blocks x {rounds} rounds, rotating order; "
                f"octa-tui's subscriber received {received} messages",
                ["tool", "median us", "p99 us", "median vs octa", "p99 vs octa", "note"], rows)


# --- part 2: end-to-end training ---------------------------------------------------------------


class PeerValues:
    """The values octa-tui's probe publishes, computed the way a loop logging them to a peer would."""

    def __init__(self, model: nn.Module) -> None:
        self.params, layers = find_layers(model)
        self.layers = [(f"grad/{layer.name}", list(layer.params)) for layer in layers]

    @torch.no_grad()
    def __call__(self, loss: Any, logits: torch.Tensor, activated: torch.Tensor) -> dict[str, torch.Tensor]:
        norms = torch._foreach_norm([p.grad for p in self.params])
        values = {"loss/total": loss.total.detach()}
        values.update((f"loss/{k}", v.detach()) for k, v in loss.components.items())
        values.update((name, torch.linalg.vector_norm(torch.stack([norms[i] for i in idx])))
                      for name, idx in self.layers)
        values["grad/total"] = torch.linalg.vector_norm(torch.stack(norms))
        values.update({"out/raw_min": logits.min(), "out/raw_max": logits.max(), "out/raw_mean": logits.mean(),
                       "out/act_min": activated.min(), "out/act_max": activated.max(),
                       "out/act_mean": activated.mean(),
                       "out/frac_outside_01": ((activated < 0) | (activated > 1)).float().mean()})
        return values


def part_training(blocks: int, steps: int, folder: str) -> None:
    """Table 2: steps/s of the demo model with no logging, octa-tui, and each peer."""
    bench_probe = sibling("bench_probe")
    config = TrainConfig.demo()
    assert (config.base_width, config.image_size, config.batch_size) == tuple(
        bench_probe.DEMO[k] for k in ("base_width", "image_size", "batch_size")), "bench_probe's demo drifted"
    torch.set_num_threads(1)
    demo = bench_probe.Demo(torch.device("cpu"), folder)
    reader = spawn_reader(demo.probe.link.telemetry_endpoint)
    peers, problems = open_peers(folder)
    gather = PeerValues(demo.model)
    counters = dict.fromkeys(peers, 0)

    def peer_step(name: str, peer: Peer) -> Callable[[torch.Tensor, torch.Tensor], None]:
        def step(images: torch.Tensor, masks: torch.Tensor) -> None:
            logits = demo.model(images)
            loss = demo.criterion(logits, masks)
            demo.optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            demo.optimizer.step()
            peer.log(counters[name], gather(loss, logits, torch.sigmoid(logits)))
            counters[name] += 1
        return step

    kinds: dict[str, Callable[[torch.Tensor, torch.Tensor], None]] = {
        "no logging": demo.plain_step, "octa-tui": demo.probed_step}
    kinds.update((name, peer_step(name, peer)) for name, peer in peers.items())
    medians: dict[str, list[float]] = {name: [] for name in kinds}
    failed: dict[str, str] = {}
    for b in range(blocks + 1):  # block 0 warms up
        for name in rotated(list(kinds), b):
            if name in failed:
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                    timings = demo.block(kinds[name], steps)
            except Exception as exc:
                failed[name] = f"failed while training: {type(exc).__name__}: {str(exc)[:80]}"
                continue
            if b:
                medians[name].append(statistics.median(timings.step))
    demo.probe.close()
    received = stop_reader(reader)
    notes = close_peers(peers)
    problems.update(failed)

    base = statistics.median(medians["no logging"])
    octa = statistics.median(medians["octa-tui"])
    rows = []
    for name in ["no logging", "octa-tui", *PEERS]:
        if name in problems:
            rows.append([peer_label(name), "-", "-", "-", problems[name]])
            continue
        step_s = statistics.median(medians[name])
        label = name if name in ("no logging", "octa-tui") else peer_label(name)
        rows.append([label, f"{1 / step_s:.1f}", f"{(step_s - base) / base * 100:+.1f}%",
                     f"{(step_s - base) / (octa - base):.1f}x" if octa > base and name != "no logging" else "-",
                     notes.get(name, "")])
    print_table(f"2. end-to-end demo training (UNet width {config.base_width}, {config.image_size}x{config.image_size}, "
                f"batch {config.batch_size}, CPU, 1 torch thread): median of {blocks} block medians of {steps} steps, "
                f"rotating order; octa-tui's subscriber received {received} messages",
                ["logging", "steps/s", "step time vs none", "overhead vs octa", "note"], rows)


# --- part 3: replay ------------------------------------------------------------------------------


def write_event_file(folder: str, steps: int, channels: tuple[str, ...]) -> int:
    """A TensorBoard event file of ``steps`` x len(channels) scalars, one event per step (the fastest
    way to write them; the reader's work is the same per scalar). Returns the scalar count."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(0).standard_normal((1024, len(channels))).astype(np.float32)
    writer = SummaryWriter(folder, max_queue=1000)
    file_writer = writer._get_file_writer()
    for step in range(steps):
        row = rng[step & 1023].tolist()
        file_writer.add_summary(Summary(value=[Summary.Value(tag=c, simple_value=v) for c, v in zip(channels, row)]),
                                step)
    writer.close()
    return steps * len(channels)


def load_event_file(folder: str, tag: str) -> tuple[float, int]:
    """Seconds for EventAccumulator (all scalars kept) to load the folder, and the steps of ``tag``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    start = time.perf_counter()
    acc = EventAccumulator(folder, size_guidance={"scalars": 0})
    acc.Reload()
    elapsed = time.perf_counter() - start
    return elapsed, len(acc.Scalars(tag))


def part_replay(tb_steps: int, big_steps: int, runs: int, folder: str) -> None:
    """Table 3: open-to-first-data, octa-tui vs TensorBoard at the same scalar count; octa-tui at 1M steps."""
    bench_recording = sibling("bench_recording")
    schema = bench_recording.bench_schema()
    channels = schema.channels
    small = Path(folder, "replay.octa")
    bench_recording.write_recording(small, tb_steps, keep_all=True)
    octa = [bench_recording.open_and_decimate(small, True) for _ in range(runs)]
    assert all(n == tb_steps for *_, n in octa)
    octa_s = statistics.median(r + d for r, d, *_ in octa)
    rows = [[f"octa-tui, {tb_steps:,} steps", f"{tb_steps * schema.width:,}", f"{octa_s:.3f}", "1.0x", "read + envelope"]]
    if version("tensorboard") is None:
        rows.append(["tensorboard EventAccumulator", "-", "-", "-", "not installed"])
    else:
        tb = os.path.join(folder, "tb-replay")
        try:
            count = write_event_file(tb, tb_steps, channels)
            loads = [load_event_file(tb, channels[0]) for _ in range(max(1, runs // 2))]
            assert all(n == tb_steps for _, n in loads), f"EventAccumulator kept {loads[0][1]} of {tb_steps} steps"
            tb_s = statistics.median(s for s, _ in loads)
            size_mb = sum(f.stat().st_size for f in Path(tb).iterdir()) / 1e6
            rows.append([f"tensorboard {version('tensorboard')}, {tb_steps:,} steps", f"{count:,}", f"{tb_s:.3f}",
                         f"{tb_s / octa_s:.0f}x", f"EventAccumulator.Reload, all scalars kept; {size_mb:.0f} MB"])
        except Exception as exc:
            rows.append(["tensorboard EventAccumulator", "-", "-", "-", f"failed: {type(exc).__name__}: {exc}"[:100]])
    big = Path(folder, "big.octa")
    bench_recording.write_recording(big, big_steps, keep_all=True)
    runs_big = [bench_recording.open_and_decimate(big, True) for _ in range(runs)]
    big_s = statistics.median(r + d for r, d, *_ in runs_big)
    rows.append([f"octa-tui, {big_steps:,} steps", f"{big_steps * schema.width:,}", f"{big_s:.3f}", "-",
                 f"target < 0.5 s: {'met' if big_s < 0.5 else 'MISSED'}"])
    big.unlink()
    print_table(f"3. replay open-to-first-data ({schema.width} channels; median of {runs} runs, page cache warm)",
                ["reader", "scalars", "seconds", "vs octa-tui", "note"], rows)


# --- part 4: crash loss --------------------------------------------------------------------------


def role_crash_trainer(folder: str) -> None:
    """Train the demo model forever with a recording probe and a default SummaryWriter; print each step."""
    bench_probe = sibling("bench_probe")
    torch.set_num_threads(1)
    demo = bench_probe.Demo(torch.device("cpu"), folder)  # records to folder/bench.octa
    writer = None
    if version("tensorboard") is not None:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(os.path.join(folder, "tb"))  # defaults: flush_secs=120, max_queue=10
    gather = PeerValues(demo.model)
    probe, model, optimizer = demo.probe, demo.model, demo.optimizer
    step = 0
    while True:
        for images, masks in demo.batches:
            logits = model(images)
            loss = demo.criterion(logits, masks)
            optimizer.zero_grad(set_to_none=True)
            loss.total.backward()
            probe.after_backward()
            optimizer.step()
            activated = torch.sigmoid(logits)
            probe.end_step(loss=loss.total, components=loss.components, outputs=logits, activated=activated)
            if writer is not None:
                for name, value in gather(loss, logits.detach(), activated.detach()).items():
                    writer.add_scalar(name, value.item(), step)
            print(step, flush=True)
            step += 1


def crash_once(folder: str, kill_after_s: float) -> tuple[int, int, int | None, float]:
    """Run a crash trainer, SIGKILL it after ``kill_after_s``; (steps done, octa steps kept,
    tensorboard steps kept or None, seconds per step)."""
    proc = subprocess.Popen([sys.executable, __file__, "--role", "crash-trainer", folder],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()  # step 0 done: the clock starts
    assert first.strip() == "0", f"crash trainer did not start: {first!r}"
    start = time.perf_counter()
    time.sleep(kill_after_s)
    os.kill(proc.pid, signal.SIGKILL)
    elapsed = time.perf_counter() - start
    rest = proc.stdout.read().split()
    proc.wait()
    done = int(rest[-1]) + 1 if rest else 1
    octa_kept = len(read_recording(Path(folder, "bench.octa")).history.steps)
    tb_kept = None
    tb = os.path.join(folder, "tb")
    if os.path.isdir(tb):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(tb, size_guidance={"scalars": 0})
        acc.Reload()
        tb_kept = len(acc.Scalars("loss/total")) if "loss/total" in acc.Tags()["scalars"] else 0
    return done, octa_kept, tb_kept, elapsed / max(1, done - 1)


def part_crash(trials: int, folder: str) -> None:
    """Table 4: steps lost to SIGKILL, octa-tui's recording vs SummaryWriter's default flush."""
    rng = random.Random()
    rows = []
    for trial in range(trials):
        sub = os.path.join(folder, f"crash{trial}")
        os.makedirs(sub)
        kill_after = rng.uniform(3.0, 8.0)
        done, octa_kept, tb_kept, step_s = crash_once(sub, kill_after)
        octa_lost = done - octa_kept
        tb_text = "not installed" if tb_kept is None else f"{done - tb_kept} ({(done - tb_kept) * step_s:.1f} s)"
        rows.append([str(trial + 1), f"{kill_after:.1f}", str(done), f"{1 / step_s:.0f}",
                     f"{octa_lost} ({octa_lost * step_s:.2f} s)", tb_text,
                     "met" if octa_lost * step_s <= 1.0 else "MISSED"])
    print_table("4. crash loss: demo trainer with probe + SummaryWriter(flush_secs=120, max_queue=10), "
                "SIGKILL at a random time; steps missing from each file",
                ["trial", "killed after s", "steps done", "steps/s", "octa-tui lost", "tensorboard lost",
                 "octa <= 1 s"], rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a ~2 minute version with fewer steps")
    parser.add_argument("--parts", default="1,2,3,4", help="comma-separated parts to run")
    parser.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role:
        if args.role[0] == "crash-trainer":
            role_crash_trainer(args.role[1])
            return 0
        parser.error(f"unknown role {args.role[0]!r}")
    try:
        parts = {int(p) for p in args.parts.split(",")}
    except ValueError:
        parser.error(f"--parts takes comma-separated numbers 1-4, got {args.parts!r}")
    q = args.quick
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}")
    print("peers: " + ", ".join(f"{n} {version(n) or 'not installed'}" for n in PEERS))
    with tempfile.TemporaryDirectory(prefix="octa-peers-") as folder:
        for part, run in ((1, lambda f: part_logging_cost(300 if q else 1000, 5 if q else 10, f)),
                          (4, lambda f: part_crash(1 if q else 3, f)),
                          (3, lambda f: part_replay(2000 if q else 5_000, 100_000 if q else 1_000_000, 3 if q else 5, f)),
                          (2, lambda f: part_training(4 if q else 10, 5 if q else 10, f))):
            if part in parts:
                sub = os.path.join(folder, f"part{part}")
                os.makedirs(sub)
                start = time.perf_counter()
                run(sub)
                print(f"(part {part}: {time.perf_counter() - start:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
