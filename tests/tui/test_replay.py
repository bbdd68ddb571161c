"""GIVEN a recorded session WHEN it is replayed THEN playback shows it step by step with its
events, seeks both ways, jumps to the next event, and reaches the end in the monitor."""

from __future__ import annotations

import asyncio
import time

import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.recording import RecordingWriter
from octa_tui.tui.app import make_app
from octa_tui.tui.sources import ReplaySource

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def recording(tmp_path):
    history = seeded_history(600, lr_change_at=400)
    path = tmp_path / "session.octa"
    writer = RecordingWriter(path, history.schema)
    steps = history.steps
    records = sorted([*history.epochs, *history.events], key=lambda m: m.step)
    writer.write(history.dataset)
    i = 0
    for row in range(len(steps)):
        while i < len(records) and records[i].step <= int(steps.step[row]):
            writer.write(records[i])
            i += 1
        writer.write_step(int(steps.seq[row]), int(steps.step[row]), int(steps.epoch[row]), float(steps.time[row]),
                          steps.values[row])
    writer.close()
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_playback_follows_the_recorded_pace_times_the_speed(recording):
    clock = FakeClock()
    source = ReplaySource(str(recording), speed=4, clock=clock)
    history = source.open()
    assert len(history.steps) == 0 and history.dataset is not None
    source.poll(0)
    clock.now = 1.0  # one second at 4x a 20 steps/s recording: about 80 steps
    source.poll(0)
    assert 78 <= source.position <= 82
    assert source.status().state == "replay" and "4x" in source.status().detail


def test_seeking_back_rebuilds_and_events_appear_when_passed(recording):
    source = ReplaySource(str(recording), playing=False)
    source.open()
    source.seek(500)
    source.poll(0)
    assert len(source.history.steps) == 500
    assert any(e.kind == "command_applied" for e in source.history.events)
    before = source.history
    source.seek(100)
    source.poll(0)
    assert source.history is not before and len(source.history.steps) == 100
    assert not any(e.kind == "command_applied" for e in source.history.events)
    assert source.next_event_row() == 401
    source.seek_by(10.0)
    source.poll(0)
    assert source.at_end


def test_the_monitor_replays_a_recording_to_its_end(recording):
    async def scenario() -> None:
        source = ReplaySource(str(recording), speed=64)
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 120
            while not source.at_end:
                assert time.monotonic() < deadline, "replay did not reach the end"
                await pilot.pause(0.1)
            await pilot.pause(0.4)
            text = screen_text(app)
            assert "replay" in text and "(end)" in text and "step 599" in text
            assert app.check_action("lr_up", ()) is None, "trainer keys are greyed in replay"
            assert app.check_action("play_pause", ()) is True
            await pilot.press("home")
            await pilot.pause(0.3)
            assert source.position < 600

    asyncio.run(scenario())
