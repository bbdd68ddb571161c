"""Another local user cannot read or steer a default trainer, by any port or socket.

A real ``octa-train`` runs as this user (root here) with default settings; a process
running as uid 65534 (``setpriv``) subscribes to its telemetry, sends ``set_lr 0.9``,
``pause`` and ``stop`` on its control socket, asks as a monitor would, and tries to read
its run file. Skipped where a second uid cannot be had (not root, no setpriv).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "remote"))
from remote_helpers import TrainerProcess  # noqa: E402

from octa_tui.protocol.follow import RunFollower  # noqa: E402

ATTACKER = Path(__file__).with_name("attacker_main.py")
NOBODY = 65534
pytestmark = pytest.mark.slow


def _as_nobody(*args: str, home: Path) -> list[str]:
    return ["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *args]


@pytest.fixture
def nobody_home():
    """A folder of uid 65534 (its HOME, run files and spill folder); skip where that user cannot be had."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a process as another user (uid 65534)")
    home = Path(tempfile.mkdtemp(prefix="octa-nobody-"))
    os.chmod(home, 0o755)
    os.chown(home, NOBODY, NOBODY)
    probe = subprocess.run(_as_nobody(sys.executable, "-c", "import octa_tui.protocol.follow", home=home),
                           capture_output=True, text=True, timeout=60, env=_nobody_env(home))
    if probe.returncode != 0:
        shutil.rmtree(home, ignore_errors=True)
        pytest.skip(f"uid 65534 cannot import octa_tui here: {probe.stderr.strip()[-200:]}")
    yield home
    shutil.rmtree(home, ignore_errors=True)


def _nobody_env(home: Path) -> dict[str, str]:
    return dict(os.environ, HOME=str(home), OCTA_TUI_RUN_DIR=str(home / "run"), OCTA_TUI_SPILL_DIR=str(home),
                OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture
def shared_folder():
    """The trainer's folder in a place every user can walk through (0755), as /tmp or a lab share is."""
    folder = Path(tempfile.mkdtemp(prefix="octa-shared-"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_another_user_gets_nothing_from_a_default_trainer_and_is_told_refused(kind, nobody_home, shared_folder):
    args = []
    if kind == "ipc":
        # ipc sockets in a folder every user may enter: the keys still keep them out
        sockets = shared_folder / "sockets"
        sockets.mkdir(mode=0o777)
        os.chmod(sockets, 0o777)
        args = ["--telemetry", f"ipc://{sockets}/t.sock", "--control", f"ipc://{sockets}/c.sock"]
    # GIVEN a default trainer of this user (no flags about security)
    trainer = TrainerProcess(shared_folder, *args)
    try:
        info = trainer.wait_ready()
        run_file = shared_folder / "run-files" / f"{trainer.proc.pid}.json"
        if kind == "ipc":  # let the other user reach the socket files themselves
            for name in ("t.sock", "c.sock"):
                os.chmod(sockets / name, 0o777)
        # WHEN uid 65534 tries for 4 s
        attack = subprocess.run(
            _as_nobody(sys.executable, str(ATTACKER), info["telemetry"], info["control"], str(run_file), "4",
                       home=nobody_home),
            capture_output=True, text=True, timeout=120, env=_nobody_env(nobody_home),
        )
        assert attack.returncode == 0, attack.stderr
        report = json.loads(attack.stdout.strip().splitlines()[-1])
        # THEN it read no telemetry, got no reply, and its monitor says "refused", not "is it running?"
        assert report["telemetry_messages"] == 0, report
        assert report["control_replies"] == 0, report
        assert report["monitor"].startswith("refused: "), report
        assert "is it running" not in report["monitor"]
        code, said = report["cli"]
        assert code != 0 and "refused: " in said and "is it running" not in said, report["cli"]
        # AND it cannot read the run file that holds the keys (0600 in a 0700 folder)
        assert report["run_file"] == "PermissionError", report
        assert (run_file.stat().st_mode & 0o777, run_file.parent.stat().st_mode & 0o777) == (0o600, 0o700)
        # AND the trainer, still running, logged each refused peer once (the clients retried ~40 times)
        deadline = time.monotonic() + 120
        wanted = ("refused a client without keys on the control socket",
                  "refused a client without keys on the telemetry socket")
        while not all(w in trainer.output() for w in wanted) and time.monotonic() < deadline:
            time.sleep(0.2)  # each socket's refusal is logged by its own monitor, in either order
        log = trainer.output()
        assert trainer.proc.poll() is None, log
        # AND its owner connects with no flag (keys from the run file), and sees no command was applied
        with RunFollower(info["telemetry"], info["control"], timeout_s=60) as follower:
            history = follower.connect()
        assert not [e for e in history.events if e.kind == "command_applied"], history.events
        warnings = [e for e in history.events if e.data.get("source") == "security"]
        assert warnings and "refused a connection" in warnings[0].message
        # (what the trainer said and did, should a refusal be missing from its log)
        seen = {"attack": report, "last step": history.steps.step[-1] if len(history.steps.step) else None,
                "security events": [(e.step, e.message, e.data) for e in warnings], "log": log[-2000:]}
        assert log.count("refused a client without keys on the control socket") == 1, seen
        assert log.count("refused a client without keys on the telemetry socket") == 1, seen
    finally:
        assert trainer.stop() == 0, trainer.output()[-3000:]


def test_the_owner_connects_from_another_process_with_no_flag(shared_folder):
    # GIVEN a default trainer
    trainer = TrainerProcess(shared_folder)
    try:
        info = trainer.wait_ready()
        # WHEN a fresh process of the same user (its run-files folder the trainer's) follows it by endpoint
        code = ("import sys; from octa_tui.protocol.follow import RunFollower\n"
                "with RunFollower(sys.argv[1], sys.argv[2], timeout_s=60) as f:\n"
                "    h = f.connect(); print(h.schema.run_id)")
        result = subprocess.run([sys.executable, "-c", code, info["telemetry"], info["control"]],
                                capture_output=True, text=True, timeout=120,
                                env=dict(os.environ, OCTA_TUI_RUN_DIR=str(shared_folder / "run-files")))
        # THEN it is let in, with the keys of the run file
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == info["run_id"]
        assert info["curve_secret"] and info["curve_server"]
    finally:
        assert trainer.stop() == 0, trainer.output()[-3000:]
