"""`attach` through a jump host (ssh -J, ProxyJump), as HPC login nodes need: two real sshd on loopback."""

from __future__ import annotations

import getpass
import shlex
import time

import pytest
from remote_helpers import TrainerProcess
from test_remote_attach import Sshd, _tunnels, remote_monitor, sshd  # noqa: F401 - the fixture

from octa_tui.tui.attach import AttachError, SshTarget, attach_hint, parse_jump


def test_the_ssh_command_carries_the_jump_host_and_the_config_file():
    target = SshTarget("me@gpu7", port=2222, identity="/k", options=("LogLevel=ERROR",), jump="me@login:2200",
                       config="/tmp/ssh_config")
    command = target.command("-N")
    assert command[:3] == ["ssh", "-F", "/tmp/ssh_config"]
    assert command[command.index("-J") + 1] == "me@login:2200" and command[-2:] == ["-N", "me@gpu7"]
    assert command[command.index("-p") + 1] == "2222"
    # a jump "host" that is an option (an injected ProxyCommand) is refused
    for bad in ("-oProxyCommand=touch /tmp/x", "login, gpu", ""):
        with pytest.raises(AttachError, match="jump host"):
            parse_jump(bad)


def test_the_attach_hint_names_the_port_and_the_jump_host():
    assert attach_hint("me@gpu7") == "octa-tui attach me@gpu7"
    assert attach_hint("me@gpu7", 22) == "octa-tui attach me@gpu7"
    assert attach_hint("me@gpu7", 2222) == "octa-tui attach --port 2222 me@gpu7"
    assert attach_hint("me@gpu7", 2222, "login") == "octa-tui attach -J login --port 2222 me@gpu7"
    assert SshTarget("me@gpu7", 2222, jump="login").hint() == "octa-tui attach -J login --port 2222 me@gpu7"


@pytest.mark.slow
def test_a_trainer_behind_a_jump_host_is_followed_with_its_keys(sshd, tmp_path):  # noqa: F811
    from octa_tui.protocol.follow import RunFollower
    from octa_tui.tui.attach import Tunnel, plan_forward, remote_trainers

    # GIVEN a second sshd (the login node) in front of the first (the GPU host), one ssh config for both
    (tmp_path / "jump").mkdir()
    jump = Sshd(tmp_path / "jump")
    config = tmp_path / "ssh_config"
    config.write_text("\n".join([
        "Host *", f"  IdentityFile {sshd.user_key}", f"  IdentityFile {jump.user_key}", "  StrictHostKeyChecking no",
        "  UserKnownHostsFile /dev/null", "  LogLevel ERROR", "",
    ]))
    # AND a default trainer (keys of its own) on the GPU host
    trainer = TrainerProcess(tmp_path)
    try:
        trainer.wait_ready()
        user = getpass.getuser()
        target = SshTarget(f"{user}@127.0.0.1", sshd.port, remote_octa_tui=remote_monitor(tmp_path / "run-files"),
                           jump=f"{user}@127.0.0.1:{jump.port}", config=str(config))
        # WHEN it is found and tunnelled to through the jump host (ssh -J)
        (info,) = remote_trainers(target)
        assert info.curve_secret, "the run file carries the run's keys"
        local = tmp_path / "local"
        local.mkdir(mode=0o700)
        forwards = [plan_forward(info.telemetry, str(local), "telemetry"),
                    plan_forward(info.control, str(local), "control")]
        assert all(forward.keys is not None for forward in forwards)
        with Tunnel(target, forwards), RunFollower(forwards[0].local, forwards[1].local, timeout_s=10) as follower:
            # THEN the monitor follows the run with the keys read over ssh, no flag given
            history = follower.connect()
            rows = len(history.steps)
            deadline = time.monotonic() + 60
            while len(follower.history.steps) < rows + 10 and time.monotonic() < deadline:
                follower.poll(0.1)
            assert history.run_id == info.run_id and len(follower.history.steps) >= rows + 10
        # AND the login node carried the connections (it authenticated them)
        assert "Accepted publickey" in (tmp_path / "jump" / "sshd.log").read_text()
        assert _tunnels(sshd.port) == []
        # AND the hint to come back says how
        assert target.hint() == f"octa-tui attach -J {shlex.quote(target.jump)} --port {sshd.port} {user}@127.0.0.1"
    finally:
        jump.stop()
        assert trainer.stop() == 0, trainer.output()
