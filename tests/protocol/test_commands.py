"""Command validation: nonsense never reaches the trainer, and the error says what would be accepted."""

import math

import pytest

from octa_tui.protocol.commands import COMMAND_ARGS, make_command, validate_command
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.messages import COMMAND_OPS, Command


def test_every_known_op_has_an_argument_spec() -> None:
    assert set(COMMAND_OPS) == set(COMMAND_ARGS)


@pytest.mark.parametrize(
    ("op", "args", "expected"),
    [
        ("set_lr", {"lr": 5e-4}, {"lr": 5e-4}),
        ("set_lr", {"lr": 1}, {"lr": 1.0}),
        ("set_loss_weights", {"bce": 0.5, "dice": 0.5}, {"bce": 0.5, "dice": 0.5}),
        ("set_pos_weight", {"pos_weight": 9}, {"pos_weight": 9.0}),
        ("set_clip", {"clip": 0}, {"clip": 0.0}),
        ("pause", {}, {}),
        ("history", {}, {"from_seq": 0}),
        ("history", {"from_seq": 12.0}, {"from_seq": 12}),
        ("set_lr", {"lr": 1e-10}, {"lr": 1e-10}),
        ("set_loss_weights", {"bce": 0, "dice": 1e-6}, {"bce": 0.0, "dice": 1e-6}),
        ("set_clip", {"clip": 1e-6}, {"clip": 1e-6}),
    ],
)
def test_valid_commands_are_normalised(op: str, args: dict, expected: dict) -> None:
    cmd = validate_command(Command(op, args, "id"))
    assert cmd.args == expected and cmd.request_id == "id"
    assert all(type(v) is type(expected[k]) for k, v in cmd.args.items())


@pytest.mark.parametrize(
    ("op", "args", "pattern"),
    [
        ("set_lr", {"lr": -1}, r"out of range; use a value in \(0, 1\]"),
        ("set_lr", {"lr": 0}, "out of range"),
        ("set_lr", {"lr": math.nan}, "must be finite"),
        ("set_lr", {"lr": math.inf}, "must be finite"),
        ("set_lr", {"lr": "fast"}, "must be a number"),
        ("set_lr", {"lr": True}, "must be a number"),
        ("set_lr", {}, "missing argument 'lr'"),
        ("set_lr", {"lr": 1e-3, "momentum": 0.9}, "unknown argument 'momentum'"),
        ("set_loss_weights", {"bce": 0, "dice": 0}, "cannot both be 0"),
        ("set_loss_weights", {"bce": 1.5, "dice": 0.5}, "out of range"),
        ("set_pos_weight", {"pos_weight": -3}, "out of range"),
        ("set_clip", {"clip": -1}, "out of range"),
        ("history", {"from_seq": 1.5}, "whole number"),
        ("launch_missiles", {}, "unknown command 'launch_missiles'; known commands: checkpoint"),
        # degenerate values: finite, in range, and meaningless
        ("set_lr", {"lr": 1e-300}, r"lr = 1e-300 is too small to mean anything .*at least 1e-10"),
        ("set_lr", {"lr": 5e-324}, "too small to mean anything"),
        ("set_loss_weights", {"bce": 5e-324, "dice": 1}, r"too small .*use 0 to turn the term off.* or 0"),
        ("set_loss_weights", {"bce": 0, "dice": 5e-324}, "too small"),
        ("set_loss_weights", {"bce": -0.5, "dice": 1}, "out of range"),
        ("set_loss_weights", {"bce": math.nan, "dice": 1}, "must be finite"),
        ("set_pos_weight", {"pos_weight": 1e-300}, "too small"),
        ("set_pos_weight", {"pos_weight": math.inf}, "must be finite"),
        ("set_clip", {"clip": 5e-324}, "use 0 to turn clipping off"),
        ("set_lr", {"lr": 10**400}, "too large to be a number"),
        ("history", {"from_seq": -1}, "out of range"),
        ("history", {"from_seq": math.inf}, "whole number"),
        (None, {}, "unknown command"),
    ],
)
def test_nonsense_commands_are_refused_with_a_reason(op, args, pattern: str) -> None:
    with pytest.raises(ProtocolError, match=pattern):
        validate_command(Command(op, args))


def test_args_must_be_a_mapping() -> None:
    with pytest.raises(ProtocolError, match="must be a mapping"):
        validate_command(Command("set_lr", [("lr", 1e-3)]))  # type: ignore[arg-type]


def test_make_command_builds_and_validates() -> None:
    assert make_command("set_clip", clip=1.0, request_id="x") == Command("set_clip", {"clip": 1.0}, "x")
    with pytest.raises(ProtocolError):
        make_command("set_clip", clip=float("nan"))
