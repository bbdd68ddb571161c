"""GIVEN metric series and images WHEN the pure renderers draw them THEN what a person reads
on the terminal is right: no spike lost, NaN marked, scales, baselines, markers, pixels."""

from __future__ import annotations

import numpy as np
import pytest
from rich.color import Color

from octa_tui.tui.charts import (
    GUTTER,
    NONFINITE_MARK,
    REFERENCE_MARK,
    SETTING_MARK,
    SPARK_LEVELS,
    Series,
    render_chart,
    render_sparkline,
)
from octa_tui.tui.format import format_count, format_duration, format_eta, format_number, format_rate
from octa_tui.tui.halfblock import UPPER_HALF, fit_size, render_halfblock, render_side_by_side


def _plot(text) -> list[str]:
    return [line[GUTTER:] for line in text.plain.split("\n")]


def _column_has_dots(lines: list[str], row: int, column: int) -> bool:
    char = lines[row][column]
    return 0x2800 < ord(char) <= 0x28FF


def test_a_single_step_spike_among_a_million_reaches_the_top_row():
    values = np.full(1_000_000, 0.5, dtype=np.float32)
    values[654_321] = 3.0
    lines = _plot(render_chart([Series("total", values, "white")], 80, 10))
    assert any(_column_has_dots(lines, 0, c) for c in range(80 - GUTTER)), "the spike vanished"
    assert render_chart([Series("total", values, "white")], 80, 10).plain.split("\n")[0].strip().startswith("3.00")


def test_nan_steps_are_marked_in_their_column_and_finite_ones_still_drawn():
    values = np.linspace(1.0, 0.5, 1000)
    values[900:] = np.nan
    lines = _plot(render_chart([Series("total", values, "white")], 60, 8))
    marked = [c for c, ch in enumerate(lines[0]) if ch == NONFINITE_MARK]
    assert marked and min(marked) >= int(0.85 * (60 - GUTTER))
    assert any(_column_has_dots(lines, r, 0) for r in range(8))


def test_log_scale_spreads_decades_evenly():
    values = np.array([1e-6, 1e-4, 1e-2, 1.0])
    text = render_chart([Series("grad", values, "white")], 20, 4, log_scale=True)
    labels = [line[:GUTTER].strip() for line in text.plain.split("\n")]
    assert labels[0] == "1.00" and labels[-1] == "1.00e-06"


def test_reference_line_is_drawn_where_there_is_no_data():
    values = np.linspace(1.0, 0.9, 100)
    lines = _plot(render_chart([Series("total", values, "white")], 40, 10, reference=0.2))
    assert lines[-1].count(REFERENCE_MARK) > 20


def test_a_setting_change_is_marked_at_its_step():
    values = np.ones(1000)
    width = 9 + GUTTER
    lines = _plot(render_chart([Series("lr", values, "white")], width, 6, markers=[500]))
    columns = {c for line in lines for c, ch in enumerate(line) if ch == SETTING_MARK}
    assert columns == {4}, f"marker at {columns}, expected the middle column"


def test_series_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="lengths differ"):
        render_chart([Series("a", np.ones(3), "red"), Series("b", np.ones(4), "red")], 40, 5)


def test_sparkline_keeps_the_maximum_of_each_column_and_marks_inf():
    values = np.zeros(10_000)
    values[5_000] = 1.0
    values[9_999] = np.inf
    line = render_sparkline(values, 10).plain
    assert line[5] == SPARK_LEVELS[-1]
    assert line[9] == NONFINITE_MARK
    assert line[0] == SPARK_LEVELS[0]


def test_shared_scale_puts_a_small_layer_low():
    small = render_sparkline(np.full(5, 1e-6), 5, log_scale=True, y_range=(1e-6, 1.0)).plain
    big = render_sparkline(np.full(5, 1.0), 5, log_scale=True, y_range=(1e-6, 1.0)).plain
    assert set(small) == {SPARK_LEVELS[0]} and set(big) == {SPARK_LEVELS[-1]}


def test_halfblock_cells_carry_the_upper_pixel_as_fg_and_the_lower_as_bg():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 0] = (255, 0, 0)
    image[1, 0] = (0, 0, 255)
    line = render_halfblock(image, cols=2, rows=1)[0]
    assert line.plain == UPPER_HALF * 2
    style = line.spans[0].style
    assert style.color == Color.from_rgb(255, 0, 0) and style.bgcolor == Color.from_rgb(0, 0, 255)


def test_halfblock_refuses_float_images_with_a_fix():
    with pytest.raises(ValueError, match="uint8"):
        render_halfblock(np.zeros((4, 4)), 2, 2)


def test_side_by_side_preview_labels_three_images_and_keeps_aspect():
    image = np.full((64, 64), 128, dtype=np.uint8)
    text = render_side_by_side([("image", image), ("target", image), ("prediction", image)], 66, 11)
    lines = text.plain.split("\n")
    assert "image" in lines[0] and "target" in lines[0] and "prediction" in lines[0]
    assert fit_size(64, 64, 20, 10) == (20, 10)
    assert len(lines) == 1 + 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.60312, "0.603"), (1.5e-4, "1.50e-04"), (float("nan"), "NaN"), (float("inf"), "Inf"), (0.0, "0"), (123.4, "123")],
)
def test_numbers_are_short(value, expected):
    assert format_number(value) == expected


def test_rates_counts_durations_and_eta():
    assert format_count(1_940_000) == "1.9M" and format_count(121_200) == "121k"
    assert format_rate(1234.0) == "1.2k steps/s" and format_rate(None) == "- steps/s"
    assert format_duration(192) == "3m12s" and format_duration(7500) == "2h05m"
    assert format_eta(100, 1100, 10.0) == "ETA 1m40s"
    assert format_eta(100, None, 10.0) == "ETA -"


def test_block_summaries_keep_every_spike_and_nan_of_a_long_window():
    from octa_tui.tui.summary import BlockEnvelopes, Column

    rng = np.random.default_rng(3)
    values = rng.normal(0, 1, (300_000, 2)).astype(np.float32)
    values[123_457, 0] = 50.0
    values[200_001, 0] = -40.0
    values[250_000, 1] = np.nan
    summary = BlockEnvelopes()
    summary.update(1, values)
    start, stop = 1_000, 299_500
    column = Column(summary, values, 0, start, stop)
    envelope = column.envelope(100)
    assert envelope.hi.max() == 50.0 and envelope.lo.min() == -40.0
    assert envelope.first[0] == 0 and envelope.count.sum() == stop - start
    spike_col = int(np.searchsorted(envelope.first, 123_457 - start, side="right")) - 1
    assert envelope.hi[spike_col] == 50.0
    other = Column(summary, values, 1, start, stop).envelope(100)
    nan_col = int(np.searchsorted(other.first, 250_000 - start, side="right")) - 1
    assert other.nonfinite[nan_col] and other.nonfinite.sum() == 1


def test_the_dataset_panel_says_heatmap_targets_have_no_foreground_instead_of_showing_nan():
    import math

    from rich.console import Console

    from octa_tui.protocol.messages import DatasetReport
    from octa_tui.tui.panels import render_dataset

    def shown(report: DatasetReport) -> str:
        console = Console(width=100, record=True)
        console.print(render_dataset(report))
        return console.export_text()

    heatmaps = DatasetReport("r", "synthetic heatmaps x256", 256, 0, (), math.nan, (), math.nan, image_size=(32, 32))
    text = shown(heatmaps)
    assert "nan" not in text.lower() and "heatmaps), not masks" in text and "32x32" in text
    masks = DatasetReport("r", "data/", 10, 2, (0.0, 1.0), 0.01, (0.01,) * 10, 99.0)
    text = shown(masks)
    assert "binary ✓" in text and "1.00%" in text and "(< 2%: imbalance)" in text and "99.0 suggested" in text


def test_the_loss_panel_shows_val_dice_for_segmentation_and_val_loss_for_heatmaps():
    from dataclasses import replace

    from seeded import RUN_ID, seeded_chunk, seeded_schema

    from octa_tui.protocol.messages import EpochSummary
    from octa_tui.protocol.run import RunHistory
    from octa_tui.tui.panels import render_loss
    from octa_tui.tui.view import HistorySummary

    def last_line(task: str, val: dict | None, epochs: int = 3) -> str:
        schema = replace(seeded_schema(), task=task)
        history = RunHistory(schema)
        history.add(seeded_chunk(schema, 200))
        for epoch in range(epochs):
            history.add(EpochSummary(RUN_ID, epoch, 50 * epoch + 49, schema.started_at, {"loss": 0.6},
                                     dict(val or {}, loss=0.0488 - 0.001 * epoch) if val is not None else {}))
        text = render_loss(history, HistorySummary(), 200, 0, 80, 12, None, [])
        return text.plain.splitlines()[-1]

    # a segmentation run reports Dice per epoch; a heatmap run has none: its validation loss is shown
    assert last_line("segmentation", {"dice": 0.87}).startswith("val Dice 0.87 0.87 0.87  (epoch 2)")
    assert last_line("heatmap", {}).startswith("val loss 0.0488 0.0478 0.0468  (epoch 2)")
    # before the first epoch, and epochs that reported no validation
    assert "no epoch finished" in last_line("heatmap", {}, epochs=0)
    assert "not reported" in last_line("heatmap", None)


def test_the_matrix_panel_tells_a_heatmap_run_it_has_no_numbers_for_it_rather_than_none_yet():
    from rich.console import Console
    from seeded import seeded_schema  # noqa: I001 - the tests' own helper

    from octa_tui.diagnosis import match_matrix
    from octa_tui.protocol.run import RunHistory
    from octa_tui.tui.panels import render_matrix

    match = match_matrix(RunHistory(seeded_schema()))  # nothing observed: the rows alone

    def shown(task: str) -> str:
        console = Console(width=120, record=True)
        console.print(render_matrix(match, task))
        return console.export_text()

    assert "no numbers from this run yet" in shown("segmentation")
    text = shown("heatmap")
    assert "a heatmap run has no Dice/BCE numbers" in text and "yet" not in text
