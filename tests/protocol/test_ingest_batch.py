"""The monitor's ingest fast path gives exactly what decoding one step at a time gives.

Steps that arrive together are decoded as one block (codec.decode_step_frames), drained as
blocks (TelemetrySubscriber.drain_blocks) and filed with one extend (RunFollower.poll).
Each test compares the fast path against the one-frame-at-a-time path on the same frames:
malformed frames, other runs, gaps, duplicates and records in between included.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from octa_tui.protocol import (
    EpochSummary,
    Event,
    Heartbeat,
    ModelSummary,
    ProtocolError,
    Schema,
    Step,
    encode,
    encode_step,
)
from octa_tui.protocol.codec import STEP_HEAD, StepBlock, decode, decode_step_frames
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.link import TrainerLink
from octa_tui.protocol.transport import TelemetryPublisher, TelemetrySubscriber

WIDTH = 7
RUN_A = "0123456789abcdef"
RUN_B = "fedcba9876543210"

# Every wait below is for a condition; this ceiling only ends a test that would otherwise hang.
# It is generous because a loaded 2-core machine can stall a thread for seconds (a 15 s
# deadline once failed there while the condition was still on its way).
CEILING_S = 120.0
# A follower's control requests wait this long for an answer. Not the ceiling: a request sent
# to a trainer just before it restarted is never answered, and this timeout is what recovers
# (the client reconnects to the new trainer); long enough for a loaded machine's slow answer.
CONTROL_TIMEOUT_S = 10.0


def schema_of(run_id: str) -> Schema:
    return Schema(
        run_id=run_id,
        task="segmentation",
        model=ModelSummary("UNet", 1000),
        loss=("total", "bce", "dice"),
        grad=("enc0", "enc1", "dec0"),
        opt=("lr",),
    )


def step_frame(run_id: str, seq: int, *, time_s: float | None = None, width: int = WIDTH) -> bytes:
    """A step whose every value is its seq, so a mix-up shows in the values too."""
    values = np.full(width, float(seq), dtype=np.float32)
    return encode_step(bytes.fromhex(run_id), seq, seq * 10, seq // 100, 1000.0 + seq if time_s is None else time_s,
                       values)


def one_by_one(frames: list[bytes]) -> tuple[list, list[str]]:
    """What decode() makes of each frame on its own: the messages, and the errors in order."""
    messages, errors = [], []
    for frame in frames:
        try:
            messages.append(decode([frame]))
        except ProtocolError as exc:
            errors.append(str(exc))
    return messages, errors


def batched(frames: list[bytes]) -> tuple[list, list[str], list]:
    """What decode_step_frames makes of the same frames: expanded messages, errors, raw output."""
    errors: list[str] = []
    out = decode_step_frames(frames, lambda _frames, exc: errors.append(str(exc)))
    expanded = [s for item in out for s in (item.steps() if isinstance(item, StepBlock) else [item])]
    return expanded, errors, out


# --- codec: many frames at once ---------------------------------------------------------------


def test_a_clean_backlog_of_one_run_becomes_one_block_with_every_column() -> None:
    # GIVEN 1,000 consecutive step frames of one run
    frames = [step_frame(RUN_A, i) for i in range(1000)]
    # WHEN they are decoded together
    expanded, errors, out = batched(frames)
    # THEN one block holds them all, column by column, as decode() reads them one by one
    assert errors == [] and len(out) == 1 and isinstance(out[0], StepBlock)
    chunk = out[0].chunk
    assert chunk.run_id == RUN_A
    assert np.array_equal(chunk.seq, np.arange(1000, dtype=np.uint64))
    assert np.array_equal(chunk.step, np.arange(1000) * 10)
    assert np.array_equal(chunk.epoch, np.arange(1000) // 100)
    assert np.array_equal(chunk.time, 1000.0 + np.arange(1000))
    assert np.array_equal(chunk.values, np.repeat(np.arange(1000, dtype=np.float32)[:, None], WIDTH, axis=1))
    assert expanded == one_by_one(frames)[0]


def test_bad_frames_in_a_backlog_are_reported_as_decode_reports_them_and_the_rest_kept() -> None:
    # GIVEN steps of two runs with, in between, a wrong magic, another major version, a
    # non-finite time, a record kind in a one-frame message, a truncated and a ragged frame
    good = step_frame(RUN_A, 5)
    wrong_magic = b"XX" + good[2:]
    other_major = good[:2] + bytes([good[2] + 1]) + good[3:]
    not_a_step = good[:4] + bytes([5]) + good[5:]
    frames = [
        step_frame(RUN_A, 1), step_frame(RUN_A, 2), wrong_magic, step_frame(RUN_A, 3),
        step_frame(RUN_B, 0), other_major, step_frame(RUN_A, 4, time_s=float("nan")), not_a_step,
        good[:20], good + b"\x00\x01", step_frame(RUN_A, 6), step_frame(RUN_A, 7, width=3),
    ]
    # WHEN decoded together and one by one
    expanded, errors, out = batched(frames)
    expected, expected_errors = one_by_one(frames)
    # THEN the same steps come out in the same order, and every bad frame gives decode()'s reason
    assert expanded == expected
    assert errors == expected_errors and len(errors) == 6
    assert [s.run_id for s in expanded] == [RUN_A, RUN_A, RUN_A, RUN_B, RUN_A, RUN_A]
    assert any("not an octa-tui message" in e for e in errors)
    assert any("not compatible" in e for e in errors)
    assert any("time must be finite" in e for e in errors)


def _frames_strategy() -> st.SearchStrategy[list[bytes]]:
    step = st.builds(
        lambda run, seq, t, width: step_frame(run, seq, time_s=t, width=width),
        st.sampled_from([RUN_A, RUN_B]),
        st.integers(0, 2**36),
        st.one_of(st.floats(0, 1e9), st.just(float("inf")), st.just(float("nan"))),
        st.sampled_from([0, 3, WIDTH]),
    )
    corrupt = st.builds(
        lambda frame, at, byte: frame[:at] + bytes([byte]) + frame[at + 1 :],
        step, st.integers(0, STEP_HEAD.size - 1), st.integers(0, 255),
    )
    cut = st.builds(lambda frame, n: frame[:n], step, st.integers(0, STEP_HEAD.size + 4))
    return st.lists(st.one_of(step, step, step, corrupt, cut), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_frames_strategy())
def test_decoding_together_always_equals_decoding_one_by_one(frames: list[bytes]) -> None:
    # GIVEN any mix of step frames, corrupted headers and truncated frames
    # WHEN decoded together and one by one
    expanded, errors, _ = batched(frames)
    expected, expected_errors = one_by_one(frames)
    # THEN the steps and the reasons for refusing the others are the same, in order
    assert expanded == expected
    assert errors == expected_errors


# --- the subscriber ---------------------------------------------------------------------------


def test_drain_blocks_keeps_order_and_counts_malformed_messages_like_drain() -> None:
    # GIVEN two subscribers on one publisher
    pub = TelemetryPublisher("tcp://127.0.0.1:0")
    reference = TelemetrySubscriber(pub.endpoint)
    fast = TelemetrySubscriber(pub.endpoint)
    try:
        deadline = time.monotonic() + CEILING_S
        while reference.recv(0.02) is None or fast.recv(0.02) is None:
            assert time.monotonic() < deadline, "subscription did not start"
            pub.send(Heartbeat(RUN_A, "trainer", 1.0))
        reference.drain(), fast.drain()
        # WHEN steps, records between them, and malformed messages are published
        event = Event(RUN_A, step=30, time=2.0, kind="warning", message="after step 3")
        epoch = EpochSummary(RUN_A, 0, 50, 3.0, {"loss": 0.6}, {"dice": 0.4})
        sends: list[Callable[[], bool]] = [
            *(lambda i=i: pub.send_frame(step_frame(RUN_A, i)) for i in range(4)),
            lambda: pub.send(event),
            *(lambda i=i: pub.send_frame(step_frame(RUN_A, i)) for i in range(4, 8)),
            lambda: pub._socket.send_multipart([step_frame(RUN_A, 8), b"trailing"]) or True,
            lambda: pub.send_frame(b"OC"),
            lambda: pub.send_frame(step_frame(RUN_B, 0)),
            lambda: pub.send(epoch),
            lambda: pub.send_frame(step_frame(RUN_A, 9)),
        ]
        for send in sends:
            assert send()
        expected = drain_all(reference.drain, 12)
        got = drain_all(fast.drain_blocks, 12)
        # THEN the fast drain gives the same messages in the same order, and the same errors
        expanded = [s for item in got for s in (item.steps() if isinstance(item, StepBlock) else [item])]
        assert expanded == expected
        assert [type(m).__name__ for m in expected].count("Step") == 10
        assert expected.index(event) == 4 and expected.index(epoch) == 10
        assert any(isinstance(item, StepBlock) and len(item) == 4 for item in got)
        assert fast.malformed == reference.malformed == 2
        assert fast.last_error == reference.last_error
        assert fast.received == reference.received
    finally:
        reference.close()
        fast.close()
        pub.close()


def drain_all(drain: Callable[..., list], messages: int) -> list:
    """Drain until ``messages`` readable messages (blocks counted by their steps) arrived."""
    got: list = []
    deadline = time.monotonic() + CEILING_S
    while sum(len(m) if isinstance(m, StepBlock) else 1 for m in got) < messages:
        assert time.monotonic() < deadline, f"only {got} arrived"
        got.extend(drain(1000, 0.05))
    return got


# --- the follower -----------------------------------------------------------------------------


class ControlThread:
    """A trainer's control side on its own thread: answers joins, pings and history requests."""

    def __init__(self, run_id: str, telemetry: str, control: str, history_steps: int) -> None:
        self._work: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        ready: queue.Queue = queue.Queue()
        self._thread = threading.Thread(
            target=self._main, args=(run_id, telemetry, control, history_steps, ready), daemon=True
        )
        self._thread.start()
        result = ready.get(timeout=CEILING_S)
        if isinstance(result, BaseException):
            raise result

    def _main(self, run_id, telemetry, control, history_steps, ready) -> None:
        try:
            link = TrainerLink(schema_of(run_id), telemetry=telemetry, control=control, heartbeat_s=0.05)
        except BaseException as exc:
            ready.put(exc)
            return
        self.add_history(link, 0, history_steps)
        ready.put(None)
        while not self._stop.is_set():
            try:
                fn, box = self._work.get(timeout=0.002)
                box.put(fn(link))
            except queue.Empty:
                pass
            link.poll_commands()
            link.tick()
        link.close()

    @staticmethod
    def add_history(link: TrainerLink, first: int, count: int) -> None:
        """Steps the trainer holds in its history, as step_frame() would carry them."""
        for seq in range(first, first + count):
            link.history.steps.append(seq, seq * 10, seq // 100, 1000.0 + seq, np.full(WIDTH, float(seq), np.float32))

    def call(self, fn) -> object:
        box: queue.Queue = queue.Queue()
        self._work.put((fn, box))
        return box.get(timeout=CEILING_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CEILING_S)


def _send_all(pub: TelemetryPublisher, messages: list) -> None:
    for msg in messages:
        sent = pub.send_frame(msg) if isinstance(msg, bytes) else pub.send(msg)
        assert sent


def _poll_until_marker(followers: list[RunFollower], marker: str, updates: dict,
                       resend: Callable[[], None] | None = None) -> None:
    """Poll each follower until its history holds the event ``marker`` (``resend``, when
    given, publishes the trainer's ongoing messages every half second meanwhile)."""
    deadline = time.monotonic() + CEILING_S
    sent_at = -1.0
    for f in followers:
        while not any(e.message == marker for e in f.history.events):
            assert time.monotonic() < deadline, f"follower did not reach {marker!r}"
            if resend is not None and time.monotonic() - sent_at > 0.5:
                resend()
                sent_at = time.monotonic()
            updates.setdefault(id(f), []).append(f.poll(0.02))


def _same_history(fast: RunFollower, reference: RunFollower) -> None:
    a, b = fast.history, reference.history
    assert a.run_id == b.run_id
    for column in ("seq", "step", "epoch", "time", "values"):
        assert np.array_equal(getattr(a.steps, column), getattr(b.steps, column)), column
    assert a.events == b.events and a.epochs == b.epochs
    assert (fast.gaps_filled, fast.gaps_unfilled, fast.malformed) == (
        reference.gaps_filled, reference.gaps_unfilled, reference.malformed
    )


def test_the_follower_files_a_mixed_stream_exactly_as_the_step_by_step_path(tmp_path) -> None:
    # GIVEN a trainer of run A holding steps 0..199, and two monitors following it: one on the
    # fast path, one taking the same frames one step at a time (the reference)
    control = f"ipc://{tmp_path / 'control.sock'}"
    trainer = ControlThread(RUN_A, f"ipc://{tmp_path / 'a.sock'}", control, 200)
    pub = TelemetryPublisher("tcp://127.0.0.1:0")
    fast = RunFollower(pub.endpoint, control, timeout_s=CONTROL_TIMEOUT_S)
    reference = RunFollower(pub.endpoint, control, timeout_s=CONTROL_TIMEOUT_S)
    followers = [fast, reference]
    updates: dict = {}
    try:
        for f in followers:
            f.connect()
        reference._sub.drain_blocks = reference._sub.drain  # the one-step-at-a-time path
        deadline = time.monotonic() + CEILING_S
        while any(f._sub.recv(0.02) is None for f in followers):
            assert time.monotonic() < deadline, "subscriptions did not start"
            pub.send(Heartbeat(RUN_A, "trainer", 1.0, last_seq=0))
        # ...and the trainer goes on to step 315, everything it will publish below (its history
        # fills gaps; a follower refuses steps past the last one the trainer says it has)
        trainer.call(lambda link: ControlThread.add_history(link, 200, 116))
        # WHEN the stream carries overlap with the snapshot, records between steps, malformed
        # frames, a duplicate, a gap, and a heartbeat
        a = [step_frame(RUN_A, i) for i in range(400)]
        _send_all(pub, [
            *a[190:231],
            Event(RUN_A, step=2300, time=1230.0, kind="warning", message="after step 230"),
            *a[231:241],
            b"XX" + a[241][2:],
            step_frame(RUN_A, 241, time_s=float("inf")),
            a[235],
            *a[241:246],
            *a[260:271],
            *a[300:311],
            EpochSummary(RUN_A, 3, 3100, 1311.0, {"loss": 0.6}, {"dice": 0.4}),
            *a[311:316],
            Heartbeat(RUN_A, "trainer", 1320.0, last_seq=315),
            Event(RUN_A, step=3150, time=1320.0, kind="info", message="phase 1"),
        ])
        _poll_until_marker(followers, "phase 1", updates)
        # THEN both hold the same history: the gap filled from the trainer, the duplicate and
        # the overlap kept once, the event after step 230, the bad frames counted
        _same_history(fast, reference)
        assert np.array_equal(fast.history.steps.seq, np.arange(316, dtype=np.uint64))
        assert fast.gaps_filled == 1 and fast.malformed == 2
        # GIVEN the trainer restarts as run B, holding the steps it publishes below except
        # 63..69, which even its history lost (a gap no one can fill)
        trainer.stop()
        trainer = ControlThread(RUN_B, f"ipc://{tmp_path / 'b.sock'}", control, 63)
        trainer.call(lambda link: ControlThread.add_history(link, 70, 2))
        b = [step_frame(RUN_B, i) for i in range(80)]
        # WHEN the stream carries the last steps of A, then B from its start, then stale A steps
        _send_all(pub, [
            *a[316:321],
            *b[0:10],
            *b[50:61],
            *a[321:326],
            *b[61:63],
            *b[70:72],
        ])
        # ...and run B goes on living (a follower confirms a new run with the trainer before it
        # switches, and a trainer that restarted keeps sending heartbeats and records)
        phase_2 = [Heartbeat(RUN_B, "trainer", 1072.0, step=710, last_seq=71),
                   Event(RUN_B, step=720, time=1072.0, kind="info", message="phase 2")]
        _poll_until_marker(followers, "phase 2", updates, resend=lambda: _send_all(pub, phase_2))
        # THEN both switch to run B once, ignore the retired run, and keep what B's history holds
        _same_history(fast, reference)
        expected = np.concatenate([np.arange(63), np.arange(70, 72)]).astype(np.uint64)
        assert fast.history.run_id == RUN_B
        assert np.array_equal(fast.history.steps.seq, expected)
        assert [any(u.new_run for u in updates[id(f)]) for f in followers] == [True, True]
    finally:
        for f in followers:
            f.close()
        pub.close()
        trainer.stop()


@pytest.mark.parametrize("first", [0, 5, 40])
def test_a_backlog_is_filed_with_the_rows_the_snapshot_already_holds_left_out(tmp_path, first: int) -> None:
    # GIVEN a monitor that joined a trainer holding steps 0..19
    control = f"ipc://{tmp_path / 'control.sock'}"
    trainer = ControlThread(RUN_A, f"ipc://{tmp_path / 'a.sock'}", control, 20)
    pub = TelemetryPublisher("tcp://127.0.0.1:0")
    follower = RunFollower(pub.endpoint, control, timeout_s=CONTROL_TIMEOUT_S)
    try:
        follower.connect()
        deadline = time.monotonic() + CEILING_S
        while follower._sub.recv(0.02) is None:
            assert time.monotonic() < deadline, "subscription did not start"
            pub.send(Heartbeat(RUN_A, "trainer", 1.0, last_seq=0))
        trainer.call(lambda link: ControlThread.add_history(link, 20, 40))
        # WHEN a backlog of steps from `first` to 59 arrives at once
        _send_all(pub, [step_frame(RUN_A, i) for i in range(first, 60)])
        deadline = time.monotonic() + CEILING_S
        while len(follower.history.steps) < 60:
            assert time.monotonic() < deadline, "backlog not filed"
            follower.poll(0.02)
        # THEN the history is 0..59 once each, whether the backlog overlapped it or left a gap
        steps = follower.history.steps
        assert np.array_equal(steps.seq, np.arange(60, dtype=np.uint64))
        assert np.array_equal(steps.values[:, 0], np.arange(60, dtype=np.float32))
        assert follower.gaps_filled == (1 if first > 20 else 0)
    finally:
        follower.close()
        pub.close()
        trainer.stop()


def test_step_block_steps_are_the_steps_it_holds() -> None:
    frames = [step_frame(RUN_A, i) for i in range(3)]
    _, _, out = batched(frames)
    assert out[0].steps() == [Step(RUN_A, i, i * 10, 0, 1000.0 + i, np.full(WIDTH, float(i), np.float32))
                              for i in range(3)]
    assert encode(out[0].steps()[1]) == [frames[1]]

