"""The words ``octa-tui send`` takes for a command: ``set_lr 1e-4``, ``lr=1e-4``, or a verdict's fix as JSON.

Pure parsing into a validated :class:`~octa_tui.protocol.messages.Command` (the same check the
trainer applies), so a typo is refused before anything is sent, with a message that says
what would be accepted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..protocol.commands import COMMAND_ARGS, TERM_NAME, validate_command
from ..protocol.errors import ProtocolError
from ..protocol.messages import Command

# Commands a script may send (``history`` streams a run's past: the follower's business).
SENDABLE = tuple(op for op in COMMAND_ARGS if op != "history")
ALIASES = {
    "lr": "set_lr",
    "clip": "set_clip",
    "pos_weight": "set_pos_weight",
    "loss_weights": "set_loss_weights",
    "weights": "set_loss_weights",
}


class CommandWordsError(ValueError):
    """The words do not make a command; the message names the problem and the accepted form."""


def usage(op: str) -> str:
    """How ``op`` is written on the command line, e.g. ``set_loss_weights BCE DICE``."""
    names = list(COMMAND_ARGS.get(op, {}))
    return " ".join([op, *(name.upper() for name in names)])


def parse_command(words: Sequence[str]) -> Command:
    """``["set_lr", "1e-4"]``, ``["set_loss_weights", "bce=0.5", "dice=0.5"]``, ``["pause"]`` or
    ``['{"op": "set_clip", "args": {"clip": 1.0}}']`` (a verdict's fix as ``watch`` prints it)
    as a validated command."""
    if not words:
        raise CommandWordsError(f"no command given; one of: {', '.join(SENDABLE)}")
    first = words[0].strip()
    if first.startswith("{"):
        if len(words) > 1:
            raise CommandWordsError("a command given as JSON takes no further words")
        return _from_json(first)
    op = ALIASES.get(first, first)
    if op not in SENDABLE:
        raise CommandWordsError(f"unknown command {first!r}; one of: {', '.join(SENDABLE)}")
    names = list(COMMAND_ARGS[op])
    args: dict[str, object] = {}
    positional = 0
    for word in words[1:]:
        if "=" in word:
            name, _, text = word.partition("=")
            name = name.strip().lstrip("-")
            if name not in names and not (op == "set_loss_weights" and TERM_NAME.fullmatch(name)):
                raise CommandWordsError(f"{op} takes {', '.join(names) or 'no arguments'}, not {name!r} "
                                        f"(usage: {usage(op)})")
        else:
            if positional >= len(names):
                raise CommandWordsError(f"too many values for {op} (usage: {usage(op)})")
            name, text = names[positional], word
            positional += 1
        args[name] = _number(op, name, text)
    if op == "set_loss_weights" and 0 < positional < len(names):  # BCE DICE given by position: both
        raise CommandWordsError(f"{op}: missing argument {names[positional]!r} (usage: {usage(op)})")
    try:
        return validate_command(Command(op=op, args=args))
    except ProtocolError as err:
        raise CommandWordsError(f"{err} (usage: {usage(op)})") from None


def _number(op: str, name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CommandWordsError(f"{op}: {name} must be a number, got {text!r} (usage: {usage(op)})") from None


def _from_json(text: str) -> Command:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CommandWordsError(f"the command is not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("op"), str):
        raise CommandWordsError('a command as JSON is {"op": NAME, "args": {...}}')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise CommandWordsError('"args" of a command must be an object')
    if data["op"] not in SENDABLE:
        raise CommandWordsError(f"unknown command {data['op']!r}; one of: {', '.join(SENDABLE)}")
    try:
        return validate_command(Command(op=data["op"], args=args))
    except ProtocolError as err:
        raise CommandWordsError(str(err)) from None
