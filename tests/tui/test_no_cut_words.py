"""GIVEN the monitor at 80x24, 100x30 and 200x50 WHEN its panels are drawn THEN no word or
number is cut in half: a part that does not fit is left out whole (or wrapped, or a name is
abbreviated with …), and a zoomed loss chart fits its curves rather than the far-away
constant line."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import replace

import numpy as np
import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.run import RunHistory
from octa_tui.tui import panels, view
from octa_tui.tui.app import make_app
from octa_tui.tui.charts import BRAILLE_BASE
from octa_tui.tui.format import format_number
from octa_tui.tui.sources import MemorySource

pytestmark = pytest.mark.timeout(60)

# Fragments seen cut on screen before: each may only appear as part of its whole word.
CUT = [
    r"explosio(?!ns)", r"\(epo(?!ch \d+\))", r"gaps fill(?!ed)", r"probabiliti(?!es)", r"unba(?!lanced)",
    r"\bste(?!ps?\b)", r"\b(lo|Di|D|BCE|0\.)…",
]


def _probability_run(steps: int = 600) -> RunHistory:
    """The seeded run, with a loss that expects probabilities and outputs outside [0, 1]."""
    history = seeded_history(steps)
    history.schema = replace(history.schema, loss_expects_probabilities=True)
    history.steps.values[:, history.schema.index("out/frac_outside_01")] = 0.25
    return history


async def _screen(history, size, keys=()) -> str:
    app = make_app(MemorySource(history))
    async with app.run_test(size=size) as pilot:
        deadline = time.monotonic() + 120
        while not (app.opened and app.diagnosis is not None):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        for key in keys:
            await pilot.press(key)
        await pilot.pause(0.4)
        return screen_text(app)


@pytest.mark.parametrize(("size", "keys"), [((80, 24), ()), ((100, 30), ("7",)), ((200, 50), ())],
                         ids=["80x24", "100x30 with the matrix", "200x50"])
def test_no_word_is_cut_on_screen(size, keys):
    text = asyncio.run(_screen(_probability_run(), size, keys))
    for pattern in CUT:
        found = re.search(pattern, text)
        assert found is None, f"cut text {found.group(0)!r} in:\n{text}"
    if keys:
        assert "Diagnosis matrix" in text and "this run:" in text  # the matrix is there, drawn as lines


def test_legend_entries_show_whole_values_or_none_at_all():
    history = seeded_history(600)
    summary = view.HistorySummary()
    for width in (20, 30, 36, 50, 80):
        out = panels.render_loss(history, summary, 600, 0, width, 10, 0.717, [])
        legend = out.plain.splitlines()[0]
        assert len(legend) <= width
        latest = {name: format_number(float(history.steps.values[599, history.schema.index(f"loss/{name}")]))
                  for name in history.schema.loss}
        for name, value in re.findall(r"■ (\w+) (\S+)", legend):
            assert value == latest[name], (width, legend)
        assert "total" in legend  # the total is kept longest


def test_the_outputs_warning_wraps_instead_of_being_cut():
    history = _probability_run()
    out = panels.render_outputs(history, view.HistorySummary(), 600, 0, 40, 12).plain
    assert "probabilities" in out and all(len(line) <= 40 for line in out.splitlines())


def test_the_gradient_summary_leaves_parts_out_whole():
    history = seeded_history(600)
    for width in (24, 30, 38, 50, 70):
        last = panels.render_gradients(history, view.HistorySummary(), 600, 0, width, 8).plain.splitlines()[-1]
        assert len(last) <= width and "shallow/deep" in last
        assert re.search(r"explosions? ?$|explosio(?!ns \d+ steps?)", last.rstrip()) is None, last


def _rows_with_curve(chart_text: str) -> int:
    return sum(1 for line in chart_text.splitlines()
               if any(BRAILLE_BASE < ord(c) <= BRAILLE_BASE + 0xFF for c in line))


def test_a_zoomed_loss_chart_fits_its_curves_not_the_constant_line():
    # GIVEN a run whose loss settled far below the constant predictor's line
    history = seeded_history(600)
    baseline = view.constant_baseline(history)
    assert baseline is not None
    recent = history.steps.values[500:600, history.schema.index("loss/total")]
    assert baseline > recent.max() * 1.5
    summary = view.HistorySummary()
    # WHEN the chart shows all steps THEN the constant line is in range and drawn
    whole = panels.render_loss(history, summary, 600, 0, 60, 14, baseline, [])
    assert "┄┄┄" in whole.plain
    # WHEN it shows the last 100 steps THEN the curves fill the chart and the legend says where the line is
    zoomed = panels.render_loss(history, summary, 600, 500, 60, 14, baseline, [])
    assert _rows_with_curve(zoomed.plain) >= 8, zoomed.plain
    assert "(above)" in zoomed.plain.splitlines()[0]


def test_the_matrix_is_drawn_as_lines_when_narrow():
    history = seeded_history(600)
    from octa_tui.diagnosis import match_matrix

    match = match_matrix(history)
    narrow = panels.render_matrix(match, "segmentation", 30)
    lines = narrow.plain.splitlines()
    assert all(len(line) <= 30 for line in lines)
    assert any(row.cause.split()[0] in narrow.plain for row in match.rows)
    assert not re.search(r"\d…", narrow.plain)
    assert np.isfinite(match.distance)
