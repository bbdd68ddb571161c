"""The replay's controls: a bar mounted only when the monitor replays a recording.

It shows where the replay is, how fast it plays and the keys that move it; its keys
(:data:`REPLAY_BINDINGS`) are bound only for a replay, so a live monitor neither shows nor
lists them. ``v`` jumps to the first step where the verdicts differ from those shown now:
it evaluates the rules on the recording itself (:func:`first_verdict_change`), so it lands on
the step where the new verdict starts, whatever the speed, and leaves the speed as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget

from ..protocol.columns import StepColumns
from ..protocol.run import RunHistory
from .fit import Part, fit_parts

REPLAY_BINDINGS = (
    Binding("p", "play_pause", "Play/pause"),
    Binding("s", "replay_speed", "Speed"),
    Binding("left", "seek_back", "Back 5%", show=False),
    Binding("right", "seek_forward", "Forward 5%", show=False),
    Binding("home", "seek_start", "Start", show=False),
    Binding("end", "seek_end", "End", show=False),
    Binding("n", "next_event", "Next event"),
    Binding("v", "next_verdict", "Next verdict"),
)
REPLAY_ACTIONS = frozenset(b.action for b in REPLAY_BINDINGS)
SEARCH_PROBES = 256  # evaluations spread over the rest of the recording before narrowing down

Diagnose = Callable[[Any], tuple[list, Any]]


def prefix_history(full: RunHistory, rows: int) -> RunHistory:
    """The recording as it stood after its first ``rows`` steps, sharing ``full``'s columns
    (nothing is copied; read it, never append to it)."""
    shown = RunHistory(full.schema)
    source, columns = full.steps, StepColumns(full.schema.width, capacity=16)
    rows = max(0, min(int(rows), len(source)))
    columns._seq, columns._step, columns._epoch = source._seq, source._step, source._epoch
    columns._time, columns._values, columns._n = source._time, source._values, rows
    shown.steps = columns
    last = int(source.step[rows - 1]) if rows else -1
    shown.epochs = [e for e in full.epochs if e.step <= last]
    shown.events = [e for e in full.events if e.step <= last]
    shown.previews = [p for p in full.previews if p.step <= last][-full.max_previews:]
    shown.dataset = full.dataset
    return shown


def verdict_codes(diagnose_factory: Callable[[bool], Diagnose], history: RunHistory) -> tuple[str, ...]:
    """The codes of the verdicts the rules give for ``history`` as it is (a fresh engine, no
    hysteresis), sorted."""
    verdicts, _ = diagnose_factory(False)(history)
    return tuple(sorted(v.code for v in verdicts))


def first_verdict_change(full: RunHistory, start_row: int, diagnose_factory: Callable[[bool], Diagnose],
                         probes: int = SEARCH_PROBES) -> int | None:
    """The first row after ``start_row`` at which the rules' verdicts differ from those at
    ``start_row`` (None when they never do before the end).

    Probes spread over the rest of the recording find the first stretch where they differ,
    then a bisection narrows it to its first row. A change that starts and ends between two
    probes is not seen (probes are at most ``1/probes`` of the recording apart).
    """
    n = len(full.steps)
    start_row = max(0, min(int(start_row), n))
    if start_row >= n:
        return None

    def codes(rows: int) -> tuple[str, ...]:
        return verdict_codes(diagnose_factory, prefix_history(full, rows))

    now = codes(start_row)
    rows = np.unique(np.linspace(start_row + 1, n, min(probes, n - start_row)).astype(int))
    before = start_row
    for row in rows:
        if codes(int(row)) != now:
            low, high = before, int(row)  # codes(low) == now, codes(high) != now
            while high - low > 1:
                middle = (low + high) // 2
                if codes(middle) != now:
                    high = middle
                else:
                    low = middle
            return high
        before = int(row)
    return None


class ReplayBar(Widget):
    """One line under the panels in a replay: play state, speed, position and the keys."""

    DEFAULT_CSS = """
    ReplayBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, source: Any, diagnose_factory: Callable[[bool], Diagnose] | None = None, *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.source = source
        self.diagnose_factory = diagnose_factory
        self.searching = False

    # -- the replay's keys (the app binds them and calls these) ------------------------------
    def play_pause(self) -> None:
        """Play or pause."""
        self.source.toggle_play()
        self.refresh()

    def cycle_speed(self) -> None:
        """Next speed of 1/4/16/64x."""
        self.app.notify(f"replay at {self.source.cycle_speed()}x", timeout=2)
        self.refresh()

    def seek_by(self, fraction: float) -> None:
        """Move by a fraction of the recording."""
        self.source.seek_by(fraction)

    def seek_to(self, where: str) -> None:
        """To the ``"start"`` or the ``"end"`` of the recording."""
        self.source.seek(0 if where == "start" else self.source.length)

    def next_event(self) -> None:
        """To just past the next event (a command applied, a checkpoint, a warning)."""
        row = self.source.next_event_row()
        if row is None:
            self.app.notify("no further event in this recording", timeout=3)
        else:
            self.source.seek(row)

    def next_verdict(self) -> None:
        """To the first step where the verdicts change (looked for on a worker thread; the
        speed stays as it was, playback pauses there)."""
        replay, factory = self.source, self.diagnose_factory
        if self.searching or factory is None or replay.full is None:
            return
        if replay.playing:
            replay.toggle_play()
        self.searching = True
        self.refresh()
        full, start = replay.full, replay.position

        def search() -> None:
            try:
                row = first_verdict_change(full, start, factory)
            except Exception as err:  # noqa: BLE001 - said in the event log, the replay goes on
                self.app.call_from_thread(self._found, None, str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__)
                return
            self.app.call_from_thread(self._found, row, "")

        self.run_worker(search, thread=True, group="verdict-search")

    def _found(self, row: int | None, error: str) -> None:
        self.searching = False
        self.refresh()
        app, replay = self.app, self.source
        if error:
            app.note(f"could not look for the next verdict: {error}", "bold red")
        elif row is None:
            app.notify("the verdicts do not change again in this recording", timeout=3)
        else:
            replay.seek(row)
            step = int(replay.full.steps.step[row - 1]) if row else 0
            app.note(f"verdicts change at step {step:,}", "magenta")

    def render(self) -> Text:
        replay = self.source
        mark = "▶ playing" if replay.playing else "⏸ paused"
        n = replay.length
        where = f"{replay.position / n:.1%}" if n else "-"
        parts = [Part(f" {mark} {replay.speed}x", "bold cyan", keep=9, gap=""), Part(f"at {where}", keep=8)]
        if n and replay.position >= n:
            parts.append(Part("(end)", keep=8, gap=" "))
        if self.searching:
            parts.append(Part("looking for the next verdict change...", "yellow", keep=7))
        # The keys below are the seek keys; play, speed and the jumps are on the key bar.
        parts += [Part("←/→ back/forward 5%", "bright_black", keep=3), Part("home/end start/end", "bright_black", keep=2)]
        return fit_parts(parts, self.content_size.width or 80)
