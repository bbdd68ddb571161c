"""The trainer that ``octa-tui demo`` starts, watches and always stops.

:class:`DemoTrainer` runs ``python -m octa_tui.trainer --synthetic ...`` as a child process
bound to loopback port 0, reads the endpoints it chose from its output, and on
:meth:`DemoTrainer.stop` sends SIGINT (a clean stop at the next step), waits, and kills it
if it does not go. It is a context manager, so no trainer is left behind even when the
monitor fails; and the child is told this process's pid (``OCTA_TUI_STOP_WITH_PARENT``), so
it stops by itself when the monitor dies without cleaning up (terminal closed, SSH dropped,
SIGKILL).

Without ``--run-dir`` each demo keeps its run (recording, checkpoints, log) in a private
folder of the run store (:mod:`octa_tui.protocol.run_store`: ``~/.local/share/octa-tui/runs``
by default, the newest 20 kept), not in ``/tmp``. On a machine with few cores the trainer
uses one torch thread (:func:`demo_threads`): the demo's small model gains nothing from more,
and on a busy 2-core machine two threads fight the monitor and each other.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..protocol.run_store import new_run_folder, newest_recording, release
from ..protocol.runfiles import ENV_STOP_WITH_PARENT
from .sources import LiveSource, SourceStatus

ENDPOINT_LINE = re.compile(r"^\s*(telemetry|control)\s+(\S+)\s*$")
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0
SMALL_MACHINE_CORES = 4  # up to this many cores, the demo trainer uses one thread
# The demo's trainer answers the monitor's requests (history, commands) at its step boundaries; a
# scenario's step can take seconds on a busy machine (oversized-model: a 14M-parameter net), so the
# monitor waits this long for a reply instead of a live source's 5 s.
REPLY_TIMEOUT_S = 60.0


def demo_threads(cores: int | None = None) -> int:
    """Torch threads for the demo trainer: 1 on a machine with up to 4 cores, else 0 (torch's
    default). Measured on a shared 2-core machine: see the README (first hour)."""
    cores = os.cpu_count() if cores is None else cores
    return 1 if cores is not None and cores <= SMALL_MACHINE_CORES else 0


class DemoError(RuntimeError):
    """The demo trainer could not be started; the message says why (its last output line)."""


def demo_trainer_args(
    *,
    steps: int = 0,
    images: int = 256,
    image_size: int = 64,
    base_width: int = 16,
    epochs: int = 1000,
    device: str = "",
    threads: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``octa-train`` flags of a demo run: synthetic data, loopback, port 0, and
    ``--threads`` (default :func:`demo_threads`; 0 leaves torch's default)."""
    threads = demo_threads() if threads is None else threads
    args = ["--synthetic", str(images), "--image-size", str(image_size), "--base-width", str(base_width),
            "--epochs", str(epochs), "--telemetry", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--quiet"]
    if threads:
        args += ["--threads", str(threads)]
    if steps:
        args += ["--max-steps", str(steps)]
    if device:
        args += ["--device", device]
    return args + list(extra)


class DemoTrainer:
    """A trainer child process on synthetic data; its endpoints once :meth:`start` returns."""

    def __init__(self, args: Sequence[str], run_dir: str | None = None, python: str = sys.executable) -> None:
        self.owns_run_dir = not run_dir
        self.run_dir = Path(run_dir) if run_dir else new_run_folder("demo")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.args = [python, "-m", "octa_tui.trainer", *args, "--checkpoint-dir", str(self.run_dir / "run")]
        self.log_path = self.run_dir / "trainer.log"
        self.process: subprocess.Popen | None = None
        self.telemetry = ""
        self.control = ""

    def start(self, timeout_s: float = START_TIMEOUT_S) -> DemoTrainer:
        """Start the trainer and wait until it has printed both endpoints."""
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
        try:
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", ENV_STOP_WITH_PARENT: str(os.getpid())},
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self._endpoints()
            if "telemetry" in found and "control" in found:
                self.telemetry, self.control = found["telemetry"], found["control"]
                return self
            if self.process.poll() is not None:
                raise DemoError(f"the demo trainer exited ({self.process.returncode}): {self.last_line()}")
            time.sleep(0.1)
        self.stop()
        raise DemoError(f"the demo trainer did not report its endpoints within {timeout_s:.0f} s: {self.last_line()}")

    def _endpoints(self) -> dict[str, str]:
        found: dict[str, str] = {}
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return found
        for line in text.splitlines():
            match = ENDPOINT_LINE.match(line)
            if match:
                found[match.group(1)] = match.group(2)
        return found

    def last_line(self) -> str:
        """The trainer's last line of output (its error, when it failed)."""
        try:
            lines = [line for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if line]
        except OSError:
            return "(no output)"
        return lines[-1].strip() if lines else "(no output)"

    @property
    def pid(self) -> int | None:
        """The child's process id (None before start)."""
        return self.process.pid if self.process is not None else None

    def running(self) -> bool:
        """Whether the child is still alive."""
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGINT (clean stop at the next step), wait ``grace_s``, then SIGKILL; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGINT)
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            except ProcessLookupError:
                pass
        return process.returncode

    def __enter__(self) -> DemoTrainer:
        return self

    def recording(self) -> Path | None:
        """The run's recording (the newest ``*.octa`` in its folder), once there is one."""
        return newest_recording(self.run_dir)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.owns_run_dir:
            release(self.run_dir)


STARTING = "starting the demo trainer (loading torch, drawing the synthetic data) ..."


class DemoSource(LiveSource):
    """The demo's live source: it starts its trainer in :meth:`open`, which the monitor calls on
    its worker thread, so the screen is up at once and says the trainer is starting (loading
    torch and drawing the data take seconds, many more on a busy machine). A trainer that fails
    to start is one line on the screen, and on stderr when the monitor exits. Replies may take up
    to :data:`REPLY_TIMEOUT_S` (the trainer answers between steps)."""

    def __init__(self, trainer: DemoTrainer, **options) -> None:
        options.setdefault("timeout_s", REPLY_TIMEOUT_S)
        super().__init__("", "", **options)
        self.trainer = trainer
        self.failure = ""

    def open(self):
        if not self.telemetry:
            try:
                self.trainer.start()
            except DemoError as err:
                self.failure = str(err)
                raise
            self.telemetry, self.control = self.trainer.telemetry, self.trainer.control
        return super().open()

    def status(self) -> SourceStatus:
        status = super().status()
        if not self.telemetry and not self.failure:
            return replace(status, detail=STARTING)
        return status
