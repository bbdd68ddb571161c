"""Which trainer a command line means: ``RUN`` as a run id, a pid, an endpoint or a run-file match.

Logic over the run files found on this machine (:func:`octa_tui.protocol.runfiles.list_run_files`),
so every way of naming a run is tested without a trainer. ``octa-tui send`` and ``watch`` use
it: ids, pids and endpoints exactly as ``octa-tui connect`` takes them, plus text found in one
run's task, model or recording path. Each failure is a :class:`TargetError` (or, for a
target written wrong, :class:`TargetUsageError`) whose message says what to type instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol.runfiles import RunFileInfo

HEX = re.compile(r"^[0-9a-f]+$")
HOST_PORT = re.compile(r"^(?P<host>[A-Za-z0-9_.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d+)$")


class TargetError(Exception):
    """``RUN`` names no trainer, or several: the message says which and what to do."""


class TargetUsageError(TargetError):
    """``RUN`` cannot name a trainer as written (an endpoint without its scheme)."""


@dataclass(frozen=True)
class Target:
    """Where to reach a trainer: its endpoints, and its run file when one named it."""

    telemetry: str
    control: str
    info: RunFileInfo | None = None

    @property
    def label(self) -> str:
        """How to name the trainer in messages: its run id, else its telemetry endpoint."""
        return self.info.run_id if self.info is not None else self.telemetry


def resolve_target(text: str, runs: Sequence[RunFileInfo], control: str | None = None, *,
                   insecure: bool = False) -> Target:
    """The trainer ``text`` names among ``runs`` (the running trainers' run files).

    A run id (or a prefix of at least 4 hex digits), a pid or an endpoint is resolved as
    ``octa-tui connect`` resolves it (:func:`octa_tui.protocol.runfiles.resolve_target`, with
    its messages: an unknown run id, an endpoint without a scheme, nothing listening there).
    Any other text names the one running trainer whose task, model or recording path contains
    it. ``control`` overrides the control endpoint a run file gives.
    """
    from ..protocol import runfiles

    text = text.strip()
    if text and "://" not in text and not HEX.match(text.lower()) and not text.isdigit() \
            and not HOST_PORT.match(text):
        matches = [info for info in runs if any(text in field for field in (info.task, info.model, info.recording))]
        if matches:
            return _one(text, matches, control, "runs match")
    try:
        found = runfiles.resolve_target(text, control, runs, insecure=insecure)
    except runfiles.TargetError as err:
        usage = "no scheme" in str(err) or "is not a run id" in str(err) or "connect needs" in str(err)
        raise (TargetUsageError if usage else TargetError)(str(err)) from None
    return Target(found.telemetry, found.control, found.info)


def _one(text: str, matches: Sequence[RunFileInfo], control: str | None, what: str) -> Target:
    if len(matches) > 1:
        names = ", ".join(f"{info.run_id} ({info.task} {info.model}, pid {info.pid})" for info in matches)
        raise TargetError(f"{len(matches)} {what} {text!r}: {names}; give more of the run id")
    info = matches[0]
    return Target(info.telemetry, control or info.control, info)


def _running_hint(runs: Sequence[RunFileInfo]) -> str:
    if not runs:
        return "; no trainer is running on this machine (start one, or check OCTA_TUI_RUN_DIR)"
    ids = ", ".join(info.run_id for info in runs[:5])
    more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
    return f"; running now: {ids}{more} (`octa-tui list` shows them)"
