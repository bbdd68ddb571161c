"""The column store: steps in, columns out, growing without losing a row."""

import numpy as np
import pytest

from octa_tui.protocol.columns import StepColumns
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.messages import ModelSummary, Schema, Step
from octa_tui.protocol.run import RunHistory

RUN = "00000000000000aa"


def test_appends_grow_past_capacity_and_keep_every_row() -> None:
    cols = StepColumns(width=3, capacity=16)
    for i in range(1000):
        cols.append(i, i * 2, i // 100, float(i), np.array([i, -i, 0.5], dtype=np.float32))
    assert len(cols) == 1000 and cols.capacity >= 1000
    assert np.array_equal(cols.seq, np.arange(1000, dtype=np.uint64))
    assert np.array_equal(cols.column(1), -np.arange(1000, dtype=np.float32))
    assert cols.epoch[-1] == 9 and cols.last_seq() == 999


def test_chunks_round_trip_and_extend() -> None:
    cols = StepColumns(width=2)
    for i in range(50):
        cols.append(i, i, 0, float(i), np.array([i, i], dtype=np.float32))
    chunk = cols.chunk(RUN, 10, 20)
    other = StepColumns(width=2)
    other.extend(chunk)
    assert len(other) == 10 and other.seq[0] == 10 and other.values[-1, 0] == 19
    assert cols.index_of_seq(25) == 25 and cols.index_of_seq(10_000) == 50


def test_wrong_width_is_refused_clearly() -> None:
    cols = StepColumns(width=2)
    with pytest.raises(ProtocolError, match="3 values but the run's schema has 2 channels"):
        cols.append(0, 0, 0, 0.0, np.zeros(3, dtype=np.float32))


def test_run_history_files_messages_and_refuses_other_runs() -> None:
    schema = Schema(RUN, "segmentation", ModelSummary("UNet", 1), ("total",), ("enc",))
    history = RunHistory(schema)
    history.add(Step(RUN, 0, 0, 0, 1.0, np.array([0.5, 0.1], dtype=np.float32)))
    assert len(history.steps) == 1
    with pytest.raises(ProtocolError, match="does not belong"):
        history.add(Step("00000000000000bb", 1, 1, 0, 1.0, np.zeros(2, dtype=np.float32)))
