"""A finished run shown to the engine as it grew, as a monitor refreshing during the run saw it.

The engine debounces verdicts over evaluations, so what it says about a recording depends on
how the run is shown to it. :func:`grow` replays a complete :class:`RunHistory` into one
growing history: every ``every`` steps (and at the end) it holds the steps, epoch summaries
and events up to that step, and the data set report from the start. :func:`diagnose_growing`
evaluates an engine at each of those stops. ``octa-tui verdicts FILE`` and the scenario checks
both read recordings this way, so they agree on the step a verdict appeared.

Pure: reads the history it is given, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

from octa_tui.protocol.run import RunHistory

from .engine import Engine
from .verdict import Verdict


def grow(full: RunHistory, every: int) -> Iterator[tuple[int, RunHistory]]:
    """(newest step, history) every ``every`` steps of ``full`` and at its end; the history is one
    object that grows between yields (the newest step is -1 for a run without steps)."""
    if every < 1:
        raise ValueError(f"every must be at least 1 step, got {every}")
    growing = RunHistory(full.schema)
    growing.dataset = full.dataset
    n = len(full.steps)
    stops = list(range(every, n + 1, every))
    if not stops or stops[-1] != n:
        stops.append(n)
    start = 0
    for stop in stops:
        if stop > start:
            growing.add(full.steps.chunk(full.run_id, start, stop))
        start = stop
        if stop:
            last = int(full.steps.step[stop - 1])
            growing.epochs = [e for e in full.epochs if e.step <= last]
            growing.events = [e for e in full.events if e.step <= last]
        else:
            last = -1
            growing.epochs, growing.events = list(full.epochs), list(full.events)
        yield last, growing


def diagnose_growing(full: RunHistory, every: int, engine: Engine | None = None) -> Iterator[tuple[int, list[Verdict]]]:
    """(newest step, verdicts shown) after each evaluation of ``engine`` (a live engine, with its
    hysteresis, by default) on ``full`` as it grew (see :func:`grow`)."""
    engine = engine or Engine()
    for last, history in grow(full, every):
        yield last, engine.evaluate(history)
