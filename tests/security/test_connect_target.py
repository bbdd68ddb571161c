"""`octa-tui connect TARGET`: each mistake gets its own message with the fix (runfiles.resolve_target)."""

from __future__ import annotations

import os
import socket

import pytest

from octa_tui.protocol.runfiles import RunFileInfo, Target, TargetError, resolve_target

RUN = RunFileInfo(pid=os.getpid(), run_id="0123456789abcdef", telemetry="tcp://127.0.0.1:5601",
                  control="tcp://127.0.0.1:5602", task="segmentation", model="UNet")
OTHER = RunFileInfo(pid=os.getpid(), run_id="0123ffff00000000", telemetry="ipc:///tmp/x/t.sock",
                    control="ipc:///tmp/x/c.sock")


def test_nothing_listening_at_an_endpoint_says_so_not_give_the_control_endpoint():
    # GIVEN a port nobody listens on (bound then closed)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TargetError) as err:
        resolve_target(f"tcp://127.0.0.1:{port}", runs=[RUN])
    message = str(err.value)
    assert f"nothing is listening at tcp://127.0.0.1:{port}" in message and "octa-tui list" in message
    assert "give it too" not in message and "no run file" not in message


def test_a_listening_endpoint_no_run_file_names_asks_for_the_control_endpoint():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with pytest.raises(TargetError, match=r"no run file on this machine names tcp://127\.0\.0\.1:\d+.*--control"):
            resolve_target(f"tcp://localhost:{port}", runs=[RUN])


def test_an_unknown_run_id_is_named_with_the_runs_there_are():
    with pytest.raises(TargetError) as err:
        resolve_target("deadbeef", runs=[RUN])
    message = str(err.value)
    assert "no running trainer has run id deadbeef" in message and RUN.run_id in message
    assert "octa-tui list" in message and "no run file" not in message
    with pytest.raises(TargetError, match="no trainer of yours is running"):
        resolve_target("deadbeef", runs=[])
    with pytest.raises(TargetError, match="no running trainer has pid 99999999"):
        resolve_target("99999999", runs=[RUN])


def test_an_endpoint_without_a_scheme_gets_the_endpoint_to_type():
    with pytest.raises(TargetError, match=r"'localhost:5555' has no scheme; .*octa-tui connect tcp://127\.0\.0\.1:5555"):
        resolve_target("localhost:5555", runs=[RUN])
    with pytest.raises(TargetError, match=r"connect tcp://gpu7:5555"):
        resolve_target("gpu7:5555", runs=[RUN])
    with pytest.raises(TargetError, match=r"ipc:///"):
        resolve_target("/run/user/1000/octa.sock", runs=[RUN])
    with pytest.raises(TargetError, match="is not a run id"):
        resolve_target("my-run", runs=[RUN])


def test_a_run_is_found_by_id_prefix_pid_or_either_endpoint():
    assert resolve_target("0123456789abcdef", runs=[RUN, OTHER]) == Target(RUN.telemetry, RUN.control, RUN)
    assert resolve_target("01234567", runs=[RUN, OTHER]).info == RUN
    with pytest.raises(TargetError, match="matches 2 runs"):
        resolve_target("0123", runs=[RUN, OTHER])
    # a pid shared by both test runs is ambiguous too, and says so
    with pytest.raises(TargetError, match="matches 2 runs"):
        resolve_target(str(os.getpid()), runs=[RUN, OTHER])
    assert resolve_target(str(os.getpid()), runs=[RUN]).info == RUN
    # the telemetry endpoint (written another way) or the control endpoint: the other comes from the run file
    assert resolve_target("tcp://localhost:5601", runs=[RUN]) == Target(RUN.telemetry, RUN.control, RUN)
    assert resolve_target("tcp://127.0.0.1:5602", runs=[RUN]) == Target(RUN.telemetry, RUN.control, RUN)
    # an explicit control endpoint wins
    assert resolve_target("tcp://127.0.0.1:5601", "tcp://127.0.0.1:7000", runs=[RUN]).control == "tcp://127.0.0.1:7000"
    # both given by hand, no run file needed
    assert resolve_target("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002", runs=[]) == \
        Target("tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002", None)


def test_a_remote_endpoint_is_refused_with_the_tunnel_unless_insecure():
    with pytest.raises(TargetError, match="ssh -L"):
        resolve_target("tcp://10.0.0.5:5555", "tcp://10.0.0.5:5556", runs=[])
    assert resolve_target("tcp://10.0.0.5:5555", "tcp://10.0.0.5:5556", runs=[], insecure=True).telemetry == \
        "tcp://10.0.0.5:5555"
