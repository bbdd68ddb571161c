"""The shared measurements: the plateau test, gradient grading, explosion summaries."""

from __future__ import annotations

import numpy as np
import pytest

from octa_tui.diagnosis.signals import block_means, explosion_summary, gradient_state, plateau_test


def flat(values) -> bool:
    return plateau_test(np.array(values, dtype=float), 1e-6, 1e-4, 2.0).flat


def test_plateau_needs_low_variance_and_no_real_improvement() -> None:
    assert flat([0.5] * 5)
    # variance too high (a loss still falling fast)
    assert not flat([0.70, 0.65, 0.61, 0.58, 0.56])
    # variance tiny but a clean, steady fall of 0.0008: a slow improvement, not a plateau
    assert not flat([0.1000, 0.0998, 0.0996, 0.0994, 0.0992])
    # a fall of 0.00008 is below the 1e-4 improvement threshold
    assert flat([0.10000, 0.09998, 0.09996, 0.09994, 0.09992])


def test_plateau_refuses_too_few_or_nonfinite_values() -> None:
    assert not flat([0.5, 0.5])
    assert not flat([0.5, 0.5, float("nan"), 0.5, 0.5])


def test_block_means_cover_the_newest_rows_and_skip_nan() -> None:
    values = np.arange(12, dtype=float)
    values[-1] = np.nan
    assert block_means(values, 3, 3).tolist() == [4.0, 7.0, 9.5]
    assert block_means(values, 5, 3) is None


@pytest.mark.parametrize(
    ("norms", "strength", "direction"),
    [
        ([0.02, 0.015, 0.01], "none", "shallow/deep"),
        ([0.05, 0.01, 0.003], "slight", "shallow/deep"),
        ([0.2, 0.01, 0.001], "moderate", "shallow/deep"),
        ([1e-3, 0.1, 2.0], "strong", "deep/shallow"),
        ([5e-5, 0.01, 0.01], "strong", "deep/shallow"),  # an end below 1e-4: the input side starves
        ([0.01, 0.01, 0.0], "strong", "shallow/deep"),  # the output side gets no gradient at all
        ([0.01, 5e-5, 0.01], "slight", "shallow/deep"),  # only an inner (normalisation-like) layer
    ],
)
def test_gradient_grades(norms, strength, direction) -> None:
    state = gradient_state(("a", "b", "c"), np.array([norms] * 4), 1e-4, 10, 100, 1000)
    assert state is not None and state.strength == strength and state.direction == direction


def test_gradient_medians_ignore_a_single_spike_and_nan() -> None:
    rows = np.array([[0.02, 0.01]] * 9 + [[5.0, np.nan]])
    state = gradient_state(("a", "b"), rows, 1e-4, 10, 100, 1000)
    assert state.norms == pytest.approx((0.02, 0.01))
    assert state.strength == "none"


def test_a_layer_without_data_is_left_out_of_the_ratio() -> None:
    rows = np.array([[0.02, np.nan, 0.01]] * 5)
    state = gradient_state(("a", "b", "c"), rows, 1e-4, 10, 100, 1000)
    assert np.isnan(state.norms[1]) and state.ratio == pytest.approx(2.0) and state.below_floor == ()


def test_gradient_state_without_data() -> None:
    assert gradient_state(("a",), np.full((3, 1), np.nan), 1e-4, 10, 100, 1000) is None


def test_explosion_summary_counts_steps_and_names_the_newest_worst() -> None:
    steps = np.arange(100, 110)
    n_over = np.array([0, 16, 0, 3, 16, 0, 0, 0, 0, np.nan])
    peak = np.array([1, 32.3, 1, 12, 30, 1, 1, 1, 1, 1.0])
    s = explosion_summary(steps, n_over, peak, 10.0)
    assert (s.steps_over, s.worst_step, s.count_at_worst, s.max_norm) == (3, 104, 16, 32.3)
    assert explosion_summary(steps, None, np.ones(10), 10.0).steps_over == 0
    assert explosion_summary(steps, None, None, 10.0) is None
