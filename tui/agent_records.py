"""The JSON records ``octa-tui send``, ``watch --json`` and ``verdicts --json`` print: one schema.

Scripts and language-model agents read these, so the shapes are a stable interface (README,
"A command line for scripts and agents"): every record is one JSON object on one line with
``"type"`` and ``"v"`` (:data:`RECORD_VERSION`); fields are only ever added. Numbers that JSON
cannot hold (NaN, Inf) are written as ``null`` and their text is kept in the record's
``"nonfinite"`` object under the same key (``{"loss/total": "nan"}``), as ``export --format
jsonl`` does. Pure logic: no I/O, no sockets.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..diagnosis.verdict import Verdict, severity_name
from ..protocol.messages import Command, EpochSummary, Event, Reply, Schema

RECORD_VERSION = 1
# Channels a summary carries unless told otherwise: losses, optimizer settings, gradient
# summaries, output statistics, timing. Per-layer gradients are left out (dozens of them).
DEFAULT_CHANNELS = ("loss/*", "opt/*", "gradstat/*", "out/*", "time/*")


def record(record_type: str, /, **fields: Any) -> dict[str, Any]:
    """A record of ``record_type`` with the version first; non-finite floats made JSON-safe."""
    out: dict[str, Any] = {"type": record_type, "v": RECORD_VERSION}
    nonfinite: dict[str, str] = {}
    for key, value in fields.items():
        out[key] = _clean(value, key, nonfinite)
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out


def _clean(value: Any, path: str, nonfinite: dict[str, str]) -> Any:
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isfinite(number):
            return number
        nonfinite[path] = "nan" if math.isnan(number) else ("inf" if number > 0 else "-inf")
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v, f"{path}/{k}" if path else str(k), nonfinite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{path}[{i}]", nonfinite) for i, v in enumerate(value)]
    return value


def select_channels(channels: Sequence[str], patterns: Sequence[str] = DEFAULT_CHANNELS) -> list[int]:
    """Indices of the channels matching any of ``patterns`` (shell globs), in vector order."""
    return [i for i, name in enumerate(channels) if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def run_record(schema: Schema, steps: int, last_step: int, source: str) -> dict[str, Any]:
    """``{"type": "run"}``: the run joined or read, first in every stream."""
    return record("run", run_id=schema.run_id, task=schema.task, model=schema.model.name,
                  parameters=schema.model.parameters, channels=list(schema.channels), steps=steps,
                  last_step=last_step, source=source)


def summary_record(schema: Schema, step: np.ndarray, epoch: np.ndarray, values: np.ndarray,
                   columns: Sequence[int], state: str = "", steps_per_s: float | None = None) -> dict[str, Any]:
    """``{"type": "summary"}`` over the rows given (the steps since the previous summary):
    each chosen channel's ``last`` value and its ``mean`` over those rows (non-finite rows
    excluded from the mean; ``null`` when none is finite), and ``nonfinite_steps``: how many
    of those rows were NaN/Inf, for each chosen channel that had any."""
    names = schema.channels
    last: dict[str, float] = {}
    mean: dict[str, float | None] = {}
    bad: dict[str, int] = {}
    for i in columns:
        column = values[:, i].astype(np.float64)
        last[names[i]] = _float32(column[-1])
        ok = np.isfinite(column)
        finite = column[ok]
        mean[names[i]] = _float32(finite.mean()) if finite.size else None
        if finite.size < column.size:
            bad[names[i]] = int(column.size - finite.size)
    fields: dict[str, Any] = {"run_id": schema.run_id, "step": int(step[-1]), "epoch": int(epoch[-1]),
                              "steps": int(len(step)), "last": last, "mean": mean, "nonfinite_steps": bad}
    if state:
        fields["state"] = state
    if steps_per_s is not None:
        fields["steps_per_s"] = round(float(steps_per_s), 3)
    return record("summary", **fields)


def _float32(value: float) -> float:
    """A value streamed as float32, written with the 7 significant digits float32 holds
    (0.002, not 0.0020000000949949026); non-finite values pass through."""
    value = float(value)
    return float(f"{value:.7g}") if math.isfinite(value) else value


def verdict_fields(verdict: Verdict) -> dict[str, Any]:
    """A verdict as plain values (its fix commands as ``{"op", "args"}``)."""
    return {
        "code": verdict.code,
        "severity": severity_name(verdict.severity, "en"),
        "level": int(verdict.severity),
        "title": verdict.title,
        "evidence": verdict.evidence,
        "cause": verdict.cause,
        "instruction": verdict.instruction,
        "confidence": verdict.confidence,
        "stage": getattr(verdict, "stage", ""),
        "caused_by": getattr(verdict, "caused_by", ""),
        "fixes": [command_fields(c) for c in verdict.fixes],
        "step": int(verdict.step),
    }


def command_fields(command: Command) -> dict[str, Any]:
    """A command as ``{"op": ..., "args": {...}}``, what ``octa-tui send`` takes back."""
    return {"op": command.op, "args": dict(command.args)}


class VerdictChanges:
    """What changed between two lists of shown verdicts: appeared, changed (severity or
    title) and cleared, as ``{"type": "verdict"}`` records with ``"change"``."""

    def __init__(self) -> None:
        self._shown: dict[str, Verdict] = {}

    @property
    def shown(self) -> list[Verdict]:
        """The verdicts shown after the last update."""
        return list(self._shown.values())

    def update(self, verdicts: Iterable[Verdict], step: int, run_id: str = "") -> list[dict[str, Any]]:
        """Records for every difference from the previous call, at training step ``step``."""
        now = {v.code: v for v in verdicts}
        out = []
        for code, verdict in now.items():
            before = self._shown.get(code)
            if before is None:
                change = "appeared"
            elif (before.severity, before.title) != (verdict.severity, verdict.title):
                change = "changed"
            else:
                continue
            out.append(record("verdict", change=change, at_step=int(step), run_id=run_id, **verdict_fields(verdict)))
        for code, verdict in self._shown.items():
            if code not in now:
                out.append(record("verdict", change="cleared", at_step=int(step), run_id=run_id,
                                  **verdict_fields(verdict)))
        self._shown = now
        return out


def event_record(event: Event) -> dict[str, Any]:
    """``{"type": "event"}``: a command applied or rejected, a checkpoint, a warning, ..."""
    return record("event", run_id=event.run_id, step=int(event.step), time=float(event.time), kind=event.kind,
                  message=event.message, data=dict(event.data))


def epoch_record(epoch: EpochSummary) -> dict[str, Any]:
    """``{"type": "epoch"}``: one finished epoch's train and validation metrics."""
    return record("epoch", run_id=epoch.run_id, epoch=int(epoch.epoch), step=int(epoch.step),
                  train=dict(epoch.train), val=dict(epoch.val))


def reply_record(target: str, command: Command, reply: Reply) -> dict[str, Any]:
    """``{"type": "reply"}``: the trainer's answer to one command, ``status`` ok or error."""
    return record("reply", run=target, op=command.op, args=dict(command.args), status=reply.status,
                  reason=reply.reason, step=int(reply.step), data=dict(reply.data))


def error_record(target: str, error: str, reason: str, op: str = "") -> dict[str, Any]:
    """``{"type": "error"}``: the command line could not do what was asked (nothing was sent
    for ``usage``; ``unreachable``: no trainer answered; ``not_found``: no such run)."""
    fields: dict[str, Any] = {"run": target, "error": error, "reason": reason}
    if op:
        fields["op"] = op
    return record("error", **fields)


def state_record(run_id: str, state: str, step: int, by: str = "") -> dict[str, Any]:
    """``{"type": "state"}``: the run became live, paused, stalled, lost, finished or stopped."""
    fields: dict[str, Any] = {"run_id": run_id, "state": state, "step": int(step)}
    if by:
        fields["by"] = by
    return record("state", **fields)
