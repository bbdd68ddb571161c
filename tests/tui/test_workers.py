"""GIVEN the monitor's two workers WHEN the diagnosis is slow THEN ingest goes on (the header
follows the newest step while an evaluation runs); WHEN a long history is opened THEN the
ingest worker builds the charts' summaries off the UI thread and every chart is then drawn
from all its rows, spikes included."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from screen_text import screen_text
from seeded import seeded_chunk, seeded_history

from octa_tui.tui.app import make_app
from octa_tui.tui.panel_widgets import UI_SUMMARY_ROWS, ChartPanel
from octa_tui.tui.sources import MemorySource

pytestmark = pytest.mark.timeout(120)


async def _wait(pilot, condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def test_a_slow_diagnosis_never_holds_up_ingest():
    history = seeded_history(100, lr_change_at=None)
    feed = [[seeded_chunk(history.schema, 20, seed=i, start=100 + 20 * i)] for i in range(10)]
    release = threading.Event()
    calls = []

    def factory(live: bool):
        def diagnose(h):
            calls.append(len(h.steps))
            release.wait(60)  # an evaluation that takes as long as the test lets it
            return [], None
        return diagnose

    app = make_app(MemorySource(history, feed=feed), diagnose_factory=factory, verdict_interval_s=0.0)

    async def scenario() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await _wait(pilot, lambda: calls)  # the first evaluation is running (and stuck)
            await _wait(pilot, lambda: len(history.steps) == 300)  # every batch was still taken in
            await _wait(pilot, lambda: "step 299" in screen_text(app))  # and shown
            assert len(calls) == 1 and app.diagnosis is None
            release.set()
            await _wait(pilot, lambda: app.diagnosis is not None and app.diagnosis.rows == 300)

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_a_long_history_is_summarised_off_the_ui_thread_and_then_drawn_whole():
    rows = 3 * UI_SUMMARY_ROWS
    history = seeded_history(600)
    history.add(seeded_chunk(history.schema, rows - 600, seed=1, start=600))
    spike_row = rows // 3
    total = history.schema.index("loss/total")
    history.steps.values[spike_row, total] = 123.0
    ui_thread = threading.get_ident()
    extended_on: set[int] = set()

    app = make_app(MemorySource(history), diagnose_factory=None)

    async def scenario() -> None:
        async with app.run_test(size=(160, 45)) as pilot:
            charts = [w for w in app._widgets.values() if isinstance(w, ChartPanel)]
            for chart in charts:
                original = chart._extend

                def traced(h, n, original=original):
                    if n > UI_SUMMARY_ROWS:
                        extended_on.add(threading.get_ident())
                    return original(h, n)

                chart._extend = traced
            await _wait(pilot, lambda: all(w._draw is not None and not w._waiting and w.behind(history, rows) == 0
                                           for w in charts if w.display))
            await pilot.pause(0.5)
            text = screen_text(app)
            assert "summarising" not in text
            assert "123" in text  # the loss chart's scale reaches the one-step spike
            loss = app._widgets["loss"].summary.column(history, "loss/total", 0, rows)
            assert loss.envelope(100).hi.max() == pytest.approx(123.0)
            assert np.isfinite(loss.envelope(100).lo).all()

    asyncio.run(scenario())
    assert ui_thread not in extended_on, "a long stretch of rows was summarised on the UI thread"
