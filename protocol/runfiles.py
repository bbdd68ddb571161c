"""Run files: how a monitor on the same machine finds the trainers that are running.

Each trainer writes one small JSON file (pid, endpoints, run id, task, model, start time,
recording path, and the CurveZMQ keys a monitor needs) into a per-user folder, readable by
its owner only (folder 0700, file 0600), and removes it when it exits.
:func:`list_run_files` reads them back, drops the files of processes that are gone (a
trainer killed with SIGKILL cannot remove its own) and remembers each run's keys for its
endpoints, so a monitor of the same user connects without a flag. Files written before
the keys existed (no ``curve_*`` fields) still read: their trainers take no keys.

:func:`resolve_target` turns what a user types after ``octa-tui connect`` (a run id or a
prefix of one, a pid, an endpoint) into both endpoints, or a message naming the problem
and the fix.

The folder is ``$OCTA_TUI_RUN_DIR`` if set, else ``$XDG_RUNTIME_DIR/octa-tui`` when that
exists and is ours, else ``~/.cache/octa-tui/run``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .keys import (
    ClientCurve,
    KeyFileError,
    KeyPair,
    RunKeys,
    client_curve_from_fields,
    curve_fields,
    learn_keys,
    new_run_keys,
    served_keys,
)

ENV_RUN_DIR = "OCTA_TUI_RUN_DIR"
# Set by a monitor that starts its own trainer (``octa-tui demo``) to its pid: the trainer
# stops at the next step once that process is gone (closed terminal, dropped SSH, kill -9).
ENV_STOP_WITH_PARENT = "OCTA_TUI_STOP_WITH_PARENT"
SUFFIX = ".json"
MAX_RUN_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunFileInfo:
    """What a monitor needs to attach to a running trainer, and to tell runs apart in a list."""

    pid: int
    run_id: str
    telemetry: str
    control: str
    task: str = ""
    model: str = ""
    started_at: float = 0.0
    recording: str = ""
    host: str = ""
    # The run's CurveZMQ keys (Z85): the trainer's public key and the one client pair it
    # admits. Empty in files of trainers that take no keys (--insecure, older versions).
    curve_server: str = ""
    curve_public: str = ""
    curve_secret: str = ""

    @classmethod
    def from_json(cls, text: str) -> RunFileInfo:
        """Parse one run file (ValueError if it is not one)."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("a run file holds a JSON object")
        known = {f.name: f.type for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("pid", "run_id", "telemetry", "control"):
            if key not in values:
                raise ValueError(f"run file lacks {key!r}")
        if isinstance(values["pid"], bool) or not isinstance(values["pid"], int) or values["pid"] <= 0:
            raise ValueError("run file pid must be a positive integer")
        for key in ("run_id", "telemetry", "control", "task", "model", "recording", "host", "curve_server",
                    "curve_public", "curve_secret"):
            if key in values and not isinstance(values[key], str):
                raise ValueError(f"run file {key} must be a string")
        if "started_at" in values:
            started = values["started_at"]
            if isinstance(started, bool) or not isinstance(started, (int, float)):
                raise ValueError("run file started_at must be a number")
            values["started_at"] = float(started)
        info = cls(**values)
        try:
            info.client_curve()
        except KeyFileError as exc:
            raise ValueError(str(exc)) from None
        return info

    def client_curve(self) -> ClientCurve | None:
        """The keys a monitor connects with, or None when this trainer takes none."""
        return client_curve_from_fields(self.curve_server, self.curve_public, self.curve_secret)

    def public(self) -> dict:
        """The fields without the client's secret key (for output a person may paste elsewhere)."""
        data = asdict(self)
        data.pop("curve_secret", None)
        return data


def run_dir() -> Path:
    """This user's run-file folder (created 0700 when missing)."""
    override = os.environ.get(ENV_RUN_DIR)
    if override:
        directory = Path(override)
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        if runtime and _owned_dir(Path(runtime)):
            directory = Path(runtime) / "octa-tui"
        else:
            directory = Path.home() / ".cache" / "octa-tui" / "run"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


def _owned_dir(path: Path) -> bool:
    try:
        info = path.stat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and (not hasattr(os, "getuid") or info.st_uid == os.getuid())


def run_file_path(pid: int, directory: Path | None = None) -> Path:
    """Where the run file of process ``pid`` lives."""
    return (directory or run_dir()) / f"{int(pid)}{SUFFIX}"


def write_run_file(info: RunFileInfo, directory: Path | None = None) -> Path:
    """Write ``info`` as the run file of ``info.pid`` (0600, replaced atomically); returns its path.

    When ``info`` carries no keys and a trainer of this process serves its control
    endpoint with keys of its own, those keys are written with it.
    """
    if not info.curve_secret:
        served = served_keys(info.control) or served_keys(info.telemetry)
        if served is not None:
            info = replace(info, **curve_fields(served))
    path = run_file_path(info.pid, directory)
    fd, tmp = tempfile.mkstemp(prefix=".run-", suffix=".tmp", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(asdict(info), handle)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def remove_run_file(pid: int | None = None, directory: Path | None = None) -> None:
    """Remove the run file of ``pid`` (default: this process), if it is there."""
    run_file_path(os.getpid() if pid is None else pid, directory).unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def list_run_files(directory: Path | None = None) -> list[RunFileInfo]:
    """The trainers running now, oldest first; files of dead processes are removed.

    Files that cannot be parsed are skipped (and left alone: they may be being written).
    """
    directory = directory or run_dir()
    found: list[RunFileInfo] = []
    for path in sorted(directory.glob(f"*{SUFFIX}")):
        try:
            if path.stat().st_size > MAX_RUN_FILE_BYTES:
                continue
            info = RunFileInfo.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not pid_alive(info.pid):
            path.unlink(missing_ok=True)
            continue
        curve = info.client_curve()
        if curve is not None:
            learn_keys([_normal(info.telemetry), _normal(info.control)], curve)
        found.append(info)
    found.sort(key=lambda info: (info.started_at, info.pid))
    return found


def _normal(endpoint: str) -> str:
    from .transport import parse_endpoint

    try:
        return parse_endpoint(endpoint, insecure=True)
    except ValueError:
        return endpoint


def keys_for_endpoint(endpoint: str, directory: Path | None = None) -> tuple[bool, ClientCurve | None]:
    """Whether a running trainer's run file names ``endpoint`` (either one), and its keys (None
    when it takes none). Reads the run files afresh (a port may have been reused)."""
    try:
        runs = list_run_files(directory)
    except OSError:
        return False, None
    for info in runs:
        if endpoint in (_normal(info.telemetry), _normal(info.control)):
            return True, info.client_curve()
    if endpoint in _link_endpoints(directory):
        return True, user_client_keys(directory)
    return False, None


LINK_SUFFIX = ".link"


def write_link_file(telemetry: str, control: str, directory: Path | None = None) -> Path | None:
    """Note that this process serves ``telemetry``/``control`` with the user's keys; None if it cannot.

    A trainer that no run file announces (a benchmark, a trainer inside another program)
    still lets the same user connect by endpoint: the file names the endpoints (no keys),
    the keys are the user's (:func:`user_keys`). Removed by :func:`remove_link_file`.
    """
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{os.getpid()}-", suffix=LINK_SUFFIX, dir=directory or run_dir())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"pid": os.getpid(), "telemetry": telemetry, "control": control}, handle)
    except OSError:
        return None
    return Path(tmp)


def remove_link_file(path: Path | None) -> None:
    """Remove a file written by :func:`write_link_file`."""
    if path is not None:
        path.unlink(missing_ok=True)


def _link_endpoints(directory: Path | None) -> set[str]:
    """The endpoints named by the link files of live processes (dead ones' files removed)."""
    found: set[str] = set()
    try:
        paths = sorted((directory or run_dir()).glob(f"*{LINK_SUFFIX}"))
    except OSError:
        return found
    for path in paths:
        try:
            if path.stat().st_size > MAX_RUN_FILE_BYTES:
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            pid = data["pid"]
            if not isinstance(pid, int) or isinstance(pid, bool):
                continue
            if not pid_alive(pid):
                path.unlink(missing_ok=True)
                continue
            found.update(str(data[key]) for key in ("telemetry", "control"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


USER_KEYS = "keys.json"


def user_keys(directory: Path | None = None) -> RunKeys:
    """This user's trainer keys: made once (``keys.json``, 0600, in the 0700 run-files folder).

    Every default trainer of the user takes them, so a monitor keeps working when its
    trainer restarts on the same endpoint, and one that starts first finds them too. Two
    trainers starting at once agree on one file (it is created exclusively). Where the
    folder cannot take it, the keys are made for this process only (a monitor then needs
    the run file).
    """
    directory = directory or run_dir()
    path = directory / USER_KEYS
    found = _read_user_keys(path)
    if found is not None:
        return found
    keys = new_run_keys()
    data = {"server_public": keys.server.public.decode(), "server_secret": keys.server.secret.decode(),
            **keys.run_file_fields()}
    try:
        fd, tmp = tempfile.mkstemp(prefix=".keys-", suffix=".tmp", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle)
            os.link(tmp, path)  # fails if another trainer made the file first: use that one
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError:
        return keys
    return _read_user_keys(path) or keys


def _read_user_keys(path: Path) -> RunKeys | None:
    try:
        info = path.stat()
        if info.st_size > MAX_RUN_FILE_BYTES or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            return None
        if info.st_mode & 0o077:
            os.chmod(path, 0o600)
        data = json.loads(path.read_text(encoding="utf-8"))
        client = client_curve_from_fields(data["curve_server"], data["curve_public"], data["curve_secret"])
        server = KeyPair(data["server_public"].encode("ascii"), data["server_secret"].encode("ascii"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, KeyFileError):
        return None
    if client is None or len(server.secret) != 40 or server.public != client.server_public:
        return None
    return RunKeys(server, client.keys)


def user_client_keys(directory: Path | None = None) -> ClientCurve | None:
    """The client side of :func:`user_keys`, if this user has any (never makes them)."""
    try:
        found = _read_user_keys((directory or run_dir()) / USER_KEYS)
    except OSError:
        return None
    return found.client_curve() if found is not None else None


# --- what `octa-tui connect TARGET` means --------------------------------------------------

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_HOST_PORT = re.compile(r"^(?P<host>\[[^\]]*\]|[^:/\s]*):(?P<port>\d{1,5})$")
MIN_RUN_ID_PREFIX = 4


class TargetError(ValueError):
    """``octa-tui connect TARGET`` cannot be resolved; the message says why and what to type."""


@dataclass(frozen=True)
class Target:
    """Both endpoints to monitor, and the run file they came from (None when given by hand)."""

    telemetry: str
    control: str
    info: RunFileInfo | None = None


def _listening(endpoint: str, timeout_s: float = 0.5) -> bool | None:
    """Whether something accepts connections at ``endpoint`` (None when it cannot be told)."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if path.startswith("@"):
            return None
        return os.path.exists(path)
    match = re.match(r"^tcp://(?P<host>\[[^\]]*\]|[^:]*):(?P<port>\d+)$", endpoint)
    if match is None:
        return None
    host = match["host"].strip("[]")
    try:
        with socket.create_connection((host, int(match["port"])), timeout=timeout_s):
            return True
    except ConnectionRefusedError:
        return False
    except OSError:
        return None


def resolve_target(target: str, control: str | None = None, runs: Sequence[RunFileInfo] | None = None,
                   *, insecure: bool = False) -> Target:
    """What ``octa-tui connect TARGET [--control ENDPOINT]`` should monitor.

    ``target`` is a run id (or a unique prefix of at least 4 hex digits), a pid, or an
    endpoint (the telemetry one, or the control one: the other comes from the run file).
    ``runs`` defaults to the trainers running on this machine. Raises :class:`TargetError`
    with one message per mistake: an unknown run id or pid, an endpoint without a scheme,
    an endpoint where nothing listens, an endpoint no run file names (and no ``control``).
    """
    from .errors import ProtocolError
    from .transport import parse_endpoint

    text = (target or "").strip()
    if not text:
        raise TargetError("connect needs a run id, a pid or an endpoint; `octa-tui list` shows the running trainers")
    runs = list(list_run_files() if runs is None else runs)
    if "://" not in text:
        if text.isdigit() or _HEX.match(text):
            return _by_id(text, control, runs, insecure)
        hostport = _HOST_PORT.match(text)
        if hostport is not None:
            host = hostport["host"] or "127.0.0.1"
            host = "127.0.0.1" if host.lower() in ("localhost", "127.0.0.1") else host
            raise TargetError(f"{text!r} has no scheme; write it as an endpoint: octa-tui connect tcp://{host}:"
                              f"{hostport['port']} (ZeroMQ endpoints start with tcp:// or ipc://)")
        if "/" in text or text.startswith((".", "~")):
            raise TargetError(f"{text!r} has no scheme; for a socket file write ipc://{os.path.abspath(os.path.expanduser(text))}")
        raise TargetError(f"{text!r} is not a run id (hex digits, from `octa-tui list`), a pid, nor an endpoint "
                          "(tcp://127.0.0.1:PORT or ipc://PATH)")
    try:
        endpoint = parse_endpoint(text, insecure=insecure)
        wanted_control = parse_endpoint(control, insecure=insecure) if control else None
    except ProtocolError as exc:
        raise TargetError(str(exc)) from None
    for info in runs:
        telemetry, own_control = _normal(info.telemetry), _normal(info.control)
        if endpoint == telemetry:
            return Target(telemetry, wanted_control or own_control, info)
        if endpoint == own_control and wanted_control is None:
            return Target(telemetry, own_control, info)
    if wanted_control is not None:
        return Target(endpoint, wanted_control, None)
    listening = _listening(endpoint)
    if listening is False:
        raise TargetError(f"nothing is listening at {endpoint}: no trainer runs there now (it may have finished, or "
                          "the port is another one); `octa-tui list` shows the running trainers and their endpoints")
    raise TargetError(f"no run file on this machine names {endpoint}, so its control endpoint is unknown; give it "
                      f"too: octa-tui connect {endpoint} --control tcp://127.0.0.1:PORT (a trainer of another user "
                      "is not listed and refuses monitors without its keys)")


def _by_id(text: str, control: str | None, runs: Sequence[RunFileInfo], insecure: bool) -> Target:
    from .errors import ProtocolError
    from .transport import parse_endpoint

    lowered = text.lower()
    exact = [info for info in runs if lowered == info.run_id.lower() or text == str(info.pid)]
    matches = exact or [info for info in runs if len(lowered) >= MIN_RUN_ID_PREFIX and
                        info.run_id.lower().startswith(lowered)]
    if len(matches) > 1:
        ids = ", ".join(info.run_id for info in matches)
        raise TargetError(f"{text!r} matches {len(matches)} runs ({ids}); give more digits of the run id")
    if not matches:
        running = (f"running now: {', '.join(info.run_id for info in runs[:5])}" if runs
                   else "no trainer of yours is running on this machine")
        kind = "pid" if text.isdigit() else "run id"
        raise TargetError(f"no running trainer has {kind} {text} ({running}); `octa-tui list` shows the running "
                          "trainers (a finished run can be opened with `octa-tui replay FILE.octa`)")
    info = matches[0]
    try:
        wanted_control = parse_endpoint(control, insecure=insecure) if control else None
    except ProtocolError as exc:
        raise TargetError(str(exc)) from None
    return Target(_normal(info.telemetry), wanted_control or _normal(info.control), info)
