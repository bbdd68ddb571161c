"""A finished run shown to the engine as it grew (diagnosis.growing).

GIVEN a complete history WHEN it is replayed every N steps THEN each stop holds exactly the
steps, epochs and events up to its newest step, and the engine's verdicts appear at the same
step as they would in a monitor refreshing at that cadence.
"""

from __future__ import annotations

import pytest
from diagnosis_histories import Builder

from octa_tui.diagnosis import Engine, diagnose_growing, grow
from octa_tui.protocol.messages import Event
from octa_tui.protocol.run import RunHistory


def recorded() -> RunHistory:
    b = Builder().dataset().steps(23)
    b.epoch(1, {"loss": 0.4}, {"dice": 0.5})  # at step 22
    b.history.add(Event(b.schema.run_id, 7, 1.7e9, "checkpoint", "checkpoint saved", {"path": "x"}))
    return b.history


def test_each_stop_holds_what_had_arrived_by_its_step() -> None:
    full = recorded()
    seen = [(last, len(h.steps), len(h.epochs), len(h.events), h.dataset is full.dataset) for last, h in grow(full, 5)]
    assert seen == [
        (4, 5, 0, 0, True),
        (9, 10, 0, 1, True),
        (14, 15, 0, 1, True),
        (19, 20, 0, 1, True),
        (22, 23, 1, 1, True),  # the end, though not a multiple of 5
    ]


def test_a_run_without_steps_is_one_stop_with_its_records() -> None:
    full = RunHistory(Builder().schema)
    stops = [(last, len(h.steps)) for last, h in grow(full, 5)]
    assert stops == [(-1, 0)]


def test_every_must_be_a_step_at_least() -> None:
    with pytest.raises(ValueError, match="at least 1 step"):
        list(grow(recorded(), 0))


def test_verdicts_appear_after_the_engine_hold_at_that_cadence() -> None:
    # A NaN loss from step 30 on: immediate (shown at the first stop that holds it).
    full = Builder().steps(30).steps(20, loss__total=float("nan")).history
    first = next(last for last, shown in diagnose_growing(full, 5) if any(v.code == "nonfinite" for v in shown))
    assert first == 34
    # The same through an engine given explicitly (replay: no hold).
    first = next(last for last, shown in diagnose_growing(full, 5, Engine(hold=1, release=1))
                 if any(v.code == "nonfinite" for v in shown))
    assert first == 34
