"""``octa-tui attach [user@]host``: monitor a trainer on another machine through SSH.

The trainer keeps its endpoints on the remote machine's loopback (or ipc files); the
system ``ssh`` client does the rest. Attaching runs ``octa-tui list --json`` on the host
to find its trainers (as the same user, so their run files and the CurveZMQ keys in them
are readable), opens ``ssh -N -L`` forwards from local loopback ports (or local unix
sockets for ``ipc://`` endpoints) to the chosen trainer's telemetry and control
endpoints, and the monitor connects to those with the run's keys. The tunnel ends when
the monitor does. A host behind a login node is reached with ``-J jump`` (ssh's
ProxyJump).

Every way this can fail (no ssh, host unreachable, octa-tui missing there, no trainer)
ends in one :class:`AttachError` line that names the problem and the fix.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..protocol.keys import ClientCurve, learn_keys
from ..protocol.runfiles import RunFileInfo

SSH_EXIT_CONNECT = 255  # ssh's own status for "could not connect / authenticate"
SHELL_NOT_FOUND = 127  # the remote shell's status for "command not found"
CONNECT_TIMEOUT_S = 10
TUNNEL_READY_S = 15.0
_TCP = re.compile(r"^tcp://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)$")
_ANY_ADDRESS = {"0.0.0.0", "*", "[::]", "", "127.0.0.1", "localhost", "[::1]"}


class AttachError(Exception):
    """Attaching failed for a reason the user can act on; the message is one line."""


@dataclass(frozen=True)
class SshTarget:
    """Where and how to ssh: ``[user@]host``, an optional port, identity file and ``-o`` options.

    ``remote_octa_tui`` is the command that runs octa-tui on the host (a venv path, or
    ``env VAR=... octa-tui``); it is passed to the remote shell as written. ``jump`` is
    ssh's ``-J`` (ProxyJump: ``[user@]host[:port]``, several separated by commas), for a
    host reached through a login node; ``config`` is an ssh config file (``-F``), which
    also applies to the jump hosts (command-line ``-o``/``-i`` apply to the destination
    only, as ssh documents).
    """

    destination: str
    port: int | None = None
    identity: str | None = None
    options: tuple[str, ...] = ()
    remote_octa_tui: str = "octa-tui"
    ssh: str = "ssh"
    jump: str | None = None
    config: str | None = None

    def command(self, *extra: str) -> list[str]:
        """The ssh command line up to (not including) the destination's remote command."""
        args = [self.ssh]
        if self.config:
            args += ["-F", self.config]
        args += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        for option in self.options:
            args += ["-o", option]
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.identity:
            args += ["-i", self.identity]
        if self.jump:
            args += ["-J", parse_jump(self.jump)]
        return [*args, *extra, self.destination]

    def hint(self) -> str:
        """The ``octa-tui attach`` command line that reaches this target again."""
        return attach_hint(self.destination, self.port, self.jump)


def parse_jump(text: str) -> str:
    """``-J`` hosts checked: ``[user@]host[:port]`` items separated by commas, none an option."""
    items = text.split(",") if text else []
    if not items or any(not item or item.startswith("-") or any(c.isspace() for c in item) for item in items):
        raise AttachError(f"-J {text!r}: give the jump host as [user@]host[:port] (several separated by commas)")
    return text


def attach_hint(destination: str, port: int | None = None, jump: str | None = None) -> str:
    """The command that attaches to a trainer on ``destination`` from another machine.

    Names ``--port`` when ssh listens on another port than 22, and ``-J`` for a jump host:
    ``octa-tui attach -J login.example.org --port 2222 user@gpu7``.
    """
    parts = ["octa-tui", "attach"]
    if jump:
        parts += ["-J", jump]
    if port is not None and port != 22:
        parts += ["--port", str(port)]
    parts.append(destination)
    return shlex.join(parts)


def check_ssh(target: SshTarget) -> None:
    """AttachError when the ssh client is not installed."""
    if shutil.which(target.ssh) is None:
        raise AttachError(
            f"no ssh client found ({target.ssh!r} is not on the PATH); install OpenSSH "
            "(e.g. `apt-get install openssh-client`)"
        )


def remote_trainers(target: SshTarget, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> list[RunFileInfo]:
    """The trainers running on the host, read from ``octa-tui list --json`` over ssh."""
    check_ssh(target)
    host = target.destination
    command = target.command() + [f"{target.remote_octa_tui} list --json"]
    try:
        result = run(command, capture_output=True, text=True, timeout=CONNECT_TIMEOUT_S + 50, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise AttachError(f"no ssh client found ({target.ssh!r}); install OpenSSH") from None
    except subprocess.TimeoutExpired:
        raise AttachError(f"ssh to {host} did not finish within {CONNECT_TIMEOUT_S + 50} s; is the host up?") from None
    reason = _last_line(result.stderr)
    if result.returncode == SSH_EXIT_CONNECT:
        check = shlex.join(["ssh", *(["-J", target.jump] if target.jump else []),
                            *(["-p", str(target.port)] if target.port is not None else []), host])
        raise AttachError(f"cannot reach {host} over ssh: {reason or 'ssh failed'} (check `{check}` works)")
    if result.returncode == SHELL_NOT_FOUND or "command not found" in result.stderr or "not found" in reason:
        raise AttachError(
            f"octa-tui is not installed on {host} (or not on the PATH of a non-interactive ssh session): "
            f"install it there, or pass --remote-octa-tui /path/to/octa-tui"
        )
    if result.returncode != 0:
        raise AttachError(f"`{target.remote_octa_tui} list --json` failed on {host}: {reason or result.returncode}")
    try:
        listed = json.loads(result.stdout)
        if not isinstance(listed, list):
            raise ValueError("not a list")
        runs = [RunFileInfo.from_json(json.dumps(item)) for item in listed]
    except ValueError as exc:
        raise AttachError(
            f"{host} answered `octa-tui list --json` with something else ({exc}); is its octa-tui this version?"
        ) from None
    for info in runs:
        curve = info.client_curve()
        if curve is not None:
            _REMOTE_KEYS[info.telemetry] = _REMOTE_KEYS[info.control] = curve
    return runs


# The keys of the remote runs listed by remote_trainers() in this process, by remote
# endpoint: plan_forward() hands them to the local end of each forward.
_REMOTE_KEYS: dict[str, ClientCurve] = {}


def choose_trainer(runs: Sequence[RunFileInfo], where: str = "this machine",
                   ask: Callable[[str], str] = input, say: Callable[[str], None] = print) -> RunFileInfo:
    """The only trainer, or the one the user picks from a numbered list."""
    if not runs:
        raise AttachError(f"no trainer is running on {where}; start one there with `octa-train --synthetic 64`")
    if len(runs) == 1:
        return runs[0]
    for i, info in enumerate(runs, 1):
        say(f"  {i}. run {info.run_id}  {info.task} {info.model}  pid {info.pid}  {info.telemetry}")
    answer = ask(f"attach to which trainer? [1-{len(runs)}] ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(runs):
        raise AttachError(f"{answer!r} is not one of 1-{len(runs)}")
    return runs[int(answer) - 1]


@dataclass(frozen=True)
class Forward:
    """One ssh forward: ``local`` is what the monitor connects to, ``spec`` is ssh's -L argument.

    ``keys`` are the remote run's CurveZMQ client keys; they are registered for ``local``
    so a monitor connecting there uses them with no flag.
    """

    local: str
    spec: str
    tcp_port: int | None = None
    unix_path: str | None = None
    keys: ClientCurve | None = None


def free_port() -> int:
    """A loopback TCP port that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def plan_forward(endpoint: str, local_dir: str, name: str, keys: ClientCurve | None = None) -> Forward:
    """The forward that reaches the remote ``endpoint`` from this machine.

    A remote ``tcp://`` endpoint gets a free local loopback port; a wildcard or loopback
    address is reached on the host's own loopback. A remote ``ipc://`` path gets a local
    unix socket in ``local_dir`` (OpenSSH's stream-local forwarding). ``keys`` (default:
    those :func:`remote_trainers` read for ``endpoint``) are registered for the local end.
    """
    forward = _plan(endpoint, local_dir, name)
    keys = keys or _REMOTE_KEYS.get(endpoint)
    if keys is not None:
        learn_keys([forward.local], keys)
        forward = Forward(forward.local, forward.spec, forward.tcp_port, forward.unix_path, keys)
    return forward


def _plan(endpoint: str, local_dir: str, name: str) -> Forward:
    if endpoint.startswith("ipc://"):
        remote = endpoint[len("ipc://") :]
        if remote.startswith("@"):
            raise AttachError(f"{endpoint}: abstract ipc sockets cannot be forwarded over ssh; use an ipc:// file path")
        local = os.path.join(local_dir, f"{name}.sock")
        return Forward(f"ipc://{local}", f"{local}:{remote}", unix_path=local)
    match = _TCP.match(endpoint)
    if match is None:
        raise AttachError(f"the trainer's endpoint {endpoint!r} is neither tcp://HOST:PORT nor ipc://PATH")
    host = match["host"]
    remote_host = "127.0.0.1" if host in _ANY_ADDRESS else host
    if host == "[::1]":
        remote_host = "[::1]"
    port = free_port()
    return Forward(f"tcp://127.0.0.1:{port}", f"127.0.0.1:{port}:{remote_host.strip('[]')}:{match['port']}",
                   tcp_port=port)


@dataclass
class Tunnel:
    """``ssh -N`` carrying the forwards; :meth:`open` waits until they accept connections."""

    target: SshTarget
    forwards: Sequence[Forward]
    process: subprocess.Popen | None = None
    _stderr: object = field(default=None, repr=False)

    def open(self, ready_s: float = TUNNEL_READY_S) -> None:
        """Start ssh and wait (at most ``ready_s``) until every forward listens; AttachError if not."""
        extra = ["-N", "-o", "ExitOnForwardFailure=yes", "-o", "StreamLocalBindUnlink=yes",
                 "-o", "ServerAliveInterval=15"]
        for forward in self.forwards:
            extra += ["-L", forward.spec]
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(self.target.command(*extra), stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=self._stderr)
        deadline = time.monotonic() + ready_s
        waiting = list(self.forwards)
        while waiting:
            if self.process.poll() is not None:
                self._stderr.seek(0)
                reason = _last_line(self._stderr.read())
                self.close()
                raise AttachError(f"the ssh tunnel to {self.target.destination} closed: {reason or 'ssh exited'}")
            if time.monotonic() > deadline:
                self.close()
                raise AttachError(f"the ssh tunnel to {self.target.destination} was not up within {ready_s:g} s")
            waiting = [f for f in waiting if not _accepts(f)]
            if waiting:
                time.sleep(0.05)

    def close(self) -> None:
        """End ssh (SIGTERM, then SIGKILL after 3 s) and remove local socket files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        for forward in self.forwards:
            if forward.unix_path and os.path.exists(forward.unix_path):
                os.unlink(forward.unix_path)

    def __enter__(self) -> Tunnel:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _accepts(forward: Forward) -> bool:
    """Whether ssh listens on the forward's local end yet."""
    if forward.unix_path is not None:
        return os.path.exists(forward.unix_path)
    try:
        with socket.create_connection(("127.0.0.1", forward.tcp_port), timeout=0.2):
            return True
    except OSError:
        return False


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_destination(text: str) -> str:
    """``[user@]host`` checked to be one ssh destination (not an option, no spaces)."""
    if not text or text.startswith("-") or any(c.isspace() for c in text):
        raise AttachError(f"{text!r} is not a [user@]host to ssh to")
    return text


def describe(info: RunFileInfo, host: str) -> str:
    """One line naming the trainer being attached to."""
    return f"attaching to run {info.run_id} ({info.task} {info.model}, pid {info.pid}) on {host}"


def quote_remote(command: str) -> str:
    """``command`` as typed (the remote shell splits it); checked to be non-empty."""
    if not shlex.split(command):
        raise AttachError("--remote-octa-tui is empty; give the octa-tui command on the host")
    return command
