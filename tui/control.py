"""The monitor's side of steering a run: building commands from keys, tracking their replies,
and undoing the last change.

Pure logic, no Textual and no sockets: the app turns a key into a command here, validates
it with :func:`octa_tui.protocol.commands.validate_command` (a typo is caught at the prompt,
before anything is sent), sends it off the UI thread, and files the reply in the
:class:`CommandLog`, which the event log panel shows as pending -> applied at step N, or
rejected with the trainer's reason.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field

from ..protocol.commands import SETTING_OPS, validate_command
from ..protocol.errors import ProtocolError
from ..protocol.messages import Command, Reply
from .format import format_command, format_number
from .view import Settings

DICE_STEP = 0.05


class CommandInputError(ValueError):
    """A value typed at a prompt or a key press that cannot become a valid command; the
    message says what would be accepted."""


def _known(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise CommandInputError(f"the trainer has not reported its {what} yet; set it with a prompt instead")
    return value


def _validated(op: str, **args: float) -> Command:
    try:
        return validate_command(Command(op=op, args=args))
    except ProtocolError as err:
        raise CommandInputError(str(err)) from None


def parse_number(text: str, what: str) -> float:
    """A number typed at a prompt (``1e-4``, ``0.0005``, ``5``); clear error otherwise."""
    try:
        value = float(text.strip())
    except ValueError:
        raise CommandInputError(f"{what}: {text.strip()!r} is not a number; type e.g. 1e-4") from None
    if not math.isfinite(value):
        raise CommandInputError(f"{what}: {text.strip()!r} is not a finite number")
    return value


def scale_lr(settings: Settings, factor: float) -> Command:
    """``set_lr`` with the current learning rate times ``factor`` (x2, /2 keys)."""
    return _validated("set_lr", lr=_known(settings.lr, "learning rate") * factor)


def exact_lr(text: str) -> Command:
    """``set_lr`` with a learning rate typed at the prompt."""
    return _validated("set_lr", lr=parse_number(text, "learning rate"))


def shift_dice_weight(settings: Settings, delta: float) -> Command:
    """``set_loss_weights`` with the Dice weight moved by ``delta`` and BCE = 1 - Dice.

    The result is rounded to 0.01 and kept within [0, 1], so repeated presses land on
    0.50, 0.55, ... rather than drifting.
    """
    dice = _known(settings.dice_weight, "Dice weight")
    new_dice = min(max(round(dice + delta, 2), 0.0), 1.0)
    if new_dice == round(dice, 2) and (new_dice in (0.0, 1.0)):
        raise CommandInputError(f"the Dice weight is already {format_number(new_dice)}; it stays within [0, 1]")
    return _validated("set_loss_weights", bce=round(1.0 - new_dice, 2), dice=new_dice)


def exact_pos_weight(text: str) -> Command:
    """``set_pos_weight`` with the value typed at the prompt."""
    return _validated("set_pos_weight", pos_weight=parse_number(text, "pos_weight"))


def exact_clip(text: str) -> Command:
    """``set_clip`` with the value typed at the prompt (0 turns clipping off)."""
    return _validated("set_clip", clip=parse_number(text, "clip"))


def restoring_command(op: str, settings: Settings) -> Command | None:
    """The command that puts back the setting ``op`` is about to change, or None when the
    old value is unknown (the run does not report it) or ``op`` is not a setting."""
    try:
        if op == "set_lr":
            return _validated("set_lr", lr=_known(settings.lr, "lr"))
        if op == "set_loss_weights":
            return _validated(
                "set_loss_weights", bce=_known(settings.bce_weight, "BCE weight"), dice=_known(settings.dice_weight, "Dice")
            )
        if op == "set_pos_weight":
            return _validated("set_pos_weight", pos_weight=_known(settings.pos_weight, "pos_weight"))
        if op == "set_clip":
            return _validated("set_clip", clip=_known(settings.clip, "clip"))
    except CommandInputError:
        return None
    return None


PENDING, APPLIED, REJECTED, FAILED = "pending", "applied", "rejected", "failed"


@dataclass
class CommandEntry:
    """One command this monitor sent and what became of it."""

    request_id: str
    command: Command
    sent_at: float
    status: str = PENDING
    step: int = -1
    reason: str = ""
    restore: Command | None = None  # sends the old value back (undo)
    undone: bool = False
    is_undo: bool = False

    def describe(self) -> str:
        """``set_lr lr=0.002 -> applied at step 345`` (or pending, or rejected: reason)."""
        text = format_command(self.command.op, dict(self.command.args))
        if self.is_undo:
            text = f"undo: {text}"
        if self.status == PENDING:
            return f"{text} -> pending"
        if self.status == APPLIED:
            return f"{text} -> applied at step {self.step}" if self.step >= 0 else f"{text} -> ok"
        if self.status == REJECTED:
            return f"{text} -> rejected: {self.reason}"
        return f"{text} -> not delivered: {self.reason}"


@dataclass
class CommandLog:
    """Every command this monitor sent, in order, with its outcome; knows what undo sends."""

    entries: list[CommandEntry] = field(default_factory=list)
    clock: object = time.time
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def sent(self, command: Command, restore: Command | None = None, *, is_undo: bool = False) -> CommandEntry:
        """File a command as pending and give it a request id (returned in the entry)."""
        request_id = f"m{next(self._ids)}"
        entry = CommandEntry(
            request_id=request_id,
            command=Command(op=command.op, args=dict(command.args), request_id=request_id),
            sent_at=self.clock(),  # type: ignore[operator]
            restore=restore,
            is_undo=is_undo,
        )
        self.entries.append(entry)
        return entry

    def find(self, request_id: str) -> CommandEntry | None:
        """The entry with this request id."""
        for entry in reversed(self.entries):
            if entry.request_id == request_id:
                return entry
        return None

    def replied(self, request_id: str, reply: Reply) -> CommandEntry | None:
        """File the trainer's reply: applied at ``reply.step``, or rejected with its reason."""
        entry = self.find(request_id)
        if entry is None:
            return None
        if reply.ok:
            entry.status, entry.step = APPLIED, reply.step
            if entry.is_undo:
                self._mark_undone(entry)
        else:
            entry.status, entry.step, entry.reason = REJECTED, reply.step, reply.reason or "no reason given"
        return entry

    def _mark_undone(self, undo: CommandEntry) -> None:
        """An applied undo puts back the newest applied change of its kind: that one is undone
        (the next undo reaches further back)."""
        for earlier in reversed(self.entries):
            if (earlier.restore is not None and earlier.restore.op == undo.command.op and not earlier.undone
                    and not earlier.is_undo and earlier.status == APPLIED):
                earlier.undone = True
                return

    def failed(self, request_id: str, reason: str) -> CommandEntry | None:
        """The command never got an answer (timeout, connection lost)."""
        entry = self.find(request_id)
        if entry is not None:
            entry.status, entry.reason = FAILED, reason
        return entry

    def undoable(self) -> CommandEntry | None:
        """The newest applied setting change not yet undone (undo works back through them);
        None when there is none or its old value is unknown."""
        for entry in reversed(self.entries):
            if entry.command.op not in SETTING_OPS or entry.status != APPLIED or entry.is_undo or entry.undone:
                continue
            return entry if entry.restore is not None else None
        return None

    def pending(self) -> list[CommandEntry]:
        """Commands still waiting for their reply."""
        return [e for e in self.entries if e.status == PENDING]
