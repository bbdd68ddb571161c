"""The trainer's TrainerLink and the monitor's RunFollower, talking over real sockets.

A trainer thread owns the link (ZeroMQ sockets belong to one thread) and serves it the
way the training loop does: publish, poll commands, tick. Tests hand it work through a
queue and read what the follower sees.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import zmq

from octa_tui.protocol import (
    Command,
    EpochSummary,
    Event,
    ModelSummary,
    ProtocolError,
    Reply,
    Schema,
    encode,
    new_run_id,
)
from octa_tui.protocol.follow import LIVE, LOST, STALLED, RunFollower
from octa_tui.protocol.keys import client_keys_for, secure_client_socket
from octa_tui.protocol.link import PendingCommand, TrainerLink
from octa_tui.protocol.transport import ControlClient, ControlTimeout

HEARTBEAT_S = 0.05


def make_schema(layers: int = 4) -> Schema:
    return Schema(
        run_id=new_run_id(),
        task="segmentation",
        model=ModelSummary("UNet", 1000),
        loss=("total", "bce", "dice"),
        grad=tuple(f"enc{i}" for i in range(layers)),
        opt=("lr",),
    )


def row(schema: Schema, i: int) -> np.ndarray:
    """A step vector whose every value identifies the step, so mix-ups show."""
    return np.full(schema.width, float(i), dtype=np.float32)


class FakeRecorder:
    """Keeps what a recording writer would have written."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.steps: list[tuple[int, int, int, float, np.ndarray]] = []
        self.records: list = []
        self.closed = False
        self.error: str | None = None
        self._fail_after = fail_after

    def write_step(self, seq: int, step: int, epoch: int, time: float, values: np.ndarray) -> None:
        if self._fail_after is not None and len(self.steps) >= self._fail_after:
            raise OSError(28, "No space left on device")
        self.steps.append((seq, step, epoch, time, values.copy()))

    def write(self, msg) -> None:
        self.records.append(msg)

    def close(self) -> None:
        self.closed = True


class TrainerThread:
    """Runs a TrainerLink on its own thread like a training loop's step boundaries.

    ``call(fn)`` runs ``fn(link)`` on that thread and returns its result. Commands that the
    loop must apply are answered ok at the current step (``applied`` keeps them).
    ``freeze()`` stops the loop (no heartbeats, no answers) until ``thaw()``.
    """

    def __init__(self, schema: Schema, **kwargs) -> None:
        self.schema = schema
        self.applied: list[Command] = []
        self._work: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        ready: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._main, args=(kwargs, ready), daemon=True)
        self._thread.start()
        result = ready.get(timeout=10)
        if isinstance(result, BaseException):
            raise result
        self.telemetry, self.control = result

    def _main(self, kwargs, ready) -> None:
        try:
            self.link = TrainerLink(self.schema, heartbeat_s=HEARTBEAT_S, **kwargs)
        except BaseException as exc:
            ready.put(exc)
            return
        ready.put((self.link.telemetry_endpoint, self.link.control_endpoint))
        while not self._stop.is_set():
            if not self._running.wait(0.01):
                continue
            try:
                fn, box = self._work.get(timeout=0.002)
            except queue.Empty:
                fn = None
            if fn is not None:
                try:
                    box.put((True, fn(self.link)))
                except BaseException as exc:
                    box.put((False, exc))
            self.serve()
        self.link.close()

    def serve(self) -> None:
        pending: list[PendingCommand] = self.link.poll_commands()
        for command in pending:
            self.applied.append(command.command)
            command.ok(self.link.history.steps.last_seq())
        self.link.tick()

    def call(self, fn: Callable[[TrainerLink], object], timeout_s: float = 30.0):
        box: queue.Queue = queue.Queue()
        self._work.put((fn, box))
        ok, value = box.get(timeout=timeout_s)
        if not ok:
            raise value
        return value

    def publish(self, first: int, count: int) -> None:
        def run(link: TrainerLink) -> None:
            for i in range(first, first + count):
                link.publish_step(i, i // 100, row(self.schema, i))
                if i % 64 == 0:
                    self.serve()

        self.call(run)

    def freeze(self) -> None:
        self._running.clear()
        time.sleep(0.05)  # let the current loop turn finish

    def thaw(self) -> None:
        self._running.set()

    def stop(self) -> None:
        self._running.set()
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.fixture
def trainer():
    started: list[TrainerThread] = []

    def start(schema: Schema | None = None, **kwargs) -> TrainerThread:
        thread = TrainerThread(schema or make_schema(), **kwargs)
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


def poll_until(f: RunFollower, done: Callable[[], bool], timeout_s: float = 10.0) -> list:
    updates = []
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "follower did not get there in time"
        updates.append(f.poll(0.02))
    return updates


def assert_complete(f: RunFollower, schema: Schema, n: int) -> None:
    steps = f.history.steps
    assert np.array_equal(steps.seq, np.arange(n, dtype=np.uint64)), (
        "steps missing, duplicated or out of order"
    )
    assert np.array_equal(steps.values[:, 0], np.arange(n, dtype=np.float32))
    assert np.array_equal(steps.step, np.arange(n))


# --- joining and following ------------------------------------------------------------------


def test_monitor_joining_mid_stream_gets_every_step_exactly_once(trainer, follower) -> None:
    # GIVEN a trainer streaming steps on its own thread
    t = trainer()
    n = 30_000
    t.publish(0, 2000)
    streaming = threading.Thread(target=t.publish, args=(2000, n - 2000))
    streaming.start()
    # WHEN a monitor joins while the stream runs
    f = follower(t)
    history = f.connect()
    joined_with = len(history.steps)
    poll_until(f, lambda: len(f.history.steps) >= n)
    streaming.join()
    f.poll(0.1)
    # THEN it holds seq 0..n-1 exactly: snapshot and live stream merged, no gap, no duplicate
    assert 2000 <= joined_with < n
    assert_complete(f, t.schema, n)
    assert f.history.schema == t.schema


def test_history_arrives_in_chunks_with_records_first(trainer) -> None:
    t = trainer()
    t.call(lambda link: link.publish(EpochSummary(t.schema.run_id, 0, 99, 5.0, {"loss": 0.6}, {"dice": 0.4})))
    t.publish(0, 10_000)
    client = ControlClient(t.control, timeout_s=5.0)
    try:
        messages = list(client.history(from_seq=1000))
    finally:
        client.close()
    kinds = [type(m).__name__ for m in messages]
    assert kinds == ["Schema", "EpochSummary", "StepChunk", "StepChunk", "StepChunk", "Reply"]
    chunks = messages[2:5]
    assert [len(c) for c in chunks] == [4096, 4096, 808]
    assert int(chunks[0].seq[0]) == 1000 and int(chunks[-1].seq[-1]) == 9999
    final = messages[-1]
    assert final.ok and final.data["chunks"] == 3 and final.data["last_seq"] == 9999


def test_gaps_from_dropped_messages_are_filled_from_history(trainer, follower, monkeypatch) -> None:
    # GIVEN a network that loses steps 300..399, and later every step of a final burst
    t = trainer()
    f = follower(t)
    f.connect()
    real_send = t.link._publisher.send_frame
    lost = set(range(300, 400)) | set(range(500, 550))
    sent = [0]

    def lossy_send(frame: bytes) -> bool:
        seq = sent[0]
        sent[0] += 1
        return False if seq in lost else real_send(frame)

    monkeypatch.setattr(t.link._publisher, "send_frame", lossy_send)
    # WHEN the trainer publishes through it
    t.publish(0, 500)
    updates = poll_until(f, lambda: len(f.history.steps) >= 500)
    # THEN a later step reveals the first gap, and it is filled
    assert_complete(f, t.schema, 500)
    assert sum(u.gaps_filled for u in updates) == 1
    # WHEN a burst is lost whole, with no later step to reveal it
    t.publish(500, 50)
    updates = poll_until(f, lambda: len(f.history.steps) >= 550)
    # THEN the trainer's heartbeat (its last seq) reveals it, and it is filled
    assert_complete(f, t.schema, 550)
    assert sum(u.gaps_filled for u in updates) == 1
    assert f.gaps_unfilled == 0


def test_a_gap_the_trainer_cannot_fill_is_accepted_and_following_goes_on(
    trainer, follower, monkeypatch
) -> None:
    # GIVEN a network that loses steps 100..149 and a trainer that does not answer history
    t = trainer()
    f = follower(t, timeout_s=0.2)
    f.connect()
    real_send = t.link._publisher.send_frame
    sent = [0]

    def lossy_send(frame: bytes) -> bool:
        seq = sent[0]
        sent[0] += 1
        return False if 100 <= seq < 150 else real_send(frame)

    monkeypatch.setattr(t.link._publisher, "send_frame", lossy_send)
    monkeypatch.setattr(t.link, "_send_history", lambda identity, command: None)
    # WHEN the trainer publishes through it
    t.publish(0, 300)
    poll_until(f, lambda: len(f.history.steps) >= 250)
    # THEN the follower keeps everything it received, with the hole, and says so
    expected = np.concatenate([np.arange(100), np.arange(150, 300)]).astype(np.uint64)
    assert np.array_equal(f.history.steps.seq, expected)
    assert f.gaps_unfilled == 1 and f.gaps_filled == 0


def test_records_seen_in_both_snapshot_and_stream_are_kept_once(trainer, follower) -> None:
    t = trainer()
    event = Event(t.schema.run_id, step=5, time=10.0, kind="warning", message="masks are not binary")
    t.call(lambda link: link.publish(event))
    f = follower(t)
    f.connect()
    epoch = EpochSummary(t.schema.run_id, 0, 99, 11.0, {"loss": 0.6}, {"dice": 0.4})
    t.call(lambda link: link.publish(epoch))
    updates = poll_until(f, lambda: len(f.history.epochs) == 1)
    assert f.history.events == [event]
    assert [r for u in updates for r in u.records] == [epoch]


def test_a_restarted_trainer_is_reported_as_a_new_run(trainer, follower, tmp_path) -> None:
    # GIVEN a monitor following a trainer on ipc endpoints
    endpoints = {"telemetry": f"ipc://{tmp_path / 't.sock'}", "control": f"ipc://{tmp_path / 'c.sock'}"}
    first = trainer(**endpoints)
    first.publish(0, 20)
    f = follower(first)
    f.connect()
    assert len(f.history.steps) == 20
    # WHEN it stops and a new run starts on the same endpoints
    first.stop()
    second = trainer(make_schema(layers=6), **endpoints)
    second.publish(0, 5)
    updates = poll_until(f, lambda: f.history.run_id == second.schema.run_id and len(f.history.steps) >= 5)
    # THEN the follower says so and holds only the new run
    assert any(u.new_run for u in updates)
    assert f.history.schema == second.schema
    assert_complete(f, second.schema, 5)


def test_another_major_protocol_version_is_refused_naming_both(tmp_path) -> None:
    # GIVEN a "trainer" that answers in protocol 7.3
    ctx = zmq.Context.instance()
    pub, router = ctx.socket(zmq.PUB), ctx.socket(zmq.ROUTER)
    for sock in (pub, router):
        sock.setsockopt(zmq.LINGER, 0)
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    router_port = router.bind_to_random_port("tcp://127.0.0.1")
    f = RunFollower(f"tcp://127.0.0.1:{pub_port}", f"tcp://127.0.0.1:{router_port}", timeout_s=5.0)

    def answer_foreign() -> None:
        if router.poll(5000):
            identity, *_ = router.recv_multipart()
            head, body = encode(Reply("x", "ok"))
            router.send_multipart([identity, head[:2] + bytes([7, 3]) + head[4:], body])

    server = threading.Thread(target=answer_foreign)
    server.start()
    try:
        with pytest.raises(ProtocolError) as info:
            f.connect()
    finally:
        server.join()
        f.close()
        pub.close()
        router.close()
    assert "7.3" in str(info.value) and "1.0" in str(info.value)


def test_connect_to_no_trainer_times_out_with_a_clear_message() -> None:
    f = RunFollower("tcp://127.0.0.1:9", "tcp://127.0.0.1:9", timeout_s=0.3)
    with pytest.raises(
        ControlTimeout, match=r"no reply from the trainer at tcp://127\.0\.0\.1:9 within 0\.3 s"
    ):
        f.connect()
    f.close()


# --- control ---------------------------------------------------------------------------------


@pytest.fixture
def client():
    made: list[ControlClient] = []

    def make(t: TrainerThread) -> ControlClient:
        c = ControlClient(t.control, timeout_s=5.0)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (Command("set_lr", {"lr": -1.0}), "out of range"),
        (Command("set_lr", {"lr": math.nan}), "must be finite"),
        (Command("set_lr", {"lr": "fast"}), "must be a number"),
        (Command("set_clip", {}), "missing argument"),
        (Command("explode", {}), "unknown command"),
    ],
)
def test_invalid_commands_get_an_error_reply_and_change_nothing(trainer, client, command, reason) -> None:
    t = trainer()
    c = client(t)
    reply = c.request(command)
    assert reply.status == "error"
    assert reason in reply.reason and "nothing was changed" in reply.reason
    assert t.applied == []


def test_a_valid_command_reaches_the_loop_and_is_answered_with_its_step(trainer, client) -> None:
    t = trainer()
    t.publish(0, 10)
    reply = client(t).request(Command("set_lr", {"lr": 5e-4}))
    assert reply.ok and reply.step == 9
    assert t.applied == [Command("set_lr", {"lr": 5e-4}, request_id=reply.request_id)]


def test_malformed_control_frames_get_an_error_reply_and_the_link_keeps_working(trainer, client) -> None:
    t = trainer()
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    curve = client_keys_for(t.control)  # a default trainer takes only its user's key
    if curve is not None:
        secure_client_socket(raw, curve)
    raw.connect(t.control)
    try:
        raw.send_multipart([b"OC\x01\x00\x09\x00\x00\x00", b"\xc1\xc1"])
        assert raw.poll(5000), "no reply to a malformed request"
        from octa_tui.protocol import decode

        reply = decode(raw.recv_multipart())
        assert isinstance(reply, Reply) and reply.status == "error" and "could not read" in reply.reason
    finally:
        raw.close()
    assert client(t).request(Command("ping")).ok


def test_a_command_is_answered_once_only(trainer, client) -> None:
    t = trainer()
    c = client(t)
    c.send(Command("pause"))

    def answer_twice(link: TrainerLink) -> str:
        deadline = time.monotonic() + 5
        pending: list[PendingCommand] = []
        while not pending:
            pending = link.poll_commands()
            assert time.monotonic() < deadline, "the command never arrived"
        pending[0].ok(3)
        with pytest.raises(RuntimeError, match="already answered"):
            pending[0].error("again", 3)
        return pending[0].command.op

    assert t.call(answer_twice) == "pause"


# --- liveness --------------------------------------------------------------------------------


def test_attached_monitors_are_counted_and_leavers_forgotten(trainer, follower) -> None:
    t = trainer()
    a, b = follower(t), follower(t)
    a.connect()
    b.connect()

    def monitors() -> int:
        return t.call(lambda link: link.monitors)

    deadline = time.monotonic() + 5
    while monitors() != 2:
        a.poll(0.01)
        b.poll(0.01)
        assert time.monotonic() < deadline, "the trainer never counted two monitors"
    b.close()
    deadline = time.monotonic() + 5
    while monitors() != 1:
        a.poll(0.01)
        assert time.monotonic() < deadline, "a monitor that left was never forgotten"
    # The trainer's heartbeats tell the monitors how many are attached.
    poll_until(a, lambda: a.trainer is not None and a.trainer.monitors == 1)


def test_heartbeats_give_live_stalled_and_lost(trainer, follower) -> None:
    # GIVEN a follower on a controllable clock, joined to a live trainer
    now = [1000.0]
    t = trainer()
    f = follower(t, clock=lambda: now[0])
    f.connect()
    assert f.heartbeat_s == HEARTBEAT_S
    assert f.poll(0.0).state == LIVE
    # WHEN the trainer freezes and time passes without steps or heartbeats
    t.freeze()
    f.poll(0.05)
    now[0] += 3.5 * HEARTBEAT_S
    assert f.poll(0.0).state == STALLED
    now[0] += 2.0 * HEARTBEAT_S
    assert f.poll(0.0).state == LOST
    # THEN a heartbeat after it resumes makes it live again
    t.thaw()
    poll_until(f, lambda: f.state == LIVE)


def test_a_control_timeout_marks_the_trainer_lost_until_it_answers_again(trainer, follower) -> None:
    # GIVEN a follower whose trainer froze
    t = trainer()
    f = follower(t, timeout_s=0.2)
    f.connect()
    t.freeze()
    f.poll(0.05)
    # WHEN a command gets no answer in time
    with pytest.raises(ControlTimeout):
        f.request(Command("checkpoint"))
    # THEN the trainer is shown lost, and live again once it resumes
    assert f.state == LOST
    t.thaw()
    poll_until(f, lambda: f.state == LIVE)
    # The next request gets its own reply, not the late one to the timed-out command.
    f.timeout_s = 5.0
    reply = f.request(Command("set_clip", {"clip": 2.0}))
    assert reply.ok and reply.request_id == t.applied[-1].request_id


def test_follower_refuses_an_invalid_command_before_sending(trainer, follower) -> None:
    t = trainer()
    f = follower(t)
    f.connect()
    with pytest.raises(ProtocolError, match="out of range"):
        f.request(Command("set_lr", {"lr": -1.0}))
    assert f.request(Command("set_clip", {"clip": 1.0})).ok
    assert [c.op for c in t.applied] == ["set_clip"]


# --- the trainer side never suffers ---------------------------------------------------------


def test_publishing_survives_a_frozen_and_a_dead_monitor(trainer) -> None:
    # GIVEN one monitor that never reads and one that connected and vanished
    t = trainer()
    frozen = RunFollower(t.telemetry, t.control)
    frozen.connect()
    dead = RunFollower(t.telemetry, t.control)
    dead.connect()
    dead.close()
    try:
        # WHEN the trainer publishes 100k steps
        start = time.monotonic()
        t.publish(0, 100_000)
        elapsed = time.monotonic() - start
    finally:
        frozen.close()
    # THEN it never waited on them
    assert elapsed < 30.0
    assert t.call(lambda link: (link.last_seq, link.dropped)) == (99_999, 0)


def test_every_step_and_record_is_handed_to_the_recording(trainer) -> None:
    recorder = FakeRecorder()
    t = trainer(recording=recorder)
    t.publish(0, 50)
    epoch = EpochSummary(t.schema.run_id, 0, 49, 3.0, {"loss": 0.6}, {})
    t.call(lambda link: link.publish(epoch))
    t.stop()
    assert [s[0] for s in recorder.steps] == list(range(50))
    assert np.array_equal(recorder.steps[7][4], row(t.schema, 7))
    assert recorder.records == [epoch]
    assert recorder.closed


def test_the_recording_file_holds_what_the_link_published(tmp_path) -> None:
    from octa_tui.protocol.recording import RecordingWriter, read_recording

    schema = make_schema()
    path = tmp_path / "run.octa"
    link = TrainerLink(schema, recording=RecordingWriter(path, schema), heartbeat_s=HEARTBEAT_S)
    for i in range(300):
        link.publish_step(i, i // 100, row(schema, i))
    epoch = EpochSummary(schema.run_id, 2, 299, 9.0, {"loss": 0.6}, {"dice": 0.4})
    link.publish(epoch)
    link.close()
    replay = read_recording(path).history
    assert np.array_equal(replay.steps.seq, link.history.steps.seq)
    assert np.array_equal(replay.steps.values, link.history.steps.values)
    assert np.array_equal(replay.steps.time, link.history.steps.time)
    assert replay.epochs == [epoch]


def test_a_failing_recording_warns_once_and_training_goes_on(trainer, follower) -> None:
    t = trainer(recording=FakeRecorder(fail_after=10))
    t.publish(0, 30)
    warnings = t.call(lambda link: [e for e in link.history.events if e.kind == "warning"])
    assert len(warnings) == 1 and "No space left on device" in warnings[0].message
    assert t.call(lambda link: link.last_seq) == 29


def test_a_step_of_the_wrong_width_is_refused_before_it_is_sent(trainer) -> None:
    t = trainer()

    def publish_wrong(link: TrainerLink):
        sent = link.sent
        with pytest.raises(ProtocolError, match="schema has"):
            link.publish_step(0, 0, np.zeros(3, dtype=np.float32))
        return link.sent - sent, link.last_seq

    assert t.call(publish_wrong) == (0, -1)


def test_a_follower_with_a_spill_folder_keeps_the_steps_there_and_follows_as_usual(trainer, follower, tmp_path) -> None:
    from octa_tui.protocol.spill import SpillDir

    # GIVEN a trainer 5,000 steps in, and a monitor that pages old steps to a file
    t = trainer()
    t.publish(0, 5000)
    f = follower(t, spill=SpillDir(tmp_path))
    # WHEN it joins late and keeps following
    history = f.connect()
    t.publish(5000, 5000)
    poll_until(f, lambda: len(f.history.steps) >= 10_000)
    # THEN its columns are file-backed and every step is there, once, in order
    assert history.steps.spill is not None and f.history is history
    assert np.array_equal(history.steps.seq, np.arange(10_000, dtype=np.uint64))
    assert np.array_equal(history.steps.values[:, 0], np.arange(10_000, dtype=np.float32))


def test_a_trainer_that_spills_its_history_serves_a_late_joiner_every_step(trainer, follower, tmp_path) -> None:
    from octa_tui.protocol.spill import SpillDir

    # GIVEN a trainer whose history for late joiners is paged to a file, 20,000 steps in
    t = trainer(spill=SpillDir(tmp_path))
    t.publish(0, 20_000)
    # WHEN a monitor joins
    history = follower(t).connect()
    # THEN it gets every step, once, in order, with its values
    assert t.call(lambda link: link.history.steps.spill) is not None
    assert np.array_equal(history.steps.seq, np.arange(20_000, dtype=np.uint64))
    assert np.array_equal(history.steps.values[:, 0], np.arange(20_000, dtype=np.float32))


def test_a_record_published_the_moment_connect_returns_is_never_lost(trainer, follower) -> None:
    # GIVEN a trainer with no steps yet (nothing with a sequence number would reveal a loss)
    t = trainer()
    for i in range(15):
        f = follower(t)
        # WHEN a monitor joins and the trainer publishes a record right after
        f.connect()
        epoch = EpochSummary(t.schema.run_id, i, 10 * i, 11.0 + i, {"loss": 0.6}, {"dice": 0.4})
        t.call(lambda link, e=epoch: link.publish(e))
        # THEN the monitor gets it: its subscription was in place before connect() returned
        poll_until(f, lambda f=f, i=i: len(f.history.epochs) == i + 1, timeout_s=5.0)
        f.close()


def test_a_ping_is_answered_with_a_heartbeat_on_the_stream_at_a_bounded_rate() -> None:
    from octa_tui.protocol.messages import Heartbeat
    from octa_tui.protocol.transport import TelemetrySubscriber

    # GIVEN a trainer link with no scheduled heartbeat during the test, served on this thread
    link = TrainerLink(make_schema(), heartbeat_s=3600.0)
    sub = TelemetrySubscriber(link.telemetry_endpoint)
    client = ControlClient(link.control_endpoint, timeout_s=5.0)
    try:
        heard = None
        for _ in range(200):  # WHEN pinged until the subscription is in place
            client.send(Command(op="ping"))
            time.sleep(0.01)
            link.poll_commands()
            heard = sub.recv(timeout_s=0.02)
            if heard is not None:
                break
        # THEN a heartbeat of the run comes on the stream
        assert isinstance(heard, Heartbeat) and heard.run_id == link.history.run_id
        # AND a burst of pings gets far fewer heartbeats than pings
        for _ in range(20):
            client.send(Command(op="ping"))
        time.sleep(0.05)
        link.poll_commands()
        beats = [m for m in sub.drain(timeout_s=0.2) if isinstance(m, Heartbeat)]
        assert 1 <= len(beats) <= 3
    finally:
        client.close()
        sub.close()
        link.close()
