"""The ZeroMQ transports: endpoints, PUB/SUB telemetry, ROUTER/DEALER control.

Every socket here binds 127.0.0.1 port 0 or an ipc path in a temporary folder, and every
receive has a timeout, so a broken transport fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import stat
import time

import numpy as np
import pytest
import zmq

from octa_tui.protocol import Command, Heartbeat, ProtocolError, Reply, encode, encode_step, new_run_id
from octa_tui.protocol.transport import (
    ControlClient,
    ControlServer,
    ControlTimeout,
    TelemetryPublisher,
    TelemetrySubscriber,
    parse_endpoint,
)

RUN = new_run_id()


def heartbeat(step: int = 0) -> Heartbeat:
    return Heartbeat(run_id=RUN, sender="trainer", time=1000.0 + step, step=step)


def wait_subscribed(pub: TelemetryPublisher, sub: TelemetrySubscriber, timeout_s: float = 120.0) -> None:
    """Publish probes until the subscriber hears one: subscriptions reach a PUB asynchronously."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pub.send(heartbeat())
        if sub.recv(0.02) is not None:
            sub.drain()
            return
    raise AssertionError("subscriber never received anything")


def serve_one(server: ControlServer, timeout_s: float = 120.0):
    """Poll the server (never blocking) until one request arrives."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        requests = server.poll()
        if requests:
            return requests[0]
        time.sleep(0.002)
    raise AssertionError("no request arrived")


# --- endpoints ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"),
        ("tcp://localhost:5555", "tcp://127.0.0.1:5555"),
        ("tcp://[::1]:5555", "tcp://[::1]:5555"),
        ("tcp://127.0.0.1:*", "tcp://127.0.0.1:0"),
        ("ipc:///tmp/octa/run.sock", "ipc:///tmp/octa/run.sock"),
    ],
)
def test_loopback_and_ipc_endpoints_are_accepted(text: str, expected: str) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    "text", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:5555", "tcp://gpu-box:5555"]
)
def test_non_loopback_endpoint_is_refused_with_an_ssh_tunnel_hint(text: str) -> None:
    # GIVEN an address other machines could reach WHEN it is parsed THEN it is refused with the tunnel to use
    with pytest.raises(ProtocolError) as info:
        parse_endpoint(text)
    message = str(info.value)
    assert "ssh -L 5555:127.0.0.1:5555" in message
    assert "tcp://127.0.0.1:5555" in message


def test_non_loopback_endpoint_is_refused_when_binding_a_publisher() -> None:
    with pytest.raises(ProtocolError, match="ssh -L"):
        TelemetryPublisher("tcp://0.0.0.0:0")


def test_insecure_flag_allows_a_remote_endpoint() -> None:
    assert parse_endpoint("tcp://10.1.2.3:5555", insecure=True) == "tcp://10.1.2.3:5555"


@pytest.mark.parametrize(
    "text", ["", "http://127.0.0.1:80", "tcp://127.0.0.1", "tcp://127.0.0.1:70000", "ipc://"]
)
def test_malformed_endpoint_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ProtocolError, match=r"tcp://127\.0\.0\.1:PORT|out of range|ipc://"):
        parse_endpoint(text)


def test_connecting_to_port_zero_is_refused() -> None:
    with pytest.raises(ProtocolError, match="port 0"):
        TelemetrySubscriber("tcp://127.0.0.1:0")


# --- telemetry ------------------------------------------------------------------------------


def test_pub_sub_on_a_random_port_carries_steps_and_records() -> None:
    # GIVEN a publisher on port 0 and a subscriber connected to the port it reports
    pub = TelemetryPublisher("tcp://127.0.0.1:0")
    assert not pub.endpoint.endswith(":0")
    sub = TelemetrySubscriber(pub.endpoint)
    try:
        wait_subscribed(pub, sub)
        values = np.arange(5, dtype=np.float32)
        # WHEN a step and a heartbeat are sent
        assert pub.send_frame(encode_step(bytes.fromhex(RUN), 7, 70, 1, 12.5, values))
        assert pub.send(heartbeat(70))
        got = [sub.recv(2.0), sub.recv(2.0)]
        # THEN both arrive intact, in order
        assert got[0].seq == 7 and got[0].step == 70 and np.array_equal(got[0].values, values)
        assert got[1] == heartbeat(70)
    finally:
        sub.close()
        pub.close()


def test_recv_returns_none_after_its_timeout_when_nothing_arrives() -> None:
    pub = TelemetryPublisher("tcp://127.0.0.1:0")
    sub = TelemetrySubscriber(pub.endpoint)
    try:
        start = time.monotonic()
        assert sub.recv(0.1) is None
        assert sub.drain(timeout_s=0.1) == []
        assert time.monotonic() - start < 1.5
    finally:
        sub.close()
        pub.close()


def test_pub_sub_over_ipc_creates_a_private_socket_file(tmp_path) -> None:
    # GIVEN an ipc path in a folder that does not exist yet
    path = tmp_path / "runs" / "telemetry.sock"
    pub = TelemetryPublisher(f"ipc://{path}")
    sub = TelemetrySubscriber(f"ipc://{path}")
    try:
        # THEN the folder is 0700, the socket 0600, and messages flow
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        wait_subscribed(pub, sub)
        pub.send(heartbeat(3))
        assert sub.recv(2.0) == heartbeat(3)
    finally:
        sub.close()
        pub.close()


def test_publisher_never_blocks_on_a_subscriber_that_never_reads() -> None:
    # GIVEN a connected subscriber that never reads
    pub = TelemetryPublisher("tcp://127.0.0.1:0", sndhwm=1000)
    sub = TelemetrySubscriber(pub.endpoint, rcvhwm=1000)
    try:
        wait_subscribed(pub, sub)
        values = np.zeros(152, dtype=np.float32)
        token = bytes.fromhex(RUN)
        before = pub.sent
        # WHEN 100k steps are published
        start = time.monotonic()
        for seq in range(100_000):
            pub.send_frame(encode_step(token, seq, seq, 0, 1.0, values))
        elapsed = time.monotonic() - start
        # THEN it finished in bounded time and every send was accepted (drops happen per subscriber)
        assert elapsed < 20.0
        assert pub.sent - before == 100_000
        assert pub.dropped == 0
    finally:
        sub.close()
        pub.close()


def test_malformed_telemetry_is_counted_and_skipped() -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    sub = TelemetrySubscriber(f"tcp://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while sub.recv(0.02) is None:  # wait until subscribed
            raw.send_multipart(encode(heartbeat()))
            assert time.monotonic() < deadline
        sub.drain()
        # WHEN garbage arrives between two valid messages
        raw.send(b"not a message at all")
        raw.send_multipart([b"OC\x01\x00\x03\x00\x00\x00", b"\xc1"])
        raw.send_multipart(encode(heartbeat(9)))
        # THEN the subscriber skips both, says why, and still delivers the valid one
        assert sub.recv(2.0) == heartbeat(9)
        assert sub.malformed == 2
        assert "msgpack" in sub.last_error
        assert sub.incompatible is None
    finally:
        sub.close()
        raw.close()


def test_another_major_version_is_flagged_naming_both_versions() -> None:
    ctx = zmq.Context.instance()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    port = raw.bind_to_random_port("tcp://127.0.0.1")
    sub = TelemetrySubscriber(f"tcp://127.0.0.1:{port}")
    try:
        frames = encode(heartbeat())
        foreign = [frames[0][:2] + bytes([9, 4]) + frames[0][4:], frames[1]]
        deadline = time.monotonic() + 120
        while sub.incompatible is None:
            raw.send_multipart(foreign)
            sub.drain(timeout_s=0.02)
            assert time.monotonic() < deadline
        assert "9.4" in sub.incompatible and "1.0" in sub.incompatible
    finally:
        sub.close()
        raw.close()


# --- control --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_router_dealer_round_trip(kind: str, tmp_path) -> None:
    endpoint = "tcp://127.0.0.1:0" if kind == "tcp" else f"ipc://{tmp_path / 'control.sock'}"
    server = ControlServer(endpoint)
    client = ControlClient(server.endpoint, timeout_s=120.0)
    try:
        if kind == "ipc":
            assert stat.S_IMODE(os.stat(tmp_path / "control.sock").st_mode) == 0o600
        # WHEN the monitor sends a command and the trainer answers at its next poll
        assert server.poll() == []
        request_id = client.send(Command(op="set_lr", args={"lr": 1e-4}))
        request = serve_one(server)
        assert request.command == Command(op="set_lr", args={"lr": 1e-4}, request_id=request_id)
        assert request.error == ""
        server.reply(request.identity, Reply(request_id, "ok", step=42))
        # THEN the reply reaches the client that asked
        deadline = time.monotonic() + 120
        replies = []
        while not replies:
            replies = client.collect()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        assert replies == [Reply(request_id, "ok", step=42)]
    finally:
        client.close()
        server.close()


def test_server_poll_returns_at_once_when_nothing_is_waiting() -> None:
    server = ControlServer("tcp://127.0.0.1:0")
    try:
        start = time.perf_counter()
        for _ in range(1000):
            assert server.poll() == []
        assert time.perf_counter() - start < 1.0
    finally:
        server.close()


def test_request_against_no_trainer_times_out_with_a_clear_message() -> None:
    # GIVEN a port nobody listens on
    client = ControlClient("tcp://127.0.0.1:9", timeout_s=0.3)
    try:
        start = time.monotonic()
        with pytest.raises(ControlTimeout) as info:
            client.request(Command(op="ping"))
        elapsed = time.monotonic() - start
    finally:
        client.close()
    # THEN it gave up on time and said what to check
    assert 0.25 < elapsed < 3.0
    message = str(info.value)
    assert "no reply from the trainer at tcp://127.0.0.1:9 within 0.3 s" in message
    assert "is it running?" in message and "`octa-tui list` shows the running trainers" in message
    assert isinstance(info.value, ProtocolError)


def test_a_late_reply_is_never_taken_for_the_next_request() -> None:
    server = ControlServer("tcp://127.0.0.1:0")
    client = ControlClient(server.endpoint, timeout_s=0.3)
    try:
        # GIVEN a request the trainer reads but answers only after the client gave up
        with pytest.raises(ControlTimeout):
            client.request(Command(op="set_lr", args={"lr": 0.5}))
        late = serve_one(server)
        server.reply(late.identity, Reply(late.command.request_id, "error", reason="late"))
        # WHEN the next request is answered promptly
        client.timeout_s = 5.0
        request_id = client.send(Command(op="ping"))
        second = serve_one(server)
        server.reply(second.identity, Reply(second.command.request_id, "ok", step=5))
        deadline = time.monotonic() + 120
        replies = []
        while not replies:
            replies = client.collect()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        # THEN only the second request's own reply arrives
        assert [r.request_id for r in replies] == [request_id]
        assert replies[0].reason == ""
    finally:
        client.close()
        server.close()


def test_undecodable_control_frames_become_requests_with_an_error() -> None:
    server = ControlServer("tcp://127.0.0.1:0")
    raw = zmq.Context.instance().socket(zmq.DEALER)
    raw.setsockopt(zmq.LINGER, 0)
    raw.connect(server.endpoint)
    try:
        raw.send(b"\x00garbage")
        bad = serve_one(server)
        assert bad.command is None and "could not read" in bad.error
        raw.send_multipart(encode(heartbeat()))
        wrong = serve_one(server)
        assert wrong.command is None and "expects a command" in wrong.error
        assert server.reply(bad.identity, Reply("", "error", reason=bad.error))
        assert raw.poll(120_000)
    finally:
        raw.close()
        server.close()


def test_reply_to_a_monitor_that_left_is_reported_not_raised() -> None:
    server = ControlServer("tcp://127.0.0.1:0")
    try:
        assert server.reply(b"\x00gone", Reply("x", "ok")) is False
        assert server.failed_sends == 1
    finally:
        server.close()
