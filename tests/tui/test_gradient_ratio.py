"""GIVEN a run's gradient norms WHEN the gradient panel is drawn THEN its ratio has the
diagnosis's name and direction and the diagnosis's number for the same steps (first weight
layer over last, medians of the newest steps), printed by the diagnosis's formatter."""

from __future__ import annotations

import numpy as np
from seeded import seeded_history

from octa_tui.diagnosis.gradients import RATIO_NAME, format_ratio, gradient_health
from octa_tui.tui import panels, view


def test_the_panel_ratio_is_the_diagnosis_ratio():
    history = seeded_history(600)
    columns = [history.schema.index(f"grad/{name}") for name in history.schema.grad]
    recent = history.steps.values[600 - view.RATIO_ROWS : 600][:, columns].astype(np.float64)
    health = gradient_health(history.schema.grad, recent, None)
    assert health is not None
    text = panels.render_gradients(history, view.HistorySummary(), 600, 0, 80, 10).plain
    assert f"{RATIO_NAME} {format_ratio(health.ratio)}" in text
    assert view.layer_ratio(history, 0, 600) == health.ratio or abs(view.layer_ratio(history, 0, 600) / health.ratio - 1) < 1e-6


def test_a_layer_without_gradients_is_left_out_of_the_ratio():
    history = seeded_history(600)
    last = history.schema.index(f"grad/{history.schema.grad[-1]}")
    history.steps.values[:, last] = np.nan  # the head never receives a gradient
    before_last = history.schema.index(f"grad/{history.schema.grad[-2]}")
    first = history.schema.index(f"grad/{history.schema.grad[0]}")
    expected = float(np.median(history.steps.values[550:600, first])) / float(
        np.median(history.steps.values[550:600, before_last]))
    assert abs(view.layer_ratio(history, 0, 600) / expected - 1) < 1e-5
