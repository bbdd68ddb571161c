"""A recording fed to the diagnosis engine as it grew: what ``octa-tui verdicts FILE`` prints.

The engine debounces verdicts over evaluations, so what it says depends on how the run is
shown to it: here, every ``every`` steps with the epochs and events up to that step, as a
monitor refreshing during the run would (the same feeding the scenario checks use).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..diagnosis import Engine, Verdict
from ..protocol.run import RunHistory
from .agent_records import VerdictChanges


@dataclass
class Diagnosed:
    """The verdicts shown at the end of the recording, and how many evaluations it took."""

    final: list[Verdict] = field(default_factory=list)
    evaluations: int = 0


def diagnose_growing(full: RunHistory, engine: Engine, every: int,
                     on_change: Callable[[dict[str, Any]], None] = lambda rec: None) -> Diagnosed:
    """Evaluate ``full`` every ``every`` steps as it grew; ``on_change`` gets each verdict record
    (appeared, changed, cleared) with the step it happened at."""
    if every < 1:
        raise ValueError(f"every must be at least 1 step, got {every}")
    growing = RunHistory(full.schema)
    growing.dataset = full.dataset
    changes = VerdictChanges()
    result = Diagnosed()
    n = len(full.steps)
    stops = list(range(every, n + 1, every))
    if not stops or stops[-1] != n:
        stops.append(n)
    start = 0
    for stop in stops:
        if stop > start:
            growing.add(full.steps.chunk(full.run_id, start, stop))
        start = stop
        last = int(full.steps.step[stop - 1]) if stop else -1
        growing.epochs = [e for e in full.epochs if e.step <= last] if stop else list(full.epochs)
        growing.events = [e for e in full.events if e.step <= last] if stop else list(full.events)
        shown = engine.evaluate(growing)
        result.evaluations += 1
        for rec in changes.update(shown, last, full.run_id):
            on_change(rec)
        result.final = shown
    return result
