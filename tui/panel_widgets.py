"""One widget per panel, each owning its state and its derived data.

A panel is told about the run once per redraw with a :class:`Frame` (the history, the rows
and window shown, the change markers, the latest diagnosis, the command log) and decides for
itself whether its content changed (:meth:`ChartPanel.update_frame` names its data with a key)
and how to draw it (a pure function of :mod:`octa_tui.tui.panels`). A chart panel keeps its own
derived store (block min/max summaries, gradient group norms, counts) and extends it as rows
arrive: the ingest worker calls :meth:`ChartPanel.prepare` after each batch, so a redraw only
reads it. While the worker is still extending a store (a replay opened at the end of a million
steps) the panel says so instead of waiting, and draws once :meth:`ChartPanel.derived_ready`.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from ..protocol import channels as ch
from . import panels, view
from .widgets import Panel

UI_SUMMARY_ROWS = 50_000  # the most rows a redraw summarises itself; more waits for the ingest worker
PREPARE_STEP_ROWS = 1 << 18  # the ingest worker extends a store this many rows at a time


@dataclass(frozen=True)
class Frame:
    """What every panel may read for one redraw."""

    history: Any  # RunHistory | None
    rows: int
    start: int
    window_steps: int | None
    markers: Sequence[int] = ()
    diagnosis: Any = None
    task: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def base_key(self) -> tuple:
        """The rows on screen: a chart whose data is these rows redraws when this changes."""
        return (id(self.history), self.rows, self.start)


class ChartPanel(Panel):
    """A panel whose content is drawn from the run's step rows through a derived store it owns."""

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(title, id=id)
        self.summary = view.HistorySummary()
        self.lock = threading.Lock()
        self._waiting = False
        self._prepared: tuple[int, int] = (0, 0)  # (id of the history, rows) the store was last extended to

    # -- the derived store ---------------------------------------------------------------
    def prepare(self, history: Any, rows: int, stop: threading.Event | None = None) -> None:
        """Extend the derived store to the first ``rows`` rows (called on the ingest thread),
        a stretch at a time, so a monitor closed meanwhile does not wait for the rest."""
        done = rows - self.behind(history, rows)
        while done < rows:
            if stop is not None and stop.is_set():
                return
            done = min(done + PREPARE_STEP_ROWS, rows) if done else min(PREPARE_STEP_ROWS, rows)
            with self.lock:
                self._extend(history, done)
                self._prepared = (id(history), done)
        with self.lock:
            self._prepared = (id(history), rows)

    def behind(self, history: Any, rows: int) -> int:
        """Rows the store still lacks for ``rows`` rows of ``history`` (all of them for a
        history it has not seen)."""
        seen, done = self._prepared
        return rows - done if seen == id(history) and done <= rows else rows

    def _extend(self, history: Any, rows: int) -> None:
        """What :meth:`prepare` computes; the panel's draw reads the same stores."""

    def derived_ready(self) -> None:
        """The ingest worker caught the store up: draw what had to wait."""
        if self._waiting:
            self._waiting = False
            self.refresh()

    def show_rows(self, key: Hashable, frame: Frame, draw) -> bool:
        """Like :meth:`Panel.show`, drawing under the store's lock; while the ingest worker
        holds it, the panel says it is summarising instead of stalling the UI."""

        def guarded(width: int, height: int) -> RenderableType:
            # A long stretch of rows not yet summarised (a replay opened at the end of a long
            # run) is left to the ingest worker: the UI thread summarises only what a redraw
            # can afford, and says what it waits for meanwhile.
            if self.behind(frame.history, frame.rows) > UI_SUMMARY_ROWS or not self.lock.acquire(blocking=False):
                self._waiting = True
                return Text(f"summarising {frame.rows:,} steps...", style="bright_black")
            try:
                return draw(width, height)
            finally:
                self.lock.release()

        return self.show(key, guarded)

    def update_frame(self, frame: Frame) -> None:
        """Draw this frame's rows when they differ from the last drawn."""
        raise NotImplementedError


class LossPanel(ChartPanel):
    """Total loss and its components, the constant baseline, val Dice per epoch."""

    def _extend(self, history: Any, rows: int) -> None:
        for name in history.schema.loss[:1]:
            self.summary.column(history, f"loss/{name}", 0, rows)

    def update_frame(self, frame: Frame) -> None:
        history, rows, start = frame.history, frame.rows, frame.start
        base_line = view.loss_baseline(history)
        baseline = base_line.loss if base_line is not None else None
        channel = base_line.channel if base_line is not None else ch.LOSS_TOTAL
        label = "all steps" if frame.window_steps is None else f"last {frame.window_steps:,} steps"
        self.border_subtitle = f"{label} (z zooms)"
        markers = frame.markers
        self.show_rows(
            (*frame.base_key, len(history.epochs), baseline, channel, len(markers)), frame,
            lambda w, h: panels.render_loss(history, self.summary, rows, start, w, h, baseline, markers, channel),
        )


class GradientsPanel(ChartPanel):
    """Gradient norm per layer group, shallow to deep, and the explosion count."""

    def _groups(self, history: Any) -> list:
        height = self.content_size.height or 10
        return view.layer_groups(history.schema.grad, max(height - 1, 1))

    def _extend(self, history: Any, rows: int) -> None:
        if history.schema.grad:
            self.summary.group_columns(history, self._groups(history), 0, rows)

    def behind(self, history: Any, rows: int) -> int:
        """Rows whose group norms are missing for the groups this panel's height shows."""
        if not history.schema.grad:
            return 0
        return max(rows - self.summary.group_norms.rows_done(history, self._groups(history)), 0)

    def update_frame(self, frame: Frame) -> None:
        history, rows, start = frame.history, frame.rows, frame.start
        self.show_rows(frame.base_key, frame,
                       lambda w, h: panels.render_gradients(history, self.summary, rows, start, w, h))


class OutputsPanel(ChartPanel):
    """Output range before and after the activation."""

    def _extend(self, history: Any, rows: int) -> None:
        if history.schema.out:
            self.summary.column(history, f"out/{history.schema.out[0]}", 0, rows)

    def update_frame(self, frame: Frame) -> None:
        history, rows, start = frame.history, frame.rows, frame.start
        self.show_rows(frame.base_key, frame,
                       lambda w, h: panels.render_outputs(history, self.summary, rows, start, w, h))


class OptimizerPanel(ChartPanel):
    """lr, loss weights, pos_weight, clip, the update ratio, and where a setting changed."""

    def _extend(self, history: Any, rows: int) -> None:
        if history.schema.opt:
            self.summary.column(history, f"opt/{history.schema.opt[0]}", 0, rows)

    def update_frame(self, frame: Frame) -> None:
        history, rows, start, markers = frame.history, frame.rows, frame.start, frame.markers
        self.show_rows((*frame.base_key, len(markers)), frame,
                       lambda w, h: panels.render_optimizer(history, self.summary, rows, start, w, h, markers))


class DatasetPanel(Panel):
    """The seed's dataset check."""

    def update_frame(self, frame: Frame) -> None:
        report = frame.history.dataset
        self.show((id(report),), lambda w, h: panels.render_dataset(report))


class PreviewPanel(Panel):
    """The newest validation image, its target and the prediction."""

    def update_frame(self, frame: Frame) -> None:
        previews = frame.history.previews
        preview = previews[-1] if previews else None
        self.show((id(preview),), lambda w, h: panels.render_preview(preview, w, h))


class MatrixPanel(Panel):
    """The seed's diagnosis matrix with the nearest row highlighted."""

    def update_frame(self, frame: Frame) -> None:
        match = frame.diagnosis.matrix if frame.diagnosis is not None else None
        task = frame.task
        self.show((id(match), task), lambda w, h: panels.render_matrix(match, task, w))


class EventsPanel(Panel):
    """The run's events, this monitor's commands with their fate, its own notes, the fix trials."""

    def update_events(self, events: Sequence, commands: Sequence, notes: Sequence, trials: Sequence,
                      version: Hashable) -> None:
        """Show these lines (redrawn when ``version`` or the trials change)."""
        key = (version, len(events), tuple(t.summary for t in trials))
        lines = None

        def draw(w: int, h: int) -> Text:
            nonlocal lines
            if lines is None:
                lines = panels.event_lines(events, commands, notes, trials)
            return panels.render_events(lines, w, h)

        self.show(key, draw)


CHART_PANELS = (LossPanel, GradientsPanel, OutputsPanel, OptimizerPanel)
