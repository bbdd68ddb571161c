"""Recordings: what a trainer writes is what replay reads, a crash costs at most a second,
a damaged file says what it lost, and a broken disk never stops training."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from octa_tui.protocol import codec
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.messages import (
    DatasetReport,
    EpochSummary,
    Event,
    Heartbeat,
    ModelSummary,
    Preview,
    Schema,
    Step,
    StepChunk,
)
from octa_tui.protocol.recording import (
    FILE_HEADER,
    FORMAT_MAJOR,
    FORMAT_MINOR,
    FRAME_HEADER,
    FRAME_HEADER_V1,
    RecordingError,
    RecordingWriter,
    frame,
    framed_parts,
    iter_recording,
    read_recording,
    verify_recording,
)

RUN = "0123456789abcdef"
GOLDEN_DIR = Path(__file__).with_name("golden")


def load_golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_schema() -> Schema:
    return Schema(
        run_id=RUN,
        task="segmentation",
        model=ModelSummary("UNet", 120_000),
        loss=("total", "bce", "dice"),
        grad=("enc1", "enc2", "dec2", "dec1"),
        gradstat=("total_norm",),
        out=("raw_min", "raw_max"),
        opt=("lr",),
        started_at=1000.0,
        config={"batch_size": 4},
    )


def step_values(i: int, width: int) -> np.ndarray:
    values = (np.arange(width, dtype=np.float32) + 1) * np.float32(i % 97) / 7
    if i % 501 == 0:
        values[2] = np.nan
    if i % 777 == 0:
        values[1] = -np.inf
    return values


def records() -> list:
    """One record of every kind a recording holds besides steps."""
    return [
        DatasetReport(
            RUN,
            "synthetic",
            20,
            2,
            (0.0, 1.0),
            0.1,
            (0.1, 0.1),
            9.0,
            image_size=(64, 64),
            target_mean=0.1,
            target_var=0.09,
        ),
        EpochSummary(
            RUN, epoch=0, step=999, time=1010.0, train={"loss": 0.7}, val={"dice": 0.4, "loss": 0.8}
        ),
        Event(
            RUN,
            step=1500,
            time=1015.0,
            kind="command_applied",
            message="lr x5",
            data={"op": "set_lr", "new": 5e-3},
        ),
        Preview(
            RUN, 2000, 1, np.zeros((8, 8), np.uint8), np.ones((8, 8), np.uint8), np.full((8, 8), 7, np.uint8)
        ),
        Heartbeat(RUN, "trainer", 1020.0, step=2500, monitors=1, last_seq=2500),
        Event(RUN, step=2999, time=1030.0, kind="run_finished", message="done"),
    ]


def write_session(
    path: Path, steps: int = 3000, chunk_rows: int = 256, every: int = 500, flush_s: float = 3600.0
) -> list[tuple[int, object]]:
    """Steps with a record after every ``every`` steps; returns (steps before it, record).

    With the default ``flush_s`` only ``chunk_rows`` and the records cut chunks.
    """
    schema = make_schema()
    extra = records()
    placed = []
    with RecordingWriter(path, schema, flush_s=flush_s, chunk_rows=chunk_rows) as writer:
        for i in range(steps):
            writer.write_step(i, i, i // 1000, 1000.0 + i / 100, step_values(i, schema.width))
            if (i + 1) % every == 0 and extra:
                record = extra.pop(0)
                writer.write(record)
                placed.append((i + 1, record))
            if i == steps // 2 and flush_s < 1:
                time.sleep(3 * flush_s)  # let the flush timer cut a chunk in the middle of a buffer
    assert writer.error is None
    return placed


def frame_offsets(path: Path) -> list[int]:
    """Offset of every frame header in a recording (written here for the tests)."""
    data = path.read_bytes()
    offsets, at = [], FILE_HEADER.size
    while at < len(data):
        offsets.append(at)
        (length, _crc) = FRAME_HEADER.unpack_from(data, at)
        at += FRAME_HEADER.size + length
    assert at == len(data)
    return offsets


# --- round trip -------------------------------------------------------------------------------


def test_every_step_and_record_comes_back_in_the_order_it_was_written(tmp_path):
    # GIVEN a session of 3000 steps (with NaN and Inf) and one record of every kind between them
    path = tmp_path / "run.octa"
    placed = write_session(path, flush_s=0.05)
    schema = make_schema()
    # WHEN it is read back whole
    recording = read_recording(path)
    history = recording.history
    # THEN every step is there, bit for bit
    assert recording.warnings == [] and recording.truncated_bytes == 0
    assert history.schema == schema
    assert len(history.steps) == 3000
    expected = np.stack([step_values(i, schema.width) for i in range(3000)])
    np.testing.assert_array_equal(history.steps.values, expected)
    assert history.steps.seq.tolist() == list(range(3000))
    assert history.steps.epoch.tolist() == [i // 1000 for i in range(3000)]
    np.testing.assert_array_equal(history.steps.time, 1000.0 + np.arange(3000) / 100)
    # AND each record is filed where it belongs
    assert history.dataset == placed[0][1]
    assert history.epochs == [placed[1][1]]
    assert history.events == [placed[2][1], placed[5][1]]
    assert history.previews == [placed[3][1]]
    # AND iterating yields the schema first and each record right after the steps before it
    messages = list(iter_recording(path))
    assert messages[0] == schema
    seen_steps, order = 0, []
    for msg in messages[1:]:
        if isinstance(msg, StepChunk):
            assert msg.seq.tolist() == list(range(seen_steps, seen_steps + len(msg)))
            seen_steps += len(msg)
        else:
            order.append((seen_steps, msg))
    assert order == placed
    assert seen_steps == 3000
    # AND the flush timer and the records cut chunks, so the steps span many of them
    assert sum(isinstance(m, StepChunk) for m in messages) > 3000 // 256
    # AND the history keeps growing past what the file held
    history.steps.append(3000, 3000, 3, 1030.0, step_values(3000, schema.width))
    assert len(history.steps) == 3001 and history.steps.values[-1, 0] == step_values(3000, schema.width)[0]


def test_the_writers_unjoined_frame_is_byte_for_byte_a_framed_codec_pack():
    chunk = StepChunk(
        RUN,
        np.arange(5, dtype=np.uint64),
        np.arange(5, dtype=np.int64),
        np.zeros(5, np.int32),
        np.linspace(0, 1, 5),
        np.ones((5, 11), np.float32),
    )
    for msg in (chunk, records()[2]):
        assert b"".join(framed_parts(msg)) == frame(codec.pack(msg))


def test_writer_counts_what_it_wrote_and_close_is_idempotent(tmp_path):
    writer = RecordingWriter(tmp_path / "run.octa", make_schema(), chunk_rows=64)
    for i in range(200):
        writer.write_step(i, i, 0, float(i), np.zeros(writer.schema.width, np.float32))
    writer.close()
    writer.close()
    writer.write_step(200, 200, 0, 200.0, np.zeros(writer.schema.width, np.float32))
    writer.write(Event(RUN, 200, 200.0, "warning", "late"))
    assert (writer.steps_written, writer.dropped_steps, writer.dropped_records) == (200, 1, 1)
    assert len(read_recording(writer.path).history.steps) == 200


def test_a_step_of_the_wrong_width_is_refused_with_the_widths(tmp_path):
    with RecordingWriter(tmp_path / "run.octa", make_schema()) as writer:
        with pytest.raises(ProtocolError, match="11 channels"):
            writer.write_step(0, 0, 0, 0.0, np.zeros(5, np.float32))


def test_a_record_never_overtakes_steps_even_when_every_buffer_is_busy(tmp_path):
    # GIVEN a writer allowed only a few buffers, fed faster than it writes
    path = tmp_path / "run.octa"
    schema = make_schema()
    with RecordingWriter(path, schema, chunk_rows=16, max_pending_rows=32) as writer:
        for i in range(2000):
            writer.write_step(i, i, 0, float(i), np.full(schema.width, i, np.float32))
            if i % 100 == 99:
                writer.write(Event(RUN, i, float(i), "warning", f"after {i}"))
    # THEN whatever steps were kept, each event follows exactly the steps up to its own
    last_seq = -1
    for msg in iter_recording(path):
        if isinstance(msg, StepChunk) and len(msg):
            assert msg.seq[0] > last_seq
            last_seq = int(msg.seq[-1])
        elif isinstance(msg, Event):
            assert last_seq <= msg.step
    assert writer.steps_written + writer.dropped_steps == 2000


# --- crash safety: flushed every second -------------------------------------------------------


def test_steps_reach_the_file_within_about_a_second_without_close(tmp_path):
    # GIVEN a writer with the default flush interval that is never closed during the check
    path = tmp_path / "live.octa"
    writer = RecordingWriter(path, make_schema())
    try:
        for i in range(100):
            writer.write_step(i, i, 0, float(i), np.ones(writer.schema.width, np.float32))
        start = time.monotonic()
        # WHEN another process polls the file
        seen = 0
        while time.monotonic() - start < 3.0:
            seen = len(read_recording(path).history.steps)
            if seen == 100:
                break
            time.sleep(0.05)
        waited = time.monotonic() - start
        # THEN all 100 steps are readable within the flush interval (plus scheduling slack)
        assert seen == 100
        assert waited < 2.0
    finally:
        writer.close()


# --- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize("last", ["chunk", "event"])
def test_a_recording_cut_at_every_byte_of_its_last_record_replays_everything_before(tmp_path, last):
    # GIVEN a small recording whose last record is a chunk of 5 steps (or an event)
    source = tmp_path / "whole.octa"
    schema = make_schema()
    with RecordingWriter(source, schema, chunk_rows=16, flush_s=3600) as writer:
        for i in range(40):
            writer.write_step(i, i, 0, float(i), step_values(i, schema.width))
        writer.write(Event(RUN, 40, 40.0, "warning", "before the last record"))
        if last == "chunk":
            for i in range(40, 45):
                writer.write_step(i, i, 0, float(i), step_values(i, schema.width))
        else:
            writer.write(Event(RUN, 45, 45.0, "run_finished", "the last record"))
    data = source.read_bytes()
    last_start = frame_offsets(source)[-1]
    cut = tmp_path / "cut.octa"
    # WHEN it is cut at every byte offset inside its last record
    for size in range(last_start, len(data)):
        cut.write_bytes(data[:size])
        recording = read_recording(cut)
        # THEN everything before the last record is replayed
        assert len(recording.history.steps) == 40, size
        assert [e.message for e in recording.history.events] == ["before the last record"], size
        # AND the loss is reported: none at a frame boundary, else the bytes (and steps, once known)
        lost = size - last_start
        assert recording.truncated_bytes == lost
        if lost == 0:
            assert recording.warnings == []
            continue
        assert len(recording.warnings) == 1, size
        warning = recording.warnings[0]
        assert "torn tail" in warning and f"{lost} bytes" in warning and str(cut) in warning
        if last == "chunk" and lost > FRAME_HEADER.size + 56:  # past the chunk's header and body, its size is known
            assert "5 steps lost" in warning, (size, warning)


def test_a_bad_crc_in_the_last_record_drops_only_that_record(tmp_path):
    path = tmp_path / "run.octa"
    write_session(path, steps=1000, every=10_000)
    data = bytearray(path.read_bytes())
    last_start = frame_offsets(path)[-1]
    data[-3] ^= 0x40  # a flipped bit in the last chunk's values
    path.write_bytes(bytes(data))
    recording = read_recording(path)
    assert recording.truncated_bytes == len(data) - last_start
    assert len(recording.warnings) == 1
    assert "fails its CRC check" in recording.warnings[0] and "torn tail" in recording.warnings[0]
    assert "steps lost" in recording.warnings[0]
    assert 0 < len(recording.history.steps) < 1000
    np.testing.assert_array_equal(
        recording.history.steps.values,
        np.stack([step_values(i, 11) for i in range(len(recording.history.steps))]),
    )


def test_corruption_in_the_middle_costs_only_that_record_and_names_the_offset_and_the_steps(tmp_path):
    # GIVEN a recording with a damaged byte in its third chunk (steps 200..299)
    path = tmp_path / "run.octa"
    write_session(path, steps=1000, chunk_rows=100, every=10_000)
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    bad = offsets[3]
    data[bad + 200] ^= 0x01
    path.write_bytes(bytes(data))
    # WHEN it is read
    recording = read_recording(path)
    # THEN every step but that chunk's is kept, and the warning names the offset and the steps lost
    kept = np.concatenate([np.arange(200), np.arange(300, 1000)]).astype(np.uint64)
    np.testing.assert_array_equal(recording.history.steps.seq, kept)
    assert recording.truncated_bytes == 0
    assert recording.report.lost_ranges == [(200, 299)] and recording.report.lost_steps == 100
    assert len(recording.warnings) == 1
    warning = recording.warnings[0]
    assert f"offset {bad}" in warning and "corrupt" in warning and "fails its CRC check" in warning
    assert "steps seq 200-299 lost (100 steps)" in warning
    # AND streaming it, or only checking it, keeps the same steps and says the same
    warnings: list[str] = []
    assert sum(len(m) for m in iter_recording(path, warnings) if isinstance(m, StepChunk)) == 900
    assert warnings == recording.warnings
    assert verify_recording(path) == recording.warnings


def test_skipping_verification_still_finds_a_torn_tail_but_not_a_flipped_value(tmp_path):
    path = tmp_path / "run.octa"
    write_session(path, steps=1000, chunk_rows=100, every=10_000)
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[4] - 5] ^= 0x01  # among the values of the third chunk (steps 200..299)
    path.write_bytes(bytes(data[:-10]))
    quick = read_recording(path, verify=False)
    assert len(quick.history.steps) == 900 and "torn tail" in quick.warnings[0]
    checked = read_recording(path)
    assert len(checked.history.steps) == 800
    assert checked.report.lost_ranges == [(200, 299), (900, 999)]


def test_skipping_verification_still_checks_a_chunk_whose_sequence_numbers_do_not_run_on(tmp_path):
    # GIVEN a flipped bit in a chunk's seq column, which would make good steps look out of order
    path = tmp_path / "run.octa"
    write_session(path, steps=1000, chunk_rows=100, every=10_000)
    offsets = frame_offsets(path)
    data = bytearray(path.read_bytes())
    data[offsets[3] + 200] ^= 0x01
    path.write_bytes(bytes(data))
    # WHEN it is read without verification THEN that chunk is checked anyway and skipped
    quick = read_recording(path, verify=False)
    assert len(quick.history.steps) == 900 and quick.report.lost_ranges == [(200, 299)]
    assert quick.report.out_of_order_steps == 0


@pytest.mark.parametrize("garbage", [b"\x00" * 3, b"hello, this is not a frame\n" * 4, os.urandom(777)])
def test_garbage_appended_after_the_last_record_is_dropped_with_a_warning(tmp_path, garbage):
    path = tmp_path / "run.octa"
    write_session(path, steps=600, every=10_000)
    clean = read_recording(path)
    with open(path, "ab") as f:
        f.write(garbage)
    recording = read_recording(path)
    assert len(recording.history.steps) == 600
    np.testing.assert_array_equal(recording.history.steps.values, clean.history.steps.values)
    assert recording.truncated_bytes == len(garbage)
    assert len(recording.warnings) == 1 and f"{len(garbage)} bytes" in recording.warnings[0]


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b"", "empty"),
        (b"step,loss\n1,0.5\n2,0.4\n", "text file"),
        (bytes(range(200, 256)) * 10, "c8 c9 ca cb"),
        (b"\x89OCT\r\n", "ends inside its 16-byte header"),
    ],
)
def test_a_file_that_is_not_a_recording_is_refused_naming_the_file_and_what_it_holds(
    tmp_path, content, found
):
    path = tmp_path / "notes.octa"
    path.write_bytes(content)
    for read in (read_recording, lambda p: list(iter_recording(p))):
        with pytest.raises(RecordingError, match=found) as info:
            read(path)
        assert str(path) in str(info.value)
        assert isinstance(info.value, ProtocolError)


def test_a_missing_file_or_a_directory_is_a_recording_error(tmp_path):
    with pytest.raises(RecordingError, match="cannot open recording .*missing.octa"):
        read_recording(tmp_path / "missing.octa")
    with pytest.raises(RecordingError, match="is a directory"):
        read_recording(tmp_path)


def test_a_file_cut_inside_its_schema_has_no_run_to_replay(tmp_path):
    path = tmp_path / "run.octa"
    write_session(path, steps=10, every=10_000)
    path.write_bytes(path.read_bytes()[: FILE_HEADER.size + 30])
    with pytest.raises(RecordingError, match="no readable schema"):
        read_recording(path)


def test_a_newer_major_format_is_refused_naming_both_versions_and_a_newer_minor_is_read(tmp_path):
    path = tmp_path / "run.octa"
    write_session(path, steps=10, every=10_000)
    data = bytearray(path.read_bytes())
    struct.pack_into("<HH", data, 8, FORMAT_MAJOR + 1, 3)
    path.write_bytes(bytes(data))
    with pytest.raises(
        RecordingError, match=rf"format {FORMAT_MAJOR + 1}\.3.*newer.*\({FORMAT_MAJOR}\.{FORMAT_MINOR}\)"
    ):
        read_recording(path)
    struct.pack_into("<HH", data, 8, FORMAT_MAJOR, FORMAT_MINOR + 1)
    path.write_bytes(bytes(data))
    assert len(read_recording(path).history.steps) == 10


def test_a_recording_whose_first_record_is_not_a_schema_is_refused(tmp_path):
    path = tmp_path / "run.octa"
    payload = codec.pack(Event(RUN, 0, 0.0, "warning", "no schema before me"))
    import zlib

    head = FILE_HEADER.pack(b"\x89OCT\r\n\x1a\n", FORMAT_MAJOR, FORMAT_MINOR, 1, 0)
    path.write_bytes(head + frame(payload))
    with pytest.raises(RecordingError, match="instead of the run's schema"):
        read_recording(path)
    # (a format 1 file too)
    head = FILE_HEADER.pack(b"\x89OCT\r\n\x1a\n", 1, 0, 1, 0)
    path.write_bytes(head + FRAME_HEADER_V1.pack(len(payload), zlib.crc32(payload)) + payload)
    with pytest.raises(RecordingError, match="instead of the run's schema"):
        read_recording(path)


# --- a broken disk never stops training -----------------------------------------------------


def test_an_unwritable_path_sets_error_and_training_goes_on(tmp_path):
    # GIVEN a path whose parent is a regular file (no one, not even root, can create it)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    path = blocker / "run.octa"
    # WHEN a writer is made and fed
    writer = RecordingWriter(path, make_schema())
    for i in range(50):
        writer.write_step(i, i, 0, float(i), np.zeros(writer.schema.width, np.float32))
    writer.write(Event(RUN, 50, 50.0, "warning", "still training"))
    writer.close()
    # THEN nothing was raised, the error names the file and the OS reason, and drops are counted
    assert writer.error is not None
    assert str(path) in writer.error and "Not a directory" in writer.error
    assert (writer.dropped_steps, writer.dropped_records) == (50, 1)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_sets_error_and_training_goes_on():
    writer = RecordingWriter("/dev/full", make_schema())
    for i in range(10):
        writer.write_step(i, i, 0, float(i), np.zeros(writer.schema.width, np.float32))
    writer.close()
    assert (
        writer.error is not None and "/dev/full" in writer.error and "No space left on device" in writer.error
    )
    assert writer.dropped_steps == 10


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE")
def test_a_disk_that_fills_up_mid_run_keeps_what_was_written_and_counts_the_rest(tmp_path):
    # GIVEN a trainer process whose files may not grow past 20 kB
    path = tmp_path / "run.octa"
    script = textwrap.dedent(
        f"""
        import resource, signal, sys, time
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_recording import make_schema
        from octa_tui.protocol.recording import RecordingWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        writer = RecordingWriter({str(path)!r}, make_schema(), chunk_rows=50)
        for i in range(3000):  # the training loop: it must never see an exception
            writer.write_step(i, i, 0, float(i), np.full(11, i, np.float32))
        writer.close()
        print(writer.steps_written, writer.dropped_steps)
        print(writer.error)
        """
    )
    # WHEN it records 3000 steps
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    # THEN the loop finished, the error names the file and the OS reason, and every step is accounted for
    assert done.returncode == 0, done.stderr
    counts, error = done.stdout.splitlines()[:2]
    written, dropped = map(int, counts.split())
    assert written + dropped == 3000 and written > 0 and dropped > 0
    assert str(path) in error and "File too large" in error
    # AND the file replays the steps written before the disk filled up
    recording = read_recording(path)
    assert len(recording.history.steps) == written
    assert recording.history.steps.seq.tolist() == list(range(written))


# --- the golden file: the bytes are the contract ----------------------------------------------


def test_writing_the_golden_session_gives_exactly_the_committed_bytes(tmp_path):
    golden = load_golden_module()
    path = tmp_path / "session.octa"
    writer = golden.write_golden(path)
    assert writer.error is None
    expected = golden.GOLDEN_FILE.read_bytes()
    assert len(expected) < 8192, "keep the golden file small"
    assert path.read_bytes() == expected, (
        "the recording format changed; if on purpose, bump the format version and regenerate with "
        "tests/protocol/golden/make_golden.py"
    )


@pytest.mark.parametrize("version", [2, 1])
def test_reading_the_committed_golden_file_gives_the_golden_session(version):
    golden = load_golden_module()
    source = golden.GOLDEN_FILE if version == 2 else golden.V1_GOLDEN_FILE
    messages = list(iter_recording(source))
    # The file's own layout: the header, then the schema first.
    head = source.read_bytes()[: FILE_HEADER.size]
    assert FILE_HEADER.unpack(head) == (b"\x89OCT\r\n\x1a\n", version, 0, 1, 0)
    assert messages[0] == golden.SCHEMA
    # Steps regrouped into chunks of 8 (cut early by each record), records in their place.
    session = golden.golden_session()
    flattened: list = []
    for msg in messages[1:]:
        if isinstance(msg, StepChunk):
            assert len(msg) <= golden.CHUNK_ROWS
            flattened.extend(
                Step(
                    msg.run_id,
                    int(msg.seq[i]),
                    int(msg.step[i]),
                    int(msg.epoch[i]),
                    float(msg.time[i]),
                    msg.values[i],
                )
                for i in range(len(msg))
            )
        else:
            flattened.append(msg)
    assert flattened == session
    assert [len(m) for m in messages if isinstance(m, StepChunk)] == [8, 2, 8, 2, 3]
    recording = read_recording(source)
    assert recording.warnings == [] and len(recording.history.steps) == 23 and recording.report.clean


# --- format 1 files (no sync markers) still read ---------------------------------------------


def as_format_1(path: Path) -> None:
    """Rewrite a recording in format 1's framing (8-byte record headers), as older versions wrote."""
    import zlib

    data = path.read_bytes()
    out = [FILE_HEADER.pack(b"\x89OCT\r\n\x1a\n", 1, 0, 1, 0)]
    for at in frame_offsets(path):
        length, _ = FRAME_HEADER.unpack_from(data, at)
        payload = data[at + FRAME_HEADER.size : at + FRAME_HEADER.size + length]
        out.append(FRAME_HEADER_V1.pack(length, zlib.crc32(payload)) + payload)
    path.write_bytes(b"".join(out))


def test_a_format_1_recording_reads_whole_and_stops_at_damage_in_the_middle_saying_why(tmp_path):
    # GIVEN a recording in format 1
    path = tmp_path / "old.octa"
    placed = write_session(path, steps=1000, chunk_rows=100, every=400)
    as_format_1(path)
    # THEN it reads whole
    recording = read_recording(path)
    assert len(recording.history.steps) == 1000 and recording.warnings == []
    assert len(recording.history.events) + len(recording.history.epochs) + (recording.history.dataset is not None) == len(
        placed
    )
    # WHEN a byte in its third chunk is damaged THEN reading stops there and says why
    data = bytearray(path.read_bytes())
    offsets, at = [], FILE_HEADER.size
    while at < len(data):
        offsets.append(at)
        at += FRAME_HEADER_V1.size + FRAME_HEADER_V1.unpack_from(data, at)[0]
    chunk_offsets = [o for o in offsets if FRAME_HEADER_V1.unpack_from(data, o)[0] > 4000]
    bad = chunk_offsets[2]
    data[bad + 300] ^= 0x01
    path.write_bytes(bytes(data))
    recording = read_recording(path)
    assert len(recording.history.steps) == 200
    assert len(recording.warnings) == 1 and f"offset {bad}" in recording.warnings[0]
    assert "format 1" in recording.warnings[0] and "stopped reading there" in recording.warnings[0]
    warnings: list[str] = []
    assert sum(len(m) for m in iter_recording(path, warnings) if isinstance(m, StepChunk)) == 200
    assert warnings == recording.warnings == verify_recording(path)


def test_a_recording_is_created_private_to_its_user(tmp_path):
    path = tmp_path / "run.octa"
    write_session(path, steps=10, every=10_000)
    assert os.stat(path).st_mode & 0o777 == 0o600
