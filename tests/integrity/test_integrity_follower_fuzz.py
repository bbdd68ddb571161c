"""GIVEN any mix of good and bad frames on a follower's stream WHEN it polls THEN it never
raises, never holds a step twice or out of order, and never holds a step the trainer did not
publish; good steps that arrive after the bad ones are all held.

The trainer here is a model (its history answers come from a list), so hypothesis can try
thousands of streams quickly; the socket-level attacks are in test_integrity_follower.py.
"""

from __future__ import annotations

import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from octa_tui.protocol import ModelSummary, Schema
from octa_tui.protocol.codec import HEAD, decode_step_frames, encode, encode_step
from octa_tui.protocol.follow import VERIFY_INTERVAL_S, RunFollower
from octa_tui.protocol.messages import Heartbeat, Reply, StepChunk
from octa_tui.protocol.run import RunHistory

RUN = "0badc0de0badc0de"
SCHEMA = Schema(run_id=RUN, task="segmentation", model=ModelSummary("UNet", 10), loss=("total",),
                grad=("a", "b"), opt=("lr",))
WIDTH = SCHEMA.width


def good(seq: int) -> bytes:
    return encode_step(bytes.fromhex(RUN), seq, seq, 0, 1000.0 + seq, np.full(WIDTH, float(seq), np.float32))


class ModelTrainer:
    """The trainer's side of the control socket: history answers from what it published."""

    def __init__(self) -> None:
        self.published = 0  # steps 0 .. published-1 exist
        self.last_heard = None
        self.asked: list[int] = []

    def history(self, from_seq: int = 0):
        self.asked.append(from_seq)
        self.last_heard = time.monotonic()
        yield SCHEMA
        if from_seq < self.published:
            seq = np.arange(from_seq, self.published, dtype=np.uint64)
            yield StepChunk(RUN, seq, seq.astype(np.int64), np.zeros(seq.size, np.int32),
                            1000.0 + seq.astype(np.float64), np.repeat(seq.astype(np.float32)[:, None], WIDTH, 1))
        yield Reply("r", "ok", data={"last_seq": self.published - 1, "chunks": 1})

    def collect(self):
        return []

    def send(self, command):
        return "x"

    def close(self):
        pass


class FrameFeed:
    """The subscriber: each poll drains the next batch of raw frames, decoded as the real one does."""

    def __init__(self) -> None:
        self.batches: list[list] = []
        self.malformed = 0
        self.foreign_version = 0
        self.incompatible = None
        self.received = 0

    def _skip(self, frames, exc) -> None:
        self.malformed += 1

    def drain_blocks(self, max_messages: int, timeout_s: float):
        if not self.batches:
            return []
        frames = self.batches.pop(0)
        out: list = []
        singles = []
        for fr in frames:
            if isinstance(fr, list):
                if singles:
                    out.extend(decode_step_frames(singles, self._skip))
                    singles = []
                from octa_tui.protocol import decode
                from octa_tui.protocol.errors import ProtocolError

                try:
                    out.append(decode(fr))
                except ProtocolError:
                    self.malformed += 1
            else:
                singles.append(fr)
        if singles:
            out.extend(decode_step_frames(singles, self._skip))
        return out

    def close(self) -> None:
        pass


def bad_frame(draw, next_good: int, held: int):
    """One bad frame of some kind (``held``: steps the follower holds before this batch)."""
    kind = draw(st.sampled_from(["jump", "back", "width", "run", "major", "garbage", "heartbeat", "time"]))
    if kind == "jump":
        seq = draw(st.integers(next_good + 1, 2**63 - 1))
        return encode_step(bytes.fromhex(RUN), seq, 0, 0, 1.0, np.zeros(WIDTH, np.float32))
    if kind == "back" and held > 0:  # a step the follower holds already, again with other values (a forged
        # step with a seq the follower still needs looks exactly like the real one: only keys tell them apart)
        return encode_step(bytes.fromhex(RUN), draw(st.integers(0, held - 1)), 0, 0, 1.0,
                           np.full(WIDTH, -1.0, np.float32))
    if kind == "width":  # (a wrong width is refused whatever its seq)
        width = draw(st.integers(0, 40).filter(lambda w: w != WIDTH))
        return encode_step(bytes.fromhex(RUN), next_good, 0, 0, 1.0, np.full(width, -2.0, np.float32))
    if kind == "run":
        return encode_step(draw(st.binary(min_size=8, max_size=8)), next_good, 0, 0, 1.0,
                           np.full(WIDTH, -3.0, np.float32))
    if kind == "major":
        frame = bytearray(good(next_good))
        frame[2] = draw(st.integers(2, 255))
        return bytes(frame)
    if kind == "heartbeat":
        head, body = encode(Heartbeat(RUN, "trainer", 1.0, last_seq=draw(st.integers(0, 2**62)),
                                      state=draw(st.sampled_from(["running", "finished", "stopped"]))))
        return [head, body]
    if kind == "time":
        frame = bytearray(good(next_good))
        frame[HEAD.size + 8 + 8 + 8 + 4 : HEAD.size + 8 + 8 + 8 + 4 + 8] = b"\x00\x00\x00\x00\x00\x00\xf8\x7f"
        return bytes(frame)
    return draw(st.binary(min_size=0, max_size=80))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_any_stream_of_good_and_bad_frames_keeps_the_good_steps_once_in_order(data):
    follow_a_stream(data, checks_every_poll=True)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_the_same_with_checks_at_their_real_rate(data):
    # (checks with the trainer at most every VERIFY_INTERVAL_S: jumps wait for the next one)
    follow_a_stream(data, checks_every_poll=False)


def follow_a_stream(data, checks_every_poll: bool) -> None:
    trainer, feed = ModelTrainer(), FrameFeed()
    f = RunFollower("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    f.history = RunHistory(SCHEMA)
    f._sub, f._client, f._next_ping = feed, trainer, float("inf")
    seq = 0
    for _ in range(data.draw(st.integers(1, 6))):
        held = len(f.history.steps)
        batch = []
        for _ in range(data.draw(st.integers(0, 30))):
            if data.draw(st.booleans()):
                if data.draw(st.integers(0, 9)) == 0:
                    seq += data.draw(st.integers(1, 5))  # steps lost on the way (a slow monitor)
                batch.append(good(seq))
                seq += 1
                trainer.published = seq
            else:
                batch.append(bad_frame(data.draw, seq, held))
        feed.batches.append(batch)
        if checks_every_poll:
            f._last_verify = -1e9  # each poll may check with the trainer
        f.poll(0)  # never raises
    for _ in range(3):
        if checks_every_poll:
            f._last_verify = -1e9
        else:
            time.sleep(VERIFY_INTERVAL_S * 1.1)
        f.poll(0)
    held = f.history.steps.seq.astype(np.int64)
    assert np.all(np.diff(held) > 0), "a step held twice or out of order"
    np.testing.assert_array_equal(f.history.steps.values[:, 0], held.astype(np.float32))
    assert held.size == 0 or held[-1] < max(trainer.published, 1)
    # every good step published is held (what the stream lost, history filled)
    np.testing.assert_array_equal(held, np.arange(trainer.published))
