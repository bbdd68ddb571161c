"""GIVEN a growing history WHEN charts are drawn from its block summaries THEN every spike and
NaN is where the rows put it, whichever summary level serves the window, and summarising as rows
arrive gives the same answer as summarising them all at once."""

from __future__ import annotations

import numpy as np
import pytest

from octa_tui.protocol.decimate import minmax_envelope
from octa_tui.tui.summary import BLOCK_ROWS, LEVEL_FACTOR, BlockEnvelopes, Column


def noisy(rows: int, channels: int = 3, seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (rows, channels)).astype(np.float32)


@pytest.mark.parametrize(
    ("start", "stop", "columns", "edge"),
    [
        (0, 600_000, 60, BLOCK_ROWS * LEVEL_FACTOR),  # long enough for the coarse level
        (37, 90_001, 120, BLOCK_ROWS),  # the fine level
        (1_000, 3_000, 50, None),  # short: reduced row by row
    ],
)
def test_every_spike_and_nan_lands_in_the_column_of_its_row(start, stop, columns, edge):
    # GIVEN rows with a spike up, a spike down and a NaN inside the window
    values = noisy(600_000)
    n = stop - start
    up, down, bad = start + n // 3 + 7, start + 2 * n // 3 + 11, start + n // 2 + 3
    values[up, 0], values[down, 0], values[bad, 0] = 80.0, -90.0, np.nan
    summary = BlockEnvelopes()
    summary.update("run", values)
    # WHEN the window is drawn in ``columns`` columns
    envelope = Column(summary, values, 0, start, stop).envelope(columns)
    # THEN the columns tile the window and their extremes are the window's
    assert envelope.columns == columns and envelope.first[0] == 0 and envelope.count.sum() == n
    if edge is not None:  # the level that served it: inner column edges fall on its blocks
        assert np.all((envelope.first[1:] + start) % edge == 0)
    assert envelope.hi.max() == 80.0 and envelope.lo.min() == -90.0
    # AND each spike and the NaN are in the column covering its row
    def column_of(row: int) -> int:
        return int(np.searchsorted(envelope.first, row - start, side="right")) - 1

    assert envelope.hi[column_of(up)] == 80.0 and envelope.lo[column_of(down)] == -90.0
    assert np.flatnonzero(envelope.nonfinite).tolist() == [column_of(bad)]
    # AND no column is wider than a direct split's column plus two blocks of its level
    exact = minmax_envelope(values[start:stop, 0], columns)
    assert envelope.count.max() <= exact.count.max() + 2 * BLOCK_ROWS * LEVEL_FACTOR


def test_summarising_as_rows_arrive_equals_summarising_at_once():
    values = noisy(300_000)
    values[123_456, 1] = np.inf
    at_once, grown = BlockEnvelopes(), BlockEnvelopes()
    at_once.update("run", values)
    for rows in range(0, 300_001, 7_919):  # arrivals that end mid-block
        grown.update("run", values[:rows])
    grown.update("run", values)
    for channel in range(3):
        a = Column(at_once, values, channel, 5, 299_990).envelope(80)
        b = Column(grown, values, channel, 5, 299_990).envelope(80)
        for field in ("lo", "hi", "nonfinite", "first", "count"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_a_new_matrix_or_a_shorter_one_starts_the_summary_over():
    values = noisy(200_000)
    summary = BlockEnvelopes()
    summary.update("run", values)
    replaced = values[:150_000].copy()
    replaced[100_000, 2] = 55.0
    summary.update("run", replaced)  # fewer rows than before: a replay seeking back
    assert Column(summary, replaced, 2, 0, 150_000).envelope(40).hi.max() == 55.0
    other = noisy(150_000, seed=9)
    other[7_000, 2] = -66.0
    summary.update("other run", other)
    assert Column(summary, other, 2, 0, 150_000).envelope(40).lo.min() == -66.0
