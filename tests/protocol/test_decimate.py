"""Min/max envelopes: every spike survives decimation, NaN/Inf are flagged, never drawn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octa_tui.protocol.columns import StepColumns
from octa_tui.protocol.decimate import column_bounds, minmax_envelope


def brute_force(
    values: np.ndarray, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int], list[int]]:
    """The envelope computed one value at a time, from the documented bucket rule."""
    table = values[:, None] if values.ndim == 1 else values
    n, k = table.shape
    m = min(columns, n)
    counts = [n // m + (1 if i < n % m else 0) for i in range(m)] if m else []
    firsts = [sum(counts[:i]) for i in range(m)]
    lo = np.full((m, k), np.nan)
    hi = np.full((m, k), np.nan)
    flag = np.zeros((m, k), dtype=bool)
    for i in range(m):
        for c in range(k):
            column = [float(table[r, c]) for r in range(firsts[i], firsts[i] + counts[i])]
            finite = [x for x in column if math.isfinite(x)]
            flag[i, c] = len(finite) < len(column)
            if finite:
                lo[i, c], hi[i, c] = min(finite), max(finite)
    if values.ndim == 1:
        return lo[:, 0], hi[:, 0], flag[:, 0], firsts, counts
    return lo, hi, flag, firsts, counts


def assert_matches_brute_force(values: np.ndarray, columns: int) -> None:
    env = minmax_envelope(values, columns)
    lo, hi, flag, firsts, counts = brute_force(values, columns)
    np.testing.assert_array_equal(env.lo, lo.astype(env.lo.dtype))
    np.testing.assert_array_equal(env.hi, hi.astype(env.hi.dtype))
    np.testing.assert_array_equal(env.nonfinite, flag)
    assert env.first.tolist() == firsts
    assert env.count.tolist() == counts


specials = st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0])


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(0, 120),
    k=st.sampled_from([1, 2, 3, 8, 11]),  # 8+ channels take the halving path
    columns=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    injected=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10), specials), max_size=12),
    one_d=st.booleans(),
)
def test_envelope_matches_a_value_by_value_reference(n, k, columns, seed, injected, one_d):
    # GIVEN random data with spikes, NaN and Inf injected at random places
    values = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    for row, col, value in injected:
        if n:
            values[row % n, col % k] = value
    # WHEN it is decimated THEN every column's min/max/flag equal the brute-force answer
    assert_matches_brute_force(values[:, 0] if one_d else values, columns)


def test_a_single_step_spike_survives_decimating_a_long_run():
    # GIVEN 200k quiet steps with one spike and one dip in the middle of a bucket
    values = np.full(200_000, 0.5, dtype=np.float32)
    values[123_457] = 1e6
    values[77_777] = -3.0
    # WHEN decimated to 200 columns
    env = minmax_envelope(values, 200)
    # THEN the spike and the dip are in the envelope, in the columns that hold their rows
    spike_col = int(np.searchsorted(env.first, 123_457, side="right") - 1)
    dip_col = int(np.searchsorted(env.first, 77_777, side="right") - 1)
    assert env.hi[spike_col] == 1e6 and env.hi.max() == 1e6
    assert env.lo[dip_col] == -3.0 and env.lo.min() == -3.0
    assert np.count_nonzero(env.hi != 0.5) == 1


def test_fewer_rows_than_columns_gives_one_row_per_column():
    values = np.array([3.0, np.nan, -1.0])
    env = minmax_envelope(values, 200)
    assert env.columns == 3
    assert env.count.tolist() == [1, 1, 1]
    np.testing.assert_array_equal(env.lo, [3.0, np.nan, -1.0])
    assert env.nonfinite.tolist() == [False, True, False]


def test_no_rows_gives_no_columns_in_the_input_shape():
    env_1d = minmax_envelope(np.zeros(0, dtype=np.float32), 200)
    env_2d = minmax_envelope(np.zeros((0, 5), dtype=np.float32), 200)
    assert env_1d.lo.shape == (0,) and env_1d.columns == 0
    assert env_2d.lo.shape == (0, 5) and env_2d.nonfinite.shape == (0, 5)


def test_a_bucket_of_only_nan_and_inf_has_no_min_or_max_but_is_flagged():
    values = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, np.nan, 5.0, 6.0], dtype=np.float32)
    env = minmax_envelope(values, 4)
    assert np.isnan(env.lo[1]) and np.isnan(env.hi[1]) and np.isnan(env.lo[2]) and np.isnan(env.hi[2])
    assert env.nonfinite.tolist() == [False, True, True, False]
    assert env.lo[0] == 1.0 and env.hi[3] == 6.0


def test_inf_does_not_become_the_max_and_nan_does_not_blank_the_column():
    values = np.array([1.0, np.inf, 3.0, np.nan, -np.inf, 2.0])
    env = minmax_envelope(values, 1)
    assert (env.lo[0], env.hi[0], bool(env.nonfinite[0])) == (1.0, 3.0, True)


def test_one_nan_channel_among_many_is_masked_without_touching_the_others():
    # GIVEN a wide, long table where one channel is NaN throughout and another has a NaN now and then
    rng = np.random.default_rng(3)
    values = rng.standard_normal((20_000, 40)).astype(np.float32)
    values[:, 7] = np.nan
    values[::997, 12] = np.nan
    values[5_000, 12] = 40.0
    # WHEN decimated
    env = minmax_envelope(values, 64)
    # THEN it equals a vectorised finite-only reference, channel by channel
    for i, (first, count) in enumerate(zip(env.first, env.count)):
        bucket = values[first : first + count]
        finite = np.isfinite(bucket)
        expected_lo = np.where(finite.any(0), np.where(finite, bucket, np.inf).min(0), np.nan)
        np.testing.assert_array_equal(env.lo[i], expected_lo)
        assert env.nonfinite[i].tolist() == (~finite.all(0)).tolist()
    assert np.isnan(env.hi[:, 7]).all()
    assert np.nanmax(env.hi[:, 12]) == 40.0


def test_a_strided_channel_of_the_column_store_can_be_decimated_directly():
    store = StepColumns(width=3)
    for i in range(1000):
        store.append(i, i, 0, float(i), np.array([i, -i, i % 7], dtype=np.float32))
    env = minmax_envelope(store.column(1), 10)
    assert env.lo.tolist() == [-(100 * i + 99) for i in range(10)]
    assert env.hi.tolist() == [-(100 * i) for i in range(10)]


def test_integer_input_becomes_float_and_bad_arguments_are_refused():
    assert minmax_envelope(np.arange(10), 2).hi.tolist() == [4.0, 9.0]
    with pytest.raises(ValueError, match="columns must be at least 1"):
        minmax_envelope(np.zeros(4), 0)
    with pytest.raises(ValueError, match="1-D"):
        minmax_envelope(np.zeros((2, 2, 2)), 4)


@given(n=st.integers(0, 5000), columns=st.integers(1, 300))
def test_column_bounds_cover_every_row_once_with_sizes_differing_by_at_most_one(n, columns):
    first, count = column_bounds(n, columns)
    assert count.sum() == n
    assert len(first) == min(n, columns)
    if n:
        assert first[0] == 0
        assert (first[1:] == first[:-1] + count[:-1]).all()
        assert count.max() - count.min() <= 1
