"""ZeroMQ sockets that carry protocol messages: telemetry PUB/SUB and control ROUTER/DEALER.

The trainer binds a PUB socket for telemetry and a ROUTER socket for control; each monitor
connects a SUB and a DEALER. The transport moves frames and decodes them with
:mod:`octa_tui.protocol.codec`; it never reads message fields beyond what routing needs.

Two promises shape everything here. The trainer side never blocks: a PUB socket drops
messages for a subscriber that is slow, frozen or gone, and the ROUTER is polled without
waiting at step boundaries. The monitor side never hangs: every receive has a timeout, a
request that gets no answer ends in :class:`ControlTimeout` with a message a person can
act on, and a malformed message is counted and skipped rather than crashing the monitor.

Endpoints are loopback TCP or ``ipc://`` paths (created 0600). Any other address is refused
with the SSH tunnel that reaches a remote trainer safely, unless the sockets use CurveZMQ
keys (``curve=``, see :mod:`octa_tui.protocol.keys`) or the caller says ``insecure``.

A client given no ``curve`` looks the keys up by endpoint (a trainer of this process, the
run files on this machine, keys handed over by ``attach``): a default trainer takes keys
of its own, and the same user connects without a flag. A client whose handshake is refused
is told so at once, in a message that starts with ``refused:``.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import zmq

from .codec import StepBlock, decode, decode_step_frames, encode
from .errors import ProtocolError
from .keys import ClientCurve, ServerCurve, client_keys_for, secure_client_socket, secure_server_socket
from .messages import Command, Message, Reply, StepChunk
from .version import PROTOCOL_MAJOR, PROTOCOL_MINOR

# A PUB socket queues at most this many messages per subscriber, then drops for that one
# subscriber only; a subscriber that falls this far behind sees a gap and asks for history.
PUB_SNDHWM = 10_000
# The monitor's receive queue: deep enough to hold a second or two of a fast stream while
# the monitor is busy merging a large history snapshot.
SUB_RCVHWM = 200_000
# Messages queued towards one monitor on the control socket. A history answer is sent a
# few chunks at a time, only while this queue has room, so a client that asks and never
# reads holds at most this many messages (of at most link.HISTORY_CHUNK_BYTES each) in
# the trainer, never the whole history.
ROUTER_SNDHWM = 16
# Requests queued from one monitor: past this, ZeroMQ stops reading that connection, so a
# flood waits in the sender's buffers instead of the trainer's memory or CPU.
ROUTER_RCVHWM = 256
# How long a closing publisher may spend delivering its last messages (the final heartbeat).
CLOSE_LINGER_MS = 200
# Requests answered per ROUTER poll: bounds the work done at one step boundary.
MAX_REQUESTS_PER_POLL = 64

_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/\[\]]*):(?P<port>\*|\d{1,5})$")
_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "[::1]": "[::1]"}


class ControlTimeout(ProtocolError):
    """The trainer did not answer a control request in time (it is gone, frozen or busy)."""


class KeyRefused(ControlTimeout):
    """The CurveZMQ handshake with the trainer failed: a key is wrong or not authorised."""


# Socket-monitor events that end a CurveZMQ handshake.
HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


def _client_curve(endpoint: str, curve: ClientCurve | None) -> tuple[ClientCurve | None, bool]:
    """The keys to connect with, and whether they were looked up rather than given."""
    if curve is not None:
        return curve, False
    from .runfiles import keys_for_endpoint

    found = client_keys_for(endpoint, keys_for_endpoint)
    return found, found is not None


class HandshakeWatch:
    """Failed handshakes on one socket, read from its ZeroMQ socket monitor without waiting.

    The trainer reads it at step boundaries to log refused clients (ZeroMQ refuses them
    silently otherwise). At most ``limit`` events are read per call: a flood of failing
    connections costs the caller a bounded amount of work, the rest waits or is dropped
    by the monitor's own queue.
    """

    def __init__(self, sock: zmq.Socket) -> None:
        self._sock = sock
        self._monitor: zmq.Socket | None = sock.get_monitor_socket(HANDSHAKE_FAILED)

    def failures(self, limit: int = 32) -> list[tuple[int, int]]:
        """(event, value) of the failed handshakes seen since the last call (at most ``limit``)."""
        from zmq.utils.monitor import parse_monitor_message

        out: list[tuple[int, int]] = []
        monitor = self._monitor
        while monitor is not None and len(out) < limit:
            try:
                frames = monitor.recv_multipart(zmq.NOBLOCK)
            except zmq.ZMQError:
                break
            event = parse_monitor_message(frames)
            out.append((int(event["event"]), int(event["value"])))
        return out

    def close(self) -> None:
        """Stop watching (before the socket closes)."""
        if self._monitor is not None:
            try:
                self._sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None


def _seconds(value: float) -> str:
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def _tunnel_hint(text: str, host: str, port: str) -> str:
    port = port if port not in ("", "0", "*") else "PORT"
    remote = host.strip("[]") if host not in ("", "*", "0.0.0.0", "[::]") else "user@trainer-host"
    return (
        f"refusing endpoint {text!r}: without encryption only loopback (tcp://127.0.0.1:PORT, "
        "tcp://localhost:PORT, tcp://[::1]:PORT) and ipc://PATH are allowed. Keep the trainer on "
        f"127.0.0.1 and tunnel over SSH: `ssh -L {port}:127.0.0.1:{port} {remote}`, then connect to "
        f"tcp://127.0.0.1:{port}; or bind it with CurveZMQ keys (`octa-tui keys generate DIR --name "
        "trainer`, then --keys DIR); or pass --insecure to accept an unencrypted remote endpoint"
    )


def parse_endpoint(text: str, *, insecure: bool = False) -> str:
    """Check an endpoint and return its normal form, or raise ProtocolError saying why not.

    Accepted: ``tcp://127.0.0.1:PORT``, ``tcp://localhost:PORT`` (becomes 127.0.0.1),
    ``tcp://[::1]:PORT`` (PORT 0 or ``*`` picks a free port when binding) and ``ipc://PATH``
    (``~`` expanded, made absolute). Any other address is refused with the SSH tunnel to use
    instead, unless ``insecure`` is true.
    """
    if not isinstance(text, str) or not text.strip():
        raise ProtocolError("empty endpoint; use tcp://127.0.0.1:PORT or ipc://PATH")
    text = text.strip()
    if text.startswith("ipc://"):
        path = text[len("ipc://") :]
        if not path:
            raise ProtocolError(f"endpoint {text!r} names no path; use ipc:///path/to/socket")
        if path.startswith("@"):
            if not insecure:
                raise ProtocolError(
                    f"refusing endpoint {text!r}: an abstract ipc socket has no file permissions, so any "
                    "local user could connect; use an ipc:// file path (created 0600) instead"
                )
            return text
        return "ipc://" + os.path.abspath(os.path.expanduser(path))
    match = _TCP.match(text)
    if match is None:
        raise ProtocolError(
            f"endpoint {text!r} is not tcp://HOST:PORT or ipc://PATH; for a local trainer use tcp://127.0.0.1:PORT"
        )
    host, port = match["host"], match["port"]
    if port != "*" and int(port) > 65535:
        raise ProtocolError(f"endpoint {text!r}: port {port} is out of range (0-65535)")
    port = "0" if port == "*" else str(int(port))
    if host.lower() in _LOOPBACK:
        return f"tcp://{_LOOPBACK[host.lower()]}:{port}"
    if not insecure:
        raise ProtocolError(_tunnel_hint(text, host, port))
    return f"tcp://{host}:{port}"


def _is_ipv6(endpoint: str) -> bool:
    return endpoint.startswith("tcp://[")


def _bind(sock: zmq.Socket, endpoint: str) -> str:
    """Bind ``sock`` and return the endpoint actually bound (the real port for port 0)."""
    if _is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        path = endpoint[len("ipc://") :]
        folder = os.path.dirname(path)
        if folder and not os.path.isdir(folder):
            os.makedirs(folder, mode=0o700, exist_ok=True)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise ProtocolError(
                f"cannot bind {endpoint}: {exc.strerror} (check the folder exists and is writable)"
            ) from exc
        # The socket file is created with the umask's mode; only this user may connect.
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        return endpoint
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ProtocolError(
            f"cannot bind {endpoint}: {exc.strerror} (is another trainer using that port? use port 0 to pick a free one)"
        ) from exc
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _connect(sock: zmq.Socket, endpoint: str) -> None:
    if endpoint.startswith("tcp://") and endpoint.endswith(":0"):
        raise ProtocolError(
            f"cannot connect to {endpoint}: port 0 only means 'pick one' when binding; use the trainer's port"
        )
    if _is_ipv6(endpoint):
        sock.setsockopt(zmq.IPV6, 1)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as exc:
        raise ProtocolError(f"cannot connect to {endpoint}: {exc.strerror}") from exc


def incompatible_version(frames: list[bytes]) -> str | None:
    """The refusal message when ``frames`` are ours but of another major version, else None."""
    if not frames:
        return None
    head = frames[0]
    if len(head) < 4 or head[:2] != b"OC" or head[2] == PROTOCOL_MAJOR:
        return None
    return (
        f"protocol version {head[2]}.{head[3]} is not compatible with this side's "
        f"{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}; install the same major version of octa-tui on the trainer "
        "and the monitor"
    )


# --- telemetry ----------------------------------------------------------------------------


class TelemetryPublisher:
    """The trainer's telemetry socket: sends never block and never fail the caller.

    ``sent`` counts messages handed to ZeroMQ; ``dropped`` counts those it refused (socket
    closing, interrupted). A subscriber that falls behind loses messages at the PUB
    socket's per-subscriber queue limit without the publisher being told: the subscriber
    sees the gap in sequence numbers and asks for history.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        insecure: bool = False,
        sndhwm: int = PUB_SNDHWM,
        curve: ServerCurve | None = None,
    ) -> None:
        wanted = parse_endpoint(endpoint, insecure=insecure or curve is not None)
        self._socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        if curve is not None:
            secure_server_socket(self._socket, curve)
        try:
            self.endpoint = _bind(self._socket, wanted)
        except BaseException:
            self._socket.close(linger=0)
            raise
        self.sent = 0
        self.dropped = 0
        self._send = self._socket.send

    def watch_handshakes(self) -> HandshakeWatch:
        """A :class:`HandshakeWatch` on this socket (close it before the socket)."""
        return HandshakeWatch(self._socket)

    def send_frame(self, frame: bytes) -> bool:
        """Send one single-frame message (the step fast path); False if it was dropped."""
        try:
            self._send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def send(self, msg: Message) -> bool:
        """Encode and send any message; False if it was dropped."""
        try:
            self._socket.send_multipart(encode(msg), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    def close(self, linger_ms: int = 0) -> None:
        """Close the socket, waiting at most ``linger_ms`` for queued messages to leave."""
        if not self._socket.closed:
            self._socket.close(linger=linger_ms)


class TelemetrySubscriber:
    """The monitor's telemetry socket: receives with timeouts, skips what it cannot read.

    A malformed message is counted in ``malformed`` with its reason in ``last_error`` and
    skipped. Messages of another protocol major version also set ``incompatible`` (the
    refusal naming both versions), which the follower raises: that is a wrong pairing of
    programs, not noise on the wire.
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        insecure: bool = False,
        rcvhwm: int = SUB_RCVHWM,
        curve: ClientCurve | None = None,
    ) -> None:
        self.endpoint = parse_endpoint(endpoint, insecure=insecure or curve is not None)
        self._explicit = curve is not None
        self._tried_plain = False
        self._curve, _ = _client_curve(self.endpoint, curve)
        self._context = context or zmq.Context.instance()
        self._rcvhwm = rcvhwm
        self._watch: HandshakeWatch | None = None
        self._next_check = 0.0
        self._socket = self._open()
        self.received = 0
        self.malformed = 0
        self.last_error: str | None = None
        self.incompatible: str | None = None
        # Why the trainer refused this subscriber's handshake (None while it has not).
        self.refused: str | None = None

    def _open(self) -> zmq.Socket:
        sock = self._context.socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, self._rcvhwm)
        if self._curve is not None:
            secure_client_socket(sock, self._curve)
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self._watch = HandshakeWatch(sock)
            _connect(sock, self.endpoint)
        except BaseException:
            if self._watch is not None:
                self._watch.close()
            sock.close(linger=0)
            raise
        return sock

    def _check_handshake(self) -> None:
        """At most every 0.2 s: on a failed handshake, take the endpoint's keys afresh.

        A trainer restarted on the same endpoint has new keys: the socket is opened again
        with them. With no other keys to try, ``refused`` says why nothing arrives.
        """
        now = time.monotonic()
        if now < self._next_check or self._watch is None:
            return
        self._next_check = now + 0.2
        if not self._watch.failures():
            return
        if self._explicit:
            fresh, changed = self._curve, False
        else:
            fresh = _client_curve(self.endpoint, None)[0]
            changed = fresh != self._curve
            if not changed and self._curve is not None and not self._tried_plain:
                fresh, changed, self._tried_plain = None, True, True  # a trainer that takes no keys?
        if changed:
            self._curve = fresh
            self._close_socket()
            self._socket = self._open()
            self.refused = None
            return
        self.refused = (
            f"refused: the trainer at {self.endpoint} does not accept this monitor's keys"
            if self._curve is not None
            else f"refused: the trainer at {self.endpoint} admits only monitors holding its keys; connect as the user "
            "who started it"
        )

    def _close_socket(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if not self._socket.closed:
            self._socket.close(linger=0)

    def _skip(self, frames: list[bytes], exc: ProtocolError) -> None:
        self.malformed += 1
        self.last_error = str(exc)
        refusal = incompatible_version(frames)
        if refusal is not None:
            self.incompatible = refusal

    def recv(self, timeout_s: float) -> Message | None:
        """The next readable message, or None when none arrives within ``timeout_s``."""
        self._check_handshake()
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            remaining = deadline - time.monotonic()
            if not self._socket.poll(max(0, int(remaining * 1000))):
                return None
            frames = self._socket.recv_multipart(zmq.NOBLOCK)
            self.received += 1
            try:
                return decode(frames)
            except ProtocolError as exc:
                self._skip(frames, exc)
            if time.monotonic() >= deadline:
                return None

    def drain(self, max_messages: int = 10000, timeout_s: float = 0.0) -> list[Message]:
        """Every readable message already queued (up to ``max_messages``).

        Waits up to ``timeout_s`` for the first one; never blocks past that.
        """
        self._check_handshake()
        out: list[Message] = []
        if timeout_s > 0 and not self._socket.poll(int(timeout_s * 1000)):
            return out
        # recv + RCVMORE is about twice as fast as recv_multipart for one-frame steps.
        recv, more = self._socket.recv, self._socket.getsockopt
        append = out.append
        received = 0
        while received < max_messages:
            try:
                frames = [recv(zmq.NOBLOCK)]
            except zmq.Again:
                break
            while more(zmq.RCVMORE):
                frames.append(recv(zmq.NOBLOCK))
            received += 1
            try:
                append(decode(frames))
            except ProtocolError as exc:
                self._skip(frames, exc)
        self.received += received
        return out

    def drain_blocks(self, max_messages: int = 10000, timeout_s: float = 0.0) -> list[Message | StepBlock]:
        """Like :meth:`drain`, with runs of consecutive steps of one run as :class:`StepBlock`.

        The monitor's ingest path: one-frame messages (steps) are kept as raw frames while
        the backlog is read and decoded together (:func:`~octa_tui.protocol.codec.decode_step_frames`),
        which costs a fraction of decoding each on its own. Every check still applies to
        every frame; malformed ones are counted and skipped as in :meth:`drain`, and the
        order of steps and records is kept.
        """
        self._check_handshake()
        out: list[Message | StepBlock] = []
        if timeout_s > 0 and not self._socket.poll(int(timeout_s * 1000)):
            return out
        recv, more = self._socket.recv, self._socket.getsockopt
        rcvmore, noblock = zmq.RCVMORE, zmq.NOBLOCK
        singles: list[bytes] = []
        keep = singles.append
        received = 0
        while received < max_messages:
            try:
                frame = recv(noblock)
            except zmq.Again:
                break
            received += 1
            if not more(rcvmore):
                keep(frame)
                continue
            frames = [frame, recv(noblock)]
            while more(rcvmore):
                frames.append(recv(noblock))
            if singles:
                out.extend(decode_step_frames(singles, self._skip))
                singles.clear()
            try:
                out.append(decode(frames))
            except ProtocolError as exc:
                self._skip(frames, exc)
        if singles:
            out.extend(decode_step_frames(singles, self._skip))
        self.received += received
        return out

    def close(self) -> None:
        """Close the socket (nothing waits)."""
        self._close_socket()


# --- control ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One control request as the trainer received it.

    ``command`` is None and ``error`` says why when the frames did not decode to a
    :class:`Command`; the caller replies with that error so the monitor is never left
    waiting.
    """

    identity: bytes
    command: Command | None
    error: str = ""


class ControlServer:
    """The trainer's control socket: polled at step boundaries, never waits.

    Bounded both ways: ``ROUTER_RCVHWM`` requests queue per monitor (ZeroMQ then stops
    reading its connection) and ``ROUTER_SNDHWM`` messages queue towards it (then
    :meth:`send` returns False at once, see :meth:`can_send`).
    """

    def __init__(
        self,
        endpoint: str,
        context: zmq.Context | None = None,
        *,
        insecure: bool = False,
        curve: ServerCurve | None = None,
        sndhwm: int = ROUTER_SNDHWM,
        rcvhwm: int = ROUTER_RCVHWM,
    ) -> None:
        wanted = parse_endpoint(endpoint, insecure=insecure or curve is not None)
        self._socket = (context or zmq.Context.instance()).socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            secure_server_socket(self._socket, curve)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.RCVHWM, rcvhwm)
        # Report sends to peers that are gone or full instead of dropping them silently.
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            self.endpoint = _bind(self._socket, wanted)
        except BaseException:
            self._socket.close(linger=0)
            raise
        self.failed_sends = 0

    def watch_handshakes(self) -> HandshakeWatch:
        """A :class:`HandshakeWatch` on this socket (close it before the socket)."""
        return HandshakeWatch(self._socket)

    def receive(self) -> Request | None:
        """The next waiting request, or None at once when none is waiting."""
        # Asking for the events costs a step boundary about a third of a failed receive.
        if not self._socket.get(zmq.EVENTS) & zmq.POLLIN:
            return None
        try:
            frames = self._socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        identity, payload = frames[0], frames[1:]
        try:
            msg = decode(payload)
        except ProtocolError as exc:
            return Request(identity, None, f"the trainer could not read the request: {exc}")
        if not isinstance(msg, Command):
            return Request(
                identity,
                None,
                f"the trainer expects a command on its control socket, got a {type(msg).__name__}",
            )
        return Request(identity, msg)

    def poll(self, max_requests: int = MAX_REQUESTS_PER_POLL) -> list[Request]:
        """The requests waiting now (at most ``max_requests``); returns at once when none."""
        requests: list[Request] = []
        for _ in range(max_requests):
            request = self.receive()
            if request is None:
                break
            requests.append(request)
        return requests

    def send_frames(self, identity: bytes, frames: list[Any], copy: bool = True) -> str:
        """Queue one encoded message for ``identity`` without waiting.

        Returns ``"sent"``, ``"full"`` (its queue is at the high-water mark: try again
        later) or ``"gone"`` (no such peer connected now). ``copy=False`` hands buffers to
        ZeroMQ as they are (they must not change until sent).
        """
        try:
            self._socket.send_multipart([identity, *frames], zmq.NOBLOCK, copy=copy)
        except zmq.Again:
            return "full"
        except zmq.ZMQError:
            return "gone"
        return "sent"

    def send(self, identity: bytes, msg: Message) -> bool:
        """Send any message to one monitor; False if it is gone or not reading."""
        if self.send_frames(identity, encode(msg)) == "sent":
            return True
        self.failed_sends += 1
        return False

    def reply(self, identity: bytes, reply: Reply) -> bool:
        """Answer one request; False if the monitor is gone."""
        return self.send(identity, reply)

    def close(self) -> None:
        """Close the socket (nothing waits)."""
        if not self._socket.closed:
            self._socket.close(linger=0)


class ControlClient:
    """The monitor's control socket: every request ends in a reply or a clear error.

    A request that times out closes the socket and opens a fresh one, so a late answer can
    never be taken for the next request's, and a command still queued on this side is
    discarded rather than sent later. (One the trainer already received, while frozen or
    busy, may still be applied when it gets to it; its ``command_applied`` event says so.)
    Replies are also matched by ``request_id``.
    ``last_heard`` is the monotonic time anything last arrived from the trainer.

    With ``curve`` the socket is a CurveZMQ client; without, the keys are looked up by
    endpoint (see the module's docstring). ZeroMQ fails a handshake silently, so a socket
    monitor watches for it: a refused or failed handshake raises :class:`KeyRefused` at
    once, with a message that starts with ``refused:``.
    """

    def __init__(
        self,
        endpoint: str,
        timeout_s: float = 5.0,
        context: zmq.Context | None = None,
        *,
        insecure: bool = False,
        curve: ClientCurve | None = None,
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.endpoint = parse_endpoint(endpoint, insecure=insecure or curve is not None)
        self._curve, self._looked_up = _client_curve(self.endpoint, curve)
        self._explicit = curve is not None
        self._rekeyed = False
        self._tried_plain = False
        self._monitor: zmq.Socket | None = None
        self._handshake_ok = False
        self.timeout_s = float(timeout_s)
        self._context = context or zmq.Context.instance()
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.last_heard: float | None = None
        self._socket = self._open()

    def _open(self) -> zmq.Socket:
        sock = self._context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVHWM, 0)  # a history answer must arrive whole
        try:
            if self._curve is not None:
                secure_client_socket(sock, self._curve)
            self._monitor = sock.get_monitor_socket(HANDSHAKE_FAILED | zmq.EVENT_HANDSHAKE_SUCCEEDED)
            _connect(sock, self.endpoint)
        except BaseException:
            self._close_monitor(sock)
            sock.close(linger=0)
            raise
        return sock

    def _close_monitor(self, sock: zmq.Socket) -> None:
        if self._monitor is not None:
            try:
                sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None

    def reset(self) -> None:
        """Drop the socket with anything queued on it and connect a fresh one."""
        self._close_monitor(self._socket)
        self._socket.close(linger=0)
        self._handshake_ok = False
        self._socket = self._open()

    def _handshake_failure(self) -> KeyRefused | None:
        """Read the socket monitor: the error to raise if a CurveZMQ handshake failed."""
        from zmq.utils.monitor import recv_monitor_message

        failed = 0
        while self._monitor is not None and self._monitor.poll(0):
            event = recv_monitor_message(self._monitor, zmq.NOBLOCK)["event"]
            if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._handshake_ok = True
            elif event & HANDSHAKE_FAILED:
                failed |= event
        if not failed:
            return None
        if self._rekey():
            return None
        return KeyRefused(self._refusal(failed))

    def _rekey(self) -> bool:
        """After a failed handshake with looked-up keys: take the endpoint's keys afresh.

        A trainer restarted on the same endpoint has new keys; when the lookup finds other
        keys than the socket has, the socket is opened again with them (True): the caller
        sends its request again.
        """
        if self._explicit:
            return False
        fresh, _ = _client_curve(self.endpoint, None)
        if fresh == self._curve:
            if self._curve is None or self._tried_plain:
                return False
            fresh, self._tried_plain = None, True  # perhaps a trainer that takes no keys (--insecure)
        self._curve, self._looked_up = fresh, fresh is not None
        self._handshake_ok = False
        self.reset()
        self._rekeyed = True
        return True

    def _refusal(self, failed: int) -> str:
        """Why the handshake failed, for a person: the message of :class:`KeyRefused`."""
        where = f"the trainer at {self.endpoint}"
        if self._curve is None:
            return (
                f"refused: {where} admits only monitors holding its keys, and this monitor has none for that "
                "endpoint. A trainer keeps its keys in its run file, readable only by the user who started it: "
                "connect as that user (`octa-tui list`, then `octa-tui connect RUN_ID`); a trainer bound with "
                "--keys DIR needs `--keys` here too"
            )
        if self._looked_up:
            return (
                f"refused: {where} did not accept the keys of its run file (the file may be stale, another "
                "trainer now using that endpoint); `octa-tui list` shows the running trainers"
            )
        if failed & zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"refused: {where} refused this monitor's key: copy this monitor's public key "
                "(monitor.key) into the trainer's KEYS/authorized/ folder and restart the trainer"
            )
        return (
            f"refused: the encrypted handshake with {where} failed: check that KEYS/trainer.key "
            "is the trainer's public key and that the trainer was started with --keys"
        )

    def _timeout(self, what: str = "") -> ControlTimeout:
        refused = self._handshake_failure()
        hint = "is it running? `octa-tui list` shows the running trainers"
        if self._curve is not None and not self._looked_up and not self._handshake_ok:
            hint = ("no encrypted handshake completed: is the trainer running with --keys, and is KEYS/trainer.key "
                    "its public key?")
        self.reset()
        return refused or ControlTimeout(
            f"no reply from the trainer at {self.endpoint} within {_seconds(self.timeout_s)} s{what}; {hint}"
        )

    def send(self, command: Command) -> str:
        """Queue a command without waiting for its reply; returns its request id.

        Raises ControlTimeout when the socket cannot take it (the trainer has been
        unreachable long enough for the queue to fill).
        """
        self._rekeyed = False  # a socket reopened before this send needs nothing sent again
        request_id = command.request_id or f"{self._prefix}-{next(self._ids)}"
        if request_id != command.request_id:
            command = Command(op=command.op, args=command.args, request_id=request_id)
        try:
            self._socket.send_multipart(encode(command), zmq.NOBLOCK)
        except zmq.Again:
            raise self._timeout(" (requests are queued and unanswered)") from None
        return request_id

    def _recv(self, timeout_s: float) -> Message | None:
        if self._monitor is not None:
            if not self._wait_handshake(timeout_s):
                return None
        elif not self._socket.poll(max(0, int(timeout_s * 1000))):
            return None
        frames = self._socket.recv_multipart(zmq.NOBLOCK)
        self.last_heard = time.monotonic()
        try:
            return decode(frames)
        except ProtocolError as exc:
            refusal = incompatible_version(frames)
            raise ProtocolError(
                refusal or f"the trainer at {self.endpoint} sent a reply this monitor cannot read: {exc}"
            ) from exc

    def _wait_handshake(self, timeout_s: float) -> bool:
        """Wait (at most ``timeout_s``) until a message is readable: True, or False when none came.

        Watches the socket monitor meanwhile: a failed handshake raises KeyRefused at once,
        or (keys looked up and changed since) reopens the socket with the new keys and
        returns False with ``_rekeyed`` set.
        """
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._monitor, zmq.POLLIN)
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            ready = dict(poller.poll(max(0, int((deadline - time.monotonic()) * 1000))))
            if self._socket in ready:
                return True
            if not ready:
                return False
            refused = self._handshake_failure()
            if refused is not None:
                self.reset()
                raise refused
            if self._rekeyed:
                return False  # a fresh socket with the endpoint's new keys: the caller sends again
            if time.monotonic() >= deadline:
                return bool(self._socket.poll(0))

    def _resend_after_rekey(self, command: Command) -> bool:
        """Send ``command`` again when the socket was just opened with new keys; whether it was."""
        if not self._rekeyed:
            return False
        self._rekeyed = False
        self.send(command)
        return True

    def collect(self) -> list[Reply]:
        """Replies already waiting (answers to :meth:`send`), without waiting."""
        replies = []
        while True:
            msg = self._recv(0)
            if msg is None:
                return replies
            if isinstance(msg, Reply):
                replies.append(msg)

    def request(self, command: Command) -> Reply:
        """Send a command and wait for its reply (at most ``timeout_s``)."""
        request_id = self.send(command)
        if request_id != command.request_id:
            command = Command(op=command.op, args=command.args, request_id=request_id)
        deadline = time.monotonic() + self.timeout_s
        while True:
            remaining = deadline - time.monotonic()
            msg = self._recv(remaining) if remaining > 0 else None
            if msg is None and self._resend_after_rekey(command):
                continue
            if msg is None:
                raise self._timeout()
            if isinstance(msg, Reply) and msg.request_id == request_id:
                return msg
            # Anything else is the answer to an earlier request: not ours, dropped.

    def history(self, from_seq: int = 0) -> Iterator[Message]:
        """The trainer's history from ``from_seq``: its records, step chunks, then the final Reply.

        Each message must arrive within ``timeout_s`` of the previous one. An error reply
        raises ProtocolError with the trainer's reason; a reply whose chunk count does not
        match what arrived raises ProtocolError too (the answer was cut short).
        """
        ask = Command(op="history", args={"from_seq": int(from_seq)})
        request_id = self.send(ask)
        ask = Command(op="history", args=ask.args, request_id=request_id)
        finished = False
        chunks = 0
        try:
            while True:
                msg = self._recv(self.timeout_s)
                if msg is None and chunks == 0 and self._resend_after_rekey(ask):
                    continue
                if msg is None:
                    raise self._timeout(" while sending history")
                if isinstance(msg, Reply):
                    if msg.request_id != request_id:
                        continue
                    finished = True
                    if not msg.ok:
                        raise ProtocolError(f"the trainer refused the history request: {msg.reason}")
                    expected = msg.data.get("chunks")
                    if isinstance(expected, int) and expected != chunks:
                        raise ProtocolError(
                            f"the trainer's history answer was cut short: {chunks} of {expected} step chunks arrived; ask again"
                        )
                    yield msg
                    return
                if isinstance(msg, StepChunk):
                    chunks += 1
                yield msg
        finally:
            if not finished:
                # Abandoned half-way: the rest of the answer must not reach the next request.
                self.reset()

    def close(self) -> None:
        """Close the socket (nothing waits, nothing queued is sent)."""
        if not self._socket.closed:
            self._close_monitor(self._socket)
            self._socket.close(linger=0)
