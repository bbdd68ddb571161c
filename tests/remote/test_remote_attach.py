"""`octa-tui attach` through a real sshd on a loopback port, and its one-line errors.

The sshd is Debian's OpenSSH server run by the test (host and user keys generated in a
tmp folder, loopback only). Without it (or without root, which sshd's privilege
separation needs here) the tests that use it are skipped with the reason.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from remote_helpers import TrainerProcess, process_env

from octa_tui.tui.attach import AttachError, Forward, SshTarget, choose_trainer, free_port, plan_forward

SSHD = Path("/usr/sbin/sshd")
MONITOR = [sys.executable, "-m", "octa_tui.tui.cli"]


# --- pure parts ---------------------------------------------------------------------------


def test_forwards_reach_the_hosts_loopback_and_ipc_paths(tmp_path):
    # GIVEN a trainer bound to all interfaces WHEN planning THEN the tunnel ends on the host's loopback
    tcp = plan_forward("tcp://0.0.0.0:5555", str(tmp_path), "telemetry")
    assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", tcp.local)
    assert tcp.spec == f"127.0.0.1:{tcp.tcp_port}:127.0.0.1:5555"
    ipc = plan_forward("ipc:///run/user/1000/octa/t.sock", str(tmp_path), "control")
    assert ipc == Forward(f"ipc://{tmp_path}/control.sock", f"{tmp_path}/control.sock:/run/user/1000/octa/t.sock",
                          unix_path=f"{tmp_path}/control.sock")
    with pytest.raises(AttachError, match="abstract"):
        plan_forward("ipc://@octa", str(tmp_path), "control")


def test_no_trainer_and_a_choice_among_several():
    with pytest.raises(AttachError, match="no trainer is running on gpu1"):
        choose_trainer([], where="gpu1")
    from octa_tui.protocol.runfiles import RunFileInfo

    runs = [RunFileInfo(pid=i, run_id=f"{i:016x}", telemetry="tcp://127.0.0.1:1", control="tcp://127.0.0.1:2")
            for i in (1, 2)]
    lines: list[str] = []
    assert choose_trainer(runs, ask=lambda prompt: "2", say=lines.append) is runs[1]
    assert len(lines) == 2
    with pytest.raises(AttachError, match="not one of 1-2"):
        choose_trainer(runs, ask=lambda prompt: "7", say=lines.append)


def test_ssh_command_carries_port_identity_and_options():
    target = SshTarget("me@gpu1", 2222, "/k/id", ("StrictHostKeyChecking=accept-new",))
    command = target.command("-N")
    assert command[0] == "ssh" and command[-1] == "me@gpu1" and "BatchMode=yes" in command
    assert command[command.index("-p") + 1] == "2222" and command[command.index("-i") + 1] == "/k/id"
    assert "StrictHostKeyChecking=accept-new" in command and command.index("-N") < command.index("me@gpu1")


def test_without_an_ssh_client_attach_says_so_in_one_line(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no ssh on this PATH
    result = subprocess.run([*MONITOR, "attach", "gpu1"], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no ssh client" in result.stderr


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client installed")
def test_unreachable_host_is_one_line():
    port = free_port()  # nothing listens there
    result = subprocess.run([*MONITOR, "attach", "127.0.0.1", "--port", str(port)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot reach 127.0.0.1 over ssh" in result.stderr


# --- through a real sshd --------------------------------------------------------------------


class Sshd:
    """OpenSSH's server on a loopback port, accepting one generated user key."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.user_key = folder / "user_key"
        host_key = folder / "host_key"
        for key in (host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        authorized = folder / "authorized_keys"
        authorized.write_text((folder / "user_key.pub").read_text())
        authorized.chmod(0o600)
        config = folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {host_key}",
            f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
            f"PidFile {folder / 'sshd.pid'}", "AllowTcpForwarding yes", "AllowStreamLocalForwarding yes", "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege-separation folder
        self.log = open(folder / "sshd.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, (folder / "sshd.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "sshd did not start listening"
                time.sleep(0.1)

    def attach_args(self, remote_octa_tui: str) -> list[str]:
        return [f"{getpass.getuser()}@127.0.0.1", "--port", str(self.port), "--identity", str(self.user_key),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                "--remote-octa-tui", remote_octa_tui]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def sshd(tmp_path):
    if not SSHD.is_file():
        pytest.skip("Debian's sshd is not installed (apt-get install -y openssh-server)")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("the OpenSSH client (ssh, ssh-keygen) is not installed")
    if os.geteuid() != 0:
        pytest.skip("running sshd on a test port needs root here (privilege separation in /run/sshd)")
    folder = tmp_path / "sshd"
    folder.mkdir()
    server = Sshd(folder)
    yield server
    server.stop()


def remote_monitor(run_files: Path) -> str:
    """How the "remote" host runs octa-tui: this interpreter, the test's run-file folder."""
    return f"env OCTA_TUI_RUN_DIR={shlex.quote(str(run_files))} {shlex.quote(sys.executable)} -m octa_tui.tui.cli"


@pytest.mark.slow
def test_attach_errors_through_sshd_are_one_line(sshd, tmp_path):
    # WHEN octa-tui is missing on the host
    missing = subprocess.run([*MONITOR, "attach", *sshd.attach_args("/nonexistent/octa-tui")],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "octa-tui is not installed on" in missing.stderr, missing.stderr
    # WHEN no trainer runs there
    (tmp_path / "empty").mkdir()
    idle = subprocess.run([*MONITOR, "attach", *sshd.attach_args(remote_monitor(tmp_path / "empty"))],
                          capture_output=True, text=True, timeout=60)
    assert idle.returncode == 1 and idle.stderr.strip().count("\n") == 0
    assert "no trainer is running on" in idle.stderr, idle.stderr


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def _wait_screen(session: str, predicate, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):
            return screen
        time.sleep(0.5)
    raise AssertionError(f"timed out; the screen was:\n{screen}")


def _tunnels(port: int) -> list[str]:
    """ssh -N processes this test started (their command line names the sshd's port)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if " -N " in line and f"-p {port} " in line]


def _step(screen: str) -> int:
    match = re.search(r"step ([\d,]+)", screen)
    return int(match.group(1).replace(",", "")) if match else -1


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_attach_through_sshd_shows_live_data_and_closes_its_tunnel(sshd, tmp_path):
    # GIVEN a trainer on the "remote" host (loopback endpoints, its run file in a tmp folder)
    trainer = TrainerProcess(tmp_path)
    session = f"octa-attach-{uuid.uuid4().hex[:8]}"
    try:
        trainer.wait_ready()
        env = process_env(tmp_path)
        command = shlex.join([*MONITOR, "attach", *sshd.attach_args(remote_monitor(tmp_path / "run-files"))])
        _tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "48", "-e",
              f"PYTHONPATH={env.get('PYTHONPATH', '')}", f"{command}; echo OCTA-EXIT=$?; sleep 60")
        # WHEN octa-tui attach runs in a real terminal
        first = _wait_screen(session, lambda s: "● live" in s and _step(s) > 0, 120)
        # THEN it shows the trainer's live data, and it keeps moving
        later = _wait_screen(session, lambda s: _step(s) > _step(first), 60)
        assert "Loss" in later and "Traceback" not in later
        assert len(_tunnels(sshd.port)) == 1, "one ssh tunnel while attached"
        # WHEN the monitor quits THEN the tunnel is closed and the exit is clean
        _tmux("send-keys", "-t", session, "q")
        screen = _wait_screen(session, lambda s: "OCTA-EXIT=" in s, 60)
        assert "OCTA-EXIT=0" in screen, screen
        assert _tunnels(sshd.port) == []
        assert trainer.proc.poll() is None, "the trainer goes on without its monitor"
    finally:
        _tmux("kill-session", "-t", session)
        assert trainer.stop() == 0, trainer.output()


@pytest.mark.slow
def test_ipc_trainer_is_followed_through_unix_socket_forwards(sshd, tmp_path):
    from octa_tui.protocol.follow import RunFollower
    from octa_tui.tui.attach import Tunnel, remote_trainers

    # GIVEN a trainer on ipc:// endpoints on the "remote" host
    sockets = tmp_path / "sockets"
    trainer = TrainerProcess(tmp_path, "--telemetry", f"ipc://{sockets}/t.sock", "--control", f"ipc://{sockets}/c.sock")
    try:
        trainer.wait_ready()
        args = sshd.attach_args(remote_monitor(tmp_path / "run-files"))
        target = SshTarget(args[0], sshd.port, str(sshd.user_key), ("StrictHostKeyChecking=no",
                           "UserKnownHostsFile=/dev/null", "LogLevel=ERROR"), remote_monitor(tmp_path / "run-files"))
        # WHEN the trainer is found over ssh and reached through forwarded unix sockets
        (info,) = remote_trainers(target)
        local = tmp_path / "local"
        local.mkdir(mode=0o700)
        forwards = [plan_forward(info.telemetry, str(local), "telemetry"), plan_forward(info.control, str(local), "control")]
        with Tunnel(target, forwards), RunFollower(forwards[0].local, forwards[1].local, timeout_s=60) as follower:
            history = follower.connect()
            rows = len(history.steps)
            deadline = time.monotonic() + 120
            while len(follower.history.steps) < rows + 20 and time.monotonic() < deadline:
                follower.poll(0.1)
            # THEN the run streams through the tunnel
            assert history.run_id == info.run_id and len(follower.history.steps) >= rows + 20
        # AND closing the tunnel removes the local sockets and the ssh process
        assert not any(local.iterdir()) and _tunnels(sshd.port) == []
    finally:
        assert trainer.stop() == 0, trainer.output()
