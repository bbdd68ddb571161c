"""CurveZMQ keys: who may connect to a trainer.

By default every trainer takes its user's keys (:class:`RunKeys`: a server key pair and
one client key pair, made once per user by ``runfiles.user_keys`` and kept 0600 in the
0700 run-files folder). Both its sockets are CurveZMQ servers and its ZAP handler admits
only that one client key. The client keys are also written into the trainer's run file
(0600, see :mod:`octa_tui.protocol.runfiles`), as Jupyter keeps its HMAC key in a 0600
connection file: the user who started the trainer connects without a flag, any other
local user cannot, whichever port or socket they find. Client sockets look the keys up by
endpoint (:func:`client_keys_for`): keys of a trainer in this process, of a run file, keys
handed over by ``attach``, else the user's own.

A trainer bound to another address with ``--keys`` uses a key folder instead and accepts
only the monitors whose public keys are in its ``authorized`` folder; a monitor must know
the trainer's public key. ``--insecure`` turns keys off altogether.

One folder per side, laid out by ``octa-tui keys generate``::

    trainer side  KEYS/trainer.key_secret   KEYS/authorized/*.key  (the monitors' public keys)
    monitor side  KEYS/monitor.key_secret   KEYS/trainer.key       (the trainer's public key)

Key files are pyzmq's ``zmq.auth`` certificate format (Z85 text); secret files are 0600.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from .errors import ProtocolError

TRAINER = "trainer"
MONITOR = "monitor"
AUTHORIZED = "authorized"
PUBLIC_SUFFIX = ".key"
SECRET_SUFFIX = ".key_secret"
DEFAULT_KEY_DIR = "~/.config/octa-tui/keys"

log = logging.getLogger("octa_tui.keys")


class KeyFileError(ProtocolError):
    """A key file or folder is missing or unreadable; the message says which and how to make it."""


@dataclass(frozen=True)
class KeyPair:
    """A Curve25519 key pair as Z85 text (40 bytes each), the form ZeroMQ sockets take."""

    public: bytes
    secret: bytes


@dataclass(frozen=True)
class ServerCurve:
    """The trainer's side: its key pair and the public keys of the monitors it accepts.

    ``authorized`` maps each accepted Z85 public key to the file it came from (for logs).
    """

    keys: KeyPair
    authorized: Mapping[bytes, str]

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> ServerCurve:
        """Load ``DIR/trainer.key_secret`` and ``DIR/authorized/*.key``."""
        folder = Path(os.path.expanduser(os.fspath(directory)))
        keys = load_key_pair(folder / (TRAINER + SECRET_SUFFIX), make=f"octa-tui keys generate {folder} --name trainer")
        authorized = load_authorized(folder / AUTHORIZED)
        return cls(keys, authorized)


@dataclass(frozen=True)
class ClientCurve:
    """The monitor's side: its key pair and the trainer's public key."""

    keys: KeyPair
    server_public: bytes

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str]) -> ClientCurve:
        """Load ``DIR/monitor.key_secret`` and ``DIR/trainer.key``."""
        folder = Path(os.path.expanduser(os.fspath(directory)))
        keys = load_key_pair(folder / (MONITOR + SECRET_SUFFIX), make=f"octa-tui keys generate {folder}")
        server = folder / (TRAINER + PUBLIC_SUFFIX)
        if not server.is_file():
            raise KeyFileError(
                f"{server}: missing; copy the trainer's public key (trainer.key from the trainer's key folder) here"
            )
        return cls(keys, load_public_key(server))


def generate_keys(directory: str | os.PathLike[str], name: str = MONITOR) -> tuple[Path, Path]:
    """Write ``DIR/NAME.key`` (public, 0644) and ``DIR/NAME.key_secret`` (0600); returns both paths.

    The folder is created 0700. An existing pair is never overwritten (KeyFileError).
    """
    if not name or "/" in name or name.startswith("."):
        raise KeyFileError(f"key name {name!r} must be a plain file name such as 'monitor' or 'trainer'")
    folder = Path(os.path.expanduser(os.fspath(directory)))
    public, secret = folder / (name + PUBLIC_SUFFIX), folder / (name + SECRET_SUFFIX)
    if public.exists() or secret.exists():
        raise KeyFileError(f"{secret} already exists; keep it, or delete {public} and {secret} to make a new pair")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = os.umask(0o077)
    try:
        public_file, secret_file = zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    if name == TRAINER:
        (folder / AUTHORIZED).mkdir(mode=0o700, exist_ok=True)
    return Path(public_file), Path(secret_file)


def load_key_pair(path: str | os.PathLike[str], make: str = "octa-tui keys generate DIR") -> KeyPair:
    """Read a ``.key_secret`` file; KeyFileError naming the file and the command that makes one."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: no such secret key file; create a key pair with `{make}`")
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise KeyFileError(f"{path}: the secret key is readable by other users; run `chmod 600 {path}`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a key file ({exc})") from None
    if not secret:
        raise KeyFileError(f"{path}: holds no secret key (that is a public .key file)")
    return KeyPair(public, secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read the public key of a ``.key`` (or ``.key_secret``) file."""
    try:
        public, _ = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: not a key file ({exc})") from None
    if not public or len(public) != 40:
        raise KeyFileError(f"{path}: holds no public key")
    return public


def load_authorized(folder: str | os.PathLike[str]) -> dict[bytes, str]:
    """The public keys in ``folder/*.key`` (Z85) mapped to their file names; at least one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KeyFileError(
            f"{folder}: no such folder; create it and copy the monitors' public keys (monitor.key) into it"
        )
    keys = {load_public_key(path): path.name for path in sorted(folder.glob("*" + PUBLIC_SUFFIX))}
    if not keys:
        raise KeyFileError(
            f"{folder}: holds no public keys (*.key), so no monitor could connect; copy each monitor's "
            "monitor.key (made by `octa-tui keys generate`) into it"
        )
    return keys


def secure_server_socket(sock: zmq.Socket, curve: ServerCurve) -> None:
    """Make ``sock`` a CurveZMQ server (before it binds)."""
    sock.curve_secretkey = curve.keys.secret
    sock.curve_publickey = curve.keys.public
    sock.curve_server = True


def secure_client_socket(sock: zmq.Socket, curve: ClientCurve) -> None:
    """Make ``sock`` a CurveZMQ client of the trainer (before it connects)."""
    sock.curve_secretkey = curve.keys.secret
    sock.curve_publickey = curve.keys.public
    sock.curve_serverkey = curve.server_public


# A refusal is logged once per peer (a client key, or one line per kind of failed
# handshake for clients that bring no key at all); later ones are only counted. At most
# this many distinct peers are remembered, so a stream of random keys cannot grow memory.
MAX_REFUSED_PEERS = 256


class RefusalLog:
    """Refused handshakes, logged once per peer and counted; safe to use from any thread.

    ``peers`` lists each refused peer once (in the order first seen, at most
    :data:`MAX_REFUSED_PEERS`); ``count`` counts every refusal. :meth:`new_since` hands
    the peers not yet reported to the caller (the trainer publishes one event for each).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._lock = threading.Lock()
        self.peers: list[str] = []
        self._seen: set[str] = set()
        self._reported = 0
        self.count = 0

    def refuse(self, peer: str, why: str) -> bool:
        """Count one refusal; log it when ``peer`` is new. Returns whether it was new."""
        with self._lock:
            self.count += 1
            if peer in self._seen or len(self._seen) >= MAX_REFUSED_PEERS:
                return False
            self._seen.add(peer)
            self.peers.append(peer)
        self._log.warning("refused %s: %s (logged once per peer; later attempts are only counted)", peer, why)
        return True

    def new_since(self) -> list[str]:
        """Peers refused since the last call (each returned once)."""
        with self._lock:
            fresh = self.peers[self._reported :]
            self._reported = len(self.peers)
        return fresh


class _Listed:
    """ZAP credentials provider: accepts listed keys, logs and counts the others."""

    def __init__(self, authorized: Mapping[bytes, str], on_refused: Callable[[str], None]) -> None:
        self._authorized = dict(authorized)
        self._on_refused = on_refused

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self._authorized:
            return True
        self._on_refused(key.decode("ascii", "replace"))
        return False


class KeyGate:
    """The ZAP handler of one ZeroMQ context: only listed client keys get through.

    Every CurveZMQ server socket of ``context`` consults it at each handshake, PUB and
    ROUTER alike. A refused key is logged once (logger ``octa_tui.keys``, level WARNING)
    and kept in ``refused`` (each key once) so the trainer can say so; ``refusals``
    (a :class:`RefusalLog`, shared with the trainer's other refusals) counts them all.
    ``why`` is the reason logged for a refused key.
    """

    def __init__(self, context: zmq.Context, curve: ServerCurve, refusals: RefusalLog | None = None,
                 why: str = f"its public key is not in the trainer's {AUTHORIZED}/ folder") -> None:
        self.refused: list[str] = []
        self.refusals = refusals or RefusalLog()
        self._why = why
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("octa_tui.keys.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=_Listed(curve.authorized, self._refuse))

    def _refuse(self, key: str) -> None:
        if self.refusals.refuse(f"a monitor with public key {key}", self._why):
            self.refused.append(key)

    def close(self) -> None:
        """Stop the handler thread."""
        self._auth.stop()


# --- keys made per run --------------------------------------------------------------------


@dataclass(frozen=True)
class RunKeys:
    """The keys one trainer makes for itself at start: its server pair and its one client pair.

    The trainer keeps the server secret in memory only; the client pair and the server's
    public key go into the run file, for the user who started it.
    """

    server: KeyPair
    client: KeyPair

    def server_curve(self) -> ServerCurve:
        """The trainer's side: admit this run's client key, no other."""
        return ServerCurve(self.server, {self.client.public: "the run file"})

    def client_curve(self) -> ClientCurve:
        """The monitor's side: the client pair and the trainer's public key."""
        return ClientCurve(self.client, self.server.public)

    def run_file_fields(self) -> dict[str, str]:
        """What the run file carries (Z85 text): ``curve_server``, ``curve_public``, ``curve_secret``."""
        return curve_fields(self.client_curve())


def new_run_keys() -> RunKeys:
    """Fresh Curve25519 pairs for one run (libsodium's random source)."""
    return RunKeys(KeyPair(*zmq.curve_keypair()), KeyPair(*zmq.curve_keypair()))


def client_curve_from_fields(server: str, public: str, secret: str) -> ClientCurve | None:
    """The client keys a run file carries, or None when it carries none (an older trainer).

    Raises KeyFileError when they are there but malformed.
    """
    if not (server or public or secret):
        return None
    values = {"curve_server": server, "curve_public": public, "curve_secret": secret}
    for name, value in values.items():
        if not isinstance(value, str) or len(value) != 40:
            raise KeyFileError(f"run file {name} must be a 40-character Z85 key")
        try:
            zmq.utils.z85.decode(value.encode("ascii"))
        except (ValueError, UnicodeEncodeError, KeyError):
            raise KeyFileError(f"run file {name} is not Z85 text") from None
    return ClientCurve(KeyPair(public.encode("ascii"), secret.encode("ascii")), server.encode("ascii"))


# Endpoint -> client keys. ``_served``: endpoints bound by trainers of this process, so a
# monitor in the same process needs nothing. ``_learned``: keys read from run files or
# handed over by ``attach`` for its forwarded endpoints.
_registry_lock = threading.Lock()
_served: dict[str, ClientCurve] = {}
_learned: dict[str, ClientCurve] = {}


def serve_keys(endpoints: list[str], curve: ClientCurve) -> None:
    """Record that this process's trainer admits ``curve`` at ``endpoints`` (until :func:`unserve_keys`)."""
    with _registry_lock:
        for endpoint in endpoints:
            _served[endpoint] = curve


def unserve_keys(endpoints: list[str]) -> None:
    """Forget the endpoints of a trainer of this process that closed."""
    with _registry_lock:
        for endpoint in endpoints:
            _served.pop(endpoint, None)


def served_keys(endpoint: str) -> ClientCurve | None:
    """The client keys of the trainer of this process bound at ``endpoint``, if any."""
    with _registry_lock:
        return _served.get(endpoint)


def curve_fields(curve: ClientCurve) -> dict[str, str]:
    """``curve`` as the run file's three Z85 fields."""
    return {
        "curve_server": curve.server_public.decode("ascii"),
        "curve_public": curve.keys.public.decode("ascii"),
        "curve_secret": curve.keys.secret.decode("ascii"),
    }


def learn_keys(endpoints: list[str], curve: ClientCurve) -> None:
    """Remember the keys for ``endpoints`` (read from a run file, or a tunnel's local ends)."""
    with _registry_lock:
        for endpoint in endpoints:
            _learned[endpoint] = curve


def client_keys_for(endpoint: str, lookup: Callable[[str], tuple[bool, ClientCurve | None]] | None = None,
                    fallback: Callable[[], ClientCurve | None] | None = None) -> ClientCurve | None:
    """The keys a client should use for ``endpoint``, or None when it should bring none.

    Order: a trainer of this process; ``lookup`` (the run files on this machine, read
    fresh: ``(found, keys)``, a run file without keys meaning none); keys learned earlier
    for this endpoint; ``fallback`` (this user's keys, which default trainers take).
    """
    with _registry_lock:
        served = _served.get(endpoint)
    if served is not None:
        return served
    if lookup is not None:
        found, keys = lookup(endpoint)
        if found:
            return keys
    with _registry_lock:
        learned = _learned.get(endpoint)
    if learned is not None:
        return learned
    return fallback() if fallback is not None else None
