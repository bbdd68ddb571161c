"""GIVEN a monitor following a real trainer over real sockets WHEN one bad frame arrives among
good ones THEN that frame is counted and skipped, and everything after it is shown exactly once.

Each test is a failure a hostile or buggy publisher caused before: a far sequence jump froze the
monitor for good, a frame of another protocol major made every later poll raise, a step of the
wrong width raised out of poll and left duplicates, and a flipped run id downloaded the whole
history once per frame.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from integrity_helpers import TrainerThread, assert_steps_exactly, make_schema, poll_until

from octa_tui.protocol import Event, encode
from octa_tui.protocol.follow import FINAL_STATES, RunFollower
from octa_tui.protocol.messages import Heartbeat
from octa_tui.tui.sources import LiveSource

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def trainer():
    started: list[TrainerThread] = []

    def start(**kwargs) -> TrainerThread:
        thread = TrainerThread(make_schema(), **kwargs)
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def follower():
    made: list[RunFollower] = []

    def make(t: TrainerThread, **kwargs) -> RunFollower:
        f = RunFollower(t.telemetry, t.control, **kwargs)
        made.append(f)
        return f

    yield make
    for f in made:
        f.close()


def test_a_far_sequence_jump_is_refused_and_every_later_step_is_shown(trainer, follower):
    # GIVEN a follower that holds steps 0..99
    t = trainer()
    t.publish(0, 100)
    f = follower(t)
    f.connect()
    # WHEN one step claims seq 4.6e18, and the run goes on
    t.inject(t.step_frame(4_600_000_000_000_000_000))
    t.publish(100, 400)
    poll_until(f, lambda: len(f.history.steps) >= 500)
    # THEN the jump was checked with the trainer, refused and counted, and nothing was lost
    assert_steps_exactly(f, 500)
    assert f.rejected_detail == {"seq_jump": 1}
    assert f.gaps_unfilled == 0 and f.state == "live"


def test_a_jump_inside_a_batch_is_refused_without_holes_or_duplicates(trainer, follower):
    # GIVEN a follower that holds steps 0..9, and a batch of steps with a bad frame in the middle
    t = trainer()
    t.publish(0, 10)
    f = follower(t)
    f.connect()
    frames = [t.step_frame(i) for i in range(10, 60)]
    frames.insert(25, t.step_frame(10_000))
    # WHEN the batch arrives at once (the follower is not reading meanwhile)
    t.call(lambda link: [link.history.steps.append(i, i, i // 100, time.time(), np.full(t.schema.width, float(i),
                                                                                         np.float32))
                         for i in range(10, 60)])
    t.inject(*frames)
    poll_until(f, lambda: len(f.history.steps) >= 60)
    for _ in range(5):
        f.poll(0.02)
    # THEN exactly steps 0..59 are held, and one frame was refused
    assert_steps_exactly(f, 60)
    assert f.rejected_detail == {"seq_jump": 1}


def test_a_frame_of_another_protocol_major_is_counted_and_later_polls_go_on(trainer, follower):
    # GIVEN a follower of a running trainer
    t = trainer()
    t.publish(0, 50)
    f = follower(t)
    f.connect()
    # WHEN one frame of protocol 7.3 arrives (a step and a heartbeat), then more steps
    step = bytearray(t.step_frame(50))
    step[2:4] = bytes([7, 3])
    head, body = encode(Heartbeat(t.schema.run_id, "trainer", time.time(), last_seq=49))
    t.inject(bytes(step), [head[:2] + bytes([7, 3]) + head[4:], body])
    t.publish(50, 100)
    # THEN no poll raises, every later step is shown, and the two frames are counted
    poll_until(f, lambda: len(f.history.steps) >= 150)
    assert_steps_exactly(f, 150)
    assert f.rejected_detail == {"version": 2}
    for _ in range(3):
        f.poll(0.01)
    assert len(f.history.steps) == 150


@pytest.mark.parametrize("width", [0, 1, 7, 9, 500])
def test_a_step_of_the_wrong_width_mid_batch_is_skipped_without_holes_or_duplicates(trainer, follower, width):
    # GIVEN a follower, and a backlog with one step of the wrong width taking seq 100's place
    t = trainer()
    f = follower(t)
    f.connect()
    assert width != t.schema.width
    t.publish(0, 100)
    t.inject(t.step_frame(100, width=width))
    t.publish(100, 100)
    # WHEN it is polled (no exception may leave poll)
    poll_until(f, lambda: len(f.history.steps) >= 200)
    for _ in range(5):
        f.poll(0.01)
    # THEN steps 0..199 are held exactly once, in order, and the bad frame is counted
    assert_steps_exactly(f, 200)
    assert f.rejected_detail == {"width": 1}


def test_flipped_run_ids_never_download_the_whole_history(trainer, follower):
    # GIVEN a follower of a run with a long history
    t = trainer()
    t.publish(0, 20_000)
    f = follower(t)
    f.connect()
    joined = len(t.history_requests)
    # WHEN ten frames arrive, each with another flipped run id, between good steps
    for i in range(10):
        token = bytearray(bytes.fromhex(t.schema.run_id))
        token[i % 8] ^= 1 << (i % 7)
        t.inject(t.step_frame(20_000 + i, run_id=token.hex()))
        t.publish(20_000 + i, 1)
    started = time.monotonic()
    poll_until(f, lambda: len(f.history.steps) >= 20_010)
    spent = time.monotonic() - started
    # THEN every good step is shown, the ten are counted, and no full history was asked for
    assert_steps_exactly(f, 20_010)
    assert f.rejected_detail == {"run_id": 10}
    asked = t.history_requests[joined:]
    assert 0 not in asked, f"a full history was downloaded: {asked}"
    assert len(asked) <= 10
    assert f.history.run_id == t.schema.run_id
    print(f"10 flipped run ids: {spent:.3f} s of polling, {len(asked)} checks with the trainer")


def test_a_flood_of_bad_frames_costs_the_trainer_a_bounded_number_of_answers(trainer, follower):
    # GIVEN a follower of a running trainer
    t = trainer()
    t.publish(0, 100)
    f = follower(t)
    f.connect()
    joined = len(t.history_requests)
    # WHEN 2,000 frames with random run ids and sequence jumps arrive in a burst
    rng = np.random.default_rng(0)
    frames = []
    for i in range(1000):
        frames.append(t.step_frame(int(rng.integers(200, 2**62)), value=0))
        frames.append(t.step_frame(100 + i, run_id=rng.bytes(8).hex()))
    t.inject(*frames)
    t.publish(100, 100)
    started = time.monotonic()
    poll_until(f, lambda: len(f.history.steps) >= 200 and f.rejected_frames >= 2000)
    spent = time.monotonic() - started
    # THEN all good steps are held once, every bad frame is counted, and the trainer was
    # asked at most a few times a second of polling
    assert_steps_exactly(f, 200)
    assert f.rejected_frames == 2000
    asked = len(t.history_requests) - joined
    assert asked <= 3 + 12 * spent, f"{asked} history requests in {spent:.2f} s"


def test_a_real_gap_is_still_filled_from_history(trainer, follower):
    # GIVEN a follower to which steps 10..309 are lost on the way (a slow monitor)
    t = trainer()
    t.publish(0, 10)
    f = follower(t)
    f.connect()

    def lose_some(link):
        send = link._publisher.send_frame
        count = [10]

        def lossy(frame):
            count[0] += 1
            return True if 10 < count[0] <= 310 else send(frame)

        link._publisher.send_frame = lossy

    t.call(lose_some)
    # WHEN the trainer goes on to step 319
    t.publish(10, 310)
    updates = poll_until(f, lambda: len(f.history.steps) >= 320)
    # THEN the gap was confirmed by the trainer and filled; nothing is refused
    assert_steps_exactly(f, 320)
    assert sum(u.gaps_filled for u in updates) >= 1 and f.rejected_frames == 0


def test_a_restart_is_confirmed_and_followed(trainer, follower, tmp_path):
    # GIVEN a follower of a trainer on ipc endpoints
    endpoints = {"telemetry": f"ipc://{tmp_path / 't.sock'}", "control": f"ipc://{tmp_path / 'c.sock'}"}
    first = trainer(**endpoints)
    first.publish(0, 20)
    f = follower(first)
    f.connect()
    # WHEN a new run starts on the same endpoints
    first.stop()
    second = trainer(**endpoints)
    second.publish(0, 30)
    updates = poll_until(f, lambda: f.history.run_id == second.schema.run_id and len(f.history.steps) >= 30)
    # THEN the follower holds the new run; frames of the new run that came before the check
    # was allowed are not steps lost: the history download brought them
    assert any(u.new_run for u in updates)
    assert_steps_exactly(f, 30)


def test_how_a_run_ended_is_told_and_a_stop_by_the_monitor_is_named(trainer, follower):
    # GIVEN a live source following a trainer
    t = trainer()
    t.publish(0, 10)
    source = LiveSource(t.telemetry, t.control, spill=False)
    source.open()
    try:
        assert source.end_state is None and source.rejected_frames == 0
        # WHEN a monitor's stop command is applied and the trainer says goodbye "stopped"
        t.call(lambda link: link.publish(Event(t.schema.run_id, 10, time.time(), "command_applied", "stop",
                                               {"op": "stop"})))
        t.call(lambda link: link.close("stopped"))
        deadline = time.monotonic() + 120
        while source.end_state is None:
            assert time.monotonic() < deadline
            source.poll(0.02)
        # THEN the source says stopped, by a monitor, and the status carries it
        assert source.end_state == "stopped" and source.ended_by == "monitor"
        status = source.status()
        assert status.end_state == "stopped" and status.ended_by == "monitor"
        assert "stopped" in FINAL_STATES
    finally:
        source.close()


def test_a_finished_run_is_finished_not_lost(trainer):
    t = trainer()
    t.publish(0, 5)
    source = LiveSource(t.telemetry, t.control, spill=False)
    source.open()
    try:
        t.call(lambda link: link.close("finished"))
        deadline = time.monotonic() + 120
        while source.end_state is None:
            assert time.monotonic() < deadline
            source.poll(0.02)
        assert source.end_state == "finished" and source.ended_by is None
    finally:
        source.close()


def test_a_forged_goodbye_among_live_steps_does_not_end_the_run(trainer, follower):
    # GIVEN a follower of a running trainer
    t = trainer()
    t.publish(0, 10)
    f = follower(t)
    f.connect()
    # WHEN a heartbeat saying "finished" arrives, and the run goes on
    head, body = encode(Heartbeat(t.schema.run_id, "trainer", time.time(), state="finished", last_seq=9))
    t.inject([head, body], *[t.step_frame(i) for i in range(10, 30)])
    poll_until(f, lambda: len(f.history.steps) >= 30)
    # THEN the steps after it say the run is not over
    assert f.end_state is None
    assert_steps_exactly(f, 30)


def test_a_heartbeat_claiming_a_far_last_step_costs_one_small_check(trainer, follower):
    t = trainer()
    t.publish(0, 1000)
    f = follower(t)
    f.connect()
    joined = len(t.history_requests)
    head, body = encode(Heartbeat(t.schema.run_id, "trainer", time.time(), last_seq=2**62))
    t.inject(*[[head, body]] * 50)
    t.publish(1000, 10)
    poll_until(f, lambda: len(f.history.steps) >= 1010)
    for _ in range(10):
        f.poll(0.02)
    assert_steps_exactly(f, 1010)
    asked = t.history_requests[joined:]
    assert 0 not in asked and len(asked) <= 5, asked


def test_unreadable_frames_are_counted_on_the_live_source_and_following_goes_on(trainer):
    # GIVEN a live source following a trainer
    t = trainer()
    t.publish(0, 20)
    source = LiveSource(t.telemetry, t.control, spill=False)
    source.open()
    try:
        # WHEN garbage, a truncated step and a record with a broken body arrive, then more steps
        step = t.step_frame(20)
        head, body = encode(Event(t.schema.run_id, 1, 1.0, "warning", "x"))
        t.inject(b"", b"hello", step[:30], step[:-2], [head, body[:-3]], [b"\x00" * 8, b"\x01"])
        t.publish(20, 30)
        deadline = time.monotonic() + 120
        while len(source.history.steps) < 50 or source.rejected_frames < 6:
            assert time.monotonic() < deadline, (len(source.history.steps), source.rejected_detail)
            source.poll(0.02)
        # THEN they are counted as malformed, on the source and in its status, and nothing is lost
        assert source.rejected_detail == {"malformed": 6}
        assert source.status().rejected_frames == 6
        assert np.array_equal(source.history.steps.seq, np.arange(50, dtype=np.uint64))
    finally:
        source.close()
