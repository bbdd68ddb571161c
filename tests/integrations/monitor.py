"""A monitor for the integration tests: finds a run by its run file, follows it, sends commands.

It is the monitor's own code path (:class:`~octa_tui.protocol.follow.RunFollower`), so what
a test reads here is what ``octa-tui`` would show. Every wait is on a condition, with a
generous ceiling that only a broken run reaches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from octa_tui.protocol.commands import make_command
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.messages import Reply
from octa_tui.protocol.runfiles import RunFileInfo, list_run_files

CEILING_S = 180.0


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = CEILING_S, tick: Callable[[], object] | None = None) -> None:
    """Poll ``condition`` (after ``tick``, if given) until it holds; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        if tick is not None:
            tick()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def find_run(run_dir: Path, alive: Callable[[], bool] = lambda: True) -> RunFileInfo:
    """The first run announced in ``run_dir`` (waits for it while ``alive()``)."""
    found: list[RunFileInfo] = []

    def announced() -> bool:
        if not alive():
            raise AssertionError("the training process ended before announcing a run")
        found[:] = list_run_files(run_dir) if run_dir.exists() else []
        return bool(found)

    wait_for(announced, f"a run file in {run_dir}")
    return found[0]


class Monitor:
    """Follows one run, as the monitor app does, and offers the reads the tests need."""

    def __init__(self, info: RunFileInfo, timeout_s: float = 60.0) -> None:
        self.info = info
        self.follower = RunFollower(info.telemetry, info.control, timeout_s=timeout_s, curve=info.client_curve())
        self.history = self.follower.connect()

    def poll(self) -> None:
        self.follower.poll(timeout_s=0.02)
        self.history = self.follower.history or self.history

    def close(self) -> None:
        self.follower.close()

    # --- reads --------------------------------------------------------------------------------

    @property
    def schema(self):
        return self.history.schema

    @property
    def n_steps(self) -> int:
        return len(self.history.steps)

    def column(self, key: str) -> np.ndarray:
        return np.asarray(self.history.steps.column(self.schema.index(key)))

    def steps(self) -> np.ndarray:
        return np.asarray(self.history.steps.step)

    def events(self, kind: str | None = None) -> list:
        return [e for e in self.history.events if kind is None or e.kind == kind]

    def wait_steps(self, n: int, what: str = "") -> None:
        wait_for(lambda: self.n_steps >= n, what or f"{n} steps", tick=self.poll)

    def request(self, op: str, **args) -> Reply:
        return self.follower.request(make_command(op, **args))


def finite(values: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(values)))


def close_to(a: float, b: float, rel: float = 1e-4) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel)


def verdicts_as_the_run_grows(full, every: int = 10):
    """Feed a recorded run to a fresh diagnosis engine every ``every`` steps, as a monitor
    refreshing during the run would, with the epochs finished so far: [(last step, verdicts)]."""
    from octa_tui.diagnosis import Engine
    from octa_tui.protocol.run import RunHistory

    engine = Engine()
    growing = RunHistory(full.schema)
    growing.dataset = full.dataset
    growing.events = list(full.events)
    seen = []
    n = len(full.steps)
    for stop in range(every, n + every, every):
        stop = min(stop, n)
        start = max(stop - every, len(growing.steps))
        if stop > start:
            growing.add(full.steps.chunk(full.run_id, start, stop))
        last_step = int(full.steps.step[stop - 1])
        growing.epochs = [e for e in full.epochs if e.step <= last_step]
        seen.append((last_step, engine.evaluate(growing)))
        if stop == n:
            break
    return seen
