"""GIVEN a real terminal (tmux) WHEN `octa-tui demo` runs at 80x24 and 200x50 THEN the screen
shows the panels and a verdict, q quits cleanly, and no trainer process is left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(420),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed; the real-terminal test needs it"),
]
OCTA_TUI = Path(sys.executable).with_name("octa-tui")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def _trainers_of(run_dir: Path) -> list[str]:
    """The trainer processes whose command line names this demo's run folder."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if "octa_tui.trainer" in line and str(run_dir) in line]


def _wait_for(session: str, predicate, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"timed out; the screen was:\n{screen}")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 50)])
def test_demo_in_a_real_terminal(tmp_path, width, height):
    session = f"octa-test-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / f"demo-{uuid.uuid4().hex[:8]}"
    command = (f"{OCTA_TUI} demo --images 16 --image-size 32 --base-width 8 --run-dir {run_dir}; "
               f"echo OCTA-EXIT=$?; sleep 60")
    _tmux("new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), command)
    try:
        # a healthy demo shows no verdict at all: the panel says so once the engine has run
        screen = _wait_for(session, lambda s: "Loss" in s and ("nothing looks wrong" in s or any(
            f"{label} " in s for label in ("INFO", "WARN", "CRIT"))), 220)
        for title in ("Loss", "Gradients", "Verdicts", "Event log"):
            assert title in screen
        assert "● live" in screen
        assert _trainers_of(run_dir), "the demo trainer should be running"
        _tmux("send-keys", "-t", session, "q")
        screen = _wait_for(session, lambda s: "OCTA-EXIT=" in s, 60)
        assert "OCTA-EXIT=0" in screen
        assert "Traceback" not in screen
        assert _trainers_of(run_dir) == [], "a trainer process was left behind"
    finally:
        _tmux("kill-session", "-t", session)
