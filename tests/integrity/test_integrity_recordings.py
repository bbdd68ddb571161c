"""GIVEN a real recording damaged the ways disks and copies damage files WHEN it is replayed or
exported THEN only what is damaged is lost, the report says exactly which steps, and replay
and every export format keep the same steps and say the same thing.

Before: one flipped byte or a zeroed 4 KB block in the middle lost every later step, a damaged
length field was reported as a torn tail with a wrong count, and a duplicated or swapped record
exported duplicate steps out of order while the replay said "every record's checksum holds".
"""

from __future__ import annotations

import csv
import json
import os
import stat
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octa_tui.protocol.export import export_recording
from octa_tui.protocol.messages import EpochSummary, Event, ModelSummary, Schema, StepChunk
from octa_tui.protocol.recording import (
    FILE_HEADER,
    FRAME_HEADER,
    RecordingError,
    RecordingWriter,
    iter_recording,
    read_recording,
    verify_recording,
)
from octa_tui.tui.sources import ReplaySource

pytestmark = pytest.mark.timeout(300)

RUN = "feedfacecafebeef"
STEPS = 6000
CHUNK = 200  # steps per chunk record: chunk k holds steps 200k .. 200k+199

SCHEMA = Schema(
    run_id=RUN,
    task="segmentation",
    model=ModelSummary("UNet", 1234),
    loss=("total", "bce", "dice"),
    grad=("enc1", "enc2", "dec1"),
    opt=("lr",),
    started_at=1_750_000_000.0,
)


def values(i: int) -> np.ndarray:
    """Every value of step i is i, so a step in the wrong place shows."""
    return np.full(SCHEMA.width, float(i), dtype=np.float32)


def write(path, steps: int = STEPS) -> None:
    """A recording: chunks of CHUNK steps, an event after every 1000 steps, an epoch summary each 2000."""
    with RecordingWriter(path, SCHEMA, flush_s=3600.0, chunk_rows=CHUNK) as writer:
        for i in range(steps):
            writer.write_step(i, i, i // 2000, SCHEMA.started_at + i / 100, values(i))
            if (i + 1) % 1000 == 0:
                writer.write(Event(RUN, i, SCHEMA.started_at + i / 100, "warning", f"after step {i}"))
            if (i + 1) % 2000 == 0:
                writer.write(EpochSummary(RUN, i // 2000, i, SCHEMA.started_at + i / 100, {"loss": 0.5}, {}))
    assert writer.error is None


def records(path) -> list[tuple[int, int]]:
    """(offset, total length) of every record of an undamaged recording."""
    data = path.read_bytes()
    out, at = [], FILE_HEADER.size
    while at < len(data):
        length, _ = FRAME_HEADER.unpack_from(data, at)
        out.append((at, FRAME_HEADER.size + length))
        at += FRAME_HEADER.size + length
    return out


def chunk_records(path) -> list[tuple[int, int]]:
    """The records that hold steps (the long ones), in order: chunk k holds steps 200k..200k+199."""
    return [(at, size) for at, size in records(path) if size > 1000]


def seqs_of(path) -> np.ndarray:
    return read_recording(path).history.steps.seq.astype(np.int64)


def expected_without(*lost: range) -> np.ndarray:
    keep = np.ones(STEPS, dtype=bool)
    for r in lost:
        keep[r.start : r.stop] = False
    return np.flatnonzero(keep)


def exported_seqs(path, tmp_path) -> dict[str, np.ndarray]:
    """The seqs each export format holds, and the warnings each said."""
    out = {}
    result = export_recording(path, "csv", tmp_path / "out.csv", overwrite=True)
    with open(tmp_path / "out.csv", newline="") as f:
        out["csv"] = np.array([int(row["seq"]) for row in csv.DictReader(f)], dtype=np.int64)
    csv_warnings = result.warnings
    result = export_recording(path, "jsonl", tmp_path / "out.jsonl", overwrite=True)
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    out["jsonl"] = np.array([r["seq"] for r in lines if r["type"] == "step"], dtype=np.int64)
    assert [r["message"] for r in lines if r["type"] == "warning"] == result.warnings == csv_warnings
    tb = tmp_path / "tb"
    result = export_recording(path, "tensorboard", tb, overwrite=True)
    assert result.warnings == csv_warnings
    out["tensorboard"] = tensorboard_steps(tb)
    out["warnings"] = csv_warnings
    return out


def tensorboard_steps(folder) -> np.ndarray:
    """The steps of the first channel's scalars, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return np.array([e.step for e in accumulator.Scalars(SCHEMA.channels[0])], dtype=np.int64)


def assert_everyone_agrees(path, tmp_path, expected: np.ndarray) -> list[str]:
    """Replay, streaming, checking and every export keep ``expected`` and say the same."""
    recording = read_recording(path)
    np.testing.assert_array_equal(recording.history.steps.seq.astype(np.int64), expected)
    np.testing.assert_array_equal(recording.history.steps.values[:, 0], expected.astype(np.float32))
    streamed: list[str] = []
    chunks = [m for m in iter_recording(path, streamed) if isinstance(m, StepChunk)]
    np.testing.assert_array_equal(np.concatenate([c.seq for c in chunks]).astype(np.int64), expected)
    assert streamed == recording.warnings == verify_recording(path)
    exported = exported_seqs(path, tmp_path)
    for fmt in ("csv", "jsonl", "tensorboard"):
        np.testing.assert_array_equal(exported[fmt], expected, err_msg=fmt)
    assert exported["warnings"] == recording.warnings
    # The replay source ends with the same steps and words, however it loaded: opened at the end
    # (quick load, then checked), or from the start with the rest loaded and checked behind.
    for at_end in (True, False):
        source = ReplaySource(str(path), start_at_end=at_end, playing=False, quick_open_bytes=0)
        source.open()
        problems = source.verify()
        source.seek(STEPS)
        source.poll(0)
        np.testing.assert_array_equal(source.full.steps.seq.astype(np.int64), expected)
        np.testing.assert_array_equal(source.history.steps.seq.astype(np.int64), expected)
        assert bool(problems) == bool(recording.warnings), "an empty check must mean a clean file"
        for warning in recording.warnings:
            assert any(warning in said for said in source.status().warnings), warning
        source.close()
    return recording.warnings


def damage(path, at: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


@pytest.fixture
def recording(tmp_path):
    path = tmp_path / "run.octa"
    write(path)
    return path


def test_a_clean_recording_is_private_and_everyone_reads_every_step(recording, tmp_path):
    assert stat.S_IMODE(os.stat(recording).st_mode) == 0o600
    assert assert_everyone_agrees(recording, tmp_path, np.arange(STEPS)) == []


def test_a_recording_that_existed_with_a_wider_mode_is_made_private(tmp_path):
    path = tmp_path / "run.octa"
    path.write_bytes(b"old")
    os.chmod(path, 0o644)
    write(path, steps=10)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_one_flipped_byte_in_the_middle_loses_only_its_chunk(recording, tmp_path):
    # GIVEN one flipped byte among the values of chunk 14 (steps 2800..2999)
    at, size = chunk_records(recording)[14]
    damage(recording, at + size - 9, bytes([recording.read_bytes()[at + size - 9] ^ 0x20]))
    # THEN the other 5,800 steps are kept and the report names steps 2800-2999
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(2800, 3000)))
    assert len(warnings) == 1 and f"offset {at}" in warnings[0]
    assert "steps seq 2800-2999 lost (200 steps)" in warnings[0]
    report = read_recording(recording).report
    assert report.lost_ranges == [(2800, 2999)] and report.truncated_bytes == 0


def test_a_zeroed_4k_block_in_the_middle_loses_only_the_records_it_touches(recording, tmp_path):
    # GIVEN 4 KB zeroed across the end of chunk 9 and the start of chunk 10 (a header and all)
    chunks = chunk_records(recording)
    at, size = chunks[10]
    start = at - 2048
    damage(recording, start, bytes(4096))
    # THEN steps 1800..2199 are lost and said to be, and every later step is kept
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(1800, 2200)))
    assert len(warnings) == 1 and "steps seq 1800-2199 lost (400 steps)" in warnings[0]


def test_a_damaged_length_field_is_skipped_not_taken_for_a_torn_tail(recording, tmp_path):
    # GIVEN the length field of chunk 20's header made huge
    at, _ = chunk_records(recording)[20]
    damage(recording, at, struct.pack("<I", 0x7FFF_FFF0))
    # THEN it is reported in the middle with the right steps, not as a torn tail
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(4000, 4200)))
    assert len(warnings) == 1 and "torn tail" not in warnings[0]
    assert f"offset {at}" in warnings[0] and "steps seq 4000-4199 lost (200 steps)" in warnings[0]
    assert read_recording(recording).truncated_bytes == 0


def test_a_length_field_off_by_a_little_is_found_too(recording, tmp_path):
    at, size = chunk_records(recording)[3]
    damage(recording, at, struct.pack("<I", size - FRAME_HEADER.size - 4))
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(600, 800)))
    assert len(warnings) == 1 and "steps seq 600-799 lost" in warnings[0]


def test_a_duplicated_record_is_kept_once_and_said(recording, tmp_path):
    # GIVEN chunk 5 (steps 1000..1199) and an event written twice, the copies right after them
    data = recording.read_bytes()
    at, size = chunk_records(recording)[5]
    event = next((a, s) for a, s in records(recording) if s < 1000 and a > at)
    copy = data[: at + size] + data[at : at + size] + data[at + size : event[0] + event[1]] + \
        data[event[0] : event[0] + event[1]] + data[event[0] + event[1] :]
    recording.write_bytes(copy)
    # THEN every step is kept exactly once, and the duplicates are said
    warnings = assert_everyone_agrees(recording, tmp_path, np.arange(STEPS))
    assert any("dropped 200 duplicate steps (seq 1000-1199)" in w for w in warnings)
    assert any("dropped 1 record that the file holds twice" in w for w in warnings)
    report = read_recording(recording).report
    assert report.duplicate_steps == 200 and report.lost_steps == 0 and report.duplicate_records == 1


def test_swapped_records_drop_the_late_steps_by_sequence_number_and_say_so(recording, tmp_path):
    # GIVEN chunks 7 and 8 (steps 1400..1599 and 1600..1799) in each other's place
    data = recording.read_bytes()
    (a, sa), (b, sb) = chunk_records(recording)[7:9]
    assert a + sa == b
    recording.write_bytes(data[:a] + data[b : b + sb] + data[a : a + sa] + data[b + sb :])
    # THEN the steps that come after later ones are dropped, never exported out of order
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(1400, 1600)))
    assert any("dropped 200 steps out of order (seq 1400-1599)" in w for w in warnings)


def test_a_torn_tail_says_which_steps_were_lost(recording, tmp_path):
    # GIVEN a file cut inside its last chunk (steps 5800..5999), after its seq column
    at, size = chunk_records(recording)[-1]
    data = recording.read_bytes()
    recording.write_bytes(data[: at + size // 2])
    # THEN everything before it is kept, and the warning names the torn steps
    warnings = assert_everyone_agrees(recording, tmp_path, np.arange(5800))
    assert len(warnings) == 1 and "torn tail" in warnings[0] and "200 steps lost (seq 5800-5999)" in warnings[0]


def test_damage_in_the_middle_and_a_torn_tail_are_both_reported(recording, tmp_path):
    chunks = chunk_records(recording)
    at, size = chunks[2]
    damage(recording, at + size - 9, b"\xff")
    last, last_size = chunks[-1]
    recording.write_bytes(recording.read_bytes()[: last + 100])
    warnings = assert_everyone_agrees(recording, tmp_path, expected_without(range(400, 600), range(5800, 6000)))
    assert len(warnings) == 2
    assert read_recording(recording).report.lost_ranges == [(400, 599), (5800, 5999)]


def test_a_damaged_schema_leaves_no_run_to_replay(recording):
    damage(recording, FILE_HEADER.size + FRAME_HEADER.size + 3, b"\x00\x00")
    with pytest.raises(RecordingError, match="no readable schema"):
        read_recording(recording)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                             HealthCheck.data_too_large])
@given(data=st.data())
def test_any_damage_never_raises_beyond_a_recording_error_and_never_invents_steps(tmp_path_factory, data):
    # GIVEN a small recording and any few damaged places (flips, zeroed runs, cuts, random bytes)
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / "run.octa"
    with RecordingWriter(path, SCHEMA, flush_s=3600.0, chunk_rows=16) as writer:
        for i in range(160):
            writer.write_step(i, i, 0, float(i), values(i))
            if i % 50 == 49:
                writer.write(Event(RUN, i, float(i), "warning", f"at {i}"))
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["flip", "zero", "random", "cut"]))
        n = data.draw(st.integers(1, 600))
        if how == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "zero":
            raw[at : at + n] = bytes(len(raw[at : at + n]))
        elif how == "random":
            raw[at : at + n] = data.draw(st.binary(min_size=len(raw[at : at + n]), max_size=len(raw[at : at + n])))
        else:
            del raw[at:]
            if not raw:
                break
    path.write_bytes(bytes(raw))
    # WHEN it is read THEN it is refused as a whole or read, never anything else
    try:
        recording = read_recording(path)
    except RecordingError:
        return
    seq = recording.history.steps.seq.astype(np.int64)
    # AND the steps kept are real ones, each once, in order, with their own values
    assert np.all(np.diff(seq) > 0)
    assert np.all((seq >= 0) & (seq < 160))
    np.testing.assert_array_equal(recording.history.steps.values[:, 0], seq.astype(np.float32))
    # AND the report accounts for every step missing, unless it says it cannot count
    report = recording.report
    missing = 160 - len(seq)
    if report.lost_unknown == 0 and missing:
        assert report.lost_steps + report.out_of_order_steps >= missing or report.truncated_bytes
    warnings: list[str] = []
    streamed = [m for m in iter_recording(path, warnings) if isinstance(m, StepChunk)]
    got = np.concatenate([c.seq for c in streamed]).astype(np.int64) if streamed else np.zeros(0, np.int64)
    np.testing.assert_array_equal(got, seq)
    assert warnings == recording.warnings


def test_bytes_appended_after_the_last_record_are_one_torn_tail_even_with_a_header_among_them(recording, tmp_path):
    # GIVEN a copy of the last record's header and some of its bytes appended (a write cut short)
    data = recording.read_bytes()
    at, size = records(recording)[-1]
    tail = b"\x00" * 5 + data[at : at + 40]
    recording.write_bytes(data + tail)
    # THEN all of it is the torn tail, and no step is lost
    read = read_recording(recording)
    assert read.truncated_bytes == len(tail) and read.report.skipped_bytes == 0
    assert len(read.warnings) == 1 and "torn tail" in read.warnings[0]
    assert len(read.history.steps) == STEPS


def test_intact_records_of_another_run_are_left_out_by_everyone_alike(recording, tmp_path):
    # GIVEN an intact event of another run and a different schema spliced in after chunk 4
    from octa_tui.protocol import codec
    from octa_tui.protocol.recording import frame

    data = recording.read_bytes()
    at, size = chunk_records(recording)[4]
    other = Event("0123456789abcdef", 1000, 1.0, "warning", "not this run")
    schema = Schema(run_id=RUN, task="heatmap", model=ModelSummary("CRAFT", 1), loss=("total",), grad=("a",))
    spliced = frame(codec.pack(other)) + frame(codec.pack(schema))
    recording.write_bytes(data[: at + size] + spliced + data[at + size :])
    # THEN no step is lost, both are said once, and replay and every export agree
    warnings = assert_everyone_agrees(recording, tmp_path, np.arange(STEPS))
    assert len(warnings) == 1 and "belongs to run '0123456789abcdef'" in warnings[0]
    assert "a second, different schema" in warnings[0] and "no steps lost" in warnings[0]
    assert all(e.run_id == RUN for e in read_recording(recording).history.events)
