"""The monitor side of the wire in one object: join a run, follow it, notice when it stops.

A :class:`RunFollower` subscribes to the trainer's telemetry first, then asks for the run's
history over the control socket, and merges the two by sequence number: the snapshot
covers everything up to the moment the trainer answered, the live stream everything
after, and steps that are in both are kept once (the "clone" pattern). While following,
a jump in sequence numbers (messages dropped for a slow monitor) is filled from history,
a new run id (the trainer restarted) starts a fresh history, and the trainer's
heartbeats say whether it is live, stalled or lost.

``poll`` may block for up to ``timeout_s`` while it fills a gap; run it on a worker
thread, never the UI thread. :meth:`RunFollower.request` may be called from another
thread: control-socket use is serialised by a lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .codec import StepBlock
from .commands import validate_command
from .errors import ProtocolError
from .keys import ClientCurve
from .messages import (
    Command,
    DatasetReport,
    EpochSummary,
    Event,
    Heartbeat,
    Message,
    Preview,
    Reply,
    Schema,
    Step,
    StepChunk,
)
from .run import RunHistory
from .spill import SpillDir
from .transport import ControlClient, ControlTimeout, TelemetrySubscriber, parse_endpoint

LIVE = "live"
STALLED = "stalled"
LOST = "lost"
# Silence (no step, no heartbeat) longer than this many trainer heartbeat intervals...
STALLED_INTERVALS = 3.0  # ...means the trainer is stalled,
LOST_INTERVALS = 5.0  # ...and this many means it is gone.
DEFAULT_HEARTBEAT_S = 1.0
# How long connect() waits for its subscription to reach the trainer (see _await_subscription).
SUBSCRIBE_WAIT_S = 1.0


@dataclass(frozen=True)
class FollowUpdate:
    """What one :meth:`RunFollower.poll` changed.

    ``steps``: rows added to ``history.steps`` (after a new run: all rows of the new
    history). ``records``: epoch summaries, events, dataset reports and previews added.
    ``gaps_filled``: sequence gaps repaired from history. ``new_run``: the trainer
    restarted and ``history`` is a new object. ``state``: live, stalled or lost.
    ``trainer``: the trainer's latest heartbeat.
    """

    steps: int
    records: list[Message] = field(default_factory=list)
    gaps_filled: int = 0
    new_run: bool = False
    state: str = LIVE
    trainer: Heartbeat | None = None


def _record_key(msg: Message) -> Hashable:
    """Identity of a record, so one seen in both the snapshot and the stream is kept once."""
    if isinstance(msg, Event):
        return ("event", msg.step, msg.time, msg.kind, msg.message)
    if isinstance(msg, EpochSummary):
        return ("epoch", msg.epoch, msg.step, msg.time)
    if isinstance(msg, Preview):
        return ("preview", msg.step, msg.epoch)
    if isinstance(msg, DatasetReport):
        return ("dataset", msg.source, msg.pairs, msg.unique_mask_values, msg.train_images, msg.val_images)
    return None


def _rows_from(chunk: StepChunk, next_seq: int) -> StepChunk:
    """The rows of ``chunk`` at or after ``next_seq`` (history may overlap what we have)."""
    if len(chunk) == 0 or int(chunk.seq[0]) >= next_seq:
        return chunk
    keep = chunk.seq >= next_seq
    return StepChunk(
        chunk.run_id,
        chunk.seq[keep],
        chunk.step[keep],
        chunk.epoch[keep],
        chunk.time[keep],
        chunk.values[keep],
    )


class _Batch:
    """What one poll has done so far (mutable while the poll runs)."""

    def __init__(self) -> None:
        self.records: list[Message] = []
        self.gaps_filled = 0
        self.new_run = False


class RunFollower:
    """A monitor's view of one trainer: a :class:`RunHistory` kept complete and current.

    ``timeout_s`` bounds every control request (history, gap fills, commands). ``clock``
    is a monotonic clock for liveness. The follower learns the trainer's heartbeat
    interval from its replies and pings it at that rate, so the trainer can count its
    monitors. ``curve`` (a :class:`~octa_tui.protocol.keys.ClientCurve`) connects to a
    trainer that uses CurveZMQ keys; a refused key raises
    :class:`~octa_tui.protocol.transport.KeyRefused` from :meth:`connect`. ``spill`` keeps
    the histories' step columns in files, resident only for the newest rows (a monitor left
    following a run for days keeps a flat memory; see :mod:`octa_tui.protocol.spill`).
    """

    def __init__(
        self,
        telemetry_endpoint: str,
        control_endpoint: str,
        timeout_s: float = 5.0,
        *,
        context: Any = None,
        insecure: bool = False,
        curve: ClientCurve | None = None,
        clock: Callable[[], float] = time.monotonic,
        spill: SpillDir | None = None,
    ) -> None:
        self.spill = spill
        remote_ok = insecure or curve is not None
        self.telemetry_endpoint = parse_endpoint(telemetry_endpoint, insecure=remote_ok)
        self.control_endpoint = parse_endpoint(control_endpoint, insecure=remote_ok)
        self._curve = curve
        self.timeout_s = float(timeout_s)
        self._context = context
        self._insecure = insecure
        self._clock = clock
        self._lock = threading.RLock()
        self._sub: TelemetrySubscriber | None = None
        self._client: ControlClient | None = None
        self.history: RunHistory | None = None
        self.trainer: Heartbeat | None = None
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self.state = LOST
        self.gaps_filled = 0
        self.gaps_unfilled = 0
        self._next_seq = 0
        self._seen: set[Hashable] = set()
        self._retired: set[str] = set()
        self._last_life = 0.0
        self._control_failed_at: float | None = None
        self._next_ping = 0.0

    # --- joining -------------------------------------------------------------------------

    def connect(self) -> RunHistory:
        """Join the run: subscribe, fetch the history, merge what arrived meanwhile.

        Raises ControlTimeout when the trainer does not answer, and ProtocolError when it
        speaks another major protocol version.
        """
        if self._sub is None:
            # Subscribe before asking for history, so nothing published after the
            # snapshot is missed; overlap is removed by sequence number.
            self._sub = TelemetrySubscriber(
                self.telemetry_endpoint, self._context, insecure=self._insecure, curve=self._curve
            )
            self._client = ControlClient(
                self.control_endpoint, self.timeout_s, self._context, insecure=self._insecure, curve=self._curve
            )
        try:
            self._await_subscription()
            self._sync(_Batch())
        except ProtocolError:
            self.close()
            raise
        self.poll(timeout_s=0.0)
        assert self.history is not None
        return self.history

    def _await_subscription(self, limit_s: float = SUBSCRIBE_WAIT_S) -> None:
        """Wait until the telemetry subscription is in place before the history is asked for.

        A ZeroMQ subscription reaches the publisher some milliseconds after connecting. A
        record (an epoch summary, an event) published in that window, just after the
        history snapshot was taken, would be in neither: steps lost that way are found by
        their sequence numbers, records have none. So: ping (the trainer answers with a
        heartbeat on its stream) until anything arrives on the stream, at most ``limit_s``
        (a trainer that does not answer pings that way still sends its heartbeats).
        Whatever arrives here was published before the history is asked for, so the
        snapshot holds it; it is dropped.
        """
        assert self._sub is not None and self._client is not None
        now = time.monotonic()
        deadline, next_ping = now + limit_s, now
        while now < deadline:
            if now >= next_ping:  # a trainer busy in a long step answers them all at once
                next_ping = now + 0.2
                try:
                    self._client.send(Command(op="ping"))
                except ControlTimeout:
                    return  # the history request will say what is wrong
            if self._sub.recv(timeout_s=0.02) is not None or self._sub.received:
                return
            now = time.monotonic()

    def _sync(self, batch: _Batch) -> None:
        """Replace ``history`` with the trainer's full history (connect, or a new run)."""
        assert self._client is not None
        history: RunHistory | None = None
        records: list[Message] = []
        final: Reply | None = None
        with self._lock:
            try:
                for msg in self._client.history(from_seq=0):
                    if isinstance(msg, Schema):
                        history = RunHistory(msg, spill=self.spill)
                    elif isinstance(msg, Reply):
                        final = msg
                    elif history is None:
                        raise ProtocolError("the trainer's history answer did not start with its schema")
                    else:
                        history.add(msg)
                        if not isinstance(msg, StepChunk):
                            records.append(msg)
            except ControlTimeout:
                self._control_failed(self._clock())
                raise
        if history is None or final is None:
            raise ProtocolError("the trainer's history answer carried no schema")
        if self.history is not None and history.run_id != self.history.run_id:
            self._retired.add(self.history.run_id)
        self.history = history
        self._seen = {_record_key(r) for r in records}
        self._next_seq = history.steps.last_seq() + 1
        self._learn_interval(final)
        now = self._clock()
        self._last_life = now
        self._control_failed_at = None
        self.state = LIVE
        batch.records.extend(records)

    def _learn_interval(self, reply: Reply) -> None:
        value = reply.data.get("heartbeat_s")
        if (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and math.isfinite(value)
            and value > 0
        ):
            self.heartbeat_s = float(value)

    def _control_failed(self, now: float) -> None:
        self._control_failed_at = now
        self.state = LOST

    # --- following -----------------------------------------------------------------------

    @property
    def malformed(self) -> int:
        """Telemetry messages skipped because they could not be read."""
        return self._sub.malformed if self._sub is not None else 0

    def poll(self, timeout_s: float = 0.05, max_messages: int = 20000) -> FollowUpdate:
        """Take in what arrived (waiting up to ``timeout_s`` for the first message).

        Raises ProtocolError when the trainer speaks another major protocol version.
        """
        if self._sub is None or self.history is None:
            raise RuntimeError("RunFollower.poll() before connect(); call connect() first")
        before = len(self.history.steps)
        messages = self._sub.drain_blocks(max_messages, timeout_s)
        if self._sub.incompatible:
            raise ProtocolError(self._sub.incompatible)
        now = self._clock()
        batch = _Batch()
        run_id = self.history.run_id
        next_seq = self._next_seq
        stepped = False
        for msg in messages:
            msg_run = getattr(msg, "run_id", run_id)
            if msg_run != run_id:
                if msg_run in self._retired or not self._start_new_run(batch):
                    continue
                run_id, next_seq = self.history.run_id, self._next_seq
            kind = type(msg)
            if kind is StepBlock:
                next_seq, took = self._take_block(msg.chunk, next_seq, batch)
                stepped = stepped or took
            elif kind is Step:
                next_seq, took = self._take_step(msg, next_seq, batch)
                stepped = stepped or took
            elif isinstance(msg, Heartbeat):
                self.trainer = msg
                self._last_life = now
                if msg.last_seq >= next_seq and self._control_failed_at is None:
                    # Steps were lost and nothing newer came to reveal it.
                    self._next_seq = next_seq
                    self._fill_gap(batch)
                    next_seq = self._next_seq
            elif isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
                self._add_record(msg, batch)
        self._next_seq = next_seq
        if stepped:
            self._last_life = now
        self._keep_in_touch(now)
        self.state = self._state(now)
        added = len(self.history.steps) if batch.new_run else len(self.history.steps) - before
        return FollowUpdate(added, batch.records, batch.gaps_filled, batch.new_run, self.state, self.trainer)

    def _take_step(self, msg: Step, next_seq: int, batch: _Batch) -> tuple[int, bool]:
        """File one step of the current run; the next expected seq, and whether it counted as life."""
        assert self.history is not None
        seq = msg.seq
        if seq == next_seq:
            self.history.steps.append_step(msg)
            return next_seq + 1, True
        if seq > next_seq:
            self._next_seq = next_seq
            self._fill_gap(batch)
            if self._next_seq < seq:  # the fill could not reach it: keep it, gap and all
                self._skip_gap(seq)
            next_seq = self._next_seq
            if seq == next_seq:
                self.history.steps.append_step(msg)
                next_seq += 1
            return next_seq, True
        return next_seq, False  # seq < next_seq: already have it (snapshot overlap or a fill).

    def _take_block(self, chunk: StepChunk, next_seq: int, batch: _Batch) -> tuple[int, bool]:
        """File consecutive steps of the current run at once; same result as one by one.

        Runs of contiguous seqs are added with one ``extend`` (minus rows already held); the
        first step after a jump goes through :meth:`_take_step`, which fills the gap.
        """
        assert self.history is not None
        seq = chunk.seq
        n = len(seq)
        breaks = (np.flatnonzero(np.diff(seq) != 1) + 1).tolist() if n > 1 else []
        starts = [0, *breaks]
        stops = [*starts[1:], n]
        stepped = False
        for a, b in zip(starts, stops):
            first = int(seq[a])
            if first > next_seq:
                step = Step(chunk.run_id, first, int(chunk.step[a]), int(chunk.epoch[a]), float(chunk.time[a]),
                            chunk.values[a])
                next_seq, _ = self._take_step(step, next_seq, batch)
                stepped = True
                a, first = a + 1, first + 1
            skip = next_seq - first  # rows this history already holds
            if a + skip < b:
                a += skip
                self.history.steps.extend(
                    StepChunk(chunk.run_id, seq[a:b], chunk.step[a:b], chunk.epoch[a:b], chunk.time[a:b],
                              chunk.values[a:b])
                )
                next_seq = int(seq[b - 1]) + 1
                stepped = True
        return next_seq, stepped

    def _add_record(self, msg: Message, batch: _Batch) -> None:
        key = _record_key(msg)
        if key in self._seen:
            return
        self._seen.add(key)
        assert self.history is not None
        self.history.add(msg)
        batch.records.append(msg)

    def _start_new_run(self, batch: _Batch) -> bool:
        """The trainer restarted: fetch the new run's history. False if it does not answer."""
        if self._control_failed_at is not None and not self._heard_since_failure():
            return False
        try:
            self._sync(batch)
        except ControlTimeout:
            return False
        batch.new_run = True
        return True

    def _fill_gap(self, batch: _Batch) -> None:
        """Fetch the steps from ``_next_seq`` on from the trainer's history.

        On failure (no answer, or the trainer restarted meanwhile) nothing changes: the
        caller decides whether to accept the gap.
        """
        assert self._client is not None and self.history is not None
        start = self._next_seq
        if self._control_failed_at is not None and not self._heard_since_failure():
            return
        run_id = self.history.run_id
        with self._lock:
            try:
                for msg in self._client.history(from_seq=start):
                    if isinstance(msg, StepChunk):
                        rows = _rows_from(msg, self._next_seq)
                        if len(rows):
                            self.history.steps.extend(rows)
                            self._next_seq = int(rows.seq[-1]) + 1
                    elif isinstance(msg, Schema):
                        if msg.run_id != run_id:
                            # Restarted under us: the new run's messages will trigger a sync.
                            return
                    elif isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
                        self._add_record(msg, batch)
            except ControlTimeout:
                self._control_failed(self._clock())
                return
        if self._next_seq > start:
            self.gaps_filled += 1
            batch.gaps_filled += 1

    def _skip_gap(self, seq: int) -> None:
        """Accept a gap that could not be filled: the store keeps a hole before ``seq``."""
        self.gaps_unfilled += 1
        self._next_seq = seq

    def _heard_since_failure(self) -> bool:
        assert self._client is not None
        heard = self._client.last_heard
        return heard is not None and self._control_failed_at is not None and heard > self._control_failed_at

    def _keep_in_touch(self, now: float) -> None:
        """Ping the trainer once per heartbeat interval and take in its answers."""
        assert self._client is not None
        if not self._lock.acquire(blocking=False):
            return  # a request is in flight on another thread; it counts as contact
        try:
            for reply in self._client.collect():
                self._learn_interval(reply)
                self._control_failed_at = None
                self._last_life = max(self._last_life, now)
            if now >= self._next_ping:
                self._next_ping = now + self.heartbeat_s
                try:
                    self._client.send(Command(op="ping"))
                except ControlTimeout:
                    self._control_failed(now)
        finally:
            self._lock.release()

    def _state(self, now: float) -> str:
        if self._control_failed_at is not None and self._last_life <= self._control_failed_at:
            return LOST
        silence = now - self._last_life
        if silence > LOST_INTERVALS * self.heartbeat_s:
            return LOST
        if silence > STALLED_INTERVALS * self.heartbeat_s:
            return STALLED
        return LIVE

    # --- commands ------------------------------------------------------------------------

    def request(self, command: Command) -> Reply:
        """Validate and send a command; the trainer's reply (ok with its step, or error).

        Raises ProtocolError for an invalid command (nothing is sent) and ControlTimeout
        when the trainer does not answer (the follower's state becomes lost).
        """
        if self._client is None:
            raise RuntimeError("RunFollower.request() before connect(); call connect() first")
        command = validate_command(command)
        with self._lock:
            try:
                reply = self._client.request(command)
            except ControlTimeout:
                self._control_failed(self._clock())
                raise
        self._control_failed_at = None
        return reply

    def close(self) -> None:
        """Close both sockets; the history stays readable."""
        with self._lock:
            if self._sub is not None:
                self._sub.close()
            if self._client is not None:
                self._client.close()
            self._sub = None
            self._client = None

    def __enter__(self) -> RunFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
