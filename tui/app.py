"""The monitor app: panels over one injected :class:`~octa_tui.tui.sources.Source`.

A worker thread opens the source, polls it into the run history and posts one
:class:`HistoryChanged` per batch; every second it also runs the diagnosis engine there and
posts the verdicts. The UI thread never waits on a socket: it redraws on timers (the header
at ``refresh_hz``, the charts at ``chart_hz``), only the panels whose data changed, and sends
commands from short-lived worker threads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.widgets import Footer

from ..diagnosis import Severity
from ..diagnosis.trial import trials as fix_trials
from ..protocol import channels as ch
from ..protocol.messages import Command, Reply
from . import panels, view
from .control import (
    DICE_STEP,
    CommandInputError,
    CommandLog,
    exact_clip,
    exact_lr,
    exact_pos_weight,
    restoring_command,
    scale_lr,
    shift_dice_weight,
)
from .format import format_command, format_number
from .screens import ConfirmScreen, HelpScreen, PromptScreen
from .sources import Source, SourceStatus
from .widgets import Panel, VerdictList

WINDOWS = (None, 10_000, 1_000, 100)
VERDICT_INTERVAL_S = 1.0
POLL_TIMEOUT_S = 0.05
# A poll that brought something is followed by the next one no sooner than this: a 1k
# steps/s stream is then drained 20 times a second, not once per message (each drain and each
# wake-up of the UI loop costs more than decoding the steps it carries).
INGEST_BATCH_S = 0.05
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
LAYOUTS = (
    # (min width, min height, columns, panels shown by default)
    (150, 36, 3, {"loss", "gradients", "verdicts", "optimizer", "outputs", "events", "matrix", "dataset", "preview"}),
    (100, 30, 3, {"loss", "gradients", "verdicts", "optimizer", "outputs", "events"}),
    (0, 0, 2, {"loss", "gradients", "verdicts", "events"}),
)

CONTROL_ACTIONS = frozenset(
    {"lr_up", "lr_down", "prompt_lr", "dice_up", "dice_down", "prompt_pos_weight", "prompt_clip", "pause_trainer",
     "checkpoint", "apply_fix", "undo_change", "stop_trainer"}
)
# Keys that change a loss setting: offered only when the run reports that setting.
LOSS_SETTING_ACTIONS = {"dice_up": ch.OPT_DICE_WEIGHT, "dice_down": ch.OPT_DICE_WEIGHT,
                        "prompt_pos_weight": ch.OPT_POS_WEIGHT}
REPLAY_ACTIONS = frozenset(
    {"play_pause", "replay_speed", "seek_back", "seek_forward", "seek_start", "seek_end", "next_event", "next_verdict"}
)


# --- messages (small, named for what happened) ---------------------------------------------


class SourceOpened(Message):
    """The source is connected or loaded."""


class SourceFailed(Message):
    """Opening or polling the source failed; ``reason`` is shown to the user."""

    def __init__(self, reason: str, fatal: bool) -> None:
        super().__init__()
        self.reason = reason
        self.fatal = fatal


class SourceVerified(Message):
    """The source's slow checks finished: ``problems`` found (empty: all good), or the
    ``error`` that stopped the check."""

    def __init__(self, problems: list[str], error: str = "") -> None:
        super().__init__()
        self.problems = problems
        self.error = error


class HistoryChanged(Message):
    """New steps or records arrived (one per batch; a newer one replaces a queued one)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, HistoryChanged)


@dataclass
class _Diagnosis:
    verdicts: list
    matrix: Any
    history_id: int
    error: str = ""
    trials: list = field(default_factory=list)  # fix trials: each change and what followed it
    step: int = -1  # the newest step of the history the verdicts are for


class VerdictsComputed(Message):
    """The engine's verdicts and the matrix match for the history as it is now."""

    def __init__(self, diagnosis: _Diagnosis) -> None:
        super().__init__()
        self.diagnosis = diagnosis

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, VerdictsComputed)


class CommandReplied(Message):
    """The trainer answered a command."""

    def __init__(self, request_id: str, reply: Reply) -> None:
        super().__init__()
        self.request_id = request_id
        self.reply = reply


class CommandFailed(Message):
    """A command got no answer (timeout, lost connection, refused before sending)."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__()
        self.request_id = request_id
        self.reason = reason


def _newest_step(history: Any) -> int:
    """The step number of the newest row of ``history`` (-1 when it has none yet)."""
    steps = history.steps.step
    return int(steps[-1]) if len(steps) else -1


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
        Binding("p", "play_pause", "Play/pause"),
        Binding("s", "replay_speed", "Speed"),
        Binding("left", "seek_back", "Back 5%", show=False),
        Binding("right", "seek_forward", "Forward 5%", show=False),
        Binding("home", "seek_start", "Start", show=False),
        Binding("end", "seek_end", "End", show=False),
        Binding("n", "next_event", "Next event"),
        Binding("v", "next_verdict", "Next verdict"),
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
        self.notes: list[tuple[float, str, str]] = []
        self._warned: set[str] = set()  # source warnings already in the event log
        self.window_index = 0
        self.opened = False
        self.failure = ""
        self.diagnosis: _Diagnosis | None = None
        self.panel_override: dict[str, bool] = {}
        self._summary = view.HistorySummary()
        self._marker_cache = view.ChangeMarkerCache()
        self._stop = threading.Event()
        self._follow_done = threading.Event()
        self._events_version = 0
        self._loud_verdicts: dict[str, Any] = {}  # warn/crit verdicts last shown, by code
        self._loud_history = 0  # id() of the history they were for
        self._bound_schema: Any = None  # the run schema the shown keys were chosen for
        self._columns = 0
        self._verdict_jump: int | None = None
        self._widgets: dict[str, Any] = {}

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Panel("", id="header")
        with Grid(id="panels"):
            for panel_id, title in PANELS:
                if panel_id == "verdicts":
                    yield VerdictList(id="verdicts")
                else:
                    yield Panel(title, id=panel_id)
        yield Footer()

    def on_mount(self) -> None:
        # Kept by reference: while a modal screen is up, queries would search that screen.
        self._widgets = {pid: self.query_one(f"#{pid}") for pid, _ in PANELS}
        self._widgets["header"] = self.query_one("#header")
        self._grid = self.query_one("#panels", Grid)
        self._apply_layout()
        # The header (step counter, speed, connection) follows closely; the charts, whose
        # redraw is most of the monitor's cost, at a calmer rate that still reads as live.
        self.set_interval(1.0 / max(self.refresh_hz, 0.5), partial(self._redraw, charts=False))
        self.set_interval(1.0 / max(min(self.chart_hz, self.refresh_hz), 0.5), self._redraw)
        self.run_worker(self._follow, thread=True, name="follow", group="follow")
        self._redraw()

    def on_resize(self) -> None:
        self._apply_layout()

    def _layout_for(self, width: int, height: int) -> tuple[int, set[str]]:
        for min_width, min_height, columns, shown in LAYOUTS:
            if width >= min_width and height >= min_height:
                return columns, shown
        return LAYOUTS[-1][2], LAYOUTS[-1][3]

    def _apply_layout(self) -> None:
        if not self._widgets:
            return  # a resize before mount
        columns, shown = self._layout_for(self.size.width, self.size.height)
        grid = self._grid
        visible = [pid for pid, _ in PANELS if self.panel_override.get(pid, pid in shown)]
        columns = max(1, min(columns, len(visible)))
        grid.styles.grid_size_columns = columns
        for panel_id, _ in PANELS:
            self._widgets[panel_id].display = panel_id in visible

    def panel_visible(self, panel_id: str) -> bool:
        """Whether a panel is on screen now."""
        return bool(self._widgets[panel_id].display)

    # --- the worker thread: follow the source, diagnose ----------------------------------

    def _follow(self) -> None:
        try:
            self.source.open()
        except Exception as err:  # noqa: BLE001 - every failure becomes one line on screen
            self.post_message(SourceFailed(_one_line(err), fatal=True))
            self._follow_done.set()
            return
        self.post_message(SourceOpened())
        diagnose = None
        diagnosed_history = None
        last_diagnosis = -math.inf
        dirty = True
        failures = 0
        try:
            while not self._stop.is_set():
                polled_at = time.monotonic()
                try:
                    changed = self.source.poll(POLL_TIMEOUT_S)
                    failures = 0
                except Exception as err:  # noqa: BLE001
                    failures += 1
                    if failures == 1:
                        self.post_message(SourceFailed(_one_line(err), fatal=False))
                    time.sleep(0.5)
                    continue
                if changed:
                    dirty = True
                    self.post_message(HistoryChanged())
                    # Let the next batch gather (a poll that took that long goes straight on).
                    self._stop.wait(max(0.0, polled_at + INGEST_BATCH_S - time.monotonic()))
                history = self.source.history
                if history is None or self.diagnose_factory is None:
                    continue
                now = time.monotonic()
                if history is not diagnosed_history:
                    diagnose, diagnosed_history, dirty = self.diagnose_factory(self.source.kind == "live"), history, True
                if dirty and now - last_diagnosis >= self.verdict_interval_s:
                    last_diagnosis, dirty = now, False
                    try:
                        step = _newest_step(history)
                        verdicts, matrix = diagnose(history)
                        result = _Diagnosis(list(verdicts), matrix, id(history), trials=fix_trials(history), step=step)
                    except Exception as err:  # noqa: BLE001
                        result = _Diagnosis([], None, id(history), error=_one_line(err))
                    self.post_message(VerdictsComputed(result))
        finally:
            self._follow_done.set()

    def _stop_following(self) -> None:
        self._stop.set()
        self._follow_done.wait(timeout=3.0)
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
            self.post_message(SourceVerified([], error=_one_line(err)))
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

    def on_verdicts_computed(self, message: VerdictsComputed) -> None:
        result = message.diagnosis
        if result.error and (self.diagnosis is None or self.diagnosis.error != result.error):
            self.note(f"diagnosis failed: {result.error}", "bold red")
        self._log_verdict_changes(result)
        self.diagnosis = result
        self._widgets["verdicts"].show_verdicts(result.verdicts)
        self._check_verdict_jump(result)

    def _log_verdict_changes(self, result: _Diagnosis) -> None:
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
        entry = self.commands.replied(message.request_id, message.reply)
        if entry is not None and not message.reply.ok:
            self.notify(entry.describe(), severity="error", timeout=6)
        if entry is not None and entry.is_undo and message.reply.ok:
            for earlier in reversed(self.commands.entries):
                if earlier.restore is not None and earlier.restore.op == entry.command.op and not earlier.undone \
                        and not earlier.is_undo and earlier.status == "applied":
                    earlier.undone = True
                    break
        self._events_version += 1
        self._redraw()

    def on_command_failed(self, message: CommandFailed) -> None:
        entry = self.commands.failed(message.request_id, message.reason)
        if entry is not None:
            self.notify(entry.describe(), severity="error", timeout=6)
        self._events_version += 1
        self._redraw()

    # --- drawing ----------------------------------------------------------------------------

    @property
    def window_steps(self) -> int | None:
        """How many of the newest steps the charts show (None: all)."""
        return WINDOWS[self.window_index]

    def _note_warnings(self, status: SourceStatus) -> None:
        """Put each of the source's warnings in the event log once, when it first appears."""
        for warning in status.warnings:
            if warning not in self._warned:
                self._warned.add(warning)
                self.note(warning, "bold yellow")

    def note(self, text: str, style: str = "") -> None:
        """Add a line of the monitor's own to the event log."""
        self.notes.append((self.clock(), text, style))
        self._events_version += 1

    def _redraw(self, charts: bool = True) -> None:
        """Update the header and the event log; with ``charts``, every other visible panel too.

        A panel is drawn again only when the key naming its data changed.
        """
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
            facts = panels.header_facts(history, status)
            header.show(facts, lambda w, h, f=facts: panels.render_header(f))
        self._draw_events(history)
        if history is None or not charts:
            return
        rows = len(history.steps)
        start = view.window_start(rows, self.window_steps)
        base = (id(history), rows, start)
        window_label = "all steps" if self.window_steps is None else f"last {self.window_steps:,} steps"
        markers = self._marker_cache.markers(history, rows)
        if self.panel_visible("loss"):
            baseline = view.constant_baseline(history)
            loss = self._widgets["loss"]
            loss.border_subtitle = f"{window_label} (z zooms)"
            loss.show(
                (*base, len(history.epochs), baseline, len(markers)),
                lambda w, h: panels.render_loss(history, self._summary, rows, start, w, h, baseline, markers),
            )
        if self.panel_visible("gradients"):
            self._widgets["gradients"].show(
                base, lambda w, h: panels.render_gradients(history, self._summary, rows, start, w, h)
            )
        if self.panel_visible("outputs"):
            self._widgets["outputs"].show(
                base, lambda w, h: panels.render_outputs(history, self._summary, rows, start, w, h)
            )
        if self.panel_visible("optimizer"):
            self._widgets["optimizer"].show(
                (*base, len(markers)), lambda w, h: panels.render_optimizer(history, self._summary, rows, start, w, h, markers)
            )
        if self.panel_visible("dataset"):
            report = history.dataset
            self._widgets["dataset"].show((id(report),), lambda w, h: panels.render_dataset(report))
        if self.panel_visible("preview"):
            preview = history.previews[-1] if history.previews else None
            self._widgets["preview"].show(
                (id(preview),), lambda w, h: panels.render_preview(preview, w, h)
            )
        if self.panel_visible("matrix"):
            match = self.diagnosis.matrix if self.diagnosis is not None else None
            task = history.schema.task
            self._widgets["matrix"].show((id(match), task), lambda w, h: panels.render_matrix(match, task))

    def _draw_events(self, history) -> None:
        if not self.panel_visible("events"):
            return
        events = list(history.events) if history is not None else []
        trial_list = self.diagnosis.trials if self.diagnosis is not None else []
        key = (id(history), len(events), self._events_version, tuple(t.summary for t in trial_list))
        lines = None

        def draw(w: int, h: int) -> Text:
            nonlocal lines
            if lines is None:
                lines = panels.event_lines(events, self.commands.entries, self.notes, trial_list)
            return panels.render_events(lines, w, h)

        self._widgets["events"].show(key, draw)

    # --- keys: availability -------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Trainer keys are greyed out without a trainer (or in replay); replay keys are hidden
        when not replaying, and keys for a loss setting the run does not report (Dice weight,
        pos_weight of a heatmap run) are hidden."""
        if action in CONTROL_ACTIONS:
            if action in LOSS_SETTING_ACTIONS and not self._run_has(LOSS_SETTING_ACTIONS[action]):
                return False  # hidden: e.g. a heatmap run's MSE has no Dice weight or pos_weight to change
            return True if self._can_control() else None
        if action in REPLAY_ACTIONS:
            return self.source.kind == "replay" and self.opened
        return True

    def _can_control(self) -> bool:
        return self.source.can_control and self.opened and not self.failure

    def _run_has(self, channel: str) -> bool:
        """Whether the run reports ``channel`` (True before its schema is known)."""
        history = self.source.history
        return history is None or history.schema.has(channel)

    def binding_rows(self) -> list[tuple[str, str, str]]:
        """(key, description, availability) of every binding, for the help screen."""
        rows = []
        for binding in self.BINDINGS:
            assert isinstance(binding, Binding)
            action = binding.action.split("(")[0]
            if action in LOSS_SETTING_ACTIONS and not self._run_has(LOSS_SETTING_ACTIONS[action]):
                when = "with a trainer whose loss has this setting  (not this run)"
            elif action in CONTROL_ACTIONS:
                when = "with a trainer" + ("" if self._can_control() else "  (not now)")
            elif action in REPLAY_ACTIONS:
                when = "in replay" + ("" if self.source.kind == "replay" else "  (not now)")
            else:
                when = "always"
            rows.append((self.get_key_display(binding), binding.description, when))
        return rows

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
        self._redraw()

    def _settings(self) -> view.Settings:
        history = self.source.history
        if history is None:
            nan = math.nan
            return view.Settings(nan, nan, nan, nan, nan)
        return view.current_settings(history)

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
        restore = None if is_undo else restoring_command(command.op, self._settings())
        entry = self.commands.sent(command, restore, is_undo=is_undo)
        self._events_version += 1
        self.run_worker(partial(self._request, entry.request_id, entry.command), thread=True, group="commands")
        self._redraw()

    def _request(self, request_id: str, command: Command) -> None:
        try:
            reply = self.source.request(command)
        except Exception as err:  # noqa: BLE001 - a failed send is shown, never raised
            self.post_message(CommandFailed(request_id, _one_line(err)))
            return
        self.post_message(CommandReplied(request_id, reply))

    def action_lr_up(self) -> None:
        """Double the learning rate."""
        self._build_and_send(lambda: scale_lr(self._settings(), 2.0))

    def action_lr_down(self) -> None:
        """Halve the learning rate."""
        self._build_and_send(lambda: scale_lr(self._settings(), 0.5))

    def action_dice_up(self) -> None:
        """Dice weight +0.05 (BCE = 1 - Dice)."""
        self._build_and_send(lambda: shift_dice_weight(self._settings(), DICE_STEP))

    def action_dice_down(self) -> None:
        """Dice weight -0.05 (BCE = 1 - Dice)."""
        self._build_and_send(lambda: shift_dice_weight(self._settings(), -DICE_STEP))

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
        entry = self.commands.undoable()
        if entry is None or entry.restore is None:
            self.notify("nothing to undo", timeout=3)
            return
        self.send_command(entry.restore, is_undo=True)

    def action_stop_trainer(self) -> None:
        """Stop the trainer cleanly (asks first)."""

        def answered(yes: bool | None) -> None:
            if yes:
                self.send_command(Command(op="stop"))

        self.push_screen(ConfirmScreen("Stop the trainer? Training ends (a checkpoint is kept)."), answered)

    # --- replay keys -----------------------------------------------------------------------

    def _replay(self):
        return self.source if self.source.kind == "replay" else None

    def action_play_pause(self) -> None:
        """Play or pause the replay."""
        if (replay := self._replay()) is not None:
            replay.toggle_play()

    def action_replay_speed(self) -> None:
        """Cycle the replay speed 1/4/16/64x."""
        if (replay := self._replay()) is not None:
            self.notify(f"replay at {replay.cycle_speed()}x", timeout=2)

    def action_seek_back(self) -> None:
        """Back 5% of the recording."""
        if (replay := self._replay()) is not None:
            replay.seek_by(-0.05)

    def action_seek_forward(self) -> None:
        """Forward 5% of the recording."""
        if (replay := self._replay()) is not None:
            replay.seek_by(0.05)

    def action_seek_start(self) -> None:
        """To the start of the recording."""
        if (replay := self._replay()) is not None:
            replay.seek(0)

    def action_seek_end(self) -> None:
        """To the end of the recording."""
        if (replay := self._replay()) is not None:
            replay.seek(replay.length)

    def action_next_event(self) -> None:
        """Jump to the next event (a command applied, a checkpoint, a warning)."""
        if (replay := self._replay()) is None:
            return
        row = replay.next_event_row()
        if row is None:
            self.notify("no further event in this recording", timeout=3)
        else:
            replay.seek(row)

    def action_next_verdict(self) -> None:
        """Play fast until the verdicts change (or the recording ends)."""
        if (replay := self._replay()) is None:
            return
        current = self.diagnosis.verdicts if self.diagnosis is not None else []
        self._verdict_jump = hash(tuple(v.code for v in current))
        self._verdict_jump_speed = replay.speed
        while replay.speed != 64:
            replay.cycle_speed()
        if not replay.playing:
            replay.toggle_play()
        self.notify("playing at 64x until the verdicts change", timeout=3)

    def _check_verdict_jump(self, result: _Diagnosis) -> None:
        replay = self._replay()
        if self._verdict_jump is None or replay is None:
            return
        codes = hash(tuple(v.code for v in result.verdicts))
        if codes != self._verdict_jump or replay.at_end:
            self._verdict_jump = None
            if replay.playing:
                replay.toggle_play()
            self.note(f"verdicts changed at step {panels.header_facts(replay.history, SourceStatus('replay')).step:,}",
                      "magenta")


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def make_app(source: Source, **options: Any) -> MonitorApp:
    """Build the monitor over ``source``; the CLI and the tests both come through here."""
    return MonitorApp(source, **options)


STYLES_PATH = Path(__file__).with_name("monitor.tcss")
