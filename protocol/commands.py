"""What each command may carry, and the check every command passes before anything changes.

Both sides use :func:`validate_command`: the monitor before it sends (so a typo is caught at
the prompt) and the trainer before it applies (so a malformed or hostile frame changes
nothing). The error says what is wrong and what would be accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ProtocolError
from .messages import Command


@dataclass(frozen=True)
class NumberArg:
    """A numeric argument with an accepted range (``low`` excluded when ``open_low``)."""

    low: float
    high: float
    open_low: bool = False
    integer: bool = False
    required: bool = True
    default: float | None = None

    def check(self, op: str, name: str, value: Any) -> float | int:
        """Return the value as float/int if it is in range, else raise ProtocolError."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{op}: {name} must be a number, got {type(value).__name__} {value!r}")
        if not math.isfinite(value):
            raise ProtocolError(f"{op}: {name} must be finite, got {value!r}")
        if self.integer and float(value) != int(value):
            raise ProtocolError(f"{op}: {name} must be a whole number, got {value!r}")
        too_low = value <= self.low if self.open_low else value < self.low
        if too_low or value > self.high:
            bracket = "(" if self.open_low else "["
            raise ProtocolError(f"{op}: {name} = {value!r} is out of range; use a value in {bracket}{self.low:g}, {self.high:g}]")
        return int(value) if self.integer else float(value)


COMMAND_ARGS: dict[str, dict[str, NumberArg]] = {
    "set_lr": {"lr": NumberArg(0.0, 1.0, open_low=True)},
    "set_loss_weights": {"bce": NumberArg(0.0, 1.0), "dice": NumberArg(0.0, 1.0)},
    "set_pos_weight": {"pos_weight": NumberArg(0.0, 10000.0, open_low=True)},
    "set_clip": {"clip": NumberArg(0.0, 1e6)},  # 0 turns clipping off
    "pause": {},
    "resume": {},
    "checkpoint": {},
    "stop": {},
    "ping": {},
    "history": {"from_seq": NumberArg(0, 2**63 - 1, integer=True, required=False, default=0)},
}

# Commands that change training; the monitor can undo these by sending the old value back.
SETTING_OPS = ("set_lr", "set_loss_weights", "set_pos_weight", "set_clip")


def validate_command(command: Command) -> Command:
    """Check a command's op and arguments; return it with arguments normalised.

    Raises ProtocolError naming the first problem: an unknown op, a missing or unknown
    argument, a wrong type, a non-finite or out-of-range number.
    """
    if not isinstance(command.op, str) or command.op not in COMMAND_ARGS:
        known = ", ".join(sorted(COMMAND_ARGS))
        raise ProtocolError(f"unknown command {command.op!r}; known commands: {known}")
    if not isinstance(command.args, Mapping):
        raise ProtocolError(f"{command.op}: arguments must be a mapping, got {type(command.args).__name__}")
    spec = COMMAND_ARGS[command.op]
    unknown = sorted(str(k) for k in command.args if k not in spec)
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise ProtocolError(f"{command.op}: unknown argument {unknown[0]!r}; allowed: {allowed}")
    args: dict[str, float | int] = {}
    for name, arg in spec.items():
        if name not in command.args:
            if arg.required:
                raise ProtocolError(f"{command.op}: missing argument {name!r}")
            if arg.default is not None:
                args[name] = arg.default
            continue
        args[name] = arg.check(command.op, name, command.args[name])
    if command.op == "set_loss_weights" and args["bce"] + args["dice"] <= 0.0:
        raise ProtocolError("set_loss_weights: bce and dice cannot both be 0; the loss would be zero")
    return Command(op=command.op, args=args, request_id=command.request_id)


def make_command(op: str, request_id: str = "", **args: Any) -> Command:
    """Build and validate a command in one call: ``make_command("set_lr", lr=5e-4)``."""
    return validate_command(Command(op=op, args=args, request_id=request_id))
