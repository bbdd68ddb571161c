"""The trainer side of the wire in one object: publish, keep, record, answer.

A :class:`TrainerLink` owns the telemetry PUB socket, the control ROUTER socket, the run's
in-memory history (for monitors that join late) and, optionally, the recording writer.
The probe calls :meth:`TrainerLink.publish_step` every step and the loop calls
:meth:`TrainerLink.poll_commands` and :meth:`TrainerLink.tick` at step boundaries. Nothing
here waits on a monitor: a dead, frozen or slow monitor costs the trainer nothing.

Not thread-safe: call it from the training thread only (ZeroMQ sockets belong to one
thread).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from .codec import encode_step
from .commands import validate_command
from .errors import ProtocolError
from .keys import KeyGate, ServerCurve
from .messages import Command, DatasetReport, EpochSummary, Event, Heartbeat, Message, Preview, Reply, Schema
from .run import RunHistory
from .spill import SpillDir
from .transport import CLOSE_LINGER_MS, ControlServer, TelemetryPublisher

HISTORY_CHUNK_ROWS = 4096
# A monitor counts as attached while it was heard from within this many heartbeat intervals.
MONITOR_TIMEOUT_INTERVALS = 3.0
# A ping is answered with a heartbeat on the stream too, but not more often than this.
PING_HEARTBEAT_S = 0.02


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
        if curve is not None:
            import zmq

            # One ZAP handler per context: a context of our own keeps it this link's.
            context = self._own_context = zmq.Context()
            self._gate = KeyGate(context, curve)
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
        self._recording = recording
        self._recording_warned = False
        self._seq = 0
        self._last_step = -1
        self._last_heartbeat = float("-inf")
        self._last_ping_heartbeat = float("-inf")
        self._monitors: dict[bytes, float] = {}
        self._state = "running"
        self._closed = False
        self._publisher.send(schema)

    # --- properties -----------------------------------------------------------------------

    @property
    def refused(self) -> list[str]:
        """Public keys of the monitors refused so far (with ``curve``)."""
        return list(self._gate.refused) if self._gate is not None else []

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
        seq = self._seq
        now = self._clock()
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

    def publish(self, msg: EpochSummary | Event | DatasetReport | Preview) -> None:
        """Keep, send and record one structured record of this run."""
        if not isinstance(msg, (EpochSummary, Event, DatasetReport, Preview)):
            raise ProtocolError(
                f"publish takes an epoch summary, event, dataset report or preview, not a {type(msg).__name__}; "
                "steps go through publish_step"
            )
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
        command that fails validation, gets an error reply and changes nothing.
        """
        pending: list[PendingCommand] = []
        now = self._clock()
        for request in self._server.poll():
            self._monitors[request.identity] = now
            if request.command is None:
                self._server.reply(
                    request.identity, Reply("", "error", reason=request.error, step=self._last_step)
                )
                continue
            try:
                command = validate_command(request.command)
            except ProtocolError as exc:
                self._server.reply(
                    request.identity,
                    Reply(
                        request.command.request_id,
                        "error",
                        reason=f"{exc}; nothing was changed",
                        step=self._last_step,
                    ),
                )
                continue
            if command.op == "ping":
                self._server.reply(
                    request.identity,
                    Reply(command.request_id, "ok", step=self._last_step, data=self._status()),
                )
                self._heartbeat_now()
            elif command.op == "history":
                self._send_history(request.identity, command)
            else:
                pending.append(PendingCommand(self._server, request.identity, command))
        return pending

    def _status(self) -> dict[str, Any]:
        return {
            "state": self._state,
            "last_seq": self.last_seq,
            "monitors": self.monitors,
            "heartbeat_s": self.heartbeat_s,
            "security": self.security,
        }

    def _send_history(self, identity: bytes, command: Command) -> None:
        """Answer ``history``: the records, then steps from ``from_seq`` in chunks, then a Reply."""
        history = self.history
        records: list[Message] = [history.schema]
        if history.dataset is not None:
            records.append(history.dataset)
        records.extend(history.epochs)
        records.extend(history.events)
        if history.previews:
            records.append(history.previews[-1])
        send = self._server.send
        complete = all(send(identity, record) for record in records)
        steps = history.steps
        start, stop = steps.index_of_seq(int(command.args.get("from_seq", 0))), len(steps)
        chunks = 0
        for first in range(start, stop, HISTORY_CHUNK_ROWS):
            if not complete:
                break
            complete = send(identity, steps.chunk(self.run_id, first, first + HISTORY_CHUNK_ROWS))
            chunks += 1
        if not complete:
            self._server.reply(
                identity,
                Reply(
                    command.request_id,
                    "error",
                    reason="the history answer could not be sent whole; ask again",
                    step=self._last_step,
                ),
            )
            return
        data = self._status()
        data.update(chunks=chunks, records=len(records), last_seq=steps.last_seq())
        self._server.reply(identity, Reply(command.request_id, "ok", step=self._last_step, data=data))

    # --- liveness --------------------------------------------------------------------------

    def tick(self, state: str = "running") -> None:
        """Send a heartbeat when one is due and forget monitors not heard from lately."""
        self._state = state
        now = self._clock()
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
            self._server.close()
            # A short, bounded linger lets the final heartbeat reach monitors that are reading.
            self._publisher.close(linger_ms=CLOSE_LINGER_MS)
            self._close_gate()

    def __enter__(self) -> TrainerLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close("finished" if exc[0] is None else "failed")
