"""The engine the monitor and the trainer call: rules plus hysteresis, so verdicts do not flicker.

A verdict appears once its rule has held for ``hold`` consecutive evaluations and clears once
the rule has stopped holding for ``release`` consecutive evaluations; until then the last
verdict the rule gave stays shown. An evaluation counts only when the history has changed since
the previous one (new steps, epochs, events or a data set report), so a UI that refreshes
faster than the run streams neither ages nor confirms a verdict by repetition, and a repeated
call costs a comparison.

Nothing between two evaluations is missed: the windows of the two event rules (gradient
explosion, non-finite values) cover at least every step since the previous evaluation (up to
``window_steps``, what an evaluation reads), so a burst that a fast run streams between two
refreshes of the monitor is still seen. Those two measured faults can be over within one
evaluation, so they appear on their first hit (:data:`IMMEDIATE`); like every verdict they
clear only after ``release`` evaluations without it, so they stay up long enough to be read.
A consequence that is shown brings the cause it names (``caused_by``, fired in the same
evaluation) with it, so the root cause is listed first from the moment its effect appears.
"""

from __future__ import annotations

from dataclasses import dataclass

from octa_tui.protocol.run import RunHistory

from .rules import evaluate_rules
from .texts import get_language
from .thresholds import Thresholds
from .verdict import Verdict, check_lang, root_cause, sort_key

# Verdicts shown at their first hit: measured facts, possibly brief (a burst of gradients in the
# first steps, a single NaN step), that a hold of several evaluations would let pass unseen.
IMMEDIATE = frozenset({"gradient_explosion", "nonfinite"})


@dataclass
class _Track:
    hits: int = 0
    misses: int = 0
    shown: bool = False
    last: Verdict | None = None


class Hysteresis:
    """Per-code debouncing of raw verdicts: appear after ``hold`` hits, clear after ``release`` misses."""

    def __init__(self, hold: int = 3, release: int = 3, immediate: frozenset[str] = frozenset()) -> None:
        if hold < 1 or release < 1:
            raise ValueError(
                f"hold and release must be at least 1 evaluation, got hold={hold}, release={release}"
            )
        self.hold = hold
        self.release = release
        self.immediate = frozenset(immediate)  # codes that appear on their first hit
        self._tracks: dict[str, _Track] = {}
        self._order: dict[str, int] = {}

    def update(self, raw: list[Verdict]) -> list[Verdict]:
        """Feed one evaluation's raw verdicts; return those shown now, in cause order (root causes
        first, notes last; see :func:`~octa_tui.diagnosis.verdict.sort_key`)."""
        fired = {v.code: v for v in raw}
        for i, v in enumerate(raw):
            self._order[v.code] = i
        for code in set(self._tracks) | set(fired):
            track = self._tracks.setdefault(code, _Track())
            if code in fired:
                track.hits += 1
                track.misses = 0
                track.last = fired[code]
                if track.hits >= self.hold or code in self.immediate:
                    track.shown = True
            else:
                track.misses += 1
                track.hits = 0
                if track.shown and track.misses >= self.release:
                    track.shown = False
        # A consequence shown now brings its measured cause with it (seed 002: the explosion of the
        # first steps and the missing sigmoid behind it), so the cause is listed first from the start.
        for code, track in self._tracks.items():
            cause = track.last.caused_by if track.shown and track.last is not None and code in fired else ""
            if cause in fired:
                self._tracks[cause].shown = True
        shown = [(code, t.last) for code, t in self._tracks.items() if t.shown and t.last is not None]
        shown.sort(key=lambda item: sort_key(item[1], self._order.get(item[0], 0)))
        return [v for _, v in shown]

    def reset(self) -> None:
        """Forget every verdict (a new run, or a replay that seeks backwards)."""
        self._tracks.clear()
        self._order.clear()


class Engine:
    """Diagnoses a run on every call, with verdicts debounced by hysteresis.

    Windowed: an evaluation reads the newest ``thresholds.window_steps`` steps (1000 by
    default, or the plateau's step window if larger), a few rows at the run's start and the
    newest epoch summaries, so its cost does not grow with the run (see bench/bench_diagnosis.py).
    """

    def __init__(
        self, thresholds: Thresholds | None = None, lang: str | None = None, hold: int = 3, release: int = 3
    ) -> None:
        self.thresholds = thresholds or Thresholds()
        self.lang = check_lang(lang or get_language())
        self._hysteresis = Hysteresis(hold, release, IMMEDIATE)
        self._seen: tuple | None = None
        self._shown: list[Verdict] = []

    @property
    def hold(self) -> int:
        """Evaluations a rule must hold before its verdict appears."""
        return self._hysteresis.hold

    @property
    def release(self) -> int:
        """Evaluations a rule must stop holding before its verdict clears."""
        return self._hysteresis.release

    def evaluate(self, history: RunHistory) -> list[Verdict]:
        """The verdicts to show now for ``history``, in cause order: the first is the root cause
        (the one whose fix the monitor's fix key applies, see :meth:`root_cause`)."""
        state = _version(history)
        if state == self._seen:
            return list(self._shown)
        # A new run, or a history that went back in time (a replay seek), starts from a clean slate.
        seen = self._seen
        if seen is not None and (state[0] != seen[0] or state[1] < seen[1] or state[2] < seen[2]):
            self.reset()
        # The steps since the previous evaluation: the event rules read all of them.
        unseen = state[1] - (self._seen[1] if self._seen is not None else 0)
        self._seen = state
        self._shown = self._hysteresis.update(evaluate_rules(history, self.thresholds, self.lang, unseen))
        return list(self._shown)

    def root_cause(self, verdicts: list[Verdict] | None = None) -> Verdict | None:
        """The verdict whose fix ``f`` applies: the first in cause order of ``verdicts`` (default:
        those shown by the last evaluation); None when nothing is shown."""
        return root_cause(self._shown if verdicts is None else verdicts)

    def reset(self) -> None:
        """Forget all verdicts; evaluate() does this itself for a new run id or a history that shrank."""
        self._hysteresis.reset()
        self._seen = None
        self._shown = []


def _version(history: RunHistory) -> tuple:
    """What identifies the history's content cheaply: it changes whenever anything is added.

    Content, not object identity: a monitor that hands over a fresh copy each refresh keeps its
    verdicts.
    """
    steps, dataset = history.steps, history.dataset
    return (
        history.run_id,
        len(steps),
        steps.last_seq(),
        len(history.epochs),
        len(history.events),
        None
        if dataset is None
        else (dataset.source, dataset.pairs, dataset.unique_mask_values, dataset.foreground_ratio),
    )
