"""The fixed session behind ``session_v2.octa``, the recording format's golden file.

``tests/protocol/test_recording.py`` writes this session again and compares the bytes with
the committed file: the bytes are the contract. Regenerate the file only when the format
changes on purpose (and bump the format version when old readers cannot read it)::

    .venv/bin/python tests/protocol/golden/make_golden.py

Everything here is a constant: wall times come from the messages, never from the clock,
and chunk boundaries come from ``chunk_rows`` and the records, never from the flush timer.

``session.octa`` is the same session as format 1 wrote it (no sync markers); it is never
regenerated: it proves that recordings made before format 2 still read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from octa_tui.protocol.messages import (
    DatasetReport,
    EpochSummary,
    Event,
    FileProblem,
    Message,
    ModelSummary,
    Preview,
    Schema,
    Step,
)
from octa_tui.protocol.recording import RecordingWriter

GOLDEN_FILE = Path(__file__).with_name("session_v2.octa")
V1_GOLDEN_FILE = Path(__file__).with_name("session.octa")
RUN_ID = "00c0ffee00c0ffee"
CHUNK_ROWS = 8
START_TIME = 1_750_000_000.0

SCHEMA = Schema(
    run_id=RUN_ID,
    task="segmentation",
    model=ModelSummary("UNet", 31_042, "cpu"),
    loss=("total", "bce", "dice"),
    grad=("enc1", "dec1"),
    gradstat=("total_norm",),
    out=("raw_min", "raw_max"),
    opt=("lr",),
    started_at=START_TIME,
    config={
        "train_images": 16,
        "batch_size": 4,
        "epochs": 2,
        "image_size": 64,
        "loss": "dice_bce",
        "seed": 0,
    },
)


def golden_steps(first: int, count: int) -> list[Step]:
    """Steps with simple, exactly representable values (and a NaN and an Inf on purpose)."""
    steps = []
    for i in range(first, first + count):
        values = np.array(
            [1.0 - i / 64, 0.5 - i / 128, 0.5 - i / 128, 2.0**-i, 0.25, 0.5, -1.5 - i, 1.5 + i, 1e-3],
            dtype=np.float32,
        )
        if i == 5:
            values[3] = np.nan
        if i == 11:
            values[5] = np.inf
        steps.append(Step(RUN_ID, seq=i, step=i, epoch=i // 10, time=START_TIME + 0.25 * i, values=values))
    return steps


def golden_session() -> list[Message]:
    """The session in the order it is written: steps and records interleaved."""
    report = DatasetReport(
        run_id=RUN_ID,
        source="synthetic",
        pairs=20,
        unique_mask_values=2,
        mask_values=(0.0, 255.0),
        foreground_ratio=0.125,
        foreground_ratios=(0.125, 0.125),
        suggested_pos_weight=7.0,
        problems=(FileProblem("img_07.png", "no mask; skipped"),),
        image_size=(64, 64),
        train_images=16,
        val_images=4,
        target_mean=0.125,
        target_var=0.109375,
    )
    preview = Preview(
        RUN_ID,
        step=19,
        epoch=1,
        image=np.arange(16, dtype=np.uint8).reshape(4, 4),
        target=np.eye(4, dtype=np.uint8) * 255,
        prediction=np.full((4, 4), 128, dtype=np.uint8),
    )
    return [
        report,
        *golden_steps(0, 10),
        EpochSummary(RUN_ID, epoch=0, step=9, time=START_TIME + 2.5, train={"loss": 0.75}, val={"dice": 0.4}),
        *golden_steps(10, 10),
        Event(
            RUN_ID,
            step=19,
            time=START_TIME + 5.0,
            kind="command_applied",
            message="lr 0.001 -> 0.005",
            data={"op": "set_lr", "old": 1e-3, "new": 5e-3},
        ),
        preview,
        *golden_steps(20, 3),
    ]


def write_golden(path: Path) -> RecordingWriter:
    """Write the golden session to ``path`` and return the closed writer."""
    writer = RecordingWriter(path, SCHEMA, flush_s=3600.0, chunk_rows=CHUNK_ROWS)
    for msg in golden_session():
        if isinstance(msg, Step):
            writer.write_step(msg.seq, msg.step, msg.epoch, msg.time, msg.values)
        else:
            writer.write(msg)
    writer.close()
    return writer


if __name__ == "__main__":
    written = write_golden(GOLDEN_FILE)
    if written.error:
        sys.exit(written.error)
    print(f"wrote {GOLDEN_FILE} ({GOLDEN_FILE.stat().st_size} bytes)")
