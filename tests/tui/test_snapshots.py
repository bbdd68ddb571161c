"""GIVEN a seeded run at a fixed terminal size WHEN the main screen is drawn THEN it matches the
committed snapshot (tests/tui/__snapshots__); review a change with --snapshot-update."""

from __future__ import annotations

import time

import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.messages import Reply
from octa_tui.tui.app import make_app
from octa_tui.tui.sources import MemorySource

pytestmark = pytest.mark.timeout(300)
FIXED_TIME = 1_700_000_000.0


def _app():
    source = MemorySource(seeded_history(600), replies=lambda c: Reply(c.request_id, "ok", step=600))
    return make_app(source, clock=lambda: FIXED_TIME)


PLACEHOLDERS = ("waiting for data", "summarising", "appears once the engine has run")


async def _settled(pilot) -> None:
    """Wait until the run is open, diagnosed, every panel has drawn its data (no placeholder is
    left: panels refresh on their own timers, later on a loaded machine) and the screen holds still."""
    app = pilot.app
    deadline = time.monotonic() + 120
    while not (app.opened and app.diagnosis is not None):
        assert time.monotonic() < deadline
        await pilot.pause(0.05)
    previous = None
    while True:
        await pilot.pause(0.3)
        text = screen_text(app)
        if text == previous and not any(p in text for p in PLACEHOLDERS):
            return
        assert time.monotonic() < deadline, f"the screen never settled:\n{text}"
        previous = text


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """The event log prints local times; pin the zone so the snapshot is the same everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("size", [(200, 50), (80, 24), (100, 30)])
def test_main_screen(snap_compare, size):
    assert snap_compare(_app(), terminal_size=size, run_before=_settled)
