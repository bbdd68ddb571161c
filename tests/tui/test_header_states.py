"""GIVEN a run that finished, was stopped, went silent or is paused WHEN the header is drawn
THEN it says "finished", "stopped (by ...)" or "lost", and shows no speed or ETA while the run
is not moving; frames the follower rejected are counted in it; at 80 columns no part of it is
cut in the middle of a word."""

from __future__ import annotations

import asyncio
import re

import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.tui.app import make_app
from octa_tui.tui.panels import header_facts, render_header, source_end
from octa_tui.tui.sources import MemorySource, SourceStatus

pytestmark = pytest.mark.timeout(60)


def _header(status: SourceStatus, width: int | None = 200, **ending) -> str:
    return render_header(header_facts(seeded_history(300), status, **ending), width).plain


def test_a_finished_run_says_finished_without_speed_or_eta():
    text = _header(SourceStatus("lost", monitors=2), end_state="finished")
    assert "● finished" in text and "lost" not in text
    assert "steps/s" not in text and "ETA" not in text and "monitors" not in text


def test_the_trainers_finished_heartbeat_alone_also_says_finished():
    text = _header(SourceStatus("lost", trainer_state="finished"))
    assert "● finished" in text and "ETA" not in text


def test_a_stopped_run_says_who_stopped_it():
    assert "● stopped (by monitor)" in _header(SourceStatus("lost"), end_state="stopped", ended_by="monitor")
    assert "● stopped " in _header(SourceStatus("lost"), end_state="stopped")


def test_a_trainer_that_went_silent_is_lost():
    text = _header(SourceStatus("lost", monitors=1))
    assert "● lost" in text and "ETA" not in text


def test_while_paused_there_is_no_speed_and_no_eta():
    text = _header(SourceStatus("live", monitors=1, trainer_state="paused"))
    assert "● paused" in text and "steps/s" not in text and "ETA" not in text
    running = _header(SourceStatus("live", monitors=1, trainer_state="running"))
    assert "● live" in running and "steps/s" in running and "ETA" in running


def test_rejected_frames_are_shown_only_when_there_are_some():
    assert "bad frames" not in _header(SourceStatus("live"))
    assert "3 bad frames skipped" in _header(SourceStatus("live"), rejected_frames=3)


def test_the_source_end_is_read_from_a_source_that_has_it():
    class Live:
        end_state, ended_by, rejected_frames = "stopped", "monitor", 2

    assert source_end(Live()) == {"end_state": "stopped", "ended_by": "monitor", "rejected_frames": 2}
    assert source_end(object()) == {"end_state": "", "ended_by": "", "rejected_frames": 0}


@pytest.mark.parametrize("width", [40, 60, 80, 100])
def test_a_narrow_header_leaves_parts_out_whole(width):
    full = _header(SourceStatus("live", monitors=1), width=None)
    narrow = _header(SourceStatus("live", monitors=1), width=width)
    for line, whole in zip(narrow.splitlines(), full.splitlines()):
        assert len(line) <= width
        # every word on the narrow line is a whole word of the full line
        words = set(re.split(r"\s+", whole))
        assert all(word in words for word in line.split()), (line, whole)


def test_the_monitor_header_at_80_columns_shows_the_end_of_a_stopped_run():
    class StoppedSource(MemorySource):
        end_state, ended_by, rejected_frames = "stopped", "monitor", 0

    async def run() -> str:
        app = make_app(StoppedSource(seeded_history(300)), diagnose_factory=None)
        async with app.run_test(size=(80, 24)) as pilot:
            while not app.opened:
                await pilot.pause(0.05)
            await pilot.pause(0.3)
            return screen_text(app)

    screen = asyncio.run(run())
    header = "\n".join(screen.splitlines()[:2])
    assert "● stopped (by monitor)" in header
    assert "gaps fill" not in header or "gaps filled" in header


def test_the_live_status_alone_says_how_the_run_ended():
    status = SourceStatus("lost", monitors=1, end_state="stopped", ended_by="monitor", rejected_frames=4)
    text = _header(status)
    assert "● stopped (by monitor)" in text and "4 bad frames skipped" in text and "ETA" not in text
    assert "● failed" in _header(SourceStatus("lost", end_state="failed"))
