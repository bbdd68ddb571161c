"""Commands from the monitor to the trainer: built from keys, sent off the UI thread, filed
with their replies, undone. The app's keys call :class:`CommandDesk`; nothing else sends.

The desk validates before anything leaves (a typo stays at the prompt), remembers the old
value of each setting it changes (what ``u`` sends back), sends each command on a short-lived
thread and posts :class:`~octa_tui.tui.messages.CommandReplied` or
:class:`~octa_tui.tui.messages.CommandFailed`, which the app hands back to :meth:`replied` /
:meth:`failed`. The log (:class:`~octa_tui.tui.control.CommandLog`) is the event log's record
of every command and its fate.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..protocol.messages import Command, Reply
from . import view
from .control import (
    CommandEntry,
    CommandInputError,
    CommandLog,
    restoring_command,
    scale_lr,
    shift_dice_weight,
)
from .messages import CommandFailed, CommandReplied, one_line
from .sources import Source

Spawn = Callable[[Callable[[], None]], Any]  # runs a function on a thread of its own
Post = Callable[[Any], Any]


class CommandDesk:
    """Sends the monitor's commands to ``source`` and keeps their log and undo."""

    def __init__(self, source: Source, log: CommandLog, spawn: Spawn, post: Post) -> None:
        self.source = source
        self.log = log
        self.spawn = spawn
        self.post = post
        self.version = 0  # changes whenever the log changes (the event log redraws on it)

    def settings(self) -> view.Settings:
        """The settings in force at the newest step (NaN before the first)."""
        history = self.source.history
        if history is None:
            nan = math.nan
            return view.Settings(nan, nan, nan, nan, nan)
        return view.current_settings(history)

    def build(self, make: Callable[[view.Settings], Command]) -> Command:
        """A command made from the current settings (CommandInputError when it cannot be)."""
        return make(self.settings())

    def lr_scaled(self, factor: float) -> Command:
        """``set_lr`` with the current lr times ``factor``."""
        return self.build(lambda s: scale_lr(s, factor))

    def dice_shifted(self, delta: float) -> Command:
        """``set_loss_weights`` with the Dice weight moved by ``delta``."""
        return self.build(lambda s: shift_dice_weight(s, delta))

    def send(self, command: Command, *, is_undo: bool = False) -> CommandEntry:
        """File ``command`` as pending and send it off the UI thread."""
        restore = None if is_undo else restoring_command(command.op, self.settings())
        entry = self.log.sent(command, restore, is_undo=is_undo)
        self.version += 1
        request_id, sent = entry.request_id, entry.command
        self.spawn(lambda: self._request(request_id, sent))
        return entry

    def undo(self) -> CommandEntry | None:
        """Send the old value of the newest change not yet undone; None when there is none."""
        entry = self.log.undoable()
        if entry is None or entry.restore is None:
            return None
        return self.send(entry.restore, is_undo=True)

    def _request(self, request_id: str, command: Command) -> None:
        try:
            reply = self.source.request(command)
        except Exception as err:  # noqa: BLE001 - a failed send is shown, never raised
            self.post(CommandFailed(request_id, one_line(err)))
            return
        self.post(CommandReplied(request_id, reply))

    def replied(self, request_id: str, reply: Reply) -> CommandEntry | None:
        """File the trainer's answer (an applied undo marks the change it undid)."""
        self.version += 1
        return self.log.replied(request_id, reply)

    def failed(self, request_id: str, reason: str) -> CommandEntry | None:
        """File a command that got no answer."""
        self.version += 1
        return self.log.failed(request_id, reason)


__all__ = ["CommandDesk", "CommandInputError"]
