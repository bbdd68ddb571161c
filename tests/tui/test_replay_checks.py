"""GIVEN a recording WHEN the monitor replays it THEN it opens without waiting for the checksums,
checks them once the screen is up, and says in the event log what it found."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.recording import FILE_HEADER, FRAME_HEADER, RecordingWriter, read_recording
from octa_tui.tui.app import make_app
from octa_tui.tui.sources import QUICK_OPEN_BYTES, ReplaySource

pytestmark = pytest.mark.timeout(60)


def write_recording(path, steps: int = 600) -> None:
    history = seeded_history(steps)
    with RecordingWriter(path, history.schema, chunk_rows=100) as writer:
        writer.write(history.dataset)
        s = history.steps
        for row in range(len(s)):
            writer.write_step(int(s.seq[row]), int(s.step[row]), int(s.epoch[row]), float(s.time[row]), s.values[row])


def damage_a_middle_chunk(path) -> int:
    """Flip one bit among the values of the third step chunk; its frame's offset."""
    data = bytearray(path.read_bytes())
    offsets, at = [], FILE_HEADER.size
    while at < len(data):
        offsets.append(at)
        (length, _crc) = FRAME_HEADER.unpack_from(data, at)
        at += FRAME_HEADER.size + length
    # Frames: schema, dataset report, then chunks of 100 steps; the values end each chunk.
    third_chunk, next_frame = offsets[4], offsets[5]
    data[next_frame - 5] ^= 0x10
    path.write_bytes(bytes(data))
    return third_chunk


def test_a_replay_opens_without_the_checksums_and_verify_then_finds_the_damage(tmp_path):
    # GIVEN a recording with a flipped bit in the middle of its steps
    path = tmp_path / "session.octa"
    write_recording(path)
    bad = damage_a_middle_chunk(path)
    # WHEN it is opened for replay
    source = ReplaySource(str(path), start_at_end=True)
    history = source.open()
    # THEN the quick open loads every step and says nothing yet
    assert len(history.steps) == 600 and source.status().warnings == ()
    # AND the check afterwards names the damaged record, also among the status warnings
    problems = source.verify()
    assert len(problems) == 1 and f"offset {bad}" in problems[0] and "fails its CRC check" in problems[0]
    assert source.status().warnings == tuple(problems)
    # AND a second check does not repeat what was already said
    assert source.verify() == []


def test_a_clean_recording_passes_its_check(tmp_path):
    path = tmp_path / "session.octa"
    write_recording(path)
    source = ReplaySource(str(path))
    source.open()
    assert source.verify() == [] and source.status().warnings == ()


def event_log_text(app) -> str:
    """The event log panel as shown, its wrapped lines joined again."""
    region = app.query_one("#events").content_region
    rows = screen_text(app).splitlines()[region.y : region.y + region.height]
    return " ".join("".join(row[region.x : region.x + region.width] for row in rows).split())


def _replay_event_log(path, wanted: str, quick_open_bytes: int) -> str:
    async def scenario() -> str:
        source = ReplaySource(str(path), playing=False, quick_open_bytes=quick_open_bytes)
        source.open()  # as the CLI does, before the screen opens
        app = make_app(source, diagnose_factory=None)
        async with app.run_test(size=(200, 50)) as pilot:
            deadline = time.monotonic() + 120
            while wanted not in event_log_text(app):
                assert time.monotonic() < deadline, f"the event log never said {wanted!r}:\n{screen_text(app)}"
                await pilot.pause(0.1)
            return event_log_text(app)

    return asyncio.run(scenario())


LOADS = pytest.mark.parametrize("quick_open_bytes", [QUICK_OPEN_BYTES, 0], ids=["loaded whole", "loaded behind"])


@LOADS
def test_the_event_log_warns_about_a_damaged_recording(tmp_path, quick_open_bytes):
    # GIVEN a damaged recording WHEN the monitor replays it THEN the event log says so
    path = tmp_path / "session.octa"
    write_recording(path)
    bad = damage_a_middle_chunk(path)
    text = _replay_event_log(path, f"offset {bad}", quick_open_bytes)
    assert "corrupt record" in text and "every record's checksum holds" not in text


@LOADS
def test_the_event_log_says_a_clean_recording_was_checked(tmp_path, quick_open_bytes):
    path = tmp_path / "session.octa"
    write_recording(path)
    text = _replay_event_log(path, "every record's checksum holds", quick_open_bytes)
    assert "corrupt" not in text


def test_a_replay_opened_at_its_end_shows_everything_and_still_plays_from_the_start(tmp_path):
    # GIVEN a replay opened at the end of its recording
    path = tmp_path / "session.octa"
    write_recording(path)
    source = ReplaySource(str(path), start_at_end=True, playing=False)
    at_end = source.open()
    assert source.at_end and len(at_end.steps) == 600 and at_end.dataset is not None
    values = at_end.steps.values.copy()
    # WHEN it is sought back to the middle, then forward to the end again
    source.seek(250)
    source.poll(0)
    middle, middle_rows = source.history, len(source.history.steps)
    source.seek(600)
    source.poll(0)
    # THEN the middle showed 250 steps in a history of its own, and the end all 600 again,
    # with the recording as loaded left untouched
    assert middle is not at_end and middle_rows == 250
    assert source.history is middle and len(middle.steps) == 600
    np.testing.assert_array_equal(source.history.steps.values, values)
    assert len(source.full.steps) == 600
    np.testing.assert_array_equal(source.full.steps.values, values)


def test_a_large_recording_opens_on_its_first_chunk_and_loads_the_rest_behind(tmp_path):
    # GIVEN a recording treated as large (every size is "large" here)
    path = tmp_path / "session.octa"
    write_recording(path)
    expected = read_recording(path).history
    source = ReplaySource(str(path), playing=False, quick_open_bytes=0)
    # WHEN it is opened
    source.open()
    # THEN the load of the rest goes on behind, and once it is done every step is there
    assert source.verify() == [] and source.loaded
    assert len(source.full.steps) == 600 and source.full.dataset is not None
    np.testing.assert_array_equal(source.full.steps.values, expected.steps.values)
    # AND playback reaches every step of it
    source.seek(600)
    source.poll(0)
    assert source.at_end and len(source.history.steps) == 600
    np.testing.assert_array_equal(source.history.steps.values, expected.steps.values)
    assert "(end)" in source.status().detail


def test_a_large_damaged_recording_loses_only_the_damaged_chunk_and_says_so(tmp_path):
    # GIVEN a large recording with a flipped bit in its third chunk
    path = tmp_path / "session.octa"
    write_recording(path)
    bad = damage_a_middle_chunk(path)
    source = ReplaySource(str(path), playing=False, quick_open_bytes=0)
    source.open()
    # WHEN the load behind the first frame finishes
    problems = source.verify()
    # THEN it kept every step but those of the damaged chunk and names the steps lost
    assert len(problems) == 1 and f"offset {bad}" in problems[0] and "corrupt" in problems[0]
    assert "steps seq 200-299 lost (100 steps)" in problems[0]
    assert len(source.full.steps) == 500 and source.status().warnings == tuple(problems)


def test_playback_does_not_stop_at_the_end_of_what_is_loaded_yet(tmp_path):
    # GIVEN a large recording playing while its first chunk (100 steps) is all that is loaded
    path = tmp_path / "session.octa"
    write_recording(path)
    gate = threading.Event()
    source = ReplaySource(str(path), speed=64, quick_open_bytes=0)
    load_rest = source._load_rest
    source._load_rest = lambda: (gate.wait(10), load_rest())  # hold the rest back
    source.open()
    source.seek(10_000)  # far past what is loaded
    source.poll(0)
    assert len(source.history.steps) == 100 and source.playing and not source.at_end
    assert "loading" in source.status().detail
    # WHEN the rest arrives THEN playback carries on to the real end, and stops there
    gate.set()
    source.verify()
    source.seek(10_000)
    source.poll(0)
    assert len(source.history.steps) == 600 and source.at_end and not source.playing
