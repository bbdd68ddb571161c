"""Where the monitor's data comes from: a live trainer, a recording, or memory.

The app is given one :class:`Source` and never asks which kind it is, except to know
whether commands can be sent (``can_control``) and whether replay keys apply
(``kind == "replay"``). A worker thread calls :meth:`Source.open` once and then
:meth:`Source.poll` in a loop; the source fills its :attr:`Source.history` on that thread.
The UI thread only reads the history (columns are append-only, so a reader that takes the
row count first always sees complete rows) and the :meth:`Source.status`.
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from ..protocol.columns import StepColumns
from ..protocol.errors import ProtocolError
from ..protocol.messages import Command, Heartbeat, Message, Reply, Schema, StepChunk
from ..protocol.run import RunHistory
from ..protocol.spill import spill_dir

REPLAY_SPEEDS = (1, 4, 16, 64)
REPLAY_FALLBACK_RATE = 100.0  # steps/s of "1x" when a recording's clock says nothing useful
# A recording at least this large opens on its first step chunk and loads the rest behind.
QUICK_OPEN_BYTES = 64 << 20


@dataclass(frozen=True)
class SourceStatus:
    """What the header shows about the connection, besides the run itself."""

    state: str  # live | stalled | lost | connecting | replay | memory
    monitors: int = 0
    gaps_filled: int = 0
    trainer_state: str = ""  # running | paused | finished, as the trainer last said
    detail: str = ""  # e.g. the replay position and speed
    warnings: tuple[str, ...] = ()
    rejected_frames: int = 0  # telemetry frames counted and skipped (live only)
    end_state: str | None = None  # finished | stopped | failed, as the trainer's last heartbeat said
    ended_by: str | None = None  # "monitor" when a monitor's stop command ended the run


class Source(ABC):
    """One run's data and, where there is a trainer, a way to send it commands."""

    kind: str = "memory"
    can_control: bool = False

    @property
    @abstractmethod
    def history(self) -> RunHistory | None:
        """The run as known so far (None before :meth:`open`); may be replaced by a new
        object when the trainer restarts or a replay seeks backwards."""

    @abstractmethod
    def open(self) -> RunHistory:
        """Connect or load; blocking, called once on the worker thread."""

    @abstractmethod
    def poll(self, timeout_s: float) -> bool:
        """Take in what arrived (waiting up to ``timeout_s``); True when the history changed."""

    @abstractmethod
    def status(self) -> SourceStatus:
        """Connection state and counters for the header."""

    def request(self, command: Command) -> Reply:
        """Send a command and wait for the trainer's reply (blocking; call it off the UI thread)."""
        raise ProtocolError(f"{self.kind}: there is no trainer to send {command.op!r} to")

    def verify(self) -> list[str] | None:
        """Checks too slow for :meth:`open`, run on a worker thread once the first frame is up:
        the problems found (empty: all good), or None when the source has nothing to check."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets or files."""


class LiveSource(Source):
    """A running trainer, followed through :class:`octa_tui.protocol.follow.RunFollower`.

    The follow loop polls on the worker thread; commands are sent from other threads
    (the follower serialises its control socket).
    """

    kind = "live"
    can_control = True

    def __init__(self, telemetry: str, control: str, *, timeout_s: float = 5.0, curve=None,
                 insecure: bool = False, spill: bool = True) -> None:
        self.telemetry = telemetry
        self.control = control
        self.timeout_s = timeout_s
        self.curve = curve  # a protocol.keys.ClientCurve for a trainer bound with --keys
        self.insecure = insecure
        # Steps older than the newest few thousand are paged to a file on disk, so following
        # a run for days keeps the monitor's memory flat (protocol/spill.py).
        self.spill = spill
        self.spill_note = "steps kept in memory"
        self.spill_refused = False  # spilling was asked for but the folder cannot take it
        self._lock = threading.Lock()
        self._follower = None
        self._state = "connecting"
        self._trainer: Heartbeat | None = None
        self._gaps = 0

    @property
    def history(self) -> RunHistory | None:
        return self._follower.history if self._follower is not None else None

    def open(self) -> RunHistory:
        from ..protocol.follow import RunFollower

        with self._lock:
            if self._follower is not None and self._follower.history is not None:
                return self._follower.history  # opened already (the CLI opens before the UI starts)
            where = None
            if self.spill:
                where, self.spill_note = spill_dir()
                self.spill_refused = where is None
            self._follower = RunFollower(self.telemetry, self.control, timeout_s=self.timeout_s,
                                         curve=self.curve, insecure=self.insecure, spill=where)
            try:
                history = self._follower.connect()
            except BaseException:
                self._follower.close()
                self._follower = None
                raise
            self._state = self._follower.state
        return history

    def poll(self, timeout_s: float) -> bool:
        follower = self._follower
        if follower is None:
            return False
        update = follower.poll(timeout_s=timeout_s)
        self._state = update.state
        self._gaps += update.gaps_filled
        if update.trainer is not None:
            self._trainer = update.trainer
        return bool(update.steps or update.records or update.new_run or update.gaps_filled)

    def status(self) -> SourceStatus:
        trainer = self._trainer
        return SourceStatus(
            state=self._state,
            monitors=trainer.monitors if trainer else 0,
            gaps_filled=self._gaps,
            trainer_state=trainer.state if trainer else "",
            detail=f"{self._follower.gaps_unfilled} unfilled gaps" if self._follower and self._follower.gaps_unfilled else "",
            # Each said once in the event log: a long run will grow this monitor's memory.
            warnings=self._spill_warnings(),
            rejected_frames=self.rejected_frames,
            end_state=self.end_state,
            ended_by=self.ended_by,
        )

    def _spill_warnings(self) -> tuple[str, ...]:
        if self.spill_refused:
            return (self.spill_note,)
        history = self.history
        failed = history.steps.spill_failed if history is not None else ""
        return (f"steps now kept in memory: {failed}",) if failed else ()

    @property
    def rejected_frames(self) -> int:
        """Telemetry frames counted and skipped (unreadable, unconfirmed jumps, ...); 0 when none."""
        follower = self._follower
        return follower.rejected_frames if follower is not None else 0

    @property
    def rejected_detail(self) -> dict[str, int]:
        """:attr:`rejected_frames` by reason (see ``RunFollower.rejected_detail``)."""
        follower = self._follower
        return follower.rejected_detail if follower is not None else {}

    @property
    def end_state(self) -> str | None:
        """How the run ended, as the trainer's last heartbeat said: ``finished``, ``stopped``
        or ``failed``; None while it runs, and when it went silent without a word (lost)."""
        follower = self._follower
        return follower.end_state if follower is not None else None

    @property
    def ended_by(self) -> str | None:
        """``monitor`` when the run was stopped by a monitor's stop command, else None."""
        follower = self._follower
        return follower.ended_by if follower is not None else None

    def request(self, command: Command) -> Reply:
        follower = self._follower  # serialises its control socket itself
        if follower is None:
            raise ProtocolError("not connected to a trainer yet")
        return follower.request(command)

    def close(self) -> None:
        with self._lock:
            if self._follower is not None:
                self._follower.close()
                self._follower = None


class MemorySource(Source):
    """A run held in memory, optionally fed in over time, with commands answered by a function.

    Used by tests and snapshot tests (a seeded history, scripted replies) and by the
    benchmark. ``feed`` messages are added one batch per :meth:`poll`; ``replies`` decides
    how a command is answered (without it, the source has no trainer to steer).
    """

    kind = "memory"

    def __init__(
        self,
        history: RunHistory,
        *,
        feed: Iterable[list[Message]] = (),
        replies: Callable[[Command], Reply] | None = None,
        state: str = "live",
        monitors: int = 1,
    ) -> None:
        self._history = history
        self._feed = iter(feed)
        self._replies = replies
        self.can_control = replies is not None
        self._state = state
        self._monitors = monitors
        self.requests: list[Command] = []

    @property
    def history(self) -> RunHistory:
        return self._history

    def open(self) -> RunHistory:
        return self._history

    def poll(self, timeout_s: float) -> bool:
        batch = next(self._feed, None)
        if batch is None:
            time.sleep(timeout_s)
            return False
        for msg in batch:
            self._history.add(msg)
        return True

    def status(self) -> SourceStatus:
        return SourceStatus(state=self._state, monitors=self._monitors, trainer_state="running")

    def request(self, command: Command) -> Reply:
        if self._replies is None:
            return super().request(command)
        self.requests.append(command)
        return self._replies(command)


class ReplaySource(Source):
    """A recorded session played back into a growing history: play/pause, speed, seek, jump.

    Position is a row index into the recording. Playing advances it at ``speed`` times the
    recording's own average step rate; events, epochs and previews appear when playback
    passes their step. Seeking forward adds only the rows in between; seeking backwards
    rebuilds the shown history (a new object, so the app redraws from scratch).

    Opening a large recording to play it from the start reads only up to its first step
    chunk, so the first frame does not wait for hundreds of megabytes; the rest loads (every
    record CRC-checked) on a thread of its own, started by :meth:`verify` (which the app calls
    once the first frame is up) or as soon as playback or a seek needs more. Until it is in,
    playback and seeking reach as far as is loaded and the status says "loading". Smaller
    recordings, and a replay opened at its end, are loaded whole without checksumming the step
    chunks. Either way :meth:`verify` reports what the checksums found.
    """

    kind = "replay"

    def __init__(self, path: str, *, speed: int = 1, playing: bool = True, start_at_end: bool = False,
                 clock: Callable[[], float] = time.monotonic, quick_open_bytes: int = QUICK_OPEN_BYTES) -> None:
        self.path = path
        self.quick_open_bytes = quick_open_bytes
        self._loaded = threading.Event()  # set once ``_full`` holds the whole recording
        self._progressive = False
        self._loader: threading.Thread | None = None
        self._load_warnings: list[str] = []
        self._load_error: BaseException | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._full: RunHistory | None = None
        self._shown: RunHistory | None = None
        self._warnings: tuple[str, ...] = ()
        self._rows = 0  # rows shown
        self._target = 0.0  # where playback is heading (float rows)
        self._speed = speed if speed in REPLAY_SPEEDS else REPLAY_SPEEDS[0]
        self._playing = playing
        self._start_at_end = start_at_end
        self._rate = REPLAY_FALLBACK_RATE
        self._last_tick: float | None = None
        self._cursors = [0, 0, 0]  # next epoch, event, preview to add
        self._verified = False  # verify() has answered once
        self._replacement: RunHistory | None = None  # the checked load, swapped in by the poll thread

    # -- loading and the worker side -------------------------------------------------
    @property
    def history(self) -> RunHistory | None:
        return self._shown

    @property
    def full(self) -> RunHistory | None:
        """The whole recording (for jumping ahead)."""
        return self._full

    def open(self) -> RunHistory:
        from ..protocol.recording import read_recording

        if self._shown is not None:
            return self._shown  # loaded already
        head = None
        if not self._start_at_end and os.path.getsize(self.path) >= self.quick_open_bytes:
            head = self._read_head()
        if head is None:
            recording = read_recording(self.path, verify=False)
            self._full = recording.history
            warnings = list(recording.warnings)
            if recording.truncated_bytes:
                warnings.append(f"the recording's last {recording.truncated_bytes} bytes were torn and left out")
            self._warnings = tuple(warnings)
            self._loaded.set()
        else:
            self._full = head
            self._progressive = True  # the rest loads once the first frame is up, or is needed
        self._rate = _step_rate(self._full) or self._rate
        n = len(self._full.steps)
        if self._start_at_end:
            # All of it is shown: share the loaded history rather than copy every row (a
            # later seek backwards starts a fresh one, so the loaded one is never changed).
            full = self._full
            self._shown, self._rows, self._target, self._playing = full, n, float(n), False
            self._cursors = [len(full.epochs), len(full.events), len(full.previews)]
            return self._shown
        self._shown = self._fresh()
        self._sync()
        return self._shown

    def verify(self) -> list[str]:
        """Check every record's CRC (the quick load skipped the step chunks'); what the check
        found. The first call returns every problem found, those already reported at open
        included, so that an empty answer always means every record's checksum holds; later
        calls return only what is new. Also added to :meth:`status` warnings.

        A replay loaded before the check and found damaged is loaded again as checked, so
        that it shows exactly the steps an export of the file holds.
        """
        from ..protocol.recording import read_recording, verify_recording

        if self._progressive:  # the load behind the first frame checks as it reads
            self._start_loading()
            self._loaded.wait()
            if self._load_error is not None:
                raise self._load_error
            found, said_of = self._load_warnings, str
        else:
            found = verify_recording(self.path)
            fresh_damage = [w for w in found if w not in self._warnings]
            if fresh_damage:
                # The quick load kept what the check now rejects: load it as checked.
                self._replacement = read_recording(self.path).history

            def said_of(warning: str) -> str:
                if warning in self._warnings:
                    return warning
                return f"checksum check: {warning}; the replay now leaves out what the check found damaged"

        with self._lock:
            known = self._warnings  # a torn tail was reported at open already
            said = [said_of(warning) for warning in found]
            fresh = [w for w in said if w not in known]
            self._warnings = known + tuple(fresh)
            answer = said if not self._verified else fresh
            self._verified = True
        return answer

    def _read_head(self) -> RunHistory | None:
        """The recording up to and including its first step chunk (CRC-checked), or None when
        it does not start plainly (no schema first, damage early): then the whole is read."""
        from ..protocol.recording import iter_recording

        warnings: list[str] = []
        head: RunHistory | None = None
        with closing(iter_recording(self.path, warnings)) as records:
            for msg in records:
                if head is None:
                    if not isinstance(msg, Schema):
                        return None
                    head = RunHistory(msg)
                    continue
                head.add(msg)
                if isinstance(msg, StepChunk):
                    break
        return None if warnings else head

    def _start_loading(self) -> None:
        with self._lock:
            if self._loader is None:
                self._loader = threading.Thread(target=self._load_rest, name="octa-replay-load", daemon=True)
                self._loader.start()

    def _load_rest(self) -> None:
        """The whole recording, CRC-checked, replacing the head once read (on its own thread)."""
        from ..protocol.recording import read_recording

        try:
            recording = read_recording(self.path)
            full = recording.history
            self._load_warnings = list(recording.warnings)
            self._rate = _step_rate(full) or self._rate
            self._full = full  # the head is a prefix of it, so positions and cursors stay valid
        except BaseException as err:  # noqa: BLE001 - kept for verify() to raise where it is shown
            self._load_error = err
        finally:
            self._loaded.set()

    @property
    def loaded(self) -> bool:
        """Whether the whole recording is loaded (a large one loads behind the first frame)."""
        return self._loaded.is_set()

    def _fresh(self) -> RunHistory:
        assert self._full is not None
        shown = RunHistory(self._full.schema)
        # Room for the whole recording up front: untouched rows cost no memory, and playback
        # never stops to grow the columns.
        shown.steps = StepColumns(self._full.schema.width, capacity=len(self._full.steps))
        shown.dataset = self._full.dataset
        self._rows = 0
        self._cursors = [0, 0, 0]
        return shown

    def _sync(self) -> bool:
        """Bring the shown history to the target row; True when it changed."""
        replacement, self._replacement = self._replacement, None
        if replacement is not None:  # the checked load replaces the quick one: shown afresh
            self._full = replacement
            self._shown = self._fresh()
            with self._lock:
                self._target = min(self._target, float(len(replacement.steps)))
        loaded = self._loaded.is_set()  # before reading _full: once set, _full is the whole
        full, shown = self._full, self._shown
        assert full is not None and shown is not None
        n = len(full.steps)
        with self._lock:
            target = int(min(max(self._target, 0.0), n))
            if self._playing and target >= n and loaded:
                self._playing = False
        if target == self._rows:
            return False
        if target < self._rows:
            shown = self._shown = self._fresh()
        steps, a = full.steps, self._rows
        # Views of the loaded columns: extend() copies them once (chunk() would copy twice).
        shown.steps.extend(StepChunk(full.run_id, steps.seq[a:target], steps.step[a:target],
                                     steps.epoch[a:target], steps.time[a:target], steps.values[a:target]))
        self._rows = target
        step_now = int(full.steps.step[target - 1]) if target else -1
        for slot, records in enumerate((full.epochs, full.events, full.previews)):
            while self._cursors[slot] < len(records) and records[self._cursors[slot]].step <= step_now:
                shown.add(records[self._cursors[slot]])
                self._cursors[slot] += 1
        return True

    def poll(self, timeout_s: float) -> bool:
        now = self._clock()
        with self._lock:
            if self._playing and self._last_tick is not None:
                self._target += (now - self._last_tick) * self._rate * self._speed
            self._last_tick = now
        if self._progressive and not self._loaded.is_set() and self._target > self.length:
            self._start_loading()  # playback or a seek wants more than the head
        changed = self._sync()
        if not changed:
            time.sleep(timeout_s)
        return changed

    def status(self) -> SourceStatus:
        n = len(self._full.steps) if self._full is not None else 0
        mark = "▶" if self._playing else "⏸"
        if not self._loaded.is_set():
            where = "loading the recording..."
        else:
            fraction = self._rows / n if n else 1.0
            where = f"{fraction:6.1%}" + (" (end)" if n and self._rows >= n else "")
        return SourceStatus(
            state="replay",
            detail=f"{mark} {self._speed}x {where}",
            warnings=self._warnings,
        )

    # -- controls, called from the UI thread ---------------------------------------------
    @property
    def playing(self) -> bool:
        """Whether playback is advancing."""
        return self._playing

    @property
    def speed(self) -> int:
        """Playback speed, a multiple of the recording's own pace."""
        return self._speed

    @property
    def position(self) -> int:
        """Rows shown so far."""
        return self._rows

    @property
    def length(self) -> int:
        """Rows in the recording."""
        return len(self._full.steps) if self._full is not None else 0

    @property
    def at_end(self) -> bool:
        """Whether the whole recording is shown."""
        return self._full is not None and self._loaded.is_set() and self._rows >= self.length

    def toggle_play(self) -> None:
        """Play or pause; playing at the end starts again from the beginning."""
        with self._lock:
            if not self._playing and self._loaded.is_set() and self._target >= self.length:
                self._target = 0.0
            self._playing = not self._playing
            self._last_tick = None

    def cycle_speed(self) -> int:
        """Next speed of 1, 4, 16, 64x; returns it."""
        with self._lock:
            i = REPLAY_SPEEDS.index(self._speed) if self._speed in REPLAY_SPEEDS else -1
            self._speed = REPLAY_SPEEDS[(i + 1) % len(REPLAY_SPEEDS)]
            return self._speed

    def seek(self, row: float) -> None:
        """Show the recording up to ``row`` (clamped to its length)."""
        with self._lock:
            self._target = float(min(max(row, 0.0), self.length))
            self._last_tick = None

    def seek_by(self, fraction: float) -> None:
        """Move by a fraction of the recording (``-0.05`` is back 5%)."""
        self.seek(max(self._target, float(self._rows)) + fraction * self.length)

    def next_event_row(self) -> int | None:
        """Row just past the next event after the shown position, or None when none is left."""
        if self._full is None:
            return None
        steps = self._full.steps.step
        step_now = int(steps[self._rows - 1]) if self._rows else -1
        for event in self._full.events:
            if event.step > step_now:
                return int(np.searchsorted(steps, event.step, side="right"))
        return None


def _step_rate(history: RunHistory) -> float | None:
    """A recording's own pace in steps per second (None when its clock says nothing useful)."""
    n = len(history.steps)
    if n < 2:
        return None
    span = float(history.steps.time[n - 1] - history.steps.time[0])
    return (n - 1) / span if math.isfinite(span) and span > 0 else None
