"""A recording fed to the diagnosis engine as it grew: what ``octa-tui verdicts FILE`` prints.

The engine debounces verdicts over evaluations, so what it says depends on how the run is
shown to it: here, every ``every`` steps with the epochs and events up to that step, as a
monitor refreshing during the run would (:mod:`octa_tui.diagnosis.growing`, the feeding the
scenario checks use too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..diagnosis import Engine, Verdict, growing
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
    changes = VerdictChanges()
    result = Diagnosed()
    for last, shown in growing.diagnose_growing(full, every, engine):
        result.evaluations += 1
        for rec in changes.update(shown, last, full.run_id):
            on_change(rec)
        result.final = shown
    return result
