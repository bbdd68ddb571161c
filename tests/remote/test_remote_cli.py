"""The command lines of remote monitoring: keys, --bind/--keys/--insecure, the header's marker."""

from __future__ import annotations

import stat
import subprocess
import sys
import time

import pytest
from remote_helpers import TrainerProcess, make_schema

from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.keys import AUTHORIZED, ClientCurve, generate_keys
from octa_tui.protocol.run import RunHistory
from octa_tui.protocol.transport import KeyRefused
from octa_tui.trainer.cli import build_parser, config_from_args, main
from octa_tui.tui.panels import header_facts, render_header
from octa_tui.tui.sources import SourceStatus

MONITOR = [sys.executable, "-m", "octa_tui.tui.cli"]
RUN = ["--synthetic", "16"]


def test_keys_generate_writes_a_private_pair_and_says_what_to_do(tmp_path):
    result = subprocess.run([*MONITOR, "keys", "generate", str(tmp_path / "k"), "--name", "trainer"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((tmp_path / "k" / "trainer.key_secret").stat().st_mode) == 0o600
    assert (tmp_path / "k" / AUTHORIZED).is_dir() and "--keys" in result.stdout
    again = subprocess.run([*MONITOR, "keys", "generate", str(tmp_path / "k"), "--name", "trainer"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_binding_every_interface_without_keys_refuses_to_start_and_names_the_ways(capsys):
    # WHEN octa-train is asked to listen on all interfaces with no keys
    assert main(["--bind", "tcp://0.0.0.0:5555", *RUN]) == 2
    err = capsys.readouterr().err
    # THEN one line: tunnel over ssh, or create keys, or opt out explicitly
    assert err.count("\n") == 1 and "ssh -L 5555:127.0.0.1:5555" in err
    assert "octa-tui keys generate" in err and "--insecure" in err


def test_bind_with_keys_is_accepted_and_sets_both_endpoints(tmp_path):
    generate_keys(tmp_path, "trainer")
    generate_keys(tmp_path / "laptop", "monitor")
    (tmp_path / AUTHORIZED / "laptop.key").write_bytes((tmp_path / "laptop" / "monitor.key").read_bytes())
    config = config_from_args(build_parser().parse_args(["--bind", "tcp://0.0.0.0:5555", "--keys", str(tmp_path), *RUN]))
    assert (config.telemetry, config.control) == ("tcp://0.0.0.0:5555", "tcp://0.0.0.0:5556")
    assert config.keys == str(tmp_path)
    insecure = config_from_args(build_parser().parse_args(["--bind", "tcp://0.0.0.0:0", "--insecure", *RUN]))
    assert insecure.insecure and insecure.control == "tcp://0.0.0.0:0"


@pytest.mark.parametrize(("argv", "names"), [
    (["--keys", "/nonexistent/keys"], "trainer.key_secret"),
    (["--bind", "tcp://0.0.0.0:1", "--telemetry", "tcp://127.0.0.1:7"], "either --bind"),
    (["--keys", "K", "--insecure"], "contradict"),
])
def test_bad_security_flags_are_one_line(argv, names, capsys):
    assert main([*argv, *RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and names in err, err


def test_header_marks_an_insecure_trainer():
    plain = header_facts(RunHistory(make_schema()), SourceStatus("live"))
    assert "--insecure" not in render_header(plain).plain
    exposed = header_facts(RunHistory(make_schema({"link": "insecure"})), SourceStatus("live"))
    assert "--insecure" in render_header(exposed).plain


@pytest.mark.slow
def test_octa_train_with_keys_admits_the_listed_monitor_only_and_logs_the_other(tmp_path):
    # GIVEN keys for a trainer, one authorised monitor and one outsider
    keys = tmp_path / "keys"
    generate_keys(keys, "trainer")
    for name in ("laptop", "outsider"):
        generate_keys(tmp_path / name, "monitor")
        (tmp_path / name / "trainer.key").write_bytes((keys / "trainer.key").read_bytes())
    (keys / AUTHORIZED / "laptop.key").write_bytes((tmp_path / "laptop" / "monitor.key").read_bytes())
    # WHEN octa-train runs with --keys (on loopback: the tests never listen beyond it)
    trainer = TrainerProcess(tmp_path, "--keys", str(keys))
    try:
        info = trainer.wait_ready()
        # THEN the listed monitor follows the run, which says it is encrypted
        with RunFollower(info["telemetry"], info["control"], timeout_s=60,
                         curve=ClientCurve.from_dir(tmp_path / "laptop")) as follower:
            history = follower.connect()
            assert history.schema.config["link"] == "curve"
        # AND the outsider gets a clear refusal at once, and the trainer logs it
        outsider = RunFollower(info["telemetry"], info["control"], timeout_s=60,
                               curve=ClientCurve.from_dir(tmp_path / "outsider"))
        with pytest.raises(KeyRefused, match="refused this monitor's key"):  # an answer, not a timeout
            outsider.connect()
        deadline = time.monotonic() + 120
        while "refused a monitor" not in trainer.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refused a monitor with public key" in trainer.output()
    finally:
        assert trainer.stop() == 0, trainer.output()


@pytest.mark.slow
def test_insecure_trainer_is_marked_in_the_monitor_header(tmp_path):
    trainer = TrainerProcess(tmp_path, "--insecure")
    try:
        info = trainer.wait_ready()
        with RunFollower(info["telemetry"], info["control"], timeout_s=60) as follower:
            history = follower.connect()
        assert "--insecure" in render_header(header_facts(history, SourceStatus("live"))).plain
    finally:
        assert trainer.stop() == 0, trainer.output()


