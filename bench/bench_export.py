"""Export benchmark: how fast a recording becomes a TensorBoard event file, CSV or JSON Lines.

Run: ``.venv/bin/python bench/bench_export.py [--steps 200000] [--text-steps 20000]``

The recording has the recording benchmark's shape, 152 float32 channels (8 loss terms, 128
gradient layers with real-looking parameter names, 16 output statistics), with random
values (every float32 digit is needed, as for real gradient norms). It is written once to
a temporary directory; each export reads it from the page cache and writes its output
there. Figures: steps/s and output MB/s of ``export_recording`` end to end (reading,
encoding, writing) and, for TensorBoard, of the block encoder alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_recording import bench_schema as recording_schema

from octa_tui.protocol.export import export_recording
from octa_tui.protocol.messages import Schema
from octa_tui.protocol.recording import RecordingWriter
from octa_tui.protocol.tfevents import ScalarEventEncoder


def bench_schema() -> Schema:
    """The recording benchmark's 152 channels, with gradient layers named like a real UNet's
    (TensorBoard tags are channel names) and a start time (the event file's name)."""
    return replace(
        recording_schema(),
        grad=tuple(f"{part}{i // 4}.conv{i % 4}.weight" for i, part in zip(range(128), ["enc", "dec"] * 64)),
        started_at=1_750_000_000.0,
    )


def write_recording(path: Path, steps: int) -> None:
    """``steps`` steps of random values, in 16k-row chunks as the trainer writes them."""
    schema = bench_schema()
    rows = np.random.default_rng(0).standard_normal((4096, schema.width)).astype(np.float32)
    with RecordingWriter(path, schema, flush_s=3600.0, max_pending_rows=steps + 1) as writer:
        for i in range(steps):
            writer.write_step(i, i, i // 1000, 1_750_000_000.0 + 0.01 * i, rows[i % 4096])


def timed_export(recording: Path, fmt: str, out: Path, steps: int) -> None:
    start = time.perf_counter()
    result = export_recording(recording, fmt, out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in result.files)
    print(f"  {fmt:<12} {result.steps:>9,} steps x {result.channels} ch  {seconds:7.2f} s  "
          f"{result.steps / seconds:>10,.0f} steps/s  {size / seconds / 1e6:7.0f} MB/s  ({size / 1e6:,.0f} MB)")
    for path in result.files:
        path.unlink()


def main(argv: list[str]) -> int:
    """Print the export figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200_000, help="steps for the TensorBoard export")
    parser.add_argument("--text-steps", type=int, default=20_000, help="steps for the csv and jsonl exports")
    args = parser.parse_args(argv)
    schema = bench_schema()
    with tempfile.TemporaryDirectory(prefix="octa-bench-export-") as tmp:
        folder = Path(tmp)
        big, small = folder / "big.octa", folder / "small.octa"
        write_recording(big, args.steps)
        write_recording(small, args.text_steps)

        encoder = ScalarEventEncoder(schema.channels)
        values = np.random.default_rng(1).standard_normal((args.steps, schema.width)).astype(np.float32)
        steps = np.arange(args.steps, dtype=np.int64)
        wall = 1_750_000_000.0 + 0.01 * steps
        start = time.perf_counter()
        encoded = 0
        for a in range(0, args.steps, 16384):
            encoded += len(encoder.encode(wall[a : a + 16384], steps[a : a + 16384], values[a : a + 16384]))
        seconds = time.perf_counter() - start
        print(f"export of {schema.width} float32 channels per step")
        print(f"  tb encoder   {args.steps:>9,} steps (in memory)  {seconds:7.2f} s  "
              f"{args.steps / seconds:>10,.0f} steps/s  {encoded / seconds / 1e6:7.0f} MB/s")
        del values
        timed_export(big, "tensorboard", folder / "tb", args.steps)
        timed_export(small, "csv", folder / "small.csv", args.text_steps)
        timed_export(small, "jsonl", folder / "small.jsonl", args.text_steps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
