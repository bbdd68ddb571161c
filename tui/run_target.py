"""Which trainer a command line means: ``RUN`` as a run id, a pid, an endpoint or a run-file match.

Pure logic over the run files found on this machine (:func:`octa_tui.protocol.runfiles.list_run_files`),
so every way of naming a run is tested without a trainer. ``octa-tui send``, ``watch`` and
``connect`` share it; each failure is a :class:`TargetError` whose message says what was
looked for, what was found and what to type instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..protocol.runfiles import RunFileInfo

RUN_ID = re.compile(r"^[0-9a-f]{16}$")
HEX = re.compile(r"^[0-9a-f]+$")
MIN_PREFIX = 4  # shortest run-id prefix taken as one
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


def resolve_target(text: str, runs: Sequence[RunFileInfo], control: str | None = None) -> Target:
    """The trainer ``text`` names among ``runs`` (the running trainers' run files).

    Tried in order: an endpoint (``tcp://...``, ``ipc://...``: a run file with that telemetry
    or control endpoint supplies the other one, else ``control`` must be given); an exact run
    id or pid; a run-id prefix of at least 4 hex digits; finally a piece of text found in
    exactly one run's task, model or recording path. ``control`` overrides the control
    endpoint a run file gives.
    """
    text = text.strip()
    if not text:
        raise TargetError("no run named; give a run id, a pid or an endpoint (`octa-tui list` shows them)")
    if "://" in text:
        return _by_endpoint(text, runs, control)
    if HOST_PORT.match(text) and not text.isdigit():
        raise TargetUsageError(f"{text} has no scheme; write tcp://{text} (a trainer on this machine: "
                          f"tcp://127.0.0.1:PORT, or its run id from `octa-tui list`)")
    for info in runs:
        if text in (info.run_id, str(info.pid)):
            return Target(info.telemetry, control or info.control, info)
    if RUN_ID.match(text) or text.isdigit():
        raise TargetError(f"no running trainer has run id or pid {text}{_running_hint(runs)}")
    if HEX.match(text) and len(text) >= MIN_PREFIX:
        matches = [info for info in runs if info.run_id.startswith(text)]
        if matches:
            return _one(text, matches, control, "run ids start with")
    matches = [info for info in runs if any(text in field for field in (info.task, info.model, info.recording))]
    if matches:
        return _one(text, matches, control, "runs match")
    raise TargetError(f"no running trainer matches {text!r} (by run id, pid, task, model or recording path)"
                      f"{_running_hint(runs)}")


def _by_endpoint(text: str, runs: Sequence[RunFileInfo], control: str | None) -> Target:
    wanted = _normal(text)
    for info in runs:
        if wanted in (_normal(info.telemetry), _normal(info.control)):
            return Target(info.telemetry, control or info.control, info)
    if control:
        return Target(text, control)
    raise TargetError(f"no run file on this machine names {text}; give its control endpoint too "
                      f"(--control tcp://HOST:PORT) or name the run by its id{_running_hint(runs)}")


def _normal(endpoint: str) -> str:
    """An endpoint compared loosely: localhost and 127.0.0.1 are the same place."""
    return endpoint.strip().replace("//localhost:", "//127.0.0.1:")


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
