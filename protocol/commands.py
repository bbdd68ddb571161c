"""What each command may carry, and the check every command passes before anything changes.

Both sides use :func:`validate_command`: the monitor before it sends (so a typo is caught at
the prompt) and the trainer before it applies (so a malformed or hostile frame changes
nothing). The error says what is wrong and what would be accepted.
"""

from __future__ import annotations

import math
import re
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
    # The smallest value that means something other than ``low`` (0 stays allowed when
    # ``low`` is 0 and not ``open_low``): a value strictly between is degenerate, such as
    # lr 1e-300 or a weight of 5e-324, and is refused with ``tiny_reason``.
    smallest: float = 0.0
    tiny_reason: str = ""

    def check(self, op: str, name: str, value: Any) -> float | int:
        """Return the value as float/int if it is in range, else raise ProtocolError."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ProtocolError(f"{op}: {name} must be a number, got {type(value).__name__} {value!r}")
        if self.integer:
            if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
                raise ProtocolError(f"{op}: {name} must be a whole number, got {value!r}")
            value = int(value)
        else:
            try:
                value = float(value)
            except OverflowError:
                raise ProtocolError(f"{op}: {name} is too large to be a number, got an integer of "
                                    f"{len(str(value))} digits") from None
            if not math.isfinite(value):
                raise ProtocolError(f"{op}: {name} must be finite, got {value!r}")
        too_low = value <= self.low if self.open_low else value < self.low
        if too_low or value > self.high:
            bracket = "(" if self.open_low else "["
            raise ProtocolError(f"{op}: {name} = {value!r} is out of range; use a value in {bracket}{self.low:g}, {self.high:g}]")
        if self.smallest and value != 0 and abs(value) < self.smallest:
            zero = " or 0" if not self.open_low and self.low == 0 else ""
            raise ProtocolError(f"{op}: {name} = {value!r} is too small to mean anything ({self.tiny_reason}); "
                                f"use a value of at least {self.smallest:g}{zero}")
        return value


# Below these a setting is degenerate: it changes nothing a float32 model can show, or it
# stands for "off", which has its own value (pause, weight 0, clip 0).
MIN_LR = 1e-10
MIN_WEIGHT = 1e-6
MIN_POS_WEIGHT = 1e-4
MIN_CLIP = 1e-6
_LR_TINY = "a step of lr x gradient vanishes against a float32 weight's precision; to stop updates, pause"
_WEIGHT_TINY = "it scales its loss term to nothing; use 0 to turn the term off"

COMMAND_ARGS: dict[str, dict[str, NumberArg]] = {
    "set_lr": {"lr": NumberArg(0.0, 1.0, open_low=True, smallest=MIN_LR, tiny_reason=_LR_TINY)},
    "set_loss_weights": {
        "bce": NumberArg(0.0, 1.0, smallest=MIN_WEIGHT, tiny_reason=_WEIGHT_TINY),
        "dice": NumberArg(0.0, 1.0, smallest=MIN_WEIGHT, tiny_reason=_WEIGHT_TINY),
    },
    "set_pos_weight": {"pos_weight": NumberArg(0.0, 10000.0, open_low=True, smallest=MIN_POS_WEIGHT,
                                                tiny_reason="positives would count for nothing in the loss")},
    "set_clip": {"clip": NumberArg(0.0, 1e6, smallest=MIN_CLIP,
                                   tiny_reason="every gradient would be scaled to nothing; use 0 to turn clipping off")},
    "pause": {},
    "resume": {},
    "checkpoint": {},
    "stop": {},
    "ping": {},
    "history": {"from_seq": NumberArg(0, 2**63 - 1, integer=True, required=False, default=0)},
}

# set_loss_weights names either the built-in Dice+BCE loss's pair (bce and dice, weights in [0, 1]) or,
# under octa-tui run / watch, some of the run's observed loss terms (mse, bce, ce, mse_2, ...: each a
# factor in [0, 1000] on what that loss function returns; see octa_tui.trainer.core.loss_weights).
TERM_FACTOR = NumberArg(0.0, 1000.0, smallest=MIN_WEIGHT, tiny_reason=_WEIGHT_TINY)
TERM_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_TERMS = 16

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
    if command.op == "set_loss_weights" and not {"bce", "dice"} <= set(command.args):
        return _term_factors(command)
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


def _term_factors(command: Command) -> Command:
    """``set_loss_weights`` naming observed loss terms (not the bce/dice pair): a factor for each."""
    if not command.args:
        raise ProtocolError("set_loss_weights: name the weights: bce and dice, or the loss terms to weight "
                            "(e.g. mse=0.5)")
    if len(command.args) > MAX_TERMS:
        raise ProtocolError(f"set_loss_weights: at most {MAX_TERMS} loss terms at once, got {len(command.args)}")
    args: dict[str, float | int] = {}
    for name, value in command.args.items():
        if not isinstance(name, str) or not TERM_NAME.fullmatch(name):
            raise ProtocolError(f"set_loss_weights: {name!r} is not a loss term name (lower-case letters, digits "
                                "and _, e.g. mse or bce_2)")
        args[name] = TERM_FACTOR.check(command.op, name, value)
    return Command(op=command.op, args=args, request_id=command.request_id)


def make_command(op: str, request_id: str = "", **args: Any) -> Command:
    """Build and validate a command in one call: ``make_command("set_lr", lr=5e-4)``."""
    return validate_command(Command(op=op, args=args, request_id=request_id))
