"""GIVEN a long run opened at its end WHEN the first frame is drawn THEN its charts are built
quickly (gradient group norms summed in float32 where that is exact, block summaries only of
the channel groups the charts show) and still keep every spike, NaN and extreme norm, and the
header shows the last step."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from screen_text import screen_text
from seeded import seeded_chunk, seeded_history, seeded_schema

from octa_tui.protocol.decimate import minmax_envelope
from octa_tui.protocol.recording import RecordingWriter
from octa_tui.protocol.run import RunHistory
from octa_tui.tui.app import make_app
from octa_tui.tui.sources import ReplaySource
from octa_tui.tui.summary import BlockEnvelopes
from octa_tui.tui.view import HistorySummary, channel_group_span, group_norms, layer_groups

pytestmark = pytest.mark.timeout(60)


def _float64_norms(grads: np.ndarray, starts: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.sqrt(np.add.reduceat(np.square(grads, dtype=np.float64), starts, axis=1))


def _grads_with_extremes(rows: int, width: int) -> np.ndarray:
    grads = np.random.default_rng(7).standard_normal((rows, width)).astype(np.float32)
    grads[3, 1] = np.nan
    grads[4, 5] = np.inf
    grads[5, 2] = 3e25  # its square overflows float32
    grads[6, :] = 1e-30  # its square underflows float32
    grads[7, :] = 0.0  # a frozen layer
    grads[8, 0] = -np.inf
    return grads


@pytest.mark.parametrize("sizes", [(4, 4, 4, 4), (3, 5, 1, 7)], ids=["equal groups", "unequal groups"])
def test_group_norms_match_a_float64_sum_even_at_the_extremes(sizes):
    # GIVEN gradient norms with NaN, +/-Inf, a huge value, tiny values and zeros
    starts = np.cumsum((0,) + sizes[:-1])
    grads = _grads_with_extremes(500, sum(sizes))
    # WHEN the group norms are computed
    norms = group_norms(grads, starts)
    # THEN they equal the float64 sum to float32's precision, with the extremes exact
    expected = _float64_norms(grads, starts)
    assert norms.dtype == np.float64 and norms.shape == (500, len(sizes))
    np.testing.assert_array_equal(np.isnan(norms), np.isnan(expected))
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    np.testing.assert_array_equal(norms[4:9], expected[4:9])  # recomputed in float64
    assert norms[5, 0] == pytest.approx(3e25, rel=1e-6) and norms[6, 0] > 0 and norms[7, 0] == 0.0


def test_group_norms_of_a_strided_slice_of_the_step_matrix_are_right():
    # GIVEN the gradient columns of a step matrix (a view with the other channels around it)
    history = seeded_history(300)
    schema = history.schema
    groups = layer_groups(schema.grad, 3)
    first = schema.index(f"grad/{schema.grad[0]}")
    grads = history.steps.values[:, first : first + len(schema.grad)]
    starts = np.cumsum([0] + [len(idx) for _, idx in groups[:-1]])
    # THEN the norms are those of a contiguous float64 copy
    np.testing.assert_allclose(group_norms(grads, starts), _float64_norms(grads.copy(), starts), rtol=1e-6)


def test_a_channel_group_span_names_the_columns_of_its_schema_group():
    schema = seeded_schema()
    group, first, stop = channel_group_span(schema, "out/act_max")
    assert group == "out" and stop - first == len(schema.out)
    assert first <= schema.index("out/act_max") < stop
    assert schema.channels[first:stop] == tuple(f"out/{name}" for name in schema.out)
    with pytest.raises(KeyError, match="out/nothing"):
        channel_group_span(schema, "out/nothing")


def test_charts_of_each_channel_group_keep_every_spike_and_nan_of_a_long_run():
    # GIVEN a long run with a loss spike, a NaN output and an lr change far back
    schema = seeded_schema(steps_per_epoch=1000, epochs=100)
    chunk = seeded_chunk(schema, 50_000, seed=4)
    chunk.values[12_345, schema.index("loss/total")] = 1e6
    chunk.values[777, schema.index("out/raw_max")] = np.nan
    chunk.values[40_000:, schema.index("opt/lr")] = 1e-7
    history = RunHistory(schema)
    history.add(chunk)
    summary = HistorySummary()
    every_channel = BlockEnvelopes()
    every_channel.update("run", history.steps.values)
    # WHEN the charts ask for channels of three groups over the whole run and a window
    for key in ("loss/total", "out/raw_max", "opt/lr", "loss/dice"):
        index = schema.index(key)
        for start in (0, 12_000):
            column = summary.column(history, key, start, 50_000)
            envelope = column.envelope(120)
            # THEN each envelope is the one a summary of every channel gives
            full = every_channel.envelope(history.steps.values, index, start, 50_000, 120)
            for name in ("lo", "hi", "nonfinite", "first", "count"):
                np.testing.assert_array_equal(getattr(envelope, name), getattr(full, name))
            # AND its extremes are those of every raw row
            direct = minmax_envelope(history.steps.values[start:, index], 1)
            assert np.nanmax(envelope.hi) == direct.hi[0] and np.nanmin(envelope.lo) == direct.lo[0]
            assert column.last() == history.steps.values[-1, index]
    assert summary.column(history, "loss/total", 0, 50_000).envelope(120).hi.max() == 1e6
    assert summary.column(history, "out/raw_max", 0, 50_000).envelope(120).nonfinite.any()
    # AND the raw gradient layers, charted through their group norms, were never summarised
    assert set(summary.channel_groups) == {"loss", "out", "opt"}


def test_the_first_frame_of_a_replay_opened_at_its_end_shows_its_last_step(tmp_path):
    # GIVEN a recording whose loss spiked once, early on
    history = seeded_history(900)
    spike_row = 50
    history.steps.values[spike_row, history.schema.index("loss/total")] = 500.0
    path = tmp_path / "session.octa"
    with RecordingWriter(path, history.schema, chunk_rows=128) as writer:
        s = history.steps
        for row in range(len(s)):
            writer.write_step(int(s.seq[row]), int(s.step[row]), int(s.epoch[row]), float(s.time[row]), s.values[row])

    async def scenario() -> None:
        # WHEN it is opened at its end, as `octa-tui replay FILE --at-end` does
        source = ReplaySource(str(path), start_at_end=True)
        source.open()
        app = make_app(source)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            text = screen_text(app)
            # THEN the header shows the last step and the loss chart's scale reaches the spike
            assert "step 899" in text and "(end)" in text
            loss = app._summary.column(source.history, "loss/total", 0, 900)
            assert loss.envelope(60).hi.max() == 500.0

    asyncio.run(scenario())
