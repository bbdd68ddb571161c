"""The monitor app: composition, layout and the global keys, over one injected
:class:`~octa_tui.tui.sources.Source`.

The parts it puts together:

- :mod:`~octa_tui.tui.workers`: the ingest loop (opens and polls the source, extends the
  panels' derived stores as rows arrive) and the diagnosis loop (the engine on its own
  schedule), each on its own thread, talking to the app only through
  :mod:`~octa_tui.tui.messages`;
- :mod:`~octa_tui.tui.panel_widgets`: one widget per panel, each owning its derived data and
  deciding when it needs to draw again;
- :mod:`~octa_tui.tui.commands`: every command the monitor sends, with its log and undo;
- :mod:`~octa_tui.tui.replay_bar`: the replay's bar and keys, mounted only for a replay.

The UI thread never waits on a socket: it redraws on timers (the header at ``refresh_hz``,
the charts at ``chart_hz``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid

from ..diagnosis import Severity
from ..protocol.messages import Command
from . import keys, panels, view
from .commands import CommandDesk
from .control import DICE_STEP, CommandInputError, CommandLog, exact_clip, exact_lr, exact_pos_weight
from .format import format_command, format_number
from .keys import CONTROL_ACTIONS, KEY_BAR_ORDER, LOSS_SETTING_ACTIONS, VERDICT_KEYS  # noqa: F401 - re-exported
from .messages import (  # noqa: F401 - re-exported: the app's messages were defined here before
    CommandFailed,
    CommandReplied,
    DerivedReady,
    Diagnosis,
    HistoryChanged,
    SourceFailed,
    SourceOpened,
    SourceVerified,
    VerdictsComputed,
    one_line,
)
from .panel_widgets import (
    UI_SUMMARY_ROWS,
    DatasetPanel,
    EventsPanel,
    Frame,
    GradientsPanel,
    LossPanel,
    MatrixPanel,
    OptimizerPanel,
    OutputsPanel,
    PreviewPanel,
)
from .replay_bar import REPLAY_ACTIONS, REPLAY_BINDINGS, ReplayBar  # noqa: F401 - REPLAY_ACTIONS re-exported
from .screens import ConfirmScreen, HelpScreen, PromptScreen
from .sources import Source, SourceStatus
from .typeahead import PROMPT_KEYS, TypeAhead  # noqa: F401 - re-exported
from .widgets import KeyBar, Panel, VerdictList
from .workers import INGEST_BATCH_S, POLL_TIMEOUT_S, DiagnosisLoop, IngestLoop  # noqa: F401

_Diagnosis = Diagnosis  # the name it had here
WINDOWS = (None, 10_000, 1_000, 100)
VERDICT_INTERVAL_S = 1.0
CHART_HZ = 2.5  # the panels of charts redraw at this rate; the header at ``refresh_hz``

# Panels in toggle-key order: (id, title).
PANELS = (
    ("loss", "Loss"),
    ("gradients", "Gradients"),
    ("verdicts", "Verdicts"),
    ("optimizer", "Optimizer"),
    ("outputs", "Outputs"),
    ("events", "Event log"),
    ("matrix", "Diagnosis matrix"),
    ("dataset", "Dataset"),
    ("preview", "Prediction preview"),
)
PANEL_CLASSES: dict[str, type] = {
    "loss": LossPanel, "gradients": GradientsPanel, "optimizer": OptimizerPanel, "outputs": OutputsPanel,
    "events": EventsPanel, "matrix": MatrixPanel, "dataset": DatasetPanel, "preview": PreviewPanel,
}
LAYOUTS = (
    # (min width, min height, columns, panels shown by default)
    (150, 36, 3, {"loss", "gradients", "verdicts", "optimizer", "outputs", "events", "matrix", "dataset", "preview"}),
    (100, 30, 3, {"loss", "gradients", "verdicts", "optimizer", "outputs", "events"}),
    (0, 0, 2, {"loss", "gradients", "verdicts", "events"}),
)


def default_diagnose(live: bool) -> Callable[[Any], tuple[list, Any]]:
    """A diagnose function backed by today's engine: history -> (verdicts, matrix match).

    A new one is made for each run (the engine's hysteresis is per run). A live run keeps
    the engine's hysteresis, so a verdict does not flicker; a replay or a history in memory
    shows what the rules say at the position shown (hold and release of one evaluation).
    """
    from ..diagnosis import Engine, match_matrix

    engine = Engine() if live else Engine(hold=1, release=1)

    def diagnose(history: Any) -> tuple[list, Any]:
        verdicts = engine.evaluate(history)
        try:
            matrix = match_matrix(history)
        except ValueError:
            matrix = None
        return verdicts, matrix

    return diagnose


class MonitorApp(App[int]):
    """The octa-tui monitor over one source (live trainer, replay, or memory)."""

    CSS_PATH = "monitor.tcss"
    TITLE = "octa-tui"

    BINDINGS = [
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_monitor", "Quit"),
        *REPLAY_BINDINGS,
        Binding("right_square_bracket", "lr_up", "lr x2"),
        Binding("left_square_bracket", "lr_down", "lr /2"),
        Binding("r", "prompt_lr", "Set lr"),
        Binding("d", "dice_up", f"Dice +{DICE_STEP}"),
        Binding("D", "dice_down", f"Dice -{DICE_STEP}"),
        Binding("w", "prompt_pos_weight", "pos_weight"),
        Binding("c", "prompt_clip", "Clip"),
        Binding("space", "pause_trainer", "Pause/resume"),
        Binding("k", "checkpoint", "Checkpoint"),
        Binding("f", "apply_fix", "Apply fix"),
        Binding("u", "undo_change", "Undo"),
        Binding("S", "stop_trainer", "Stop trainer"),
        Binding("z", "zoom", "Zoom"),
        *(
            Binding(str(i + 1), f"toggle_panel('{panel_id}')", f"Toggle the {title} panel", show=False)
            for i, (panel_id, title) in enumerate(PANELS)
        ),
    ]

    def __init__(
        self,
        source: Source,
        *,
        refresh_hz: float = 5.0,
        chart_hz: float = CHART_HZ,
        diagnose_factory: Callable[[bool], Callable[[Any], tuple[list, Any]]] | None = default_diagnose,
        verdict_interval_s: float = VERDICT_INTERVAL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.source = source
        self.refresh_hz = refresh_hz
        self.chart_hz = chart_hz
        self.diagnose_factory = diagnose_factory
        self.verdict_interval_s = verdict_interval_s
        self.clock = clock
        self.commands = CommandLog(clock=clock)
        self.desk = CommandDesk(source, self.commands, self._spawn, self.post_message)
        self.notes: list[tuple[float, str, str]] = []
        self._warned: set[str] = set()  # source warnings already in the event log
        self.window_index = 0
        self.opened = False
        self.failure = ""
        self.diagnosis: Diagnosis | None = None
        self.panel_override: dict[str, bool] = {}
        self._marker_cache = view.ChangeMarkerCache()
        self._markers_lock = threading.Lock()
        self._markers: tuple[int, list[int]] = (0, [])  # (id of the history, rows where a setting changed)
        self._stop = threading.Event()
        self._notes_version = 0
        self._loud_verdicts: dict[str, Any] = {}  # warn/crit verdicts last shown, by code
        self._loud_history = 0  # id() of the history they were for
        self._bound_schema: Any = None  # the run schema the shown keys were chosen for
        self._widgets: dict[str, Any] = {}
        self._first_frame = threading.Event()  # set once the first frame is on screen
        self._ingest = IngestLoop(source, self.post_message, self._stop, derive=self._derive,
                                  derive_after=self._first_frame)
        self._diagnosis_loop = (DiagnosisLoop(source, self.post_message, self._stop, diagnose_factory,
                                              verdict_interval_s, wait_for=self._first_frame)
                                if diagnose_factory is not None else None)
        self._replay_bar: ReplayBar | None = None
        self.typeahead = TypeAhead(self, PromptScreen)  # keys held while a prompt opens

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Panel("", id="header")
        with Grid(id="panels"):
            for panel_id, title in PANELS:
                if panel_id == "verdicts":
                    yield VerdictList(id="verdicts")
                else:
                    yield PANEL_CLASSES[panel_id](title, id=panel_id)
        if self.source.kind == "replay":
            yield ReplayBar(self.source, self.diagnose_factory, id="replay-bar")
        yield KeyBar(id="keys")

    def on_mount(self) -> None:
        # Kept by reference: while a modal screen is up, queries would search that screen.
        self._widgets = {pid: self.query_one(f"#{pid}") for pid, _ in PANELS}
        self._widgets["header"] = self.query_one("#header")
        self._widgets["keys"] = self.query_one("#keys", KeyBar)
        if self.source.kind == "replay":
            self._replay_bar = self.query_one("#replay-bar", ReplayBar)
        self._grid = self.query_one("#panels", Grid)
        self._apply_layout()
        # The header (step counter, speed, connection) follows closely; the charts, whose
        # redraw is most of the monitor's cost, at a calmer rate that still reads as live.
        self.set_interval(1.0 / max(self.refresh_hz, 0.5), partial(self._redraw, charts=False))
        self.set_interval(1.0 / max(min(self.chart_hz, self.refresh_hz), 0.5), self._redraw)
        self.call_after_refresh(self._first_frame.set)
        self.run_worker(self._ingest.run, thread=True, name="ingest", group="ingest")
        if self._diagnosis_loop is not None:
            self.run_worker(self._diagnosis_loop.run, thread=True, name="diagnosis", group="diagnosis")
        self._redraw()

    def on_resize(self) -> None:
        self._apply_layout()
        self._prepare_in_background()

    def _prepare_in_background(self) -> None:
        """Bring the visible panels' stores up to date off the UI thread (a panel just shown,
        a new size), then let the panels that waited draw."""
        history = self.source.history
        if history is None or not self.opened:
            return

        def prepare() -> None:
            self._derive(history)
            self.post_message(DerivedReady())

        self.run_worker(prepare, thread=True, group="prepare", exclusive=True)

    def _layout_for(self, width: int, height: int) -> tuple[int, set[str]]:
        for min_width, min_height, columns, shown in LAYOUTS:
            if width >= min_width and height >= min_height:
                return columns, shown
        return LAYOUTS[-1][2], LAYOUTS[-1][3]

    def _apply_layout(self) -> None:
        if not self._widgets:
            return  # a resize before mount
        columns, shown = self._layout_for(self.size.width, self.size.height)
        visible = [pid for pid, _ in PANELS if self.panel_override.get(pid, pid in shown)]
        self._grid.styles.grid_size_columns = max(1, min(columns, len(visible)))
        for panel_id, _ in PANELS:
            self._widgets[panel_id].display = panel_id in visible

    def panel_visible(self, panel_id: str) -> bool:
        """Whether a panel is on screen now."""
        return bool(self._widgets[panel_id].display)

    # --- workers -------------------------------------------------------------------------

    def _derive(self, history: Any) -> None:
        """On the ingest thread: bring the visible chart panels' stores and the change markers
        up to the history's rows, so a redraw only reads them."""
        rows = len(history.steps)
        with self._markers_lock:
            self._marker_cache.markers(history, rows)
        for panel_id, _ in PANELS:
            widget = self._widgets.get(panel_id)
            if widget is not None and widget.display and hasattr(widget, "prepare"):
                widget.prepare(history, rows, self._stop)

    def _spawn(self, work: Callable[[], None]) -> None:
        self.run_worker(work, thread=True, group="commands")

    def _stop_following(self) -> None:
        self._stop.set()
        self._ingest.done.wait(timeout=3.0)
        try:
            self.source.close()
        except Exception:  # noqa: BLE001 - closing must never stop the monitor from quitting
            pass

    async def on_unmount(self) -> None:
        self._stop_following()

    # --- messages ---------------------------------------------------------------------------

    def on_source_opened(self, message: SourceOpened) -> None:
        self.opened = True
        history = self.source.history
        if history is not None:
            self.note(f"opened run {history.run_id} ({history.schema.task}, {history.schema.model.name})", "cyan")
        self._note_warnings(self.source.status())
        self.refresh_bindings()
        self._redraw()
        # Slow checks (a recording's checksums) wait until the first frame is on screen.
        self.call_after_refresh(self.run_worker, self._verify_source, thread=True, name="verify", group="verify")

    def _verify_source(self) -> None:
        try:
            problems = self.source.verify()
        except Exception as err:  # noqa: BLE001 - a check that could not run is said, never skipped silently
            self.post_message(SourceVerified([], error=one_line(err)))
            return
        if problems is not None:
            self.post_message(SourceVerified(problems))

    def on_source_verified(self, message: SourceVerified) -> None:
        if message.error:
            self.note(f"could not check the recording's checksums: {message.error}", "bold red")
            self.notify(message.error, title="recording not checked", severity="warning", timeout=8)
        for problem in message.problems:
            self.note(problem, "bold red")
        if message.problems:
            self.notify("the recording is damaged: see the event log", severity="warning", timeout=8)
        elif not message.error:
            self.note("recording checked: every record's checksum holds", "bright_black")
        self._redraw(charts=False)

    def on_source_failed(self, message: SourceFailed) -> None:
        self.note(message.reason, "bold red")
        if message.fatal:
            self.failure = message.reason
            self.refresh_bindings()
        self._redraw()

    def on_history_changed(self, message: HistoryChanged) -> None:
        pass  # the redraw timer picks it up; the message wakes the loop

    def on_derived_ready(self, message: DerivedReady) -> None:
        for panel_id, _ in PANELS:
            widget = self._widgets.get(panel_id)
            if hasattr(widget, "derived_ready"):
                widget.derived_ready()

    def on_verdicts_computed(self, message: VerdictsComputed) -> None:
        result = message.diagnosis
        if result.history_id != id(self.source.history) and self.source.history is not None:
            return  # for a history no longer shown (a replay seeked back meanwhile)
        if result.error and (self.diagnosis is None or self.diagnosis.error != result.error):
            self.note(f"diagnosis failed: {result.error}", "bold red")
        self._log_verdict_changes(result)
        self.diagnosis = result
        self._widgets["verdicts"].show_verdicts(result.verdicts)
        self._redraw_keys()

    def _log_verdict_changes(self, result: Diagnosis) -> None:
        """Put each warning or critical verdict in the event log when it appears and when it
        clears, with the step: a fault that lasts a few seconds (an explosion in the first
        steps) leaves a trace after the panel has moved on. Not in a replay, where seeking
        back and forth would repeat them."""
        if result.error or self.source.kind == "replay":
            return
        loud = {v.code: v for v in result.verdicts if v.severity >= Severity.WARN}
        before = self._loud_verdicts if self._loud_history == result.history_id else {}
        self._loud_verdicts, self._loud_history = loud, result.history_id
        at = f"step {result.step:,}: " if result.step >= 0 else ""
        for code, verdict in loud.items():
            if code not in before or before[code].severity != verdict.severity:
                self.note(f"{at}{verdict.severity.name} {verdict.title}", "bold red" if verdict.severity >= Severity.CRIT else "yellow")
        for code, verdict in before.items():
            if code not in loud:
                self.note(f"{at}cleared: {verdict.title}", "green")

    def on_command_replied(self, message: CommandReplied) -> None:
        entry = self.desk.replied(message.request_id, message.reply)
        if entry is not None and not message.reply.ok:
            self.notify(entry.describe(), severity="error", timeout=6)
        self._redraw()

    def on_command_failed(self, message: CommandFailed) -> None:
        entry = self.desk.failed(message.request_id, message.reason)
        if entry is not None:
            self.notify(entry.describe(), severity="error", timeout=6)
        self._redraw()

    # --- drawing ----------------------------------------------------------------------------

    @property
    def window_steps(self) -> int | None:
        """How many of the newest steps the charts show (None: all)."""
        return WINDOWS[self.window_index]

    @property
    def _summary(self) -> view.HistorySummary:
        """The loss panel's summaries (what the loss chart is drawn from)."""
        return self._widgets["loss"].summary

    def _note_warnings(self, status: SourceStatus) -> None:
        """Put each of the source's warnings in the event log once, when it first appears."""
        for warning in status.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.note(warning, "bold yellow")

    def note(self, text: str, style: str = "") -> None:
        """Add a line of the monitor's own to the event log."""
        self.notes.append((self.clock(), text, style))
        self._notes_version += 1

    def _redraw(self, charts: bool = True) -> None:
        """Update the header, the key bar and the event log; with ``charts``, every other
        visible panel too (each draws again only when its data changed)."""
        if not self._widgets or not self.is_running:
            return
        status = self.source.status()
        if status.warnings:
            self._note_warnings(status)
        history = self.source.history
        if history is not None and history.schema is not self._bound_schema:
            # A new run's schema decides which loss-setting keys apply (see check_action).
            self._bound_schema = history.schema
            self.refresh_bindings()
        header = self._widgets["header"]
        if self.failure:
            facts_text = Text.assemble((" octa-tui ", "bold reverse"), ("  " + self.failure, "bold red"))
            header.show(("failed", self.failure), lambda w, h, t=facts_text: t)
        else:
            facts = panels.header_facts(history, status, **panels.source_end(self.source))
            header.show(facts, lambda w, h, f=facts: panels.render_header(f, w))
        self._redraw_keys()
        if self._replay_bar is not None:
            self._replay_bar.refresh()
        self._draw_events(history)
        if history is None or not charts:
            return
        rows = len(history.steps)
        markers = self._markers_for(history, rows)
        frame = Frame(history, rows, view.window_start(rows, self.window_steps), self.window_steps, markers,
                      self.diagnosis, history.schema.task)
        for panel_id, _ in PANELS:
            widget = self._widgets[panel_id]
            if panel_id not in ("verdicts", "events") and widget.display:
                widget.update_frame(frame)

    def _markers_for(self, history: Any, rows: int) -> list[int]:
        """The rows where a setting changed. A long stretch not yet scanned (a replay opened
        at its end) is left to the ingest worker; meanwhile the markers known so far are drawn."""
        cache = self._marker_cache
        behind = rows - cache.derived.rows if cache.derived.covers(history) else rows
        if behind <= UI_SUMMARY_ROWS and self._markers_lock.acquire(blocking=False):
            try:
                self._markers = (id(history), cache.markers(history, rows))
            finally:
                self._markers_lock.release()
        seen, markers = self._markers
        return [m for m in markers if m < rows] if seen == id(history) else []

    def _draw_events(self, history) -> None:
        if not self.panel_visible("events"):
            return
        events = list(history.events) if history is not None else []
        trial_list = self.diagnosis.trials if self.diagnosis is not None else []
        version = (id(history), self._notes_version, self.desk.version)
        self._widgets["events"].update_events(events, self.commands.entries, self.notes, trial_list, version)

    # --- keys: which work and matter now (see keys.py) ---------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Trainer keys are greyed out without a trainer (or in replay); replay keys are hidden
        when not replaying, and keys for a loss setting the run does not report are hidden."""
        return keys.availability(self, action)

    def key_bar_keys(self) -> list[tuple[str, str]]:
        """(key, what it does) of the keys that work and matter now, most useful first."""
        return keys.key_bar(self)

    def _redraw_keys(self) -> None:
        if self._widgets:
            self._widgets["keys"].show_keys(self.key_bar_keys())

    def binding_rows(self) -> list[tuple[str, str, str]]:
        """(key, description, availability) for the help screen, the keys that work now first."""
        return keys.help_rows(self)

    async def on_event(self, event) -> None:
        """Keys that follow a prompt key in a burst are held for the prompt (see typeahead.py)."""
        if isinstance(event, events.Key) and self.typeahead.intercept(event):
            return
        await super().on_event(event)

    def take_typeahead(self) -> list:
        """The keys held for a prompt that just opened (the prompt types them in)."""
        return self.typeahead.take()

    # --- keys: actions ----------------------------------------------------------------------

    def action_help(self) -> None:
        """Show every key."""
        self.push_screen(HelpScreen(self.binding_rows()))

    def action_quit_monitor(self) -> None:
        """Leave the monitor; a live trainer keeps running."""
        self.exit(0)

    def action_zoom(self) -> None:
        """Cycle the time window: everything, the last 10k, 1k, 100 steps."""
        self.window_index = (self.window_index + 1) % len(WINDOWS)
        self.notify(f"showing {'all steps' if self.window_steps is None else f'the last {self.window_steps:,} steps'}",
                    timeout=2)
        self._redraw()

    def action_toggle_panel(self, panel_id: str) -> None:
        """Show or hide one panel."""
        self.panel_override[panel_id] = not self.panel_visible(panel_id)
        self._apply_layout()
        self._prepare_in_background()
        self._redraw()

    def _settings(self) -> view.Settings:
        return self.desk.settings()

    def _build_and_send(self, build: Callable[[], Command]) -> None:
        try:
            command = build()
        except CommandInputError as err:
            self.note(f"not sent: {err}", "bold red")
            self.notify(str(err), severity="error", timeout=4)
            self._redraw()
            return
        self.send_command(command)

    def send_command(self, command: Command, *, is_undo: bool = False) -> None:
        """Send a validated command off the UI thread; the event log shows its fate."""
        self.desk.send(command, is_undo=is_undo)
        self._redraw()

    def action_lr_up(self) -> None:
        """Double the learning rate."""
        self._build_and_send(lambda: self.desk.lr_scaled(2.0))

    def action_lr_down(self) -> None:
        """Halve the learning rate."""
        self._build_and_send(lambda: self.desk.lr_scaled(0.5))

    def action_dice_up(self) -> None:
        """Dice weight +0.05 (BCE = 1 - Dice)."""
        self._build_and_send(lambda: self.desk.dice_shifted(DICE_STEP))

    def action_dice_down(self) -> None:
        """Dice weight -0.05 (BCE = 1 - Dice)."""
        self._build_and_send(lambda: self.desk.dice_shifted(-DICE_STEP))

    def _prompt(self, question: str, parse: Callable[[str], Command], current: float) -> None:
        value = format_number(current) if math.isfinite(current) else ""

        def sent(command: Command | None) -> None:
            if command is not None:
                self.send_command(command)

        self.push_screen(PromptScreen(question, parse, value=value), sent)

    def action_prompt_lr(self) -> None:
        """Type an exact learning rate."""
        self._prompt("learning rate (e.g. 1e-4):", exact_lr, self._settings().lr)

    def action_prompt_pos_weight(self) -> None:
        """Type pos_weight (the dataset report suggests background / foreground)."""
        history = self.source.history
        hint = ""
        if history is not None and history.dataset is not None:
            hint = f" (suggested {format_number(history.dataset.suggested_pos_weight)})"
        self._prompt(f"pos_weight{hint}:", exact_pos_weight, self._settings().pos_weight)

    def action_prompt_clip(self) -> None:
        """Type the gradient clipping norm (0 turns clipping off)."""
        self._prompt("clip norm (0 turns clipping off):", exact_clip, self._settings().clip)

    def action_pause_trainer(self) -> None:
        """Pause a running trainer, or resume a paused one."""
        paused = self.source.status().trainer_state == "paused"
        self.send_command(Command(op="resume" if paused else "pause"))

    def action_checkpoint(self) -> None:
        """Ask the trainer to save a checkpoint now."""
        self.send_command(Command(op="checkpoint"))

    def action_apply_fix(self) -> None:
        """Send the highlighted verdict's fix (all of its commands)."""
        verdict = self._widgets["verdicts"].selected_verdict()
        if verdict is None:
            self.notify("no verdict selected", timeout=3)
            return
        if not verdict.fixes:
            text = verdict.instruction or "this verdict has no fix that can be applied live"
            self.note(f"{verdict.title}: {text}", "cyan")
            self.notify(text, timeout=5)
            self._redraw()
            return
        for command in verdict.fixes:
            self.note(f"applying the fix for '{verdict.title}': {format_command(command.op, dict(command.args))}",
                      "magenta")
            self.send_command(Command(op=command.op, args=dict(command.args)))

    def action_undo_change(self) -> None:
        """Send the old value of the last applied change back."""
        if self.desk.undo() is None:
            self.notify("nothing to undo", timeout=3)
            return
        self._redraw()

    def action_stop_trainer(self) -> None:
        """Stop the trainer cleanly (asks first)."""

        def answered(yes: bool | None) -> None:
            if yes:
                self.send_command(Command(op="stop"))

        self.push_screen(ConfirmScreen("Stop the trainer? Training ends (a checkpoint is kept)."), answered)

    # --- replay keys: the bar, mounted only for a replay, does them ---------------------------

    def action_play_pause(self) -> None:
        """Play or pause the replay."""
        if self._replay_bar is not None:
            self._replay_bar.play_pause()

    def action_replay_speed(self) -> None:
        """Cycle the replay speed 1/4/16/64x."""
        if self._replay_bar is not None:
            self._replay_bar.cycle_speed()

    def action_seek_back(self) -> None:
        """Back 5% of the recording."""
        if self._replay_bar is not None:
            self._replay_bar.seek_by(-0.05)

    def action_seek_forward(self) -> None:
        """Forward 5% of the recording."""
        if self._replay_bar is not None:
            self._replay_bar.seek_by(0.05)

    def action_seek_start(self) -> None:
        """To the start of the recording."""
        if self._replay_bar is not None:
            self._replay_bar.seek_to("start")

    def action_seek_end(self) -> None:
        """To the end of the recording."""
        if self._replay_bar is not None:
            self._replay_bar.seek_to("end")

    def action_next_event(self) -> None:
        """Jump to the next event (a command applied, a checkpoint, a warning)."""
        if self._replay_bar is not None:
            self._replay_bar.next_event()

    def action_next_verdict(self) -> None:
        """Jump to the first step where the verdicts change (the speed stays as it was)."""
        if self._replay_bar is not None:
            self._replay_bar.next_verdict()

    @property
    def _verdict_search(self) -> bool:
        """Whether ``v`` is still looking for the next change."""
        return self._replay_bar is not None and self._replay_bar.searching


def _one_line(err: BaseException) -> str:
    return one_line(err)


def make_app(source: Source, **options: Any) -> MonitorApp:
    """Build the monitor over ``source``; the CLI and the tests both come through here."""
    return MonitorApp(source, **options)


STYLES_PATH = Path(__file__).with_name("monitor.tcss")
