"""Export: a recording read back from CSV, JSON Lines or a TensorBoard event file holds the
same numbers (NaN and Inf included), in the same order, with nothing lost silently."""

from __future__ import annotations

import csv
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from octa_tui.protocol.export import (
    ExportError,
    csv_side_files,
    export_recording,
    restore_nonfinite,
    select_channels,
    to_json,
)
from octa_tui.protocol.messages import DatasetReport, EpochSummary, Event, ModelSummary, Schema
from octa_tui.protocol.recording import RecordingError, RecordingWriter, read_recording
from octa_tui.protocol.tfevents import ScalarEventEncoder, crc32c, event, mask_crc, tfrecord

RUN = "feedc0defeedc0de"
START = 1_760_000_000.0
STEPS = 40

SCHEMA = Schema(
    run_id=RUN,
    task="segmentation",
    model=ModelSummary("UNet", 1234),
    loss=("total", "bce", "dice"),
    grad=("enc1.conv1.weight", "dec1.conv1.weight"),
    gradstat=("total_norm",),
    opt=("lr",),
    started_at=START,
    config={"batch_size": 4, "loss": "dice_bce"},
)


def step_values(i: int) -> np.ndarray:
    """Values that need every float32 digit, with NaN, +Inf and -Inf at known steps."""
    values = (np.arange(SCHEMA.width, dtype=np.float32) + 1) / np.float32(3 + i)
    if i == 5:
        values[0] = np.nan
    if i == 17:
        values[3] = np.inf
    if i == 18:
        values[4] = -np.inf
    return values


def write_session(path: Path, steps: int = STEPS) -> Path:
    """A real recording: chunks of 8 steps, a dataset report, two epochs (one val NaN), events."""
    writer = RecordingWriter(path, SCHEMA, flush_s=3600.0, chunk_rows=8)
    writer.write(DatasetReport(RUN, "synthetic", 8, 2, (0.0, 1.0), 0.1, (0.1,), 9.0))
    for i in range(steps):
        writer.write_step(i, 100 + i, i // 20, START + 0.5 * i, step_values(i))
        if i == 19:
            writer.write(EpochSummary(RUN, 0, 119, START + 10.0, train={"loss": 0.5}, val={"dice": 0.25}))
        if i == 24:
            writer.write(Event(RUN, 124, START + 12.0, "command_applied", "lr 0.001 -> 0.002",
                               {"op": "set_lr", "old": 1e-3, "new": 2e-3}))
            writer.write(Event(RUN, 124, START + 12.0, "warning", "loss is NaN", {"loss": float("nan")}))
    writer.write(EpochSummary(RUN, 1, 139, START + 20.0, train={"loss": 0.4}, val={"dice": float("nan")}))
    writer.close()
    return path


@pytest.fixture()
def session(tmp_path: Path) -> Path:
    return write_session(tmp_path / "run.octa")


def same_float32(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype == np.float32 and np.array_equal(a, b, equal_nan=True)


# --- CSV ------------------------------------------------------------------------------------


def test_csv_reads_back_to_the_exact_float32_values(session, tmp_path):
    # GIVEN a recording with NaN, +Inf and -Inf steps
    out = tmp_path / "run.csv"
    # WHEN it is exported as CSV and read back with the csv module
    result = export_recording(session, "csv", out)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    # THEN the header names every channel and each cell is the recorded float32, bit for bit
    assert rows[0] == ["seq", "step", "epoch", "time", *SCHEMA.channels]
    history = read_recording(session).history
    values = np.array([[float(x) for x in row[4:]] for row in rows[1:]], dtype=np.float64).astype(np.float32)
    assert same_float32(values, history.steps.values)
    assert [int(r[1]) for r in rows[1:]] == history.steps.step.tolist()
    assert [float(r[3]) for r in rows[1:]] == history.steps.time.tolist()
    assert rows[6][4] == "nan" and rows[18][7] == "inf" and rows[19][8] == "-inf"
    assert result.steps == STEPS and result.warnings == []


def test_csv_puts_epochs_and_events_in_their_own_files(session, tmp_path):
    # GIVEN a recording with two epoch summaries and two events
    out = tmp_path / "run.csv"
    # WHEN it is exported as CSV
    result = export_recording(session, "csv", out)
    epochs_path, events_path = csv_side_files(out)
    # THEN the epochs file has one row per epoch (NaN written as nan) and events their data as JSON
    assert set(result.files) == {out, epochs_path, events_path}
    with open(epochs_path, newline="") as f:
        epochs = list(csv.DictReader(f))
    assert [(e["epoch"], e["step"], e["val/dice"], e["train/loss"]) for e in epochs] == [
        ("0", "119", "0.25", "0.5"), ("1", "139", "nan", "0.4")]
    with open(events_path, newline="") as f:
        events = list(csv.DictReader(f))
    assert [e["kind"] for e in events] == ["command_applied", "warning"]
    assert json.loads(events[0]["data"]) == {"op": "set_lr", "old": 1e-3, "new": 2e-3}
    assert json.loads(events[1]["data"]) == {"loss": None} and json.loads(events[1]["nonfinite"]) == {"loss": "nan"}


def test_channel_patterns_and_every_nth_step_select_what_is_written(session, tmp_path):
    # GIVEN a recording of 40 steps in chunks of 8
    out = tmp_path / "run.csv"
    # WHEN only gradients, every 3rd step, are exported
    export_recording(session, "csv", out, patterns=["grad/*"], every=3)
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    # THEN the columns are the gradient channels and the rows steps 0, 3, 6, ... across chunk edges
    assert rows[0][4:] == ["grad/enc1.conv1.weight", "grad/dec1.conv1.weight"]
    assert [int(r[0]) for r in rows[1:]] == list(range(0, STEPS, 3))
    expected = np.stack([step_values(i)[3:5] for i in range(0, STEPS, 3)])
    got = np.array([[float(x) for x in r[4:]] for r in rows[1:]]).astype(np.float32)
    assert same_float32(got, expected)


def test_a_pattern_that_matches_nothing_is_refused_and_writes_nothing(session, tmp_path):
    with pytest.raises(ExportError, match="'grads/\\*' matches none"):
        export_recording(session, "csv", tmp_path / "run.csv", patterns=["grads/*"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.octa"]


def test_select_channels_keeps_schema_order_for_several_patterns():
    names = SCHEMA.channels
    chosen = [names[i] for i in select_channels(names, ["opt/*", "loss/total"])]
    assert chosen == ["loss/total", "opt/lr"]


def test_existing_output_is_refused_unless_overwrite(session, tmp_path):
    # GIVEN an output file that already exists
    out = tmp_path / "run.jsonl"
    out.write_text("keep me\n")
    # WHEN exporting over it THEN it is refused and untouched; with overwrite it is replaced
    with pytest.raises(ExportError, match="already exists"):
        export_recording(session, "jsonl", out)
    assert out.read_text() == "keep me\n"
    export_recording(session, "jsonl", out, overwrite=True)
    assert out.read_text().startswith('{"type": "schema"')
    assert not list(tmp_path.glob(".*partial"))


# --- JSON Lines -----------------------------------------------------------------------------


def strict_json(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_jsonl_is_strict_json_in_recording_order_and_round_trips(session, tmp_path):
    # GIVEN a recording with steps, epochs, events and a dataset report
    out = tmp_path / "run.jsonl"
    # WHEN it is exported as JSON Lines
    export_recording(session, "jsonl", out)
    records = [strict_json(line) for line in out.read_text().splitlines()]
    # THEN every line parses as plain JSON, the schema comes first, records keep their order ...
    kinds = [r["type"] for r in records]
    assert kinds[0] == "schema" and kinds[1] == "dataset"
    assert kinds.count("step") == STEPS and kinds[-1] == "epoch"
    epoch0 = kinds.index("epoch")
    assert kinds[epoch0 - 1] == "step" and records[epoch0 - 1]["seq"] == 19
    assert records[0]["channels"] == list(SCHEMA.channels) and records[0]["model"]["name"] == "UNet"
    # ... and NaN/Inf come back from their nonfinite mirror exactly
    steps = [restore_nonfinite(r) for r in records if r["type"] == "step"]
    values = np.array([[s["values"][c] for c in SCHEMA.channels] for s in steps]).astype(np.float32)
    assert same_float32(values, read_recording(session).history.steps.values)
    assert records[kinds.index("step") + 5]["nonfinite"] == {"values": {"loss/total": "nan"}}
    last = restore_nonfinite(records[-1])
    assert np.isnan(last["val"]["dice"]) and records[-1]["val"] == {"dice": None}
    warning = next(r for r in records if r["type"] == "event" and r["kind"] == "warning")
    assert np.isnan(restore_nonfinite(warning)["data"]["loss"])


def test_to_json_mirrors_nonfinite_numbers_in_nested_values():
    plain, mirror = to_json({"a": [1.0, float("-inf")], "b": {"c": np.float32("nan")}, "d": "x"})
    assert plain == {"a": [1.0, None], "b": {"c": None}, "d": "x"}
    assert mirror == {"a": {"1": "-inf"}, "b": {"c": "nan"}}
    restored = restore_nonfinite({**plain, "nonfinite": mirror})
    assert restored["a"][1] == float("-inf") and np.isnan(restored["b"]["c"])


# --- torn and foreign files -----------------------------------------------------------------


def test_a_torn_recording_exports_what_is_readable_and_says_what_was_lost(session, tmp_path):
    # GIVEN a recording whose last bytes were never written (a killed trainer)
    data = session.read_bytes()
    session.write_bytes(data[:-30])
    out = tmp_path / "run.jsonl"
    # WHEN it is exported
    result = export_recording(session, "jsonl", out)
    records = [strict_json(line) for line in out.read_text().splitlines()]
    # THEN every step before the tear is there, and both the result and the file say what was lost
    assert result.steps == STEPS and "torn tail" in result.warnings[0]
    assert records[-1] == {"type": "warning", "message": result.warnings[0]}
    assert [r["type"] for r in records].count("epoch") == 1


def test_a_file_that_is_not_a_recording_is_refused(tmp_path):
    bogus = tmp_path / "notes.octa"
    bogus.write_text("hello, I am a text file\n")
    with pytest.raises(RecordingError, match="text file"):
        export_recording(bogus, "csv", tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()


# --- TensorBoard ----------------------------------------------------------------------------


def reference_crc32c(data: bytes) -> int:
    """Bit-by-bit CRC-32C, independent of the table-driven one under test."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def reference_mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_tfrecords(data: bytes) -> list[bytes]:
    """Split TFRecord framing, checking both masked CRCs of every record."""
    records, at = [], 0
    while at < len(data):
        header = data[at : at + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[at + 8 : at + 12])
        assert length_crc == reference_mask(reference_crc32c(header)), f"bad length CRC at {at}"
        payload = data[at + 12 : at + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[at + 12 + length : at + 16 + length])
        assert payload_crc == reference_mask(reference_crc32c(payload)), f"bad data CRC at {at}"
        records.append(payload)
        at += 16 + length
    assert at == len(data)
    return records


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at


def fields_of(data: bytes) -> list[tuple[int, object]]:
    """(field number, value) of a protobuf message: ints, raw 8/4 bytes, or nested bytes."""
    out, at = [], 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, at = read_varint(data, at)
        elif wire == 1:
            value, at = data[at : at + 8], at + 8
        elif wire == 5:
            value, at = data[at : at + 4], at + 4
        else:
            assert wire == 2, f"unexpected wire type {wire}"
            size, at = read_varint(data, at)
            value, at = data[at : at + size], at + size
        out.append((number, value))
    return out


def decode_event(payload: bytes) -> dict:
    event_fields = fields_of(payload)
    decoded = {"scalars": {}}
    for number, value in event_fields:
        if number == 1:
            decoded["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2:
            decoded["step"] = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 3:
            decoded["file_version"] = value.decode()
        elif number == 5:
            for _, entry in fields_of(value):
                parts = dict(fields_of(entry))
                decoded["scalars"][parts[1].decode()] = np.frombuffer(parts[2], dtype="<f4")[0]
    return decoded


def test_crc32c_matches_the_standard_check_value_and_a_bitwise_reference():
    assert crc32c(b"123456789") == 0xE3069283
    data = bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8))
    assert crc32c(data) == reference_crc32c(data)
    assert mask_crc(crc32c(data)) == reference_mask(reference_crc32c(data))


def test_block_encoder_equals_record_by_record_encoding_across_varint_sizes():
    # GIVEN steps whose varints take 1, 2, 3 and 10 bytes, and NaN/Inf values
    tags = ["loss/total", "grad/" + "deep." * 40 + "weight"]
    steps = np.array([0, 127, 128, 16383, 16384, 5, -1, 2**40], dtype=np.int64)
    rng = np.random.default_rng(2)
    wall = START + rng.random(steps.size)
    values = rng.standard_normal((steps.size, 2)).astype(np.float32)
    values[1, 0], values[2, 1] = np.nan, -np.inf
    # WHEN a block is encoded at once THEN its bytes equal framing each event one by one
    block = ScalarEventEncoder(tags).encode(wall, steps, values)
    one_by_one = b"".join(
        tfrecord(event(float(w), int(s), scalars=list(zip(tags, row.tolist()))))
        for w, s, row in zip(wall, steps, values)
    )
    assert block == one_by_one
    decoded = [decode_event(r) for r in read_tfrecords(block)]
    assert [d["step"] for d in decoded] == steps.tolist()


def test_tensorboard_file_holds_every_step_and_epoch_metric(session, tmp_path):
    # GIVEN a recording WHEN it is exported for TensorBoard
    out = tmp_path / "tb"
    result = export_recording(session, "tensorboard", out)
    (path,) = result.files
    assert path.parent == out and path.name.startswith(f"events.out.tfevents.{int(START)}.")
    # THEN our own reader finds valid framing and CRCs, the version event first, one event per step
    events = [decode_event(r) for r in read_tfrecords(path.read_bytes())]
    assert events[0]["file_version"] == "brain.Event:2" and events[0]["step"] == 0
    steps = [e for e in events[1:] if "loss/total" in e["scalars"]]
    history = read_recording(session).history
    assert [e["step"] for e in steps] == history.steps.step.tolist()
    assert [e["wall_time"] for e in steps] == history.steps.time.tolist()
    got = np.array([[e["scalars"][c] for c in SCHEMA.channels] for e in steps], dtype=np.float32)
    assert same_float32(got, history.steps.values)
    epochs = [e for e in events[1:] if "val/dice" in e["scalars"]]
    assert [e["step"] for e in epochs] == [119, 139]
    assert epochs[0]["scalars"]["val/dice"] == np.float32(0.25) and np.isnan(epochs[1]["scalars"]["val/dice"])
    assert result.skipped == {"dataset report": 1, "event": 2}


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="tensorboard is not installed")
def test_tensorboard_itself_reads_the_exported_scalars(session, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # GIVEN a TensorBoard export WHEN TensorBoard's own loader reads the folder
    export_recording(session, "tensorboard", tmp_path / "tb")
    accumulator = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0})
    accumulator.Reload()
    # THEN every channel and epoch metric is a scalar tag with the recorded steps and values
    assert set(accumulator.Tags()["scalars"]) == {*SCHEMA.channels, "train/loss", "val/dice"}
    grads = accumulator.Scalars("grad/enc1.conv1.weight")
    assert [s.step for s in grads] == [100 + i for i in range(STEPS)]
    assert [np.float32(s.value) for s in grads[:3]] == [step_values(i)[3] for i in range(3)]
    assert grads[17].value == float("inf")
    assert np.isnan(accumulator.Scalars("loss/total")[5].value)
    assert [s.step for s in accumulator.Scalars("val/dice")] == [119, 139]


@pytest.mark.skipif(importlib.util.find_spec("pandas") is None, reason="pandas is not installed")
def test_pandas_reads_the_csv_as_numbers_with_nan_and_inf(session, tmp_path):
    import pandas as pd

    export_recording(session, "csv", tmp_path / "run.csv")
    frame = pd.read_csv(tmp_path / "run.csv")
    assert all(frame[c].dtype == np.float64 for c in SCHEMA.channels)
    assert np.isnan(frame["loss/total"][5]) and frame["grad/enc1.conv1.weight"][17] == np.inf
    assert same_float32(frame[list(SCHEMA.channels)].to_numpy().astype(np.float32),
                        read_recording(session).history.steps.values)


class _FullAtClose:
    """An output file whose last flush finds the disk full (what a small export meets)."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def close(self) -> None:
        self._handle.close()
        raise OSError(28, "No space left on device")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "tensorboard"])
def test_a_disk_that_fills_at_the_last_flush_leaves_no_file_behind(session, tmp_path, monkeypatch, fmt):
    import builtins

    import octa_tui.protocol.export as export_module

    # GIVEN outputs whose final flush fails with a full disk
    monkeypatch.setattr(export_module, "open", lambda *a, **k: _FullAtClose(builtins.open(*a, **k)), raising=False)
    out = tmp_path / "out" / "run"
    out.parent.mkdir()
    # WHEN the export runs THEN it fails with the disk's error, and leaves no file, partial or
    # whole, and no folder it made
    with pytest.raises(OSError, match="No space left"):
        export_recording(session, fmt, out)
    assert list(out.parent.iterdir()) == []
