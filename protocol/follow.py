"""The monitor side of the wire in one object: join a run, follow it, notice when it stops.

A :class:`RunFollower` subscribes to the trainer's telemetry first, then asks for the run's
history over the control socket, and merges the two by sequence number: the snapshot
covers everything up to the moment the trainer answered, the live stream everything
after, and steps that are in both are kept once (the "clone" pattern). While following,
a jump in sequence numbers (messages dropped for a slow monitor) is filled from history,
a new run id (the trainer restarted) starts a fresh history, and the trainer's
heartbeats say whether it is live, stalled or lost, and how it ended.

Nothing on the telemetry stream is believed on its own word: a jump or a new run id is
checked with the trainer over the control socket before the follower acts on it, and a
frame that fails a check, or cannot be read, is counted by reason and skipped
(:attr:`RunFollower.rejected_detail`). One bad frame costs at most that frame.

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
from .transport import (
    ControlClient,
    ControlTimeout,
    TelemetrySubscriber,
    incompatible_version,
    parse_endpoint,
)

LIVE = "live"
STALLED = "stalled"
LOST = "lost"
# Silence (no step, no heartbeat) longer than this many trainer heartbeat intervals...
STALLED_INTERVALS = 3.0  # ...means the trainer is stalled,
LOST_INTERVALS = 5.0  # ...and this many means it is gone.
DEFAULT_HEARTBEAT_S = 1.0
# How long connect() waits for its subscription to reach the trainer (see _await_subscription).
SUBSCRIBE_WAIT_S = 1.0
# Checks with the trainer (is this jump real, is this run id its run?) at most this often, so a
# flood of bad frames costs it a few small answers a second.
VERIFY_INTERVAL_S = 0.1
# A run id the trainer said it is not running is not asked about again for this long.
RUN_RECHECK_S = 2.0
MAX_REFUSED_RUNS = 1024
# Steps after a jump that the trainer cannot confirm (it does not answer) are kept once the
# stream has carried on from the jump for this many steps (one bad frame never does).
PENDING_CONFIRM_ROWS = 8
MAX_PENDING_ROWS = 100_000
# A history request from this sequence number answers with the schema and records only.
PROBE_SEQ = 2**53  # (the largest whole number a command argument carries exactly)
# A trainer's last heartbeat says how its run ended.
FINAL_STATES = ("finished", "stopped", "failed")

# Why a frame was refused (keys of RunFollower.rejected_detail).
MALFORMED = "malformed"
VERSION = "version"
SEQ_JUMP = "seq_jump"
WIDTH = "width"
RUN_ID = "run_id"
INVALID = "invalid"
REJECT_REASONS = (MALFORMED, VERSION, SEQ_JUMP, WIDTH, RUN_ID, INVALID)


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
        self.stepped = False


def _one_row(msg: Step) -> StepChunk:
    """A single step as a chunk of one row, so steps and blocks are filed by one path."""
    values = np.asarray(msg.values, dtype=np.float32)
    return StepChunk(
        msg.run_id,
        np.array([msg.seq], dtype=np.uint64),
        np.array([msg.step], dtype=np.int64),
        np.array([msg.epoch], dtype=np.int32),
        np.array([msg.time], dtype=np.float64),
        values.reshape(1, -1) if values.ndim == 1 else values,
    )


def _rows(chunk: StepChunk, a: int, b: int) -> StepChunk:
    return StepChunk(chunk.run_id, chunk.seq[a:b], chunk.step[a:b], chunk.epoch[a:b], chunk.time[a:b],
                     chunk.values[a:b])


def _frames_in(msg: object) -> int:
    """How many wire frames a decoded message stands for (a block is one per step)."""
    return len(msg) if isinstance(msg, (StepBlock, StepChunk)) else 1


class _CountingSubscriber(TelemetrySubscriber):
    """The telemetry socket, counting frames of another protocol major apart from the rest.

    One such frame (a buggy or hostile publisher) is counted and skipped like any other
    unreadable frame: it must not stop every later poll. A trainer that really speaks
    another major version is refused where it answers first, on the control socket.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.foreign_version = 0

    def _skip(self, frames: list[bytes], exc: ProtocolError) -> None:
        super()._skip(frames, exc)
        if incompatible_version(frames) is not None:
            self.foreign_version += 1
        self.incompatible = None


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

    One bad frame never freezes, stops or duplicates what is followed: it is counted in
    :attr:`rejected_detail` by reason (:data:`REJECT_REASONS`) and skipped. A sequence jump
    or a new run id is believed only once the trainer confirms it over the control socket
    (its history answer says its last sequence number and its run); such checks run at most
    every ``VERIFY_INTERVAL_S``, so a flood of bad frames costs the trainer a few small
    answers a second, never a full history download per frame. A jump that cannot be
    checked (the trainer does not answer) is held until the trainer confirms it or the
    stream carries on from it for ``PENDING_CONFIRM_ROWS`` steps.
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
        self._sub: _CountingSubscriber | None = None
        self._client: ControlClient | None = None
        self.history: RunHistory | None = None
        self.trainer: Heartbeat | None = None
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self.state = LOST
        self.gaps_filled = 0
        self.gaps_unfilled = 0
        self.end_state: str | None = None
        self.ended_by: str | None = None
        self.last_rejected: str | None = None
        self._rejected: dict[str, int] = {}
        self._next_seq = 0
        self._seen: set[Hashable] = set()
        self._retired: set[str] = set()
        self._not_running: dict[str, float] = {}
        self._last_life = 0.0
        self._control_failed_at: float | None = None
        self._next_ping = 0.0
        self._last_verify = -math.inf
        self._fill_wanted = False
        self._stopped_by_monitor = False
        self._pending: list[StepChunk] = []
        self._pending_rows = 0
        # The trainer's last seq as its first answer in this poll gave it: every step drained
        # for this poll was published before that answer, so none of them can be past it.
        self._ceiling: int | None = None

    # --- what was refused ----------------------------------------------------------------

    @property
    def malformed(self) -> int:
        """Telemetry messages skipped because they could not be read."""
        return self._sub.malformed if self._sub is not None else 0

    @property
    def rejected_detail(self) -> dict[str, int]:
        """Frames counted and skipped, by reason (only reasons that occurred).

        ``malformed``: did not decode; ``version``: another protocol major; ``seq_jump``: a
        step ahead of anything the trainer confirms; ``width``: a step vector not as wide as
        the schema; ``run_id``: a run the trainer is not running; ``invalid``: read but could
        not be filed.
        """
        detail = dict(self._rejected)
        if self._sub is not None:
            foreign = self._sub.foreign_version
            unreadable = self._sub.malformed - foreign
            if foreign:
                detail[VERSION] = detail.get(VERSION, 0) + foreign
            if unreadable > 0:
                detail[MALFORMED] = detail.get(MALFORMED, 0) + unreadable
        return {k: v for k, v in detail.items() if v}

    @property
    def rejected_frames(self) -> int:
        """Frames counted and skipped, all reasons together (see :attr:`rejected_detail`)."""
        return sum(self.rejected_detail.values())

    def _reject(self, reason: str, frames: int, why: str = "") -> None:
        if frames <= 0:
            return
        self._rejected[reason] = self._rejected.get(reason, 0) + frames
        self.last_rejected = why or reason

    # --- joining -------------------------------------------------------------------------

    def connect(self) -> RunHistory:
        """Join the run: subscribe, fetch the history, merge what arrived meanwhile.

        Raises ControlTimeout when the trainer does not answer, and ProtocolError when it
        speaks another major protocol version.
        """
        if self._sub is None:
            # Subscribe before asking for history, so nothing published after the
            # snapshot is missed; overlap is removed by sequence number.
            self._sub = _CountingSubscriber(
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
        """Replace ``history`` with the trainer's full history (connect, or a new run).

        Nothing changes unless the whole answer arrived: a timeout or a broken answer
        raises and leaves the current history, its next sequence number and its records
        as they were.
        """
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
            self.end_state = self.ended_by = None
            self._stopped_by_monitor = False
        self.history = history
        self._seen = {_record_key(r) for r in records}
        for record in records:
            self._note_record(record)
        self._next_seq = history.steps.last_seq() + 1
        self._pending, self._pending_rows, self._fill_wanted = [], 0, False
        last_seq = final.data.get("last_seq")
        self._ceiling = last_seq if isinstance(last_seq, int) and not isinstance(last_seq, bool) else None
        self._not_running.pop(history.run_id, None)
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

    def poll(self, timeout_s: float = 0.05, max_messages: int = 20000) -> FollowUpdate:
        """Take in what arrived (waiting up to ``timeout_s`` for the first message).

        Never raises for what arrives on the telemetry stream: a frame that cannot be
        filed is counted in :attr:`rejected_detail` and skipped, and the follower's state
        (history, next sequence number) is left whole.
        """
        if self._sub is None or self.history is None:
            raise RuntimeError("RunFollower.poll() before connect(); call connect() first")
        before_history = self.history
        before = len(self.history.steps)
        messages = self._sub.drain_blocks(max_messages, timeout_s)
        now = self._clock()
        batch = _Batch()
        self._ceiling = None
        for msg in messages:
            try:
                self._take(msg, batch, now)
            except ProtocolError as exc:  # filed nothing: counted, and the next frame goes on
                self._reject(INVALID, _frames_in(msg), str(exc))
            except (ValueError, TypeError, OverflowError, IndexError) as exc:  # the same, for a frame
                self._reject(INVALID, _frames_in(msg), f"{type(exc).__name__}: {exc}")  # no check foresaw
        try:
            self._resolve_pending(batch)
            if self._fill_wanted and not self._pending:
                self._fill_now(batch)
        except ProtocolError as exc:
            self.last_rejected = str(exc)
        if batch.stepped:
            self._last_life = now
        self._keep_in_touch(now)
        self.state = self._state(now)
        new_run = batch.new_run or self.history is not before_history
        added = len(self.history.steps) if new_run else len(self.history.steps) - before
        return FollowUpdate(added, batch.records, batch.gaps_filled, new_run, self.state, self.trainer)

    def _take(self, msg: Message | StepBlock, batch: _Batch, now: float) -> None:
        """File one message of the stream (a block of steps, a heartbeat, a record)."""
        assert self.history is not None
        msg_run = getattr(msg, "run_id", None)
        if msg_run is not None and msg_run != self.history.run_id:
            if msg_run in self._retired:
                return  # the last words of a run that ended: nothing to count
            if not self._verify_run(msg_run, batch):
                self._reject(RUN_ID, _frames_in(msg), f"a frame of run {msg_run}, which the trainer is not running")
                return
        kind = type(msg)
        if kind is StepBlock:
            self._take_chunk(msg.chunk, batch)
        elif kind is Step:
            if (
                msg.seq == self._next_seq
                and msg.values.shape == (self.history.steps.width,)
                and (self._ceiling is None or msg.seq <= self._ceiling)
            ):
                self.history.steps.append_step(msg)  # the common case, without building a chunk
                self._next_seq += 1
                batch.stepped = True
                if self.end_state is not None:  # steps after a goodbye: it was not the last word
                    self.end_state = self.ended_by = None
                if self._pending:
                    self._drop_pending("the stream went on from before it")
            else:
                self._take_chunk(_one_row(msg), batch)
        elif kind is Heartbeat:
            self._take_heartbeat(msg, now)
        elif isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
            self._add_record(msg, batch)

    def _take_heartbeat(self, msg: Heartbeat, now: float) -> None:
        self.trainer = msg
        self._last_life = now
        if msg.state in FINAL_STATES:
            self.end_state = msg.state
            self.ended_by = "monitor" if msg.state == "stopped" and self._stopped_by_monitor else None
        elif self.end_state is not None:
            self.end_state = self.ended_by = None  # it is running again after all
        if msg.last_seq >= self._next_seq:
            # Steps were lost and nothing newer came to reveal them: ask at the end of the poll.
            self._fill_wanted = True

    def _take_chunk(self, chunk: StepChunk, batch: _Batch) -> None:
        """File steps of the current run: runs of consecutive seqs at once, jumps checked."""
        assert self.history is not None
        width = self.history.steps.width
        if chunk.values.ndim != 2 or chunk.values.shape[1] != width:
            got = chunk.values.shape[1] if chunk.values.ndim == 2 else chunk.values.size
            self._reject(WIDTH, len(chunk), f"a step of {got} values; the run's schema has {width} channels")
            return
        seq = chunk.seq
        n = len(seq)
        if n == 0:
            return
        if n == 1:
            self._take_run(chunk, batch)
            return
        breaks = (np.flatnonzero(np.diff(seq.astype(np.int64, copy=False)) != 1) + 1).tolist()
        if not breaks:
            self._take_run(chunk, batch)
            return
        starts = [0, *breaks]
        stops = [*breaks, n]
        for a, b in zip(starts, stops):
            self._take_run(_rows(chunk, a, b), batch)

    def _take_run(self, run: StepChunk, batch: _Batch) -> None:
        """File steps with consecutive seqs: append what is new, hold a jump to be checked."""
        assert self.history is not None
        first = int(run.seq[0])
        last = first + len(run) - 1
        held = self._next_seq
        if last < held:
            return  # all held already (the snapshot overlaps the stream, or a fill got them)
        ceiling = self._ceiling
        if ceiling is not None and last > ceiling:
            # Past what the trainer said it had published when it answered this poll's check.
            past = len(run) if first > ceiling else last - ceiling
            self._reject(SEQ_JUMP, past, f"step seq {max(first, ceiling + 1)} is past the trainer's last step {ceiling}")
            if first > ceiling:
                return
            run = _rows(run, 0, len(run) - past)
            last = ceiling
        if first <= held:
            self.history.steps.extend(run if first == held else _rows(run, held - first, len(run)))
            self._next_seq = last + 1
            batch.stepped = True
            if self.end_state is not None:  # steps after a goodbye: it was not the last word
                self.end_state = self.ended_by = None
            if self._pending:
                # The stream carried on from before the jump, and a stream keeps its order:
                # the steps held after the jump were never the trainer's.
                self._drop_pending("the stream went on from before it")
            return
        # A jump: steps were lost (a slow monitor), or the frame is wrong. Checked first.
        if self._pending:
            tail = self._pending[-1]
            if first != int(tail.seq[-1]) + 1 and first <= int(tail.seq[-1]):
                self._reject(SEQ_JUMP, len(run), f"step seq {first} goes back inside steps held after a jump")
                return
        self._pending.append(run)
        self._pending_rows += len(run)
        batch.stepped = True
        self._resolve_pending(batch)

    def _resolve_pending(self, batch: _Batch) -> None:
        """Decide on the steps held after a jump: ask the trainer, or trust a long run of them."""
        if not self._pending:
            return
        last_seq = self._fill_now(batch)
        if last_seq is not None:
            self._release_pending(last_seq)
            return
        if self._control_failed_at is None and self._pending_rows <= MAX_PENDING_ROWS:
            return  # the trainer answers: it is asked again shortly
        tail = self._pending[-1]
        run = int(tail.seq[-1]) - int(self._pending[0].seq[0]) + 1
        if (run >= PENDING_CONFIRM_ROWS and self._pending_rows >= PENDING_CONFIRM_ROWS) or (
            self._pending_rows > MAX_PENDING_ROWS
        ):
            # The trainer cannot be asked, and the stream carries on from the jump: keep it.
            self._release_pending(None)

    def _release_pending(self, last_seq: int | None) -> None:
        """File the held steps up to ``last_seq`` (all when None), accepting the gap before
        them that history could not fill; steps past ``last_seq`` are refused."""
        assert self.history is not None
        pending, self._pending, self._pending_rows = self._pending, [], 0
        for run in pending:
            first = int(run.seq[0])
            last = int(run.seq[-1])
            if last < self._next_seq:
                continue
            if last_seq is not None and first > last_seq:
                self._reject(SEQ_JUMP, len(run), f"step seq {first} is past the trainer's last step {last_seq}")
                continue
            a = max(0, self._next_seq - first)
            b = len(run) if last_seq is None else min(len(run), last_seq - first + 1)
            if last_seq is not None and b < len(run):
                self._reject(SEQ_JUMP, len(run) - b, f"step seq {first + b} is past the trainer's last step {last_seq}")
            if a >= b:
                continue
            start = first + a
            if start > self._next_seq:
                self.gaps_unfilled += 1  # history could not fill it: the store keeps a hole
            self.history.steps.extend(_rows(run, a, b))
            self._next_seq = first + b

    def _drop_pending(self, why: str) -> None:
        rows = self._pending_rows
        self._pending, self._pending_rows = [], 0
        self._reject(SEQ_JUMP, rows, f"{rows} steps after a sequence jump were refused: {why}")

    def _may_verify(self) -> bool:
        """Whether a check with the trainer may be made now (bounded per second)."""
        now = time.monotonic()
        if now - self._last_verify < VERIFY_INTERVAL_S:
            return False
        if self._control_failed_at is not None and not self._heard_since_failure():
            return False
        self._last_verify = now
        return True

    def _fill_now(self, batch: _Batch) -> int | None:
        """Fill from history when a check is allowed; the trainer's last seq, or None."""
        if not self._may_verify():
            if self._pending:
                self._fill_wanted = True
            return None
        self._fill_wanted = False
        last_seq = self._fill_gap(batch)
        if last_seq is not None and self._pending:
            # What the fill brought may reach the held steps: those now held are dropped.
            self._pending = [r for r in self._pending if int(r.seq[-1]) >= self._next_seq]
            self._pending_rows = sum(len(r) for r in self._pending)
        return last_seq

    def _verify_run(self, run_id: str, batch: _Batch) -> bool:
        """Whether the trainer now runs ``run_id`` (it restarted); syncs to its history if so.

        The trainer is asked which run it runs (a history answer without steps), at most
        every ``VERIFY_INTERVAL_S``; a run it is not running is not asked about again for
        ``RUN_RECHECK_S``. Only a confirmed restart downloads a full history.
        """
        assert self.history is not None
        now = time.monotonic()
        refused_at = self._not_running.get(run_id)
        if refused_at is not None and now - refused_at < RUN_RECHECK_S:
            return False
        if not self._may_verify():
            return False
        running = self._ask_run()
        if running is None:
            return False
        if running == self.history.run_id:
            if len(self._not_running) >= MAX_REFUSED_RUNS:
                self._not_running.clear()
            self._not_running[run_id] = now
            return False
        try:
            self._sync(batch)
        except ProtocolError:  # includes a timeout: nothing changed
            return False
        batch.new_run = True
        return self.history.run_id == run_id

    def _ask_run(self) -> str | None:
        """The run the trainer is running, from a history answer that carries no steps."""
        assert self._client is not None and self.history is not None
        running: str | None = None
        with self._lock:
            try:
                for msg in self._client.history(from_seq=PROBE_SEQ):
                    if isinstance(msg, Schema):
                        running = msg.run_id
                    elif isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
                        if running == self.history.run_id:
                            self._add_record(msg, None)
            except ControlTimeout:
                self._control_failed(self._clock())
                return None
            except ProtocolError:
                return None
        return running

    def _add_record(self, msg: Message, batch: _Batch | None) -> None:
        key = _record_key(msg)
        if key in self._seen:
            return
        self._seen.add(key)
        assert self.history is not None
        self.history.add(msg)
        self._note_record(msg)
        if batch is not None:
            batch.records.append(msg)

    def _note_record(self, msg: Message) -> None:
        """Learn from a record what the header needs: whether a monitor stopped the run."""
        if isinstance(msg, Event) and msg.kind == "command_applied" and msg.data.get("op") == "stop":
            self._stopped_by_monitor = True

    def _fill_gap(self, batch: _Batch) -> int | None:
        """Fetch the steps from ``_next_seq`` on from the trainer's history.

        Returns the trainer's last sequence number as its answer gives it, or None when
        there is no usable answer (no answer, a broken one, or the trainer restarted
        meanwhile). What arrived before a broken answer is kept: each row is filed whole.
        """
        assert self._client is not None and self.history is not None
        start = self._next_seq
        run_id = self.history.run_id
        width = self.history.steps.width
        last_seq: int | None = None
        with self._lock:
            try:
                for msg in self._client.history(from_seq=start):
                    if isinstance(msg, StepChunk):
                        if msg.run_id != run_id or msg.values.shape[1:] != (width,):
                            return None
                        rows = _rows_from(msg, self._next_seq)
                        if len(rows) and np.all(np.diff(rows.seq.astype(np.int64)) > 0):
                            self.history.steps.extend(rows)
                            self._next_seq = int(rows.seq[-1]) + 1
                    elif isinstance(msg, Schema):
                        if msg.run_id != run_id:
                            # Restarted under us: the new run's messages will trigger a check.
                            return None
                    elif isinstance(msg, Reply):
                        value = msg.data.get("last_seq")
                        if isinstance(value, int) and not isinstance(value, bool):
                            last_seq = value
                            if self._ceiling is None:
                                self._ceiling = value
                    elif isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
                        self._add_record(msg, batch)
            except ControlTimeout:
                self._control_failed(self._clock())
                return None
            except ProtocolError as exc:
                self.last_rejected = str(exc)
                return None
            finally:
                if self._next_seq > start:
                    self.gaps_filled += 1
                    batch.gaps_filled += 1
        return last_seq if last_seq is not None else self._next_seq - 1

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
        except ProtocolError as exc:  # an answer that cannot be read: said, not raised
            self.last_rejected = str(exc)
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
        if command.op == "stop" and reply.ok:
            self._stopped_by_monitor = True
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
