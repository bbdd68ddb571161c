"""Every message the monitor's parts send each other, in one place.

The workers (ingest, diagnosis, command sending) run on threads and tell the app what happened
by posting one of these; the app and its panels react on the UI thread. Each message is small
and named for what happened, never for what the receiver should do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from ..protocol.messages import Reply


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


class DerivedReady(Message):
    """The derived stores (chart summaries, gradient group norms) caught up with the rows
    that arrived; panels waiting for them can draw."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, DerivedReady)


@dataclass
class Diagnosis:
    """The engine's answer for one history at one step."""

    verdicts: list
    matrix: Any
    history_id: int
    error: str = ""
    trials: list = field(default_factory=list)  # fix trials: each change and what followed it
    step: int = -1  # the newest step of the history the verdicts are for
    rows: int = 0  # rows of the history the verdicts were computed from


class VerdictsComputed(Message):
    """The engine's verdicts and the matrix match for the history as it is now."""

    def __init__(self, diagnosis: Diagnosis) -> None:
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


def one_line(err: BaseException) -> str:
    """The first line of an error's text (its type when it has none): what a panel shows."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
