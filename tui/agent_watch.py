"""The loop of ``octa-tui watch``: follow a run and turn what happens into records.

A :class:`Watcher` polls a connected :class:`~octa_tui.protocol.follow.RunFollower`, runs the
diagnosis engine on the history after new steps, and writes: a summary every ``every`` steps,
each verdict change, events and epochs as they arrive, state changes (live, stalled, lost,
paused, finished, stopped), replies to the commands it is handed, and an ``end`` record.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..diagnosis import Engine
from ..protocol.errors import ProtocolError
from ..protocol.follow import LOST, RunFollower
from ..protocol.messages import EpochSummary, Event
from ..protocol.transport import ControlTimeout
from .agent_commands import CommandWordsError, parse_command
from .agent_records import (
    VerdictChanges,
    epoch_record,
    error_record,
    event_record,
    record,
    reply_record,
    run_record,
    select_channels,
    state_record,
    summary_record,
)

POLL_S = 0.2
END_STATES = ("finished", "stopped", "failed")


class Watcher:
    """Turns one followed run into records for ``write`` (see module doc)."""

    def __init__(self, follower: RunFollower, engine: Engine, write: Callable[[dict[str, Any]], None], *,
                 every: int = 50, channels: Sequence[str] = (), label: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        if every < 1:
            raise ValueError(f"every must be at least 1 step, got {every}")
        self.follower = follower
        self.engine = engine
        self.write = write
        self.every = every
        self.patterns = tuple(channels)
        self.label = label
        self.clock = clock
        self._changes = VerdictChanges()
        self._columns: list[int] = []
        self._mark = 0
        self._state = ""

    def _joined(self, source: str) -> None:
        history = self.follower.history
        self.engine.reset()
        self._changes = VerdictChanges()
        self._columns = select_channels(history.schema.channels, self.patterns) if self.patterns else \
            select_channels(history.schema.channels)
        steps = history.steps
        self.write(run_record(history.schema, len(steps), self._last_step(), source))
        # The history's unfinished window (or its last full one), so the first summary comes at once.
        self._mark = (len(steps) - 1) // self.every * self.every if len(steps) else 0
        self._summaries(final=True)
        self._diagnose()  # what the history joined already shows (a measured fault appears at once)

    def _diagnose(self) -> None:
        """Evaluate the engine (it only counts an evaluation when the history changed) and write
        what changed."""
        history = self.follower.history
        for rec in self._changes.update(self.engine.evaluate(history), self._last_step(), history.run_id):
            self.write(rec)

    def _last_step(self) -> int:
        steps = self.follower.history.steps
        return int(steps.step[-1]) if len(steps) else -1

    def _summaries(self, final: bool = False) -> None:
        """Summaries of each full ``every`` rows since the last one (and the rest when ``final``)."""
        history = self.follower.history
        steps = history.steps
        n = len(steps)
        while True:
            # Windows end at whole multiples of `every` rows, so summaries fall on the same steps
            # whenever the watch joined; `final` also takes the unfinished window.
            boundary = (self._mark // self.every + 1) * self.every
            if n < boundary and not (final and n > self._mark):
                break
            stop = min(n, boundary)
            step, epoch, times, values = (steps.step[self._mark:stop], steps.epoch[self._mark:stop],
                                          steps.time[self._mark:stop], steps.values[self._mark:stop])
            rate = None
            if len(step) > 1 and times[-1] > times[0]:
                rate = float(step[-1] - step[0]) / float(times[-1] - times[0])
            self.write(summary_record(history.schema, step, epoch, values, self._columns,
                                      state=self._state, steps_per_s=rate))
            self._mark = stop

    def _run_state(self) -> tuple[str, str]:
        """(state, by): the trainer's end state when it said goodbye, else live/stalled/lost/paused."""
        follower = self.follower
        end = getattr(follower, "end_state", None)
        if end:
            return str(end), str(getattr(follower, "ended_by", "") or "")
        beat = follower.trainer
        if beat is not None and beat.state in END_STATES:
            return beat.state, ""
        if follower.state == LOST:
            return LOST, ""
        if beat is not None and beat.state == "paused":
            return "paused", ""
        return follower.state, ""

    def _send(self, words: list[str]) -> None:
        try:
            command = parse_command(words)
        except CommandWordsError as err:
            self.write(error_record(self.label, "usage", str(err)))
            return
        try:
            reply = self.follower.request(command)
        except ControlTimeout as err:
            self.write(error_record(self.label, "unreachable", str(err), command.op))
            return
        except ProtocolError as err:
            self.write(error_record(self.label, "usage", str(err), command.op))
            return
        self.write(reply_record(self.label, command, reply))

    def run(self, max_steps: int = 0, max_seconds: float = 0.0, commands: queue.Queue | None = None) -> str:
        """Follow until the run ends ("finished", "stopped", "failed", "lost") or a limit is
        reached ("limit"); returns why it ended, after writing an ``end`` record."""
        self._joined("live")
        started_at = self.clock()
        start_rows = len(self.follower.history.steps)
        reason = ""
        while not reason:
            update = self.follower.poll(POLL_S)
            if update.new_run:
                self._joined("restarted")
                start_rows = 0
            for msg in update.records:
                if isinstance(msg, Event):
                    self.write(event_record(msg))
                elif isinstance(msg, EpochSummary):
                    self.write(epoch_record(msg))
            if update.steps or update.records:
                self._diagnose()
            state, by = self._run_state()
            self._summaries(final=state in END_STATES or state == LOST)
            if state != self._state:
                self._state = state
                self.write(state_record(self.follower.history.run_id, state, self._last_step(), by))
            while commands is not None:
                try:
                    words = commands.get_nowait()
                except queue.Empty:
                    break
                if words is None:
                    commands = None
                    break
                self._send(words)
            if state in END_STATES or state == LOST:
                reason = state
            elif max_steps and len(self.follower.history.steps) - start_rows >= max_steps:
                reason = "limit"
            elif max_seconds and self.clock() - started_at >= max_seconds:
                reason = "limit"
        if reason == "limit":
            self._summaries(final=True)
        self.write(record("end", run_id=self.follower.history.run_id, reason=reason, step=self._last_step()))
        return reason
