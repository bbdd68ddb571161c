"""The trainer that ``octa-tui demo`` starts, watches and always stops.

:class:`DemoTrainer` runs ``python -m octa_tui.trainer --synthetic ...`` as a child process
bound to loopback port 0, reads the endpoints it chose from its output, and on
:meth:`DemoTrainer.stop` sends SIGINT (a clean stop at the next step), waits, and kills it
if it does not go. It is a context manager, so no trainer is left behind even when the
monitor fails; and the child is told this process's pid (``OCTA_TUI_STOP_WITH_PARENT``), so
it stops by itself when the monitor dies without cleaning up (terminal closed, SSH dropped,
SIGKILL).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from ..protocol.runfiles import ENV_STOP_WITH_PARENT

ENDPOINT_LINE = re.compile(r"^\s*(telemetry|control)\s+(\S+)\s*$")
START_TIMEOUT_S = 120.0
STOP_GRACE_S = 10.0


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
    extra: Sequence[str] = (),
) -> list[str]:
    """The ``octa-train`` flags of a demo run: synthetic data, loopback, port 0."""
    args = ["--synthetic", str(images), "--image-size", str(image_size), "--base-width", str(base_width),
            "--epochs", str(epochs), "--telemetry", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--quiet"]
    if steps:
        args += ["--max-steps", str(steps)]
    if device:
        args += ["--device", device]
    return args + list(extra)


class DemoTrainer:
    """A trainer child process on synthetic data; its endpoints once :meth:`start` returns."""

    def __init__(self, args: Sequence[str], run_dir: str | None = None, python: str = sys.executable) -> None:
        self.run_dir = Path(run_dir) if run_dir else Path(tempfile.mkdtemp(prefix="octa-demo-"))
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

    def __exit__(self, *exc: object) -> None:
        self.stop()
