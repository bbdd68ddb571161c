"""The content of every panel as a pure function of the run: Rich renderables, no Textual.

Each ``render_*`` function takes the history (and the rows and window to show) plus the
cell size it may fill, and returns Rich text or a table. The widgets in
:mod:`octa_tui.tui.widgets` only pass their size and the app's state in.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from ..diagnosis.gradients import RATIO_NAME, format_ratio
from ..protocol import channels as ch
from ..protocol.messages import DatasetReport, Event, Preview
from ..protocol.run import RunHistory
from . import view
from .charts import Series, envelope_of, legend_parts, render_chart, render_sparkline, value_range
from .control import CommandEntry
from .fit import Part, abbreviate, fit_parts, wrap_words
from .format import (
    format_command,
    format_count,
    format_eta,
    format_number,
    format_rate,
    plural,
    singular_counts,
)
from .halfblock import render_side_by_side
from .theme import SERIES_COLORS, connection_style, severity_label, severity_style


@dataclass(frozen=True)
class HeaderFacts:
    """What the header line says about the run and the connection."""

    run_id: str
    task: str
    model: str
    parameters: int
    device: str
    step: int
    epoch: int
    epochs: int | None
    steps_per_s: float | None
    total_steps: int | None
    state: str
    monitors: int
    gaps_filled: int
    missing: int
    detail: str = ""
    trainer_state: str = ""
    dropped_ui: int = 0
    insecure: bool = False  # the trainer listens beyond loopback without keys (octa-train --insecure)
    recording_failed: str = ""  # the trainer's recording stopped (disk full, unwritable); live data goes on
    ranks: tuple[float, ...] = ()  # a multi-process run: each rank's latest step time (s), or NaN before the first
    stragglers: tuple[int, ...] = ()  # ranks the trainer flagged as stragglers in that measurement
    end_state: str = ""  # "finished" | "stopped" once the trainer said so in its last heartbeat; "" otherwise
    ended_by: str = ""  # who stopped it ("monitor", ...), when the trainer said
    rejected_frames: int = 0  # frames the follower counted as bad and skipped


def source_end(source) -> dict[str, Any]:
    """The run's end as the live source knows it (``end_state``, ``ended_by``) and the frames
    its follower rejected (``rejected_frames``): keyword arguments for :func:`header_facts`.
    Sources that do not follow a trainer have none of these."""
    end = getattr(source, "end_state", None)
    by = getattr(source, "ended_by", None)
    rejected = getattr(source, "rejected_frames", 0)
    return {"end_state": end if isinstance(end, str) else "", "ended_by": by if isinstance(by, str) else "",
            "rejected_frames": rejected if isinstance(rejected, int) else 0}


def header_facts(history: RunHistory | None, status, *, end_state: str = "", ended_by: str = "",
                 rejected_frames: int = 0) -> HeaderFacts:
    """Collect the header's facts from the history and the source's status (and, from a live
    source, how the run ended and the frames rejected: see :func:`source_end`)."""
    # The status says the same where the source puts it there (the live source does).
    end_state = end_state or getattr(status, "end_state", None) or ""
    ended_by = ended_by or getattr(status, "ended_by", None) or ""
    rejected_frames = rejected_frames or getattr(status, "rejected_frames", 0) or 0
    ending = {"end_state": end_state, "ended_by": ended_by, "rejected_frames": int(rejected_frames)}
    if history is None:
        return HeaderFacts("-", "-", "-", 0, "-", 0, 0, None, None, None, status.state, status.monitors, 0, 0,
                           status.detail, status.trainer_state, **ending)
    n = len(history.steps)
    schema = history.schema
    return HeaderFacts(
        run_id=schema.run_id,
        task=schema.task,
        model=schema.model.name,
        parameters=int(schema.model.parameters),
        device=schema.model.device,
        step=int(history.steps.step[n - 1]) if n else 0,
        epoch=int(history.steps.epoch[n - 1]) if n else 0,
        epochs=view.total_epochs(history),
        steps_per_s=view.steps_per_second(history),
        total_steps=view.total_steps(history),
        state=status.state,
        monitors=status.monitors,
        gaps_filled=status.gaps_filled,
        missing=view.missing_steps(history),
        detail=status.detail,
        trainer_state=status.trainer_state,
        insecure=schema.config.get("link") == "insecure",
        recording_failed=_recording_failure(history),
        **_rank_times(history),
        **ending,
    )


def _rank_times(history: RunHistory) -> dict[str, tuple]:
    """Each rank's step time and the stragglers, from the trainer's latest ``rank_times``
    event (torchrun runs; the trainer applies its straggler rule, the header only shows it)."""
    world = history.schema.config.get("world_size")
    if not isinstance(world, int) or world < 2:
        return {}
    for event in reversed(history.events):
        times = event.data.get("step_s") if event.kind == "rank_times" else None
        if isinstance(times, (list, tuple)) and len(times) == world:
            slow = event.data.get("stragglers", ())
            return {"ranks": tuple(float(t) for t in times),
                    "stragglers": tuple(int(r) for r in slow if isinstance(r, int))}
    return {"ranks": (math.nan,) * world}


def _recording_failure(history: RunHistory) -> str:
    """The trainer's "recording stopped" warning, if it sent one (see protocol.link)."""
    for event in reversed(history.events):
        if event.kind == "warning" and event.data.get("source") == "recording":
            return event.message
    return ""


def run_state(facts: HeaderFacts) -> str:
    """The one word (or few) the header shows for the run: ``live``, ``paused``, ``finished``,
    ``stopped (by monitor)``, ``lost``, ``stalled``, ``replay``...

    A run that ended says how (the trainer's last word), never "lost": "lost" is a trainer
    that went silent without saying it ended.
    """
    if facts.end_state == "finished" or facts.trainer_state == "finished":
        return "finished"
    if facts.end_state == "stopped" or facts.trainer_state == "stopped":
        return f"stopped (by {facts.ended_by})" if facts.ended_by else "stopped"
    if facts.end_state == "failed" or facts.trainer_state == "failed":
        return "failed"  # the trainer said it stopped on an error
    if facts.trainer_state == "paused" and facts.state in ("live", "stalled"):
        return "paused"
    return facts.state


def header_parts(facts: HeaderFacts) -> tuple[list[Part], list[Part]]:
    """The header's two lines as parts, each with how long it is kept on a narrow screen."""
    top = [Part(" octa-tui ", "bold reverse", keep=9, gap=""), Part(f"run {facts.run_id[:8]}", "bold", keep=8, gap=" "),
           Part(facts.task, keep=5), Part(f"{facts.model} {format_count(facts.parameters)} params", "cyan", keep=4),
           Part(f"on {facts.device}", keep=2)]
    if facts.insecure:
        top.append(Part(" --insecure: unencrypted, anyone who reaches it can steer ", "bold white on red", keep=9))
    if facts.recording_failed:
        top.append(Part(" recording failed ", "bold black on yellow", keep=9))
    if facts.ranks:
        ranks = _ranks_text(facts.ranks, facts.stragglers)
        top.append(Part(ranks.plain, keep=3, rich=ranks))
    state = run_state(facts)
    ended = state.startswith(("finished", "stopped")) or state in ("lost", "failed")
    style_key = state.split(" ")[0]
    bottom = [Part(f" ● {state} ", connection_style(style_key), keep=9, gap="")]
    if facts.detail:
        bottom.append(Part(facts.detail, "cyan", keep=8, gap=""))
    epochs = f"/{facts.epochs}" if facts.epochs else ""
    bottom.append(Part(f"step {facts.step:,}", keep=8, gap=" "))
    bottom.append(Part(f"epoch {facts.epoch}{epochs}", keep=6))
    if facts.rejected_frames:
        bottom.append(Part(f"{facts.rejected_frames:,} bad frames skipped", "bold yellow", keep=7))
    # Speed and ETA only while steps are coming: paused or ended they would be stale.
    moving = state in ("live", "stalled") or facts.state == "replay"
    if moving:
        bottom.append(Part(format_rate(facts.steps_per_s), keep=5))
    if facts.state != "replay":
        if moving:
            bottom.append(Part(format_eta(facts.step, facts.total_steps, facts.steps_per_s), keep=4))
        if not ended:
            bottom.append(Part(f"monitors {facts.monitors}", keep=1))
    if facts.missing:
        bottom.append(Part(f"gaps filled {facts.gaps_filled}, {facts.missing:,} steps missing", "yellow", keep=7))
    else:
        bottom.append(Part(f"gaps filled {facts.gaps_filled}", "bright_black", keep=0))
    return top, bottom


def render_header(facts: HeaderFacts, width: int | None = None) -> Text:
    """Two lines: who is training what where; then the run's state, progress, speed and the
    connection. Given ``width``, parts that do not fit are left out whole, least important
    first (never a word cut in half)."""
    top, bottom = header_parts(facts)
    lines = []
    for parts in (top, bottom):
        lines.append(fit_parts(parts, 10**6 if width is None else width))
    return _join(lines)


def _ranks_text(step_s: tuple[float, ...], stragglers: tuple[int, ...]) -> Text:
    line = Text()
    _append_ranks(line, step_s, stragglers)
    line = line[2:]  # without the separator _append_ranks starts with
    return line


def _append_ranks(line: Text, step_s: tuple[float, ...], stragglers: tuple[int, ...]) -> None:
    """``ranks 4: 120 118 190! 121 ms``: each rank's step time, a straggler marked."""
    line.append(f"  ranks {len(step_s)}", style="bold")
    if not any(math.isfinite(t) for t in step_s):
        return
    line.append(":")
    for rank, t in enumerate(step_s):
        slow = rank in stragglers
        line.append(f" {t * 1000:.0f}" + ("!" if slow else "") if math.isfinite(t) else " ?",
                    style="bold red" if slow else "")
    line.append(" ms")


def _loss_series(history: RunHistory, summary: view.HistorySummary, start: int, rows: int) -> list[Series]:
    keys = [f"loss/{name}" for name in history.schema.loss]
    return [
        Series(key.split("/", 1)[1], summary.column(history, key, start, rows), SERIES_COLORS[i % len(SERIES_COLORS)])
        for i, key in enumerate(keys)
    ]


def render_loss(history: RunHistory, summary: view.HistorySummary, rows: int, start: int, width: int, height: int,
                baseline: float | None, markers: Sequence[int], baseline_channel: str = ch.LOSS_TOTAL) -> Text:
    """Total loss and its components over the window, the constant baseline dashed, a marker
    where a setting changed; val Dice (a heatmap run: val loss) per epoch on the last line.

    Over the whole run the y range takes the baseline in, so the line a model must beat is
    always on screen. In a zoomed window the range fits the curves (the baseline far above a
    converged loss would squeeze them into a row or two); the legend then says where it is.
    """
    series = _loss_series(history, summary, start, rows)
    if not series or rows <= start:
        return Text("waiting for the first step...", style="bright_black")
    latest_values = [s.values.last() for s in series]
    parts = legend_parts(series, latest_values)
    chart_width = max(width, 1)
    reference_in_range = start == 0
    if baseline is not None:
        where = ""
        if not reference_in_range:
            span = value_range([e for s in series for env in (envelope_of(s.values, 2 * max(chart_width - 9, 1)),)
                                for e in (env.lo, env.hi)])
            if span is not None and baseline > span[1]:
                where = " (above)"
            elif span is not None and baseline < span[0]:
                where = " (below)"
        name = "" if baseline_channel == ch.LOSS_TOTAL else f" {baseline_channel.split('/', 1)[-1]}"
        word = "constant" if width >= 40 else "const"  # abbreviated where a legend has little room
        parts.append(Part(f"┄ {word}{name} {format_number(baseline)}{where}", "bright_black", keep=len(series)))
    legend = fit_parts(parts, width)
    chart_height = max(height - 2, 1)
    local_markers = [m - start for m in markers if start <= m < rows]
    chart = render_chart(series, width, chart_height, reference=baseline, markers=local_markers,
                         reference_in_range=reference_in_range)
    return _join([legend, chart, _val_line(history, width)])


def _val_line(history: RunHistory, width: int) -> Text:
    """``val Dice 0.40 0.41 0.43  (epoch 11)``: as many epochs as fit, newest last; the epoch
    number only where there is room for it."""
    name, per_epoch = view.val_metric(history)
    label = Part(f"val {name}", "bold", keep=9)
    if not per_epoch:
        why = "- (no epoch finished)" if not history.epochs else "- (not reported)"
        return fit_parts([label, Part(why, "bright_black", keep=1, gap=" ")], width)
    texts = [f"{v:.2f}" if name == "Dice" else format_number(v) for _, v in per_epoch]
    room = max(width - len(label.text) - 1, 0)
    epoch = Part(f"(epoch {per_epoch[-1][0]})", "bright_black", keep=1)
    keep_values = max(1, (room - len(epoch.text) - 2 + 1) // (max(len(t) for t in texts) + 1))
    shown = texts[-keep_values:]
    if len(" ".join(shown)) > room:  # not even with the epoch left out: as many as fit alone
        shown = texts[-max(1, (room + 1) // (max(len(t) for t in texts) + 1)):]
    return fit_parts([label, Part(" ".join(shown), "green", keep=8, gap=" "), epoch], width)


def render_gradients(history: RunHistory, summary: view.HistorySummary, rows: int, start: int, width: int,
                     height: int) -> Text:
    """One row per layer group, shallow to deep: name, latest norm, a log-scale sparkline
    (shared scale, so a vanishing layer sits low); then the shallow/deep ratio and how
    many parameters were over the explosion bound."""
    names = history.schema.grad
    if not names or rows <= start:
        return Text("no gradient norms yet", style="bright_black")
    groups = view.layer_groups(names, max(height - 1, 1))
    columns = summary.group_columns(history, groups, start, rows)
    exploded = summary.explosions.count(history, ch.GRAD_N_OVER_BOUND, start, rows)
    latest = [column.last() for column in columns]
    label_width = min(max(len(label) for label, _ in groups), max(width // 4, 6))
    spark_width = max(width - label_width - 11, 1)
    envelopes = [column.envelope(spark_width) for column in columns]
    scale = value_range([e.lo for e in envelopes] + [e.hi for e in envelopes], log_scale=True)
    lines = []
    for j, (label, _) in enumerate(groups):
        line = Text(no_wrap=True, overflow="crop")
        line.append(abbreviate(label, label_width).ljust(label_width) + " ")
        value = float(latest[j])
        style = "bold red" if not math.isfinite(value) else ("yellow" if value < 1e-4 else "")
        line.append(format_number(value).rjust(9) + " ", style=style)
        line.append_text(render_sparkline(columns[j], spark_width, log_scale=True, y_range=scale))
        lines.append(line)
    ratio = view.layer_ratio(history, start, rows)
    ratio_style = "yellow" if math.isfinite(ratio) and (ratio > 10 or ratio < 0.1) else ""
    ratio_text = Text.assemble((f"{RATIO_NAME} ", "bold"), (format_ratio(ratio), ratio_style))
    parts = [Part(ratio_text.plain, keep=5, rich=ratio_text)]
    if exploded is not None:
        count = Text.assemble(("explosions ", "bold"), (plural(exploded, "step"), "bold red" if exploded else ""))
        parts.append(Part(count.plain, keep=4, rich=count))
        now = float(history.steps.values[rows - 1, history.schema.index(ch.GRAD_N_OVER_BOUND)])
        parts.append(Part(f"(now {format_number(now)} params)", keep=1, gap=" "))
    lines.append(fit_parts(parts, width))
    return _join(lines[: max(height, 1)])


def _stat_rows(history: RunHistory, summary: view.HistorySummary, keys: Sequence[tuple[str, str]], rows: int,
               start: int, width: int, log_keys: Sequence[str] = ()) -> list[Text]:
    label_width = max(len(label) for _, label in keys)
    spark_width = max(width - label_width - 11, 1)
    lines = []
    for i, (key, label) in enumerate(keys):
        window = summary.column(history, key, start, rows)
        if window is None:
            continue
        line = Text(no_wrap=True, overflow="crop")
        line.append(label.ljust(label_width) + " ")
        value = window.last()
        line.append(format_number(value).rjust(9) + " ", style="bold red" if not math.isfinite(value) else "bold")
        line.append_text(render_sparkline(window, spark_width, log_scale=key in log_keys,
                                          color=SERIES_COLORS[(i + 1) % len(SERIES_COLORS)]))
        lines.append(line)
    return lines


OUTPUT_ROWS = (
    (ch.OUT_RAW_MIN, "raw min"),
    (ch.OUT_RAW_MAX, "raw max"),
    (ch.OUT_RAW_MEAN, "raw mean"),
    (ch.OUT_ACT_MIN, "act min"),
    (ch.OUT_ACT_MAX, "act max"),
    (ch.OUT_ACT_MEAN, "act mean"),
    (ch.OUT_FRAC_OUTSIDE_01, "outside[0,1]"),
)


def render_outputs(history: RunHistory, summary: view.HistorySummary, rows: int, start: int, width: int, height: int) -> Text:
    """Output range before and after the activation, and the fraction outside [0, 1]."""
    if rows <= start:
        return Text("no outputs yet", style="bright_black")
    lines = _stat_rows(history, summary, OUTPUT_ROWS, rows, start, width)
    if not lines:
        return Text("this run does not report its outputs", style="bright_black")
    outside = view.channel_values(history, ch.OUT_FRAC_OUTSIDE_01, rows)
    if outside is not None and history.schema.loss_expects_probabilities and float(outside[rows - 1]) > 0:
        warning = f"{float(outside[rows - 1]):.1%} of outputs outside [0,1] but the loss expects probabilities"
        wrapped = [Text(line, style="bold red") for line in wrap_words(warning, width)]
        # The warning matters more than the last rows of numbers: it takes their place when short of room.
        room = max(height, 1)
        lines = lines[: max(room - len(wrapped), 0)] + wrapped
    return _join(lines[: max(height, 1)])


OPTIMIZER_ROWS = (
    (ch.OPT_LR, "lr"),
    (ch.OPT_BCE_WEIGHT, "bce weight"),
    (ch.OPT_DICE_WEIGHT, "dice weight"),
    (ch.OPT_POS_WEIGHT, "pos_weight"),
    (ch.OPT_CLIP, "clip"),
    (ch.OPT_UPDATE_RATIO, "update ratio"),
)


def render_optimizer(history: RunHistory, summary: view.HistorySummary, rows: int, start: int, width: int, height: int,
                     markers: Sequence[int]) -> Text:
    """Current lr, loss weights, pos_weight and clip with their history; a chart of lr with a
    marker where any setting changed; the latest changes by step."""
    if rows <= start:
        return Text("no settings reported yet", style="bright_black")
    lines = _stat_rows(history, summary, OPTIMIZER_ROWS, rows, start, width, log_keys=(ch.OPT_LR, ch.OPT_UPDATE_RATIO))
    lr = summary.column(history, ch.OPT_LR, start, rows)
    room = height - len(lines) - 1
    if lr is not None and room >= 3:
        local = [m - start for m in markers if start <= m < rows]
        lines.append(render_chart([Series("lr", lr, "yellow")], width, room - 1, log_scale=True,
                                  markers=local))
    if markers:
        steps = history.steps.step
        label = "changed at step " if len(markers) == 1 else "changed at steps "
        shown = [f"{int(steps[m]):,}" for m in markers[-6:]]
        while len(shown) > 1 and len(label) + len(", ".join(shown)) > width:
            shown.pop(0)  # the newest changes are kept
        changes = Text(label, style="bright_black")
        changes.append(", ".join(shown), style=MARKER_STEP_STYLE)
        lines.append(fit_parts([Part(changes.plain, rich=changes)], width))
    return _join(lines[: max(height, 1)])


MARKER_STEP_STYLE = "yellow"


def render_verdict(verdict, selected: bool = False) -> Table:
    """One verdict: severity, title and confidence; the evidence; the fix (key ``f``) or
    the instruction when the fix needs a restart. The text wraps at words under the title,
    clear of the severity label (a hanging indent at any width)."""
    body = Text(no_wrap=False)
    body.append(verdict.title, style="bold")
    if verdict.confidence != "measured":
        body.append(f" ({verdict.confidence})", style="italic bright_black")
    body.append(f"\n{verdict.evidence}", style="")
    if verdict.fixes:
        fixes = "; ".join(format_command(c.op, dict(c.args)) for c in verdict.fixes)
        body.append(f"\nfix: {fixes}", style="green")
        if selected:
            body.append("  [f applies]", style="bold green")
    elif verdict.instruction:
        body.append(f"\nrestart: {verdict.instruction}", style="cyan")
    table = Table.grid(padding=(0, 1), expand=True)
    table.add_column(width=4, no_wrap=True)
    table.add_column(ratio=1, overflow="fold")
    table.add_row(Text(f"{severity_label(verdict.severity):4}", style=severity_style(verdict.severity)), body)
    return table


def render_dataset(report: DatasetReport | None) -> Table | Text:
    """The seed's dataset check: pairs, mask values (binary?), foreground ratio, pos_weight."""
    if report is None:
        return Text("no dataset report from this run", style="bright_black")
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    table.add_row("source", Text(report.source, overflow="ellipsis", no_wrap=True))
    table.add_row("pairs", f"{report.pairs}  (train {report.train_images}, val {report.val_images})")
    if report.pairs > 0 and report.unique_mask_values == 0 and not math.isfinite(report.foreground_ratio):
        # Continuous targets (heatmaps): mask values, foreground and pos_weight do not apply.
        table.add_row("targets", Text("continuous (heatmaps), not masks: no foreground ratio or pos_weight",
                                      style="bright_black"))
    else:
        values = ", ".join(format_number(v) for v in report.mask_values[:6])
        more = "..." if report.unique_mask_values > 6 else ""
        binary = Text("binary ✓", style="green") if report.masks_binary else Text(
            f"NOT binary: {report.unique_mask_values} values", style="bold red")
        table.add_row("mask values", Text.assemble(binary, f"  {values}{more}"))
        low = report.foreground_ratio < 0.02
        table.add_row("foreground", Text(f"{report.foreground_ratio:.2%}" + ("  (< 2%: imbalance)" if low else ""),
                                         style="bold red" if low else "green"))
        table.add_row("pos_weight", f"{format_number(report.suggested_pos_weight)} suggested (bg/fg)")
    if report.image_size != (0, 0):
        table.add_row("image size", f"{report.image_size[0]}x{report.image_size[1]}")
    for problem in report.problems[:3]:
        table.add_row(Text("problem", style="yellow"), Text(f"{problem.file}: {problem.problem}", overflow="ellipsis"))
    if len(report.problems) > 3:
        table.add_row("", f"... and {len(report.problems) - 3} more")
    return table


def render_preview(preview: Preview | None, width: int, height: int) -> Text:
    """The newest validation image, its target and the prediction, side by side."""
    if preview is None:
        return Text("no prediction preview yet (sent after each validation)", style="bright_black")
    caption = Text(f"epoch {preview.epoch}, step {preview.step:,}", style="bright_black")
    body = render_side_by_side(
        [("image", preview.image), ("target", preview.target), ("prediction", preview.prediction)], width, height - 1
    )
    return _join([body, caption])


EVENT_STYLES = {
    "command_applied": "green",
    "command_rejected": "bold red",
    "checkpoint_saved": "cyan",
    "warning": "bold yellow",
    "verdict_changed": "magenta",
    "trial": "magenta",
}


TRIAL_STYLES = {"helped": "bold green", "no effect": "yellow", "hurt": "bold red"}


DEFAULT_POS_WEIGHT = 1.0  # what BCE applies when no pos_weight is set (the optimizer panel shows it)


def event_message(event: Event) -> str:
    """An event's line in the log, in the monitor's wording: a pos_weight change from none
    says what the optimizer panel showed for none (``pos_weight 1.00 (none set) -> 97.9``)."""
    text = event.message or event.kind
    data = event.data or {}
    if event.kind == "command_applied" and data.get("op") == "set_pos_weight" and data.get("old") is None:
        text = re.sub(r"\bpos_weight [Nn]one\b", f"pos_weight {format_number(DEFAULT_POS_WEIGHT)} (none set)", text)
    return singular_counts(text)


def event_lines(events: Sequence[Event], commands: Sequence[CommandEntry], notes: Sequence[tuple[float, str, str]],
                trials: Sequence[Any] = ()) -> list[tuple[float, Text]]:
    """The event log's lines in time order: the run's events (each checkpoint file only at its
    newest write), each applied change's fix trial right after it (helped / no effect / hurt,
    or pending; ``u`` undoes), this monitor's commands with their outcome, and the monitor's
    own notes (time, text, style)."""
    lines: list[tuple[float, Text]] = []
    applied_at: dict[int, float] = {}
    # A checkpoint file written again supersedes its earlier writes: show only its newest, so
    # routine end-of-epoch saves do not push commands and warnings out of the log.
    newest_write = {event.data.get("path"): i for i, event in enumerate(events) if event.kind == "checkpoint_saved"}
    for i, event in enumerate(events):
        if event.kind == "checkpoint_saved" and newest_write.get(event.data.get("path")) != i:
            continue
        line = Text()
        line.append(f"step {event.step:>6,} ", style="bright_black")
        line.append(event_message(event), style=EVENT_STYLES.get(event.kind, ""))
        lines.append((event.time, line))
        if event.kind == "command_applied":
            applied_at[event.step] = max(applied_at.get(event.step, event.time), event.time)
    for trial in trials:
        line = Text()
        line.append(f"step {trial.step:>6,} ", style="bright_black")
        line.append("  " + singular_counts(trial.summary), style=TRIAL_STYLES.get(trial.outcome, "bright_black"))
        if trial.outcome == "hurt":
            line.append("  (u undoes)", style="bright_black")
        # Just after the change it judges, so it reads as that change's outcome.
        lines.append((applied_at.get(trial.step, math.inf) + 1e-6, line))
    for entry in commands:
        line = Text()
        line.append(time.strftime("%H:%M:%S ", time.localtime(entry.sent_at)), style="bright_black")
        style = {"pending": "yellow", "applied": "green", "rejected": "bold red", "failed": "bold red"}[entry.status]
        line.append("» " + entry.describe(), style=style)
        lines.append((entry.sent_at, line))
    for when, text, style in notes:
        line = Text()
        line.append(time.strftime("%H:%M:%S ", time.localtime(when)), style="bright_black")
        line.append(text, style=style)
        lines.append((when, line))
    lines.sort(key=lambda item: item[0])
    return lines


def render_events(lines: Sequence[tuple[float, Text]], width: int, height: int) -> Text:
    """The newest event-log lines that fit ``height`` rows when each wraps at ``width``
    (a rejection's reason is never cut off)."""
    if not lines:
        return Text("no events yet", style="bright_black")
    width = max(width, 1)
    chosen: list[Text] = []
    used = 0
    for _, line in reversed(lines):
        rows = max(1, -(-len(line.plain) // width))
        if used + rows > height and chosen:
            break
        chosen.append(line)
        used += rows
    out = Text("\n").join(reversed(chosen))
    out.no_wrap = False
    out.overflow = "fold"
    return out


MATRIX_COLUMNS = (("loss", "loss"), ("dice", "Dice"), ("bce", "BCE"), ("dice_loss", "DiceL"), ("grad", "grads"))
GRAD_LEVELS = {0: "ok", 1: "slight", 2: "vanishing"}


MATRIX_TABLE_MIN_WIDTH = 60  # below this the matrix is drawn as lines (cause first) instead of a table


def render_matrix(match, task: str = "segmentation", width: int | None = None) -> Table | Text:
    """The seed's diagnosis matrix (loss level, val Dice, BCE, Dice loss, gradients -> cause
    and quick fix) with the row nearest to the live numbers highlighted, the live numbers
    underneath. The matrix speaks of Dice and BCE: a run of another ``task`` is said to have
    no numbers for it, rather than none *yet*. Narrower than ``MATRIX_TABLE_MIN_WIDTH`` (a
    table would cut every column to ``0.…``) it is drawn as lines: the verdict of the
    nearest row, this run's numbers, then each row's cause, all wrapped at words."""
    if match is None or not match.rows:
        return Text("the diagnosis matrix appears once the engine has run", style="bright_black")
    observed = match.observed or {}
    if width is not None and width < MATRIX_TABLE_MIN_WIDTH:
        return _matrix_lines(match, task, observed, width)
    table = Table(box=None, padding=(0, 1), expand=True, header_style="bold", show_edge=False)
    table.add_column("", no_wrap=True, width=1)
    for _, title in MATRIX_COLUMNS:
        table.add_column(title, no_wrap=True)
    table.add_column("likely cause", ratio=1, overflow="fold")
    for i, row in enumerate(match.rows):
        nearest = i == match.row
        style = ("bold black on yellow" if match.near else "bold") if nearest else ""
        cells = [str(getattr(row, name)).replace("slight vanishing", "slight") for name, _ in MATRIX_COLUMNS]
        table.add_row("▶" if nearest else " ", *cells, row.cause, style=style)
    if observed:
        table.add_row("=", *_observed_cells(observed), "this run", style="cyan")
        table.caption, table.caption_style = _matrix_caption(match)
    else:
        table.add_row("", "-", "-", "-", "-", "-", _matrix_why_not(task), style="bright_black")
    return table


def _observed_cells(observed) -> list[str]:
    cells = []
    for name, _ in MATRIX_COLUMNS:
        value = observed.get(name)
        if value is None:
            cells.append("-")
        elif name == "grad":
            cells.append(GRAD_LEVELS.get(int(value), str(value)))
        else:
            cells.append(format_number(float(value)))
    return cells


def _matrix_caption(match) -> tuple[str, str]:
    distance = format_number(match.distance) if math.isfinite(match.distance) else "-"
    if match.row >= 0 and match.near:
        return f"nearest row (distance {distance}): quick fix: {match.rows[match.row].fix}", "bold green"
    return f"no row is close to this run (nearest distance {distance})", "bright_black"


def _matrix_why_not(task: str) -> str:
    return ("no numbers from this run yet (segmentation runs only)" if task == "segmentation"
            else f"a {task} run has no Dice/BCE numbers for it (segmentation runs only)")


def _matrix_lines(match, task: str, observed, width: int) -> Text:
    lines: list[Text] = []

    def add(text: str, style: str = "") -> None:
        lines.extend(Text(line, style=style) for line in wrap_words(text, width))

    if observed:
        caption, style = _matrix_caption(match)
        add(caption, style)
        numbers = "  ".join(f"{title} {cell}" for (_, title), cell in zip(MATRIX_COLUMNS, _observed_cells(observed)))
        add(f"this run: {numbers}", "cyan")
    else:
        add(_matrix_why_not(task), "bright_black")
    for i, row in enumerate(match.rows):
        nearest = i == match.row
        add(("▶ " if nearest else "  ") + row.cause, ("bold black on yellow" if match.near else "bold") if nearest else "")
    out = Text("\n").join(lines)
    out.no_wrap, out.overflow = True, "crop"
    return out


def _join(lines: Sequence[Text]) -> Text:
    """Lines joined into one text that crops rather than wraps (panels are sized exactly)."""
    out = Text("\n").join(lines)
    out.no_wrap = True
    out.overflow = "crop"
    return out
