"""The comparison screen: one channel of every run overlaid, the run table, commands to runs.

Layout, top to bottom: a header line (runs, channel, x axis, grouping, zoom, command
target), the chart, its legend, one line of notes (acknowledgements, exports), the run table
and the key bar. The chart is redrawn on a timer when the session's data changed; the table
keeps at least two lines, and gives up lines before the chart does when the terminal is
short (the chart keeps :data:`CHART_MIN_ROWS`).

Enter on a run closes this screen with :class:`OpenMonitor`; the command line then opens
that run's full monitor and comes back here when it is closed (the session, and the live
runs it follows, carry on meanwhile).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from ...protocol import channels as ch
from ...protocol.messages import Command
from . import series as se
from .chart import colour
from .runs import CompareRun, CompareSession, last_value
from .screens import ChannelScreen, NumberScreen
from .table import (
    BY_ALL_BUT_SEED,
    RunRow,
    cell,
    changes_of,
    csv_text,
    differing_keys,
    fit_columns,
    group_labels,
    groups_of,
    run_facts,
    shared_verdicts,
    table_columns,
)
from .view import Curve, build_chart, legend_of, render_legend, zoom_name

CHART_MIN_ROWS = 8
CHART_HZ = 2.0
FIXED_ROWS = 4  # header, notes, footer, and at least one legend line


@dataclass(frozen=True)
class OpenMonitor:
    """What the screen returns when the user asked for one run's full monitor."""

    number: int


@dataclass
class CompareState:
    """What the user chose; kept outside the screen so it survives a visit to a monitor."""

    channel: str = ch.LOSS_TOTAL
    mode: str = "step"
    zoom: int = 0
    group_by: str | None = None
    to_group: bool = False  # commands go to the selected run's whole group
    selected: int = 1
    notes: list[tuple[int, str]] = field(default_factory=list)  # (acks sent before it, text)


def run_row(run: CompareRun) -> RunRow:
    """The table row of one run, from its history and its latest diagnosis."""
    history = run.current
    if history is None:
        return RunRow(run.number, run.label, run.target.kind, run.state(), 0, math.nan, math.nan, math.nan, math.nan,
                      {}, (), ())
    facts = run_facts(history)
    verdicts = tuple(v.code for v in run.verdicts)
    if not verdicts and any(w.startswith("diagnosis failed") for w in run.warnings):
        verdicts = ("diagnosis failed",)
    return RunRow(run.number, run.label, run.target.kind, run.state(), facts["steps"], facts["loss_now"],
                  facts["best_dice"], facts["last_dice"], facts["steps_per_s"], dict(history.schema.config),
                  verdicts, changes_of(history, run.trials),
                  tuple(code for code in run.raised if code not in verdicts))


def run_curve(run: CompareRun, channel: str, mode: str) -> Curve:
    """The run's points for ``channel`` and its changes as markers."""
    history = run.current
    if history is None:
        return Curve(run.number, run.label, np.zeros(0), np.zeros(0))
    x, y = se.run_series(history, channel, mode)
    markers = tuple((se.x_of_step(history, change.step, mode), change.outcome)
                    for change in changes_of(history, run.trials))
    return Curve(run.number, run.label, x, y, markers)


class CompareApp(App[Any]):
    """Several runs, live and recorded, on one screen."""

    TITLE = "octa-tui compare"
    CSS = """
    #header { height: 1; background: $boost; }
    #chart { height: 12; }
    #legend { height: 1; }
    #notes { height: 1; color: $text-muted; }
    #runs { height: 8; }
    """
    BINDINGS = [
        Binding("q", "quit_compare", "Quit"),
        Binding("c", "pick_channel", "Channel"),
        Binding("x", "cycle_x", "x axis"),
        Binding("z", "zoom", "Zoom"),
        Binding("g", "cycle_group", "Group"),
        Binding("a", "toggle_target", "Run/group"),
        Binding("right_square_bracket", "lr_scale(2.0)", "lr x2"),
        Binding("left_square_bracket", "lr_scale(0.5)", "lr /2"),
        Binding("r", "prompt_lr", "Set lr"),
        Binding("space", "pause_resume", "Pause/resume"),
        Binding("k", "checkpoint", "Checkpoint"),
        Binding("e", "export_csv", "CSV"),
        Binding("s", "export_svg", "SVG"),
        Binding("enter", "open_monitor", "Open run", show=False),
    ]

    def __init__(self, session: CompareSession, state: CompareState | None = None, *, export_dir: str = ".",
                 chart_hz: float = CHART_HZ) -> None:
        super().__init__()
        self.session = session
        self.state = state or CompareState()
        self.export_dir = Path(export_dir)
        self.chart_hz = chart_hz
        self.rows: list[RunRow] = []
        self.chart_view = None
        self._drawn: tuple | None = None
        self._table_cells: tuple | None = None
        self._verified = False
        self._legend_lines = 1
        self._said: set[tuple[int, str]] = set()
        self._chart_rows = 12
        self.first_frame_at: float | None = None
        channels = self.channels()
        if self.state.channel not in channels and channels:
            self.state.channel = channels[0]

    # --- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static("", id="header")
        yield Static("", id="chart")
        yield Static("", id="legend")
        yield Static("", id="notes")
        table: DataTable = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Footer()

    def on_mount(self) -> None:
        self._layout()
        self.refresh_view()  # a resize event may have drawn this very frame already
        self.query_one("#runs", DataTable).focus()
        self.set_interval(1.0 / max(self.chart_hz, 0.2), self.refresh_view)
        self.call_after_refresh(self._first_frame)

    def _first_frame(self) -> None:
        self.first_frame_at = time.perf_counter()
        self.session.shown()
        if not self._verified:
            self._verified = True
            self.run_worker(self._verify, thread=True, name="verify", group="verify")

    def _verify(self) -> None:
        problems = self.session.verify()
        self.call_from_thread(self._verified_note, problems)

    def _verified_note(self, problems: list[str]) -> None:
        if problems:
            for problem in problems:
                self.note(problem)
            self.notify("a recording is damaged: see the notes line", severity="warning", timeout=8)

    def on_resize(self) -> None:
        self._layout()
        self.refresh_view()  # redraws only when the size differs from the last frame's

    def table_height(self, height: int, legend: int = 1) -> int:
        """Lines the run table gets in a terminal ``height`` lines tall (0: hidden) with a
        legend of ``legend`` lines; the chart keeps :data:`CHART_MIN_ROWS` and at least half
        of what is left, so the table collapses first."""
        remaining = height - FIXED_ROWS - (legend - 1)
        wanted = len(self.session.runs) + 1
        table = min(wanted, remaining - CHART_MIN_ROWS, max(2, remaining // 2))
        return table if table >= 2 else 0

    def _layout(self, legend: int | None = None) -> None:
        if legend is None:
            legend = self._legend_lines
        self._legend_lines = legend
        height = self.size.height
        table_h = self.table_height(height, legend)
        chart_h = max(3, height - FIXED_ROWS - (legend - 1) - table_h)
        table = self.query_one("#runs", DataTable)
        table.styles.height = table_h
        table.display = table_h > 0
        self.query_one("#legend", Static).styles.height = legend
        self.query_one("#chart", Static).styles.height = chart_h
        self._chart_rows = chart_h

    # --- drawing -----------------------------------------------------------------------
    def channels(self) -> list[str]:
        """Every channel some run has."""
        return se.channels_of([h for r in self.session.runs if (h := r.current) is not None])

    def groups(self) -> dict[str, list[int]] | None:
        """Run indices per group label, or None when runs are not grouped."""
        if self.state.group_by is None:
            return None
        configs = [dict(r.current.schema.config) if r.current is not None else {} for r in self.session.runs]
        return groups_of(group_labels(configs, self.state.group_by))

    def refresh_view(self, force: bool = False) -> None:
        """Redraw what changed since the last frame (everything when ``force``)."""
        s = self.state
        width = self.size.width
        key = (self.session.version, width, self.size.height, s.channel, s.mode, s.zoom, s.group_by, s.to_group,
               len(s.notes))
        if not force and key == self._drawn:
            return
        self._drawn = key
        curves = [run_curve(run, s.channel, s.mode) for run in self.session.runs]
        groups = self.groups()
        legend = render_legend(legend_of(curves, groups), width)
        self.query_one("#legend", Static).update(legend)
        lines = min(3, max(1, -(-legend.cell_len // max(1, width))))
        if lines != self._legend_lines:
            self._layout(lines)  # before drawing: the chart is drawn once, at its final height
        self.chart_view = build_chart(curves, width, self._chart_rows, mode=s.mode, zoom=s.zoom,
                                      log_scale=se.log_scaled(s.channel), groups=groups)
        self.query_one("#chart", Static).update(self.chart_view.text)
        self.rows = [run_row(run) for run in self.session.runs]
        for run in self.session.runs:  # a run's problems (lost link, torn file) said once each
            for warning in [*([run.error] if run.error else []), *run.warnings]:
                if (run.number, warning) not in self._said:
                    self._said.add((run.number, warning))
                    s.notes.append((len(self.session.acks), f"#{run.number} {run.label}: {warning}"))
        self._update_table()
        self._update_header()
        self._update_notes()

    def _update_header(self) -> None:
        s = self.state
        runs = self.session.runs
        live = sum(1 for r in runs if r.live)
        group = "none" if s.group_by is None else s.group_by
        target = "group" if s.to_group else "run"
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" compare ", style="bold reverse")
        text.append(f" {len(runs)} runs" + (f", {live} live " if live else " "))
        text.append(s.channel, style="bold")
        text.append(f" x:{s.mode} zoom:{zoom_name(s.mode, s.zoom)} group:{group} keys to:{target}")
        self.query_one("#header", Static).update(text)

    def _update_notes(self) -> None:
        acks = self.session.acks
        notes = self.state.notes
        if notes and notes[-1][0] >= len(acks):  # a note newer than the last command sent
            text = notes[-1][1]
        elif acks:
            latest = acks[-1].text
            text = " · ".join(a.describe() for a in acks[-8:] if a.text == latest)
        else:
            text = "Enter opens the selected run's monitor; c picks the channel, g groups runs"
        self.query_one("#notes", Static).update(Text(text, no_wrap=True, overflow="ellipsis"))

    def note(self, text: str) -> None:
        """Show one line on the notes line (until a newer note or command)."""
        self.state.notes.append((len(self.session.acks), text))
        self._update_notes()

    def _update_table(self) -> None:
        table = self.query_one("#runs", DataTable)
        configs = [dict(r.config) for r in self.rows]
        keys = differing_keys(configs)
        shared = shared_verdicts(self.rows)
        columns = fit_columns(self.rows, table_columns(keys), max(20, self.size.width - 2), shared)
        cells = tuple(tuple(cell(row, c.key, shared, len(self.rows)) for c in columns) for row in self.rows)
        headers = tuple(c.header for c in columns)
        if (headers, cells) == self._table_cells:
            return
        cursor = table.cursor_row if table.row_count else self.state.selected - 1
        if self._table_cells is None or self._table_cells[0] != headers:
            table.clear(columns=True)
            table.add_columns(*headers)
        else:
            table.clear()
        for row, texts in zip(self.rows, cells):
            styled = [Text(t, style=colour(row.number - 1) if i == 1 else "") for i, t in enumerate(texts)]
            table.add_row(*styled, key=str(row.number))
        self._table_cells = (headers, cells)
        if table.row_count:
            table.move_cursor(row=min(max(cursor, 0), table.row_count - 1))

    # --- selection ---------------------------------------------------------------------
    def selected_run(self) -> CompareRun:
        """The run under the table's cursor."""
        table = self.query_one("#runs", DataTable)
        index = table.cursor_row if table.row_count else 0
        index = min(max(index, 0), len(self.session.runs) - 1)
        self.state.selected = index + 1
        return self.session.runs[index]

    def target_numbers(self) -> list[int]:
        """The runs a command goes to: the selected one, or every run of its group."""
        run = self.selected_run()
        groups = self.groups()
        if not self.state.to_group or not groups:
            return [run.number]
        for members in groups.values():
            if run.number - 1 in members:
                return [i + 1 for i in members]
        return [run.number]

    # --- actions -----------------------------------------------------------------------
    def action_quit_compare(self) -> None:
        self.exit(None)

    def action_open_monitor(self) -> None:
        self.exit(OpenMonitor(self.selected_run().number))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_monitor()

    def action_pick_channel(self) -> None:
        def chosen(channel: str | None) -> None:
            if channel:
                self.state.channel = channel
                self.refresh_view(force=True)

        self.push_screen(ChannelScreen(self.channels(), self.state.channel), chosen)

    def set_channel(self, channel: str) -> None:
        """Show ``channel`` (what the channel list does; also for scripts and tests)."""
        self.state.channel = channel
        self.refresh_view(force=True)

    def action_cycle_x(self) -> None:
        modes = se.X_MODES
        self.state.mode = modes[(modes.index(self.state.mode) + 1) % len(modes)]
        self.refresh_view(force=True)

    def action_zoom(self) -> None:
        self.state.zoom = (self.state.zoom + 1) % 4
        self.refresh_view(force=True)

    def group_choices(self) -> list[str | None]:
        """No grouping, every differing key but the seed, then each differing key alone."""
        configs = [dict(r.current.schema.config) if r.current is not None else {} for r in self.session.runs]
        return [None, BY_ALL_BUT_SEED, *differing_keys(configs)]

    def action_cycle_group(self) -> None:
        choices = self.group_choices()
        i = choices.index(self.state.group_by) if self.state.group_by in choices else 0
        self.state.group_by = choices[(i + 1) % len(choices)]
        self.refresh_view(force=True)

    def action_toggle_target(self) -> None:
        self.state.to_group = not self.state.to_group
        if self.state.to_group and self.state.group_by is None:
            self.note("commands go to the selected run's group: choose a grouping with g")
        self.refresh_view(force=True)

    def send(self, make) -> None:
        """Send a command built per run by ``make`` to the target runs."""
        numbers = self.target_numbers()
        self.session.send(numbers, make)
        self.refresh_view(force=True)

    def action_lr_scale(self, factor: float) -> None:
        def make(run: CompareRun) -> Command:
            lr = last_value(run.current, ch.OPT_LR)
            if not math.isfinite(lr):
                raise ValueError("the run has not reported its lr; set one with r")
            return Command(op="set_lr", args={"lr": lr * factor})

        self.send(make)

    def action_prompt_lr(self) -> None:
        def chosen(value: float | None) -> None:
            if value is not None:
                self.send(lambda run: Command(op="set_lr", args={"lr": value}))

        who = "its group" if self.state.to_group else "the selected run"
        self.push_screen(NumberScreen(f"learning rate for {who}", "e.g. 1e-4"), chosen)

    def action_pause_resume(self) -> None:
        self.send(lambda run: Command(op="resume" if run.state() == "paused" else "pause"))

    def action_checkpoint(self) -> None:
        self.send(lambda run: Command(op="checkpoint"))

    def _export_path(self, suffix: str) -> Path:
        self.export_dir.mkdir(parents=True, exist_ok=True)
        return self.export_dir / f"compare-{time.strftime('%Y%m%d-%H%M%S')}{suffix}"

    def action_export_csv(self) -> str:
        path = self._export_path(".csv")
        keys = differing_keys([dict(r.config) for r in self.rows])
        path.write_text(csv_text(self.rows, keys), encoding="utf-8")
        self.note(f"run table written to {path}")
        return str(path)

    def action_export_svg(self) -> str:
        path = self._export_path(".svg")
        saved = self.save_screenshot(filename=path.name, path=str(path.parent))
        self.note(f"screen saved to {saved}")
        return saved
