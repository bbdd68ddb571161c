"""CurveZMQ keys: who may connect to a trainer that listens beyond this machine.

A trainer bound to loopback or an ``ipc://`` file needs no keys: only local users reach it
(and SSH tunnels are the way in from elsewhere). A trainer bound to another address
encrypts both its sockets with CurveZMQ and accepts only the monitors whose public keys
are in its ``authorized`` folder; a monitor must know the trainer's public key.

One folder per side, laid out by ``octa-tui keys generate``::

    trainer side  KEYS/trainer.key_secret   KEYS/authorized/*.key  (the monitors' public keys)
    monitor side  KEYS/monitor.key_secret   KEYS/trainer.key       (the trainer's public key)

Key files are pyzmq's ``zmq.auth`` certificate format (Z85 text); secret files are 0600.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
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
    """The ZAP handler of one ZeroMQ context: only listed monitor keys get through.

    Every CurveZMQ server socket of ``context`` consults it at each handshake, PUB and
    ROUTER alike. A refused key is logged (logger ``octa_tui.keys``, level WARNING) and
    kept in ``refused`` so the trainer can say so.
    """

    def __init__(self, context: zmq.Context, curve: ServerCurve) -> None:
        self.refused: list[str] = []
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("octa_tui.keys.zap"))
        self._auth.start()
        self._auth.configure_curve_callback("*", credentials_provider=_Listed(curve.authorized, self._refuse))

    def _refuse(self, key: str) -> None:
        self.refused.append(key)
        log.warning("refused a monitor with public key %s: it is not in the trainer's %s/ folder", key, AUTHORIZED)

    def close(self) -> None:
        """Stop the handler thread."""
        self._auth.stop()
