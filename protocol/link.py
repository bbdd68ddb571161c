"""The trainer side of the wire in one object: publish, keep, record, answer.

A :class:`TrainerLink` owns the telemetry PUB socket, the control ROUTER socket, the run's
in-memory history (for monitors that join late) and, optionally, the recording writer.
The probe's publisher thread calls :meth:`TrainerLink.publish_steps` with the steps
pending (one frame per step on the wire; :meth:`TrainerLink.publish_step` publishes one),
and the loop calls :meth:`TrainerLink.poll_commands` and :meth:`TrainerLink.tick` at step
boundaries. Nothing
here waits on a monitor: a dead, frozen or slow monitor costs the trainer nothing.

By default the link takes CurveZMQ keys (:func:`~octa_tui.protocol.runfiles.user_keys`:
made once per user, kept 0600 in the 0700 run-files folder) and admits only their client
key; the run file (0600) carries them too. A refused handshake is logged once per peer and
told to the monitors as a warning event.

Serving monitors is bounded so that it cannot hurt training: the work done at step
boundaries (requests and history) takes at most ``SERVICE_SHARE`` of the training
thread's time over any stretch (a deficit budget, :class:`ServiceBudget`), a history
answer is streamed a few chunks at a time into a bounded queue per monitor, one at a time
per monitor and ``MAX_HISTORY_STREAMS`` at once.

Two threads may use it: the probe's publisher thread publishes steps and records, the
training thread serves commands and heartbeats. One lock serialises every use of the
telemetry socket and the history (a ZeroMQ socket is used by one thread at a time, a
history answer is a consistent snapshot, a heartbeat's ``last_seq`` is a step already
sent); the control socket belongs to the training thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import zmq

from .codec import chunk_frames_zero_copy, encode, encode_step
from .commands import validate_command
from .errors import ProtocolError
from .keys import (
    KeyGate,
    RefusalLog,
    RunKeys,
    ServerCurve,
    curve_fields,
    serve_keys,
    unserve_keys,
)
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
    StepChunk,
)
from .run import RunHistory
from .spill import SpillDir
from .transport import CLOSE_LINGER_MS, ControlServer, HandshakeWatch, TelemetryPublisher, parse_endpoint

# Most rows in one history chunk; fewer when a row is wide (see HISTORY_CHUNK_BYTES).
HISTORY_CHUNK_ROWS = 4096
# A history chunk holds about this many bytes at most: with the control socket's queue of
# ROUTER_SNDHWM messages per monitor, a monitor that never reads holds ~16 MB in the trainer.
HISTORY_CHUNK_BYTES = 1 << 20
# History answers being sent at once (to different monitors); more get an error reply.
MAX_HISTORY_STREAMS = 4
# A history answer that could not move for this long (its monitor stopped reading) is dropped.
HISTORY_STALL_S = 30.0
# The share of the training thread's time that serving monitors may take, and the most
# work one step boundary may do after a quiet spell.
SERVICE_SHARE = 0.03
SERVICE_BURST_S = 0.02
# Refused peers told to the monitors as warning events (all are logged once and counted).
MAX_REFUSAL_EVENTS = 8
# How often tick() reads the sockets' failed handshakes (reading costs ~25 us).
REFUSAL_CHECK_S = 0.25
# A monitor counts as attached while it was heard from within this many heartbeat intervals.
MONITOR_TIMEOUT_INTERVALS = 3.0
# A ping is answered with a heartbeat on the stream too, but not more often than this.
PING_HEARTBEAT_S = 0.02


class ServiceBudget:
    """How much work serving monitors may do now: a share of the time that passed.

    Each :meth:`begin` credits ``share`` of the wall time since the last :meth:`end`
    (capped at ``burst_s``); work is allowed while the credit lasts (:meth:`left`), and
    :meth:`end` charges the CPU time the work took on this thread, so one expensive unit
    is paid back by skipping later boundaries. Over any long stretch the service takes at
    most ``share`` of the training thread's time (plus one unit), whatever the monitors
    send; a paused or idle loop still earns credit, and time the machine gives other
    processes is charged to no one.
    """

    def __init__(self, share: float = SERVICE_SHARE, burst_s: float = SERVICE_BURST_S,
                 clock: Callable[[], float] = time.perf_counter,
                 cost_clock: Callable[[], float] = time.thread_time) -> None:
        if not 0 < share <= 1 or not burst_s > 0:
            raise ValueError(f"share must be in (0, 1] and burst_s > 0, got {share!r}, {burst_s!r}")
        self.share = share
        self.burst_s = burst_s
        self._clock = clock
        self._cost_clock = cost_clock
        self.balance = burst_s
        self._last_end: float | None = None
        self._start = 0.0
        self.spent_s = 0.0

    def begin(self) -> bool:
        """Start a boundary's work; whether any is allowed."""
        now = self._clock()
        if self._last_end is not None:
            self.balance = min(self.burst_s, self.balance + self.share * (now - self._last_end))
        self._start = self._cost_clock()
        return self.balance > 0

    def left(self) -> bool:
        """Whether more work fits in this boundary's credit."""
        return self.balance - (self._cost_clock() - self._start) > 0

    def end(self) -> None:
        """Charge the boundary's work."""
        used = self._cost_clock() - self._start
        self.balance -= used
        self.spent_s += used
        self._last_end = self._clock()


@dataclass
class _HistoryStream:
    """One history answer being sent: records first, then step chunks, then the Reply."""

    request_id: str
    records: list[Message]
    row: int
    stop: int
    last_seq: int
    chunk_rows: int
    moved_at: float
    next_record: int = 0
    chunks: int = 0
    pending: list[bytes] | None = None
    done: bool = False
    # Replies to this monitor's other requests while its answer is under way (sent first).
    replies: list[list[bytes]] = field(default_factory=list)


class StepRecorder(Protocol):
    """What the link needs from a recording writer (see ``recording.RecordingWriter``)."""

    error: str | None

    def write_step(self, seq: int, step: int, epoch: int, time: float, values: np.ndarray) -> None: ...

    def write(self, msg: Message) -> None: ...

    def close(self) -> None: ...


class PendingCommand:
    """A validated command waiting for the training loop to apply it at a step boundary.

    The loop applies it and answers exactly once: :meth:`ok` with the step at which the
    change took effect, or :meth:`error` with a reason a person can act on.
    """

    def __init__(self, server: ControlServer, identity: bytes, command: Command) -> None:
        self.command = command
        self._server = server
        self._identity = identity
        self.answered = False

    def _answer(self, reply: Reply) -> None:
        if self.answered:
            raise RuntimeError(f"command {self.command.op} ({self.command.request_id}) was already answered")
        self.answered = True
        self._server.reply(self._identity, reply)

    def ok(self, step: int, data: Mapping[str, Any] | None = None) -> None:
        """Tell the monitor the command took effect at ``step``."""
        self._answer(Reply(self.command.request_id, "ok", step=step, data=dict(data or {})))

    def error(self, reason: str, step: int) -> None:
        """Tell the monitor the command was not applied, and why."""
        self._answer(Reply(self.command.request_id, "error", reason=reason, step=step))

    def __repr__(self) -> str:
        return f"PendingCommand({self.command!r}, answered={self.answered})"


class TrainerLink:
    """The trainer's one connection to the outside: telemetry, control, history, recording.

    ``schema`` is announced on the telemetry socket at once and kept for late joiners.
    ``recording`` (optional) receives every step and record; the link closes it on
    :meth:`close`. If it fails, training goes on and a warning event says so.
    ``clock`` gives the wall time stamped on steps and heartbeats.

    ``curve`` (a :class:`~octa_tui.protocol.keys.ServerCurve`) encrypts both sockets and
    admits only the monitors whose keys it lists (on a context of the link's own, with its
    own ZAP handler); it is what makes a non-loopback endpoint acceptable. ``insecure``
    accepts one without keys. ``security`` says which: ``"curve"``, ``"insecure"`` or
    ``"local"``.
    """

    def __init__(
        self,
        schema: Schema,
        telemetry: str = "tcp://127.0.0.1:0",
        control: str = "tcp://127.0.0.1:0",
        recording: StepRecorder | None = None,
        heartbeat_s: float = 1.0,
        clock: Callable[[], float] = time.time,
        *,
        context: Any = None,
        insecure: bool = False,
        curve: ServerCurve | None = None,
        spill: SpillDir | None = None,
    ) -> None:
        if not heartbeat_s > 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s!r}")
        # With ``spill`` the history kept for late joiners lives in an unnamed file, resident
        # only for its newest rows: a run of days keeps the training process's memory flat.
        self.history = RunHistory(schema, spill=spill)
        self.heartbeat_s = float(heartbeat_s)
        self._clock = clock
        self._token = bytes.fromhex(schema.run_id)
        self._width = schema.width
        self.security = "curve" if curve is not None else "insecure" if insecure else "local"
        self._own_context = None
        self._gate: KeyGate | None = None
        self.refusals = RefusalLog()
        self._run_keys: RunKeys | None = None
        for endpoint in (telemetry, control):
            # Keys of the run's own do not open other addresses: beyond loopback takes a key
            # folder (--keys) or --insecure, as before.
            parse_endpoint(endpoint, insecure=insecure or curve is not None)
        if curve is None and not insecure:
            # The default: this user's trainer keys, the client's kept for this user only.
            from .runfiles import user_keys

            self._run_keys = user_keys()
            curve = self._run_keys.server_curve()
        if curve is not None:
            # One ZAP handler per context: a context of our own keeps it this link's.
            context = self._own_context = zmq.Context()
            why = ("it does not hold this run's client key (kept in the run file of the user who started it)"
                   if self._run_keys is not None else None)
            self._gate = KeyGate(context, curve, self.refusals, **({"why": why} if why else {}))
        try:
            self._publisher = TelemetryPublisher(telemetry, context, insecure=insecure, curve=curve)
        except BaseException:
            self._close_gate()
            raise
        try:
            self._server = ControlServer(control, context, insecure=insecure, curve=curve)
        except BaseException:
            self._publisher.close()
            self._close_gate()
            raise
        self.telemetry_endpoint = self._publisher.endpoint
        self.control_endpoint = self._server.endpoint
        self._watches: list[tuple[str, HandshakeWatch]] = []
        self._link_file = None
        if curve is not None:
            self._watches = [("telemetry", self._publisher.watch_handshakes()),
                             ("control", self._server.watch_handshakes())]
        if self._run_keys is not None:
            client = self._run_keys.client_curve()
            serve_keys([self.telemetry_endpoint, self.control_endpoint], client)
            from .runfiles import write_link_file

            self._link_file = write_link_file(self.telemetry_endpoint, self.control_endpoint)
        self._budget = ServiceBudget()
        self._streams: dict[bytes, _HistoryStream] = {}
        self._chunk_rows = max(16, min(HISTORY_CHUNK_ROWS, HISTORY_CHUNK_BYTES // (4 * max(1, self._width) + 24)))
        self._refusal_events = 0
        self._next_refusal_check = float("-inf")
        self._recording = recording
        self._recording_warned = False
        self._seq = 0
        self._last_step = -1
        self._last_heartbeat = float("-inf")
        self._last_ping_heartbeat = float("-inf")
        self._monitors: dict[bytes, float] = {}
        self._state = "running"
        self._closed = False
        self._lock = threading.RLock()
        self._publisher.send(schema)

    # --- properties -----------------------------------------------------------------------

    @property
    def refused(self) -> list[str]:
        """Public keys of the monitors refused so far (with keys), each once."""
        return list(self._gate.refused) if self._gate is not None else []

    @property
    def run_keys(self) -> dict[str, str]:
        """The run file's key fields (``curve_server``, ``curve_public``, ``curve_secret``); empty
        when this link takes no keys of its own (``insecure`` or a key folder)."""
        return curve_fields(self._run_keys.client_curve()) if self._run_keys is not None else {}

    def _close_gate(self) -> None:
        if self._gate is not None:
            self._gate.close()
            self._gate = None
        if self._own_context is not None:
            self._own_context.term()
            self._own_context = None

    @property
    def run_id(self) -> str:
        """The run this link publishes."""
        return self.history.run_id

    @property
    def monitors(self) -> int:
        """How many monitors were heard from within the last few heartbeat intervals."""
        horizon = self._clock() - MONITOR_TIMEOUT_INTERVALS * self.heartbeat_s
        return sum(1 for heard in self._monitors.values() if heard >= horizon)

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest published step (-1 before the first)."""
        return self._seq - 1

    @property
    def sent(self) -> int:
        """Messages handed to the telemetry socket."""
        return self._publisher.sent

    @property
    def dropped(self) -> int:
        """Messages the telemetry socket refused."""
        return self._publisher.dropped

    # --- the per-step path ----------------------------------------------------------------

    def publish_step(self, step: int, epoch: int, values: np.ndarray) -> None:
        """Stamp, keep, send and record one step's vector (float32, schema order)."""
        with self._lock:
            self._publish_step(step, epoch, values, self._clock())

    def _publish_step(self, step: int, epoch: int, values: np.ndarray, now: float) -> None:
        seq = self._seq
        # Appending first checks the width, so a wrong vector never reaches the wire.
        self.history.steps.append(seq, step, epoch, now, values)
        self._publisher.send_frame(encode_step(self._token, seq, step, epoch, now, values))
        self._seq = seq + 1
        self._last_step = step
        if self._recording is not None:
            try:
                self._recording.write_step(seq, step, epoch, now, values)
            except Exception as exc:  # a failing disk must not stop training
                self._recording_failed(f"{type(exc).__name__}: {exc}")

    def publish_steps(self, steps: list[int], epochs: list[int], times: list[float] | None,
                      values: np.ndarray) -> None:
        """Many steps at once, as :meth:`publish_step` would each: kept and recorded in one
        copy, sent one frame per step (a monitor sees every step, in order).

        ``values`` is (len(steps) x width) float32 in schema order; ``times`` the wall time
        each step ended (None: now, by the link's clock).
        """
        rows = len(steps)
        if rows == 0:
            return
        if times is None:
            times = [self._clock()] * rows
        with self._lock:
            if rows == 1:  # one step: no arrays to build
                self._publish_step(steps[0], epochs[0], values[0], times[0])
                return
            seq0 = self._seq
            seqs = np.arange(seq0, seq0 + rows, dtype=np.uint64)
            step_a = np.array(steps, dtype=np.int64)
            epoch_a = np.array(epochs, dtype=np.int32)
            time_a = np.array(times, dtype=np.float64)
            # Extending first checks the width, so a wrong vector never reaches the wire.
            self.history.steps.extend(StepChunk(self.run_id, seqs, step_a, epoch_a, time_a, values))
            send, token = self._publisher.send_frame, self._token
            for i, (step, epoch, now) in enumerate(zip(steps, epochs, times)):
                send(encode_step(token, seq0 + i, step, epoch, now, values[i]))
            self._seq = seq0 + rows
            self._last_step = steps[-1]
            recording = self._recording
            if recording is None:
                return
            try:
                write_steps = getattr(recording, "write_steps", None)
                if write_steps is not None:
                    write_steps(seqs, step_a, epoch_a, time_a, values)
                else:
                    for i in range(rows):
                        recording.write_step(seq0 + i, steps[i], epochs[i], times[i], values[i])
            except Exception as exc:  # a failing disk must not stop training
                self._recording_failed(f"{type(exc).__name__}: {exc}")

    def publish(self, msg: EpochSummary | Event | DatasetReport | Preview) -> None:
        """Keep, send and record one structured record of this run."""
        if not isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
            raise ProtocolError(
                f"publish takes an epoch summary, event, dataset report or preview, not a {type(msg).__name__}; "
                "steps go through publish_step"
            )
        with self._lock:
            self._publish(msg)

    def _publish(self, msg: EpochSummary | Event | DatasetReport | Preview) -> None:
        self.history.add(msg)
        self._publisher.send(msg)
        if self._recording is not None:
            try:
                self._recording.write(msg)
            except Exception as exc:
                self._recording_failed(f"{type(exc).__name__}: {exc}")

    def _recording_failed(self, reason: str) -> None:
        self._recording = None
        self._warn_recording(reason)

    def _warn_recording(self, reason: str) -> None:
        if self._recording_warned:
            return
        self._recording_warned = True
        self.publish(
            Event(
                run_id=self.run_id,
                step=max(self._last_step, 0),
                time=self._clock(),
                kind="warning",
                message=f"recording stopped: {reason}; training goes on, the live stream is unaffected",
                data={"source": "recording"},
            )
        )

    # --- control ---------------------------------------------------------------------------

    def poll_commands(self) -> list[PendingCommand]:
        """Answer what the link can answer itself; return the commands the loop must apply.

        ``ping`` and ``history`` are answered here. A request that does not decode, or a
        command that fails validation, gets an error reply and changes nothing. The work
        is bounded by the service budget: requests beyond it wait in ZeroMQ's bounded
        queues for a later boundary. While the publisher thread holds the link (publishing a batch
        of steps), the training thread does not wait for it: the requests are served at the next call.
        """
        if not self._lock.acquire(blocking=False):
            return []
        try:
            return self._poll_commands()
        finally:
            self._lock.release()

    def _poll_commands(self) -> list[PendingCommand]:
        pending: list[PendingCommand] = []
        budget = self._budget
        if not budget.begin():
            budget.end()
            return pending
        try:
            if self._streams:
                self._pump_history()
            now = self._clock()
            while budget.left():
                request = self._server.receive()
                if request is None:
                    break
                command = self._serve(request, now)
                if command is not None:
                    pending.append(command)
            if self._streams and budget.left():
                self._pump_history()
        finally:
            budget.end()
        return pending

    def _serve(self, request: Any, now: float) -> PendingCommand | None:
        self._monitors[request.identity] = now
        if request.command is None:
            self._server.reply(request.identity, Reply("", "error", reason=request.error, step=self._last_step))
            return None
        try:
            command = validate_command(request.command)
        except ProtocolError as exc:
            self._server.reply(
                request.identity,
                Reply(request.command.request_id, "error", reason=f"{exc}; nothing was changed", step=self._last_step),
            )
            return None
        if command.op == "ping":
            self._server.reply(
                request.identity,
                Reply(command.request_id, "ok", step=self._last_step, data=self._status()),
            )
            self._heartbeat_now()
            return None
        if command.op == "history":
            self._send_history(request.identity, command)
            return None
        return PendingCommand(self._server, request.identity, command)

    def _status(self) -> dict[str, Any]:
        return {
            "state": self._state,
            "last_seq": self.last_seq,
            "monitors": self.monitors,
            "heartbeat_s": self.heartbeat_s,
            "security": self.security,
            "refused": self.refusals.count,
        }

    def _send_history(self, identity: bytes, command: Command) -> None:
        """Begin answering ``history``: the records, then steps from ``from_seq`` in chunks, then a Reply.

        The answer is a snapshot of what the run holds now; it is sent by
        :meth:`_pump_history` as the monitor's queue makes room.
        """
        refuse = None
        if identity in self._streams:
            refuse = ("a history answer is still being sent to this monitor; read it to its final reply before "
                      "asking again")
        elif len(self._streams) >= MAX_HISTORY_STREAMS:
            refuse = (f"{len(self._streams)} monitors are receiving the history now (at most {MAX_HISTORY_STREAMS} "
                      "at once); ask again in a few seconds")
        if refuse is not None:
            reply = Reply(command.request_id, "error", reason=refuse, step=self._last_step)
            if identity in self._streams and len(self._streams[identity].replies) < 4:
                # its queue may be full of the answer under way: the refusal goes out in turn
                self._streams[identity].replies.append(encode(reply))
            else:
                self._server.reply(identity, reply)
            return
        history = self.history
        records: list[Message] = [history.schema]
        if history.dataset is not None:
            records.append(history.dataset)
        records.extend(history.epochs)
        records.extend(history.events)
        if history.previews:
            records.append(history.previews[-1])
        steps = history.steps
        start, stop = steps.index_of_seq(int(command.args.get("from_seq", 0))), len(steps)
        self._streams[identity] = _HistoryStream(
            command.request_id, records, start, stop, steps.last_seq(), self._chunk_rows,
            moved_at=time.monotonic(),
        )

    def _next_frames(self, stream: _HistoryStream) -> list[bytes] | None:
        """The stream's next message, encoded (None once its Reply went out)."""
        if stream.replies:
            return stream.replies.pop(0)
        if stream.next_record < len(stream.records):
            stream.next_record += 1
            return encode(stream.records[stream.next_record - 1])
        if stream.row < stream.stop:
            first = stream.row
            stream.row = min(stream.stop, first + stream.chunk_rows)
            stream.chunks += 1
            steps, last = self.history.steps, stream.row
            # Views of rows that never change again, handed to ZeroMQ without a copy.
            return chunk_frames_zero_copy(StepChunk(
                self.run_id, steps.seq[first:last], steps.step[first:last], steps.epoch[first:last],
                steps.time[first:last], steps.values[first:last],
            ))
        if stream.done:
            return None
        stream.done = True
        data = self._status()
        data.update(chunks=stream.chunks, records=len(stream.records), last_seq=stream.last_seq)
        return encode(Reply(stream.request_id, "ok", step=self._last_step, data=data))

    def _pump_history(self) -> None:
        """Send the history answers on as far as the monitors' queues and the budget allow."""
        budget = self._budget
        now = time.monotonic()
        for identity in list(self._streams):
            stream = self._streams[identity]
            while budget.left():
                frames = stream.pending if stream.pending is not None else self._next_frames(stream)
                if frames is None:
                    del self._streams[identity]
                    break
                outcome = self._server.send_frames(identity, frames, copy=False)
                if outcome == "sent":
                    stream.pending = None
                    stream.moved_at = now
                    continue
                if outcome == "gone" or now - stream.moved_at > HISTORY_STALL_S:
                    del self._streams[identity]  # it left, or stopped reading: nothing more is queued for it
                else:
                    stream.pending = frames  # its queue is full: go on at a later boundary
                break
            if not budget.left():
                return

    @property
    def history_streams(self) -> int:
        """History answers being sent now."""
        return len(self._streams)

    @property
    def service_seconds(self) -> float:
        """Time spent serving monitors at step boundaries so far (requests and history)."""
        return self._budget.spent_s

    # --- refused handshakes ------------------------------------------------------------------

    def _check_refusals(self) -> None:
        """Log failed handshakes once per peer; tell the monitors of new refused peers."""
        for kind, watch in self._watches:
            endpoint = getattr(self, kind + "_endpoint")
            holder = ("only the user who started this trainer holds them (in its run file)"
                      if self._run_keys is not None else "they are made with `octa-tui keys generate`")
            for event, value in watch.failures():
                if not event & zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
                    continue  # failed AUTH is the ZAP handler's refusal, logged there with the key
                if value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
                    self.refusals.refuse(f"a client without keys on the {kind} socket ({endpoint})",
                                         f"it brought no CurveZMQ keys; {holder}")
                else:
                    self.refusals.refuse(f"a client with other keys on the {kind} socket ({endpoint})",
                                         f"its CurveZMQ handshake failed (keys of another run or a stale run file); "
                                         f"{holder}")
        for peer in self.refusals.new_since():
            if self._refusal_events >= MAX_REFUSAL_EVENTS:
                break
            self._refusal_events += 1
            self.publish(Event(run_id=self.run_id, step=max(self._last_step, 0), time=self._clock(), kind="warning",
                               message=f"refused a connection: {peer} (only the trainer's own user holds its keys)",
                               data={"source": "security", "refused": self.refusals.count}))

    # --- liveness --------------------------------------------------------------------------

    def tick(self, state: str = "running") -> None:
        """Send a heartbeat when one is due and forget monitors not heard from lately."""
        with self._lock:
            self._tick(state)

    def _tick(self, state: str) -> None:
        self._state = state
        now = self._clock()
        if self._watches and now >= self._next_refusal_check:
            self._next_refusal_check = now + REFUSAL_CHECK_S
            self._check_refusals()
        if self._recording is not None and not self._recording_warned:
            error = getattr(self._recording, "error", None)
            if error:
                self._warn_recording(error)
        if now - self._last_heartbeat < self.heartbeat_s:
            return
        self._last_heartbeat = now
        horizon = now - MONITOR_TIMEOUT_INTERVALS * self.heartbeat_s
        for identity in [i for i, heard in self._monitors.items() if heard < horizon]:
            del self._monitors[identity]
        self._publisher.send(self._heartbeat(now, state))

    def _heartbeat_now(self) -> None:
        """Publish a heartbeat at once (at most every ``PING_HEARTBEAT_S``), in answer to a ping.

        A monitor that joins pings and waits for anything on the telemetry stream before it
        asks for the history: then its subscription is known to be in place, and nothing
        published after the history snapshot can be lost (see ``RunFollower.connect``).
        """
        now = self._clock()
        if now - self._last_ping_heartbeat >= PING_HEARTBEAT_S:
            self._last_ping_heartbeat = now
            self._publisher.send(self._heartbeat(now, self._state))

    def _heartbeat(self, now: float, state: str) -> Heartbeat:
        return Heartbeat(
            run_id=self.run_id,
            sender="trainer",
            time=now,
            step=max(self._last_step, 0),
            state=state,
            monitors=len(self._monitors),
            last_seq=self.last_seq,
        )

    def close(self, state: str = "finished") -> None:
        """Say goodbye (a last heartbeat with ``state``), close the recording and the sockets."""
        with self._lock:
            self._close(state)

    def _close(self, state: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._state = state
        self._publisher.send(self._heartbeat(self._clock(), state))
        recording, self._recording = self._recording, None
        try:
            if recording is not None:
                recording.close()
        finally:
            self._streams.clear()
            for _, watch in self._watches:
                watch.close()
            self._server.close()
            # A short, bounded linger lets the final heartbeat reach monitors that are reading.
            self._publisher.close(linger_ms=CLOSE_LINGER_MS)
            if self._run_keys is not None:
                from .runfiles import remove_link_file

                unserve_keys([self.telemetry_endpoint, self.control_endpoint])
                remove_link_file(self._link_file)
            self._close_gate()

    def __enter__(self) -> TrainerLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("finished" if exc[0] is None else "failed")

