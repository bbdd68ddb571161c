"""Recording benchmark: write rate, full-read rate, and opening a 1M-step recording.

Run: ``.venv/bin/python bench/bench_recording.py [--steps 1000000] [--runs 5]``

The run's schema is the publish benchmark's shape: 8 loss terms, 128 gradient layers and
16 output statistics (152 float32 channels). Figures:

- write_step: the training thread's cost per step (a row copy into a buffer), and the
  end-to-end rate including the background thread encoding and writing every chunk.
- full read: ``read_recording`` (CRC-checked) and ``iter_recording`` over the whole file.
- open + decimate: ``read_recording`` of the 1M-step file, then ``minmax_envelope`` of
  every channel to 200 columns; the median of ``--runs`` runs (target < 0.5 s), with and
  without CRC verification of the step chunks.

The file is written once to a temporary directory and read from the page cache (warm), as
replay reads a file it has just listed. Where the machine is shared, run it twice.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from octa_tui.protocol.decimate import minmax_envelope
from octa_tui.protocol.messages import ModelSummary, Schema
from octa_tui.protocol.recording import RecordingWriter, iter_recording, read_recording

RUN_ID = "0123456789abcdef"
COLUMNS = 200
TARGET_OPEN_S = 0.5


def bench_schema() -> Schema:
    """152 channels: 8 loss terms, 128 gradient layers, 16 output statistics."""
    return Schema(
        run_id=RUN_ID,
        task="segmentation",
        model=ModelSummary("UNet", 31_000_000),
        loss=("total",) + tuple(f"term{i}" for i in range(7)),
        grad=tuple(f"layer{i:03d}" for i in range(128)),
        out=tuple(f"stat{i}" for i in range(16)),
    )


def write_recording(path: Path, steps: int, keep_all: bool = False) -> tuple[float, float, int]:
    """Write ``steps`` steps as fast as possible: (seconds inside write_step, seconds
    until close returned, steps dropped because the writer thread fell behind).

    ``keep_all`` lets the writer buffer without bound (to build the read benchmark's file).
    """
    schema = bench_schema()
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((1024, schema.width)).astype(np.float32)
    rows[17, 0] = np.nan  # a diverging loss now and then: the envelope's masked path runs too
    writer = RecordingWriter(path, schema, max_pending_rows=steps if keep_all else None)
    start = time.perf_counter()
    for i in range(steps):
        writer.write_step(i, i, i // 10_000, 1.7e9 + i * 0.01, rows[i & 1023])
    in_write_step = time.perf_counter() - start
    writer.close()
    total = time.perf_counter() - start
    if writer.error:
        sys.exit(f"recording failed: {writer.error}")
    return in_write_step, total, writer.dropped_steps


def open_and_decimate(path: Path, verify: bool) -> tuple[float, float, float, int]:
    """(seconds to read, seconds to decimate every channel, CPU seconds of both, steps read).

    CPU seconds (all threads) tell what the work costs when other processes share the CPUs.
    """
    cpu = time.process_time()
    start = time.perf_counter()
    recording = read_recording(path, verify=verify)
    opened = time.perf_counter()
    envelope = minmax_envelope(recording.history.steps.values, COLUMNS)
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    assert envelope.lo.shape == (COLUMNS, recording.history.schema.width) and not recording.warnings
    return opened - start, done - opened, cpu, len(recording.history.steps)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--write-steps", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="octa-bench-") as tmp:
        small = Path(tmp) / "write.octa"
        in_step, total, dropped = write_recording(small, args.write_steps)
        rows.append(
            (
                "write_step (training thread)",
                f"{in_step / args.write_steps * 1e6:.2f} us/step",
                f"{args.write_steps / in_step:,.0f} steps/s",
            )
        )
        rows.append(
            (
                "write, end to end (incl. close)",
                f"{total:.2f} s",
                f"{(args.write_steps - dropped) / total:,.0f} steps/s written, {dropped:,} dropped "
                "(flat out; a writer behind by 64 MiB drops)",
            )
        )
        os.remove(small)

        big = Path(tmp) / "big.octa"
        write_recording(big, args.steps, keep_all=True)
        size_mb = big.stat().st_size / 1e6

        start = time.perf_counter()
        chunks = sum(1 for _ in iter_recording(big))
        iter_s = time.perf_counter() - start
        rows.append(
            (f"iter_recording ({chunks} records)", f"{iter_s:.2f} s", f"{args.steps / iter_s:,.0f} steps/s")
        )

        results = {}
        for verify in (True, False):
            runs = [open_and_decimate(big, verify) for _ in range(args.runs)]
            assert all(n == args.steps for *_, n in runs)
            results[verify] = runs
        read_s = statistics.median(r for r, *_ in results[True])
        rows.append(("read_recording, full read", f"{read_s:.3f} s", f"{args.steps / read_s:,.0f} steps/s"))
        for verify, label in ((True, "CRC-checked"), (False, "verify=False")):
            runs = results[verify]
            totals = [r + d for r, d, *_ in runs]
            median = statistics.median(totals)
            verdict = "meets" if median < TARGET_OPEN_S else "MISSES"
            rows.append(
                (
                    f"open {args.steps:,} steps + decimate, {label}",
                    f"{median:.3f} s median",
                    f"read {statistics.median(r for r, *_ in runs):.3f} + decimate "
                    f"{statistics.median(d for _, d, *_ in runs):.3f} s; min {min(totals):.3f}, max {max(totals):.3f}; "
                    f"CPU {statistics.median(c for _, _, c, _ in runs):.3f} s; "
                    f"{verdict} < {TARGET_OPEN_S} s",
                )
            )

    print(
        f"recording benchmark: {bench_schema().width} channels, {args.steps:,}-step file of {size_mb:,.0f} MB, "
        f"{args.runs} runs, cpus={os.cpu_count()}"
    )
    width = max(len(r[0]) for r in rows)
    for name, figure, detail in rows:
        print(f"  {name:<{width}}  {figure:>18}  {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
