"""GIVEN a recording whose verdicts change at known steps WHEN ``v`` is pressed in its replay
THEN the replay lands on the first step where the verdicts differ (found by evaluating the
rules at every step, independently), the speed stays what it was, and the next ``v`` goes on
to the next change. Replay keys are on a bar that only a replay has."""

from __future__ import annotations

import asyncio
import time

import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.recording import RecordingWriter
from octa_tui.tui.app import default_diagnose, make_app
from octa_tui.tui.replay_bar import prefix_history, verdict_codes
from octa_tui.tui.sources import MemorySource, ReplaySource

pytestmark = pytest.mark.timeout(120)


def _history():
    history = seeded_history(600)
    over, total = history.schema.index("gradstat/n_over_bound"), history.schema.index("gradstat/total_norm")
    history.steps.values[300:310, over] = 20  # an explosion at steps 300..309
    history.steps.values[300:310, total] = 1e4
    return history


@pytest.fixture
def recording(tmp_path):
    history = _history()
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


def _changes(history, count: int) -> list[int]:
    """The first ``count`` rows where the rules' verdicts differ from the row before, one row at a time."""
    rows, before = [], verdict_codes(default_diagnose, prefix_history(history, 0))
    for row in range(1, len(history.steps) + 1):
        codes = verdict_codes(default_diagnose, prefix_history(history, row))
        if codes != before:
            rows.append(row)
            if len(rows) == count:
                break
        before = codes
    return rows


async def _wait(pilot, condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def test_v_lands_on_the_first_step_of_each_verdict_change_and_keeps_the_speed(recording):
    expected = _changes(_history(), 2)
    assert len(expected) == 2

    async def scenario() -> None:
        source = ReplaySource(str(recording), playing=False)
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait(pilot, lambda: app.opened and app.diagnosis is not None)
            await pilot.press("s")  # 4x
            assert source.speed == 4
            for row in expected:
                await pilot.press("v")
                await _wait(pilot, lambda r=row: source.position == r and not app._verdict_search)
                assert source.speed == 4 and not source.playing
                await _wait(pilot, lambda r=row: app.diagnosis is not None and app.diagnosis.rows == r)
                await pilot.pause(0.3)
                text = screen_text(app)
                assert f"step {row - 1:,}" in text
                assert f"verdicts change at step {row - 1:,}" in text
            assert "⏸ paused 4x" in text and "←/→ back/forward 5%" in text  # the replay bar
            assert "v Next verdict" in text  # on the key bar

    asyncio.run(scenario())


def test_a_monitor_that_does_not_replay_has_no_replay_bar():
    async def scenario() -> None:
        app = make_app(MemorySource(_history()), diagnose_factory=None)
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait(pilot, lambda: app.opened)
            assert not app.query("#replay-bar")
            assert "next verdict" not in screen_text(app)

    asyncio.run(scenario())
