"""GIVEN several runs drawn as a group WHEN the chart overlays their mean with a min-max band
THEN the band spans every run's values (a one-step spike of one run reaches the top of the
band's column), the y range covers it, the mean line is drawn over it, and lengths that do
not match are refused."""

from __future__ import annotations

import numpy as np
import pytest

from octa_tui.tui.charts import BRAILLE_BASE, GUTTER, Band, Series, render_chart


def _runs() -> np.ndarray:
    t = np.arange(2000, dtype=np.float64)
    runs = np.stack([1.0 / (1 + t / 200) + 0.02 * k for k in range(3)])
    runs[2, 1234] = 5.0  # one step of one run spikes
    return runs


def test_a_band_keeps_every_runs_extremes_under_the_mean_line():
    runs = _runs()
    mean, low, high = runs.mean(axis=0), runs.min(axis=0), runs.max(axis=0)
    chart = render_chart([Series("mean", mean, "cyan")], 60, 12, bands=[Band(low, high, "cyan")])
    lines = chart.plain.splitlines()
    top_label = lines[0][: GUTTER - 1].strip()
    assert float(top_label) == pytest.approx(5.0, rel=0.01)  # the range reaches the spike
    plot = [line[GUTTER:] for line in lines]
    spike_column = int(1234 / 2000 * (60 - GUTTER))
    assert any(plot[0][c] != " " for c in range(max(spike_column - 1, 0), spike_column + 2))
    styles = {str(span.style) for span in chart.spans}
    assert "dim cyan" in styles and "cyan" in styles  # the band shaded, the mean line drawn
    # without the band the spike is averaged away: the range ends far lower
    plain = render_chart([Series("mean", mean, "cyan")], 60, 12).plain.splitlines()
    assert float(plain[0][: GUTTER - 1].strip()) < 2.5


def test_several_groups_overlay_with_their_own_bands():
    t = np.arange(2000, dtype=np.float64)
    runs = np.stack([1.0 / (1 + t / 200) + 0.3 * k for k in range(3)])  # a group spread wide
    other = runs + 2.0  # another group well above it
    chart = render_chart(
        [Series("a", runs.mean(axis=0), "cyan"), Series("b", other.mean(axis=0), "magenta")], 60, 12,
        bands=[Band(runs.min(axis=0), runs.max(axis=0), "cyan"), Band(other.min(axis=0), other.max(axis=0), "magenta")],
    )
    styles = {str(span.style) for span in chart.spans}
    assert {"dim cyan", "dim magenta", "cyan", "magenta"} <= styles
    assert all(BRAILLE_BASE <= ord(ch) < BRAILLE_BASE + 256 or ch in " ┄┊✕" for line in chart.plain.splitlines()
               for ch in line[GUTTER:])


def test_a_band_of_another_length_is_refused():
    with pytest.raises(ValueError, match="band"):
        render_chart([Series("mean", np.zeros(10), "cyan")], 40, 5, bands=[Band(np.zeros(9), np.zeros(10), "cyan")])
