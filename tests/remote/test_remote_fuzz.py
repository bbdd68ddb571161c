"""Fuzzing the trainer's control socket with random and mutated command frames.

A real trainer process takes the frames on its ROUTER socket while it trains. Every frame
that is not a valid command must get an error reply (never silence, never a crash), and
no setting may change.
"""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from remote_helpers import TrainerProcess, keyed_dealer

from octa_tui.protocol import Command, ProtocolError, Reply, decode, encode
from octa_tui.protocol import channels as ch
from octa_tui.protocol.commands import validate_command
from octa_tui.protocol.follow import RunFollower

pytestmark = pytest.mark.slow

REPLY_TIMEOUT_MS = 5000
VALID = [
    Command(op="set_lr", args={"lr": 0.5}, request_id="r1"),
    Command(op="set_loss_weights", args={"bce": 0.9, "dice": 0.1}, request_id="r2"),
    Command(op="set_clip", args={"clip": 0.25}, request_id="r3"),
    Command(op="set_pos_weight", args={"pos_weight": 7.0}, request_id="r4"),
    Command(op="stop", request_id="r5"),
    Command(op="pause", request_id="r6"),
]
SETTINGS = (ch.OPT_LR, "opt/bce_weight", "opt/dice_weight", "opt/clip")


def is_valid_command(frames: list[bytes]) -> bool:
    """Whether the trainer would accept ``frames`` as a command (those are not fuzz input)."""
    try:
        msg = decode(frames)
        if not isinstance(msg, Command):
            return False
        validate_command(msg)
    except (ProtocolError, Exception):  # noqa: BLE001 - anything unreadable is what we want
        return False
    return True


@st.composite
def mutated_commands(draw) -> list[bytes]:
    """A valid command's frames with bytes flipped, cut, repeated or appended."""
    frames = [bytearray(f) for f in encode(draw(st.sampled_from(VALID)))]
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(frames) - 1))
        frame = frames[index]
        kind = draw(st.sampled_from(["flip", "cut", "append", "duplicate", "drop"]))
        if kind == "flip" and frame:
            at = draw(st.integers(0, len(frame) - 1))
            frame[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del frame[draw(st.integers(0, len(frame))):]
        elif kind == "append":
            frame.extend(draw(st.binary(min_size=1, max_size=16)))
        elif kind == "duplicate":
            frames.append(bytearray(frame))
        elif kind == "drop" and len(frames) > 1:
            frames.pop(index)
    return [bytes(f) for f in frames]


random_frames = st.lists(st.binary(max_size=64), min_size=1, max_size=3)


def latest_settings(info) -> dict[str, float]:
    with RunFollower(info["telemetry"], info["control"], timeout_s=60) as follower:
        history = follower.connect()
        # a trainer announces itself before its first step is published: wait for one
        deadline = time.monotonic() + 120
        while not len(follower.history.steps) and time.monotonic() < deadline:
            follower.poll(0.1)
        history = follower.history
        schema, steps = history.schema, history.steps
        return {key: float(steps.values[-1, schema.index(key)]) for key in SETTINGS if schema.has(key)}, len(steps), \
            [e for e in history.events if e.kind == "command_applied"]


def test_malformed_control_frames_get_error_replies_and_change_nothing(tmp_path):
    # GIVEN a trainer whose settings change only by command (a constant lr schedule)
    trainer = TrainerProcess(tmp_path, "--gamma", "1.0")
    socket = None
    try:
        info = trainer.wait_ready()
        before, steps_before, applied_before = latest_settings(info)
        socket = keyed_dealer(info["control"])  # the owner's fuzzer: with the run's keys
        answered = []

        def exchange(frames: list[bytes]) -> None:
            assume(not is_valid_command(frames))
            socket.send_multipart(frames)
            # THEN an error reply comes back, readable, within the timeout
            assert socket.poll(REPLY_TIMEOUT_MS), f"no reply to {frames!r}"
            reply = decode(socket.recv_multipart())
            assert isinstance(reply, Reply) and reply.status == "error" and reply.reason, reply
            answered.append(reply)

        fuzz = settings(max_examples=150, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
        # WHEN the control socket gets random frames, and valid commands mutated
        fuzz(given(random_frames)(exchange))()
        fuzz(given(mutated_commands())(exchange))()
        assert len(answered) >= 200
        time.sleep(0.5)
        # THEN the trainer trained on, and no setting changed
        assert trainer.proc.poll() is None, trainer.output()
        after, steps_after, applied_after = latest_settings(info)
        assert steps_after > steps_before
        assert applied_after == applied_before
        assert before.keys() == after.keys() and before
        for key, value in before.items():
            assert math.isclose(after[key], value, rel_tol=1e-6) or (math.isnan(value) and math.isnan(after[key])), key
    finally:
        if socket is not None:
            socket.close(linger=0)
        assert trainer.stop() == 0, trainer.output()


def test_atheris_finds_no_control_frame_that_goes_unanswered_or_gets_through(tmp_path):
    # atheris is optional: fuzz with it when it is installed (pip install atheris)
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("atheris") is None:
        pytest.skip("atheris is not installed (optional: pip install atheris)")
    here = Path(__file__).parent
    result = subprocess.run(
        [sys.executable, str(here / "remote_atheris_main.py"), "-runs=5000", "-max_len=256",
         f"-artifact_prefix={tmp_path}/"],
        cwd=here, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 5000 runs" in result.stderr
