"""The monitor's two background loops: ingest and diagnosis, each on its own thread.

Ingest opens the source and polls it into the run history as fast as data comes, bringing the
derived stores (chart summaries, group norms) up to date after each batch, so a redraw only
reads them. Diagnosis runs the engine on its own schedule: a slow evaluation (a long run, a
replay opened at its end) never holds up ingest, and ingest never queues evaluations behind
it (the engine always reads the newest rows). Neither touches a widget: they post
:mod:`octa_tui.tui.messages` to the app.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

from ..diagnosis.trial import trials as fix_trials
from .messages import (
    DerivedReady,
    Diagnosis,
    HistoryChanged,
    SourceFailed,
    SourceOpened,
    VerdictsComputed,
    one_line,
)
from .sources import Source

POLL_TIMEOUT_S = 0.05
# A poll that brought something is followed by the next one no sooner than this: a 1k
# steps/s stream is then drained 20 times a second, not once per message (each drain and each
# wake-up of the UI loop costs more than decoding the steps it carries).
INGEST_BATCH_S = 0.05
FAILURE_PAUSE_S = 0.5

Post = Callable[[Any], Any]
Diagnose = Callable[[Any], tuple[list, Any]]


def newest_step(history: Any) -> int:
    """The step number of the newest row of ``history`` (-1 when it has none yet)."""
    steps = history.steps.step
    return int(steps[-1]) if len(steps) else -1


class IngestLoop:
    """Opens ``source`` and polls it until ``stop`` is set, posting what happened.

    ``derive(history)`` is called after the source opened and after each batch that changed
    the history (on this thread): it brings the derived stores up to the new rows; a
    :class:`DerivedReady` follows it. ``opened`` is set once the source is open (or failed).
    """

    def __init__(self, source: Source, post: Post, stop: threading.Event,
                 derive: Callable[[Any], None] | None = None, derive_after: threading.Event | None = None) -> None:
        self.source = source
        self.post = post
        self.stop = stop
        self.derive = derive
        # Set once the first frame is on screen: the derived stores of a long history are
        # built after it, so they do not compete with it for the CPU and memory.
        self.derive_after = derive_after
        self.opened = threading.Event()
        self.done = threading.Event()

    def run(self) -> None:
        """The loop (call it on a thread of its own)."""
        try:
            try:
                self.source.open()
            except Exception as err:  # noqa: BLE001 - every failure becomes one line on screen
                self.post(SourceFailed(one_line(err), fatal=True))
                return
            finally:
                self.opened.set()
            self.post(SourceOpened())
            self._derive()
            failures = 0
            while not self.stop.is_set():
                polled_at = time.monotonic()
                try:
                    changed = self.source.poll(POLL_TIMEOUT_S)
                    failures = 0
                except Exception as err:  # noqa: BLE001
                    failures += 1
                    if failures == 1:
                        self.post(SourceFailed(one_line(err), fatal=False))
                    self.stop.wait(FAILURE_PAUSE_S)
                    continue
                if changed:
                    self.post(HistoryChanged())
                    self._derive()
                    # Let the next batch gather (a poll that took that long goes straight on).
                    self.stop.wait(max(0.0, polled_at + INGEST_BATCH_S - time.monotonic()))
        finally:
            self.done.set()

    def _derive(self) -> None:
        history = self.source.history
        if self.derive is None or history is None:
            return
        while self.derive_after is not None and not self.derive_after.wait(0.05):
            if self.stop.is_set():
                return
        try:
            self.derive(history)
        except Exception as err:  # noqa: BLE001 - the panels redo it themselves and show what fails
            self.post(SourceFailed(f"preparing the charts failed: {one_line(err)}", fatal=False))
            return
        self.post(DerivedReady())


class DiagnosisLoop:
    """Runs the diagnosis engine every ``interval_s`` while the history changes, on its own
    thread, and posts :class:`VerdictsComputed`.

    A new engine is made for each history object (the engine's hysteresis is per run):
    ``factory(live)`` gives the diagnose function. The engine reads the history while ingest
    appends to it; columns are append-only and a reader takes the row count first, so it
    always sees complete rows.
    """

    def __init__(self, source: Source, post: Post, stop: threading.Event,
                 factory: Callable[[bool], Diagnose], interval_s: float, wait_for: threading.Event | None = None) -> None:
        self.source = source
        self.post = post
        self.stop = stop
        self.factory = factory
        self.interval_s = interval_s
        self.wait_for = wait_for
        self.done = threading.Event()

    def run(self) -> None:
        """The loop (call it on a thread of its own)."""
        try:
            if self.wait_for is not None:
                while not self.wait_for.wait(0.1):
                    if self.stop.is_set():
                        return
            diagnose: Diagnose | None = None
            diagnosed: Any = None
            seen: tuple = ()
            last = -math.inf
            while not self.stop.is_set():
                history = self.source.history
                now = time.monotonic()
                if history is None or now - last < self.interval_s:
                    self.stop.wait(min(max(self.interval_s - (now - last), 0.02), 0.1) if history is not None else 0.05)
                    continue
                state = (id(history), len(history.steps), len(history.epochs), len(history.events))
                if state == seen:
                    self.stop.wait(0.05)
                    continue
                if history is not diagnosed:
                    diagnose, diagnosed = self.factory(self.source.kind == "live"), history
                last, seen = now, state
                self.post(VerdictsComputed(self._evaluate(diagnose, history)))
        finally:
            self.done.set()

    @staticmethod
    def _evaluate(diagnose: Diagnose, history: Any) -> Diagnosis:
        rows = len(history.steps)
        try:
            step = newest_step(history)
            verdicts, matrix = diagnose(history)
            return Diagnosis(list(verdicts), matrix, id(history), trials=fix_trials(history), step=step, rows=rows)
        except Exception as err:  # noqa: BLE001 - shown in the event log, the loop goes on
            return Diagnosis([], None, id(history), error=one_line(err), rows=rows)
