"""GIVEN a trainer started by a monitor (``octa-tui demo``) WHEN the monitor dies without stopping
it (terminal closed, SSH dropped, kill -9) THEN the trainer notices and stops by itself; a
trainer started by hand, or whose parent is alive, goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from octa_tui.protocol.runfiles import ENV_STOP_WITH_PARENT
from octa_tui.trainer.cli import watch_parent


class FakeTrainer:
    def __init__(self) -> None:
        self._stop_signal = False
        self.stopped = threading.Event()

    def stop(self) -> None:
        self._stop_signal = True
        self.stopped.set()


def test_nothing_is_watched_without_the_variable_or_with_a_bad_value():
    for environ in ({}, {ENV_STOP_WITH_PARENT: ""}, {ENV_STOP_WITH_PARENT: "abc"}, {ENV_STOP_WITH_PARENT: "1"}):
        assert watch_parent(FakeTrainer(), environ=environ) is None


def test_a_live_parent_keeps_the_trainer_going_and_a_different_one_stops_it(monkeypatch):
    monkeypatch.setattr("octa_tui.trainer.cli.os.getppid", lambda: 4242)  # whatever runs the tests
    alive, done = FakeTrainer(), threading.Event()
    thread = watch_parent(alive, environ={ENV_STOP_WITH_PARENT: "4242"}, poll_s=0.02, done=done)
    assert thread is not None
    assert not alive.stopped.wait(0.3)
    done.set()  # the run ended (e.g. --max-steps): the watcher ends with it
    thread.join(2)
    assert not thread.is_alive() and not alive.stopped.is_set()
    orphan = FakeTrainer()  # started by a process that is no longer its parent
    watch_parent(orphan, environ={ENV_STOP_WITH_PARENT: "4241"}, poll_s=0.02)
    assert orphan.stopped.wait(2)


def _state(pid: int) -> str:
    """The process state letter from /proc ('' when it is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_demo_trainer_stops_when_its_monitor_is_killed(tmp_path: Path):
    # GIVEN a monitor process that started a demo trainer (a long run) and holds it
    monitor_code = (
        "import sys, time\n"
        "from octa_tui.tui.demo import DemoTrainer, demo_trainer_args\n"
        "t = DemoTrainer(demo_trainer_args(steps=100000, images=16, image_size=32, base_width=8),"
        " run_dir=sys.argv[1]).start()\n"
        "print(t.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path / "run-files")}
    monitor = subprocess.Popen([sys.executable, "-c", monitor_code, str(tmp_path)], stdout=subprocess.PIPE,
                               text=True, env=env)
    trainer_pid = 0
    try:
        line = monitor.stdout.readline()
        assert line.strip().isdigit(), f"the monitor did not start its trainer: {line!r}"
        trainer_pid = int(line)
        assert _state(trainer_pid) not in ("", "Z")
        # WHEN the monitor is killed outright (no cleanup can run)
        monitor.kill()
        monitor.wait(10)
        # THEN the trainer stops by itself (at its next step: seconds, unless the machine is loaded;
        # the ceiling only ends a test that would hang), and says why
        deadline = time.monotonic() + 300
        while _state(trainer_pid) not in ("", "Z"):
            assert time.monotonic() < deadline, "the demo trainer outlived its monitor"
            time.sleep(0.2)
        log = (tmp_path / "trainer.log").read_text()
        assert "is gone; stopping at the next step" in log, log[-2000:]
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait(10)
        if trainer_pid and _state(trainer_pid) not in ("", "Z"):
            os.kill(trainer_pid, signal.SIGKILL)
