"""The runs of a comparison: recordings loaded, live trainers followed, each diagnosed.

:func:`resolve_targets` turns the command line's words into targets (a recording, every
recording in a folder, a running trainer by run id, pid or endpoint, or every running
trainer). A :class:`CompareSession` holds one :class:`CompareRun` per target: it loads the
recordings side by side (each without checksumming its step chunks, which
:meth:`CompareSession.verify` does later, so the first frame does not wait), connects to
the live trainers, then follows them on an ingest thread and diagnoses every run on a
diagnosis thread of its own schedule (a slow evaluation never holds up ingest). The screen
only reads: each run's ``history`` grows append-only, and ``version`` says when to redraw.

The session outlives the screen: opening one run's full monitor closes the comparison
screen, and the runs keep being followed until it comes back.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...protocol.commands import validate_command
from ...protocol.errors import ProtocolError
from ...protocol.messages import Command, Reply
from ...protocol.recording import RECORDING_SUFFIX
from ...protocol.run import RunHistory

RUN_ID = re.compile(r"^[0-9a-f]{16}$")
POLL_TIMEOUT_S = 0.0
INGEST_PAUSE_S = 0.05
DIAGNOSE_EVERY_S = 2.0


class CompareError(ValueError):
    """A target that cannot be compared; the message names it and what would work."""


@dataclass(frozen=True)
class Target:
    """One run to compare: a recording (``path``) or a live trainer (``telemetry``/``control``)."""

    kind: str  # recorded | live
    path: str = ""
    telemetry: str = ""
    control: str = ""
    run_id: str = ""


def _running() -> list[Any]:
    from ...protocol.runfiles import list_run_files

    return list_run_files()


def resolve_targets(words: Sequence[str], *, live_all: bool = False,
                    running: Callable[[], list[Any]] = _running) -> list[Target]:
    """Targets for the command line's words, in order, each once.

    A word is a recording file, a folder (every ``*.octa`` below it, sorted), a running
    trainer's run id or pid, a telemetry endpoint of a running trainer, or
    ``TELEMETRY,CONTROL`` endpoints. ``live_all`` adds every trainer running on this machine.
    """
    targets: list[Target] = []
    infos: list[Any] | None = None

    def live() -> list[Any]:
        nonlocal infos
        if infos is None:
            infos = running()
        return infos

    for word in words:
        path = Path(word).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob(f"*{RECORDING_SUFFIX}") if p.is_file())
            if not found:
                raise CompareError(f"{word}: this folder holds no recordings (*{RECORDING_SUFFIX} files)")
            targets += [Target("recorded", path=str(p)) for p in found]
        elif path.is_file():
            targets.append(Target("recorded", path=str(path)))
        elif "," in word and "://" in word:
            telemetry, control = (part.strip() for part in word.split(",", 1))
            targets.append(Target("live", telemetry=telemetry, control=control))
        elif RUN_ID.match(word) or word.isdigit() or "://" in word:
            match = [i for i in live() if word in (i.run_id, str(i.pid), i.telemetry)]
            if not match:
                raise CompareError(
                    f"{word}: no running trainer has this run id, pid or endpoint (`octa-tui list` shows the "
                    f"running ones; give a trainer on another machine as TELEMETRY,CONTROL)")
            info = match[0]
            targets.append(Target("live", telemetry=info.telemetry, control=info.control, run_id=info.run_id))
        else:
            raise CompareError(f"{word}: no such recording, folder, running trainer or endpoint")
    if live_all:
        targets += [Target("live", telemetry=i.telemetry, control=i.control, run_id=i.run_id) for i in live()]
    unique: dict[tuple[str, str], Target] = {}
    for target in targets:
        key = (target.kind, os.path.realpath(target.path) if target.path else target.telemetry)
        unique.setdefault(key, target)
    return list(unique.values())


def _labels(targets: Sequence[Target]) -> list[str]:
    """Short names: a recording's file stem (with its folder when stems repeat), a live
    run's first run id digits."""
    stems = [Path(t.path).stem for t in targets if t.kind == "recorded"]
    out = []
    for target in targets:
        if target.kind == "recorded":
            p = Path(target.path)
            out.append(f"{p.parent.name}/{p.stem}" if stems.count(p.stem) > 1 else p.stem)
        else:
            out.append(f"live:{target.run_id[:8]}" if target.run_id else f"live:{target.telemetry.rsplit(':', 1)[-1]}")
    return out


@dataclass
class Ack:
    """A command sent from the comparison to one run, and that run's own answer."""

    number: int
    label: str
    text: str
    status: str = "pending"  # pending | applied | rejected | failed
    step: int = -1
    reason: str = ""

    def describe(self) -> str:
        """``#2 lr-1e-3: set_lr lr=0.002 -> applied at step 345``."""
        head = f"#{self.number} {self.label}: {self.text}"
        if self.status == "applied":
            return f"{head} -> applied at step {self.step}"
        if self.status == "rejected":
            return f"{head} -> rejected: {self.reason}"
        if self.status == "failed":
            return f"{head} -> not delivered: {self.reason}"
        return f"{head} -> pending"


@dataclass
class CompareRun:
    """One run of the comparison: where it comes from, its history and its diagnosis."""

    number: int
    label: str
    target: Target
    history: RunHistory | None = None
    source: Any = None  # the LiveSource of a live run
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    verdicts: tuple[Any, ...] = ()
    raised: dict[str, int] = field(default_factory=dict)  # every verdict code seen, and the step it was first seen at
    trials: tuple[Any, ...] = ()
    diagnosed: tuple = ()  # what the verdicts were computed for
    engine: Any = None

    @property
    def live(self) -> bool:
        """Whether a trainer is behind this run (commands can be sent)."""
        return self.target.kind == "live"

    @property
    def current(self) -> RunHistory | None:
        """The history to read now (a live trainer that restarted has a new one)."""
        if self.source is not None and self.source.history is not None:
            return self.source.history
        return self.history

    def state(self) -> str:
        """recorded | live | stalled | lost | paused | finished | stopped | failed."""
        if self.error:
            return "failed"
        if not self.live:
            return "recorded"
        if self.source is None:
            return "connecting"
        status = self.source.status()
        trainer = status.trainer_state
        if trainer in ("finished", "stopped"):
            return trainer
        if status.state in ("lost", "stalled"):
            return status.state
        return "paused" if trainer == "paused" else status.state


def _load(run: CompareRun, verify: bool) -> None:
    from ...protocol.recording import read_recording

    try:
        recording = read_recording(run.target.path, verify=verify)
    except (ProtocolError, OSError) as err:
        run.error = str(err)
        return
    run.history = recording.history
    run.warnings = list(recording.warnings)


def _connect(run: CompareRun, timeout_s: float) -> None:
    from ..sources import LiveSource

    source = LiveSource(run.target.telemetry, run.target.control, timeout_s=timeout_s)
    try:
        run.history = source.open()
    except Exception as err:  # noqa: BLE001 - a run that cannot be reached is shown as failed
        run.error = f"cannot follow {run.target.telemetry}: {err}"
        return
    run.source = source


class CompareSession:
    """Every run of a comparison, loaded or followed, diagnosed on its own thread."""

    def __init__(self, targets: Sequence[Target], *, timeout_s: float = 5.0,
                 diagnose_every_s: float = DIAGNOSE_EVERY_S, diagnose: bool = True) -> None:
        labels = _labels(targets)
        self.runs = [CompareRun(i + 1, label, target) for i, (target, label) in enumerate(zip(targets, labels))]
        self.timeout_s = timeout_s
        self.diagnose_every_s = diagnose_every_s
        self.diagnose_enabled = diagnose
        self.version = 0  # grows whenever a run's data, verdicts or acks change
        self.acks: list[Ack] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._shown = threading.Event()  # the first frame is up: diagnosis may start

    # -- opening ---------------------------------------------------------------------------
    def open(self) -> None:
        """Load every recording and connect to every live trainer, side by side (blocking)."""
        with ThreadPoolExecutor(max_workers=min(8, max(1, len(self.runs)))) as pool:
            for run in self.runs:
                if run.live:
                    pool.submit(_connect, run, self.timeout_s)
                else:
                    pool.submit(_load, run, False)
        self.version += 1

    def start(self) -> None:
        """Start following the live runs and diagnosing every run (background threads)."""
        if self._threads:
            return
        if any(run.live and run.source is not None for run in self.runs):
            self._threads.append(threading.Thread(target=self._ingest, name="octa-compare-ingest", daemon=True))
        if self.diagnose_enabled:
            self._threads.append(threading.Thread(target=self._diagnose_loop, name="octa-compare-diagnose",
                                                  daemon=True))
        for thread in self._threads:
            thread.start()

    def verify(self) -> list[str]:
        """Check every recording's checksums (the first load skipped the step chunks');
        the problems found, each naming its file."""
        from ...protocol.recording import verify_recording

        problems = []
        for run in self.runs:
            if run.live or run.error:
                continue
            try:
                found = verify_recording(run.target.path)
            except (ProtocolError, OSError) as err:
                found = [str(err)]
            problems += [p for p in found if p not in run.warnings]
        return problems

    def close(self) -> None:
        """Stop the threads and close the live links; histories stay readable."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5.0)
        for run in self.runs:
            if run.source is not None:
                try:
                    run.source.close()
                except Exception:  # noqa: BLE001 - closing must never fail the quit
                    pass

    # -- the threads -----------------------------------------------------------------------
    def _ingest(self) -> None:
        live = [run for run in self.runs if run.live and run.source is not None]
        while not self._stop.is_set():
            changed = False
            for run in live:
                try:
                    if run.source.poll(POLL_TIMEOUT_S):
                        changed = True
                except Exception as err:  # noqa: BLE001 - a run that fails is said, the others go on
                    if str(err) not in run.warnings:
                        run.warnings.append(str(err))
                        del run.warnings[:-5]
                        changed = True
            if changed:
                self.version += 1
            self._stop.wait(INGEST_PAUSE_S)

    def shown(self) -> None:
        """The screen's first frame is up: diagnosis, held back until then so the first frame
        does not wait for it, starts now (it starts by itself after a few seconds anyway)."""
        self._shown.set()

    def _diagnose_loop(self) -> None:
        self._shown.wait(timeout=5.0)
        while not self._stop.is_set():
            for run in self.runs:
                if self._stop.is_set():
                    return
                if self.diagnose_run(run):
                    self.version += 1
            self._stop.wait(self.diagnose_every_s)

    def diagnose_run(self, run: CompareRun) -> bool:
        """Run the diagnosis engine and the fix trials over one run; True when re-evaluated."""
        history = run.current
        if history is None:
            return False
        steps = history.steps
        key = (id(history), len(steps), len(history.epochs), len(history.events))
        if key == run.diagnosed:
            return False
        try:
            from ...diagnosis import Engine
            from ...diagnosis.trial import trials

            if run.engine is None or run.diagnosed[:1] != key[:1]:
                # A recording is judged as it ends; a live run keeps the monitor's hysteresis.
                run.engine = Engine() if run.live else Engine(hold=1, release=1)
            run.verdicts = tuple(run.engine.evaluate(history))
            for verdict in run.verdicts:
                run.raised.setdefault(verdict.code, int(verdict.step))
            run.trials = tuple(trials(history))
        except Exception as err:  # noqa: BLE001 - one run's failure is said, not raised
            message = f"diagnosis failed: {err}"
            if message not in run.warnings:
                run.warnings.append(message)
        run.diagnosed = key
        return True

    # -- commands --------------------------------------------------------------------------
    def send(self, numbers: Sequence[int], make: Callable[[CompareRun], Command]) -> list[Ack]:
        """Send a command to each run of ``numbers`` (``make`` builds each run's own, e.g. its
        lr x 2); every run answers separately, on a thread of its own. Returns the acks, which
        fill in as the replies arrive."""
        acks = []
        for number in numbers:
            run = self.runs[number - 1]
            try:
                command = validate_command(make(run))
                text = _describe(command)
            except (ProtocolError, ValueError) as err:
                ack = Ack(number, run.label, "command", status="failed", reason=str(err))
                acks.append(ack)
                continue
            ack = Ack(number, run.label, text)
            acks.append(ack)
            if not run.live or run.source is None:
                ack.status, ack.reason = "failed", "a recording has no trainer to steer"
                continue
            threading.Thread(target=self._request, args=(run, command, ack), daemon=True,
                             name=f"octa-compare-send-{number}").start()
        with self._lock:
            self.acks.extend(acks)
        self.version += 1
        return acks

    def _request(self, run: CompareRun, command: Command, ack: Ack) -> None:
        try:
            reply: Reply = run.source.request(command)
        except Exception as err:  # noqa: BLE001 - said in the ack, never raised
            ack.status, ack.reason = "failed", str(err) or type(err).__name__
        else:
            if reply.ok:
                ack.status, ack.step = "applied", reply.step
            else:
                ack.status, ack.step, ack.reason = "rejected", reply.step, reply.reason or "no reason given"
        self.version += 1

    def wait_acks(self, acks: Sequence[Ack], timeout_s: float) -> bool:
        """Wait until none of ``acks`` is pending (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        while any(a.status == "pending" for a in acks):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def _describe(command: Command) -> str:
    from ..format import format_command

    return format_command(command.op, dict(command.args))


def last_value(history: RunHistory | None, channel: str) -> float:
    """The newest finite value of a step channel (NaN when the run has none)."""
    if history is None or not history.schema.has(channel):
        return math.nan
    steps = history.steps
    n = len(steps)
    if not n:
        return math.nan
    column = steps.values[max(0, n - 50):n, history.schema.index(channel)]
    for value in column[::-1]:
        if math.isfinite(float(value)):
            return float(value)
    return math.nan
