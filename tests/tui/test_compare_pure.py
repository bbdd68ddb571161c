"""The comparison's pure parts: columns over a shared x axis, group mean and band, series,
the chart, the run table and its CSV. Each expectation is computed here another way."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from octa_tui.protocol.messages import EpochSummary, Event, ModelSummary, Schema, StepChunk
from octa_tui.protocol.run import RunHistory
from octa_tui.tui.compare import aggregate, series
from octa_tui.tui.compare.chart import BRAILLE_BASE, GUTTER, data_columns
from octa_tui.tui.compare.table import (
    BY_ALL_BUT_SEED,
    Change,
    RunRow,
    csv_text,
    differing_keys,
    fit_columns,
    group_labels,
    groups_of,
    shared_verdicts,
    table_columns,
    verdict_cell,
)
from octa_tui.tui.compare.view import Curve, build_chart


def _loop_columns(x, y, lo, hi, columns):
    """Reference: each row put in its column one by one, then plain Python min/max/mean."""
    bins = [[] for _ in range(columns)]
    for xi, yi in zip(x, y):
        if not (lo <= xi <= hi):
            continue
        c = min(int((xi - lo) / (hi - lo) * columns), columns - 1)
        bins[c].append(float(yi))
    out = []
    for b in bins:
        finite = [v for v in b if math.isfinite(v)]
        out.append((min(finite) if finite else math.nan, max(finite) if finite else math.nan,
                    sum(finite) / len(finite) if finite else math.nan, len(b), len(finite) < len(b)))
    return out


def test_bucket_keeps_every_spike_and_matches_a_row_by_row_reference():
    rng = np.random.default_rng(3)
    x = np.sort(rng.uniform(0, 1000, 5000))
    y = rng.normal(size=5000)
    y[1234] = 50.0  # one spike
    y[77] = np.nan
    got = aggregate.bucket(x, y, 0.0, 1000.0, 37)
    want = _loop_columns(x, y, 0.0, 1000.0, 37)
    assert got.columns == 37
    for c, (lo, hi, mean, count, bad) in enumerate(want):
        assert got.count[c] == count
        assert got.nonfinite[c] == bad
        np.testing.assert_allclose([got.lo[c], got.hi[c], got.mean[c]], [lo, hi, mean], rtol=1e-12, equal_nan=True)
    assert np.nanmax(got.hi) == 50.0


def test_bucket_of_unsorted_x_and_rows_outside_the_range():
    x = np.array([5.0, 1.0, 9.0, 20.0, -3.0, 1.5])
    y = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    got = aggregate.bucket(x, y, 0.0, 10.0, 2)
    assert list(got.count) == [2, 2]  # x 1.0 and 1.5 | x 5.0 and 9.0; 20 and -3 are outside
    assert (got.lo[0], got.hi[0], got.lo[1], got.hi[1]) == (2.0, 6.0, 1.0, 3.0)


def test_combine_is_the_mean_of_run_means_within_the_min_max_band():
    a = aggregate.bucket(np.arange(10.0), np.arange(10.0), 0, 9, 2)
    b = aggregate.bucket(np.arange(5.0), np.full(5, 100.0), 0, 9, 2)  # a shorter run
    group = aggregate.combine([a, b])
    assert group.mean[0] == pytest.approx((np.mean(np.arange(5.0)) + 100.0) / 2)
    assert group.mean[1] == pytest.approx(np.mean(np.arange(5.0, 10.0)))  # only run a is there
    assert list(group.runs) == [2, 1]
    assert group.lo[0] == 0.0 and group.hi[0] == 100.0


def _history(run_id="0123456789abcdef", n=100, epochs_every=10, config=None, offset=0.0):
    schema = Schema(run_id=run_id, task="segmentation", model=ModelSummary("unet", 10), loss=("total",),
                    grad=("a",), opt=("lr",), config=config or {})
    h = RunHistory(schema)
    step = np.arange(n, dtype=np.int64)
    values = np.stack([1.0 / (1 + step) + offset, np.full(n, 0.1), np.full(n, 1e-3)], axis=1).astype(np.float32)
    h.add(StepChunk(run_id, step.astype(np.uint64), step, (step // epochs_every).astype(np.int32),
                    1000.0 + step * 0.5, values))
    for e in range(n // epochs_every):
        h.add(EpochSummary(run_id, e, (e + 1) * epochs_every - 1, 1000.0 + e, {}, {"dice": 0.1 * e}))
    return h


def test_series_by_step_epoch_and_time():
    h = _history()
    x, y = series.run_series(h, "loss/total", "step")
    assert x[5] == 5 and y[5] == pytest.approx(1 / 6)
    x, _ = series.run_series(h, "loss/total", "epoch")
    assert x[0] == 0.0 and x[15] == pytest.approx(1.5) and np.all(np.diff(x) > 0)
    x, _ = series.run_series(h, "loss/total", "time")
    assert x[0] == 0.0 and x[-1] == pytest.approx(49.5)
    x, y = series.run_series(h, "val/dice", "epoch")
    assert list(x[:3]) == [1.0, 2.0, 3.0] and y[2] == pytest.approx(0.2)
    assert series.channels_of([h])[:2] == ["loss/total", "val/dice"]
    assert series.run_series(h, "loss/bce", "step")[0].size == 0


def test_grouped_chart_columns_match_the_groups_of_the_runs():
    histories = [_history(offset=o) for o in (0.0, 0.5, 1.0)]
    curves = [Curve(i + 1, f"r{i}", *series.run_series(h, "loss/total", "step")) for i, h in enumerate(histories)]
    view = build_chart(curves, 60, 10, groups={"a": [0, 1], "b": [2]})
    assert len(view.legend) == 2 and view.legend[0].runs == 2
    cols = data_columns(60)
    a = aggregate.combine([view.columns["r0"], view.columns["r1"]])
    assert np.nanmin(a.lo) == pytest.approx(1 / 100, rel=1e-6)  # run 0's smallest value
    assert np.nanmax(a.hi) == pytest.approx(1.5)  # run 1's first value
    lines = view.text.plain.split("\n")
    assert len(lines) == 10 and all(len(line) <= 60 for line in lines)
    assert any(BRAILLE_BASE < ord(ch) <= BRAILLE_BASE + 255 for ch in "".join(lines))
    assert cols == 2 * (60 - GUTTER)


def test_markers_sit_on_their_runs_curve_with_the_trial_outcome():
    h = _history()
    x, y = series.run_series(h, "loss/total", "step")
    view = build_chart([Curve(1, "r", x, y, markers=((50.0, "helped"),))], 60, 10)
    assert "▲" in view.text.plain


def _row(number, config, verdicts=(), changes=()):
    return RunRow(number, f"run{number}", "recorded", "recorded", 100, 0.5, 0.7, 0.6, 12.0, config,
                  tuple(verdicts), tuple(changes))


def test_only_differing_config_keys_and_groups_by_everything_but_the_seed():
    configs = [{"lr": lr, "seed": s, "epochs": 5} for lr in (1e-3, 3e-4) for s in (0, 1, 2)]
    assert differing_keys(configs) == ["lr", "seed"]
    labels = group_labels(configs, BY_ALL_BUT_SEED)
    assert groups_of(labels) == {"lr=0.001": [0, 1, 2], "lr=0.0003": [3, 4, 5]}
    assert groups_of(group_labels(configs, "seed")) == {"seed=0": [0, 3], "seed=1": [1, 4], "seed=2": [2, 5]}
    assert group_labels([{"seed": 0}, {"seed": 1}], BY_ALL_BUT_SEED) == ["all", "all"]


def test_the_table_says_which_runs_share_a_verdict_and_collapses_when_narrow():
    rows = [_row(1, {"lr": 1e-3}, ["plateau"]), _row(2, {"lr": 3e-4}, ["plateau", "lr_too_small"]),
            _row(3, {"lr": 1e-4}, ["lr_too_small"], [Change(40, "set_lr", "set_lr lr=0.002", "helped")])]
    shared = shared_verdicts(rows)
    assert shared == {"plateau": [1, 2], "lr_too_small": [2, 3]}
    assert verdict_cell(rows[1], shared) == "plateau (1), lr_too_small (3)"
    columns = table_columns(["lr"])
    wide = fit_columns(rows, columns, 200, shared)
    narrow = fit_columns(rows, columns, 40, shared)
    assert [c.key for c in wide] == [c.key for c in columns]
    assert [c.key for c in narrow][:2] == ["number", "label"] and len(narrow) < len(wide)
    parsed = list(csv.DictReader(io.StringIO(csv_text(rows, ["lr"]))))
    assert parsed[2]["changes_applied"] == "set_lr lr=0.002 @40 helped"
    assert parsed[1]["shared_verdicts"] == "plateau: 1; lr_too_small: 3"
    assert float(parsed[0]["loss_now"]) == 0.5


def test_events_become_changes_with_their_outcome():
    from octa_tui.tui.compare.table import changes_of

    h = _history()
    h.add(Event(h.run_id, 50, 1.0, "command_applied", "lr", {"op": "set_lr", "old": 1e-3, "new": 2e-3}))

    class T:
        step, outcome = 50, "hurt"

    (change,) = changes_of(h, [T()])
    assert change.step == 50 and change.outcome == "hurt" and change.op == "set_lr"


@pytest.mark.parametrize("columns", [1, 7, 61, 122, 250, 999, 2000])
def test_bucket_of_whole_steps_puts_each_step_in_the_column_the_formula_gives(columns):
    x = np.repeat(np.arange(0.0, 400.0), 2)  # whole steps, some twice (two runs' worth)
    y = np.sin(x) + np.arange(x.size) * 1e-3
    for lo, hi in ((0.0, 399.0), (13.0, 377.0), (0.0, 10_000.0)):
        got = aggregate.bucket(x, y, lo, hi, columns)
        unsorted = aggregate.bucket(x[::-1].copy(), y[::-1].copy(), lo, hi, columns)
        want = _loop_columns(x, y, lo, hi, columns)
        assert list(got.count) == [w[3] for w in want] == list(unsorted.count)
        np.testing.assert_allclose(got.lo, [w[0] for w in want], equal_nan=True)
        np.testing.assert_allclose(got.hi, [w[1] for w in want], equal_nan=True)
        np.testing.assert_allclose(got.mean, [w[2] for w in want], rtol=1e-12, equal_nan=True)


def test_verdicts_that_cleared_are_still_listed_apart():
    row = RunRow(1, "r", "live", "live", 10, 0.5, 0.5, 0.5, 1.0, {}, ("plateau",), (), ("gradient_explosion",))
    assert verdict_cell(row, {"plateau": [1]}) == "plateau; cleared: gradient_explosion"
    parsed = next(csv.DictReader(io.StringIO(csv_text([row], []))))
    assert parsed["verdicts"] == "plateau" and parsed["verdicts_cleared"] == "gradient_explosion"


def test_a_verdict_many_runs_share_is_said_briefly():
    rows = [_row(i, {}, ["plateau"]) for i in range(1, 10)]
    shared = shared_verdicts(rows)
    assert verdict_cell(rows[0], shared, runs=9) == "plateau (all)"
    assert verdict_cell(rows[0], shared, runs=12) == "plateau (2 3 4 5 6 +3)"
