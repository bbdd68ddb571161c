"""Run files: how a monitor on the same machine finds the trainers that are running.

Each trainer writes one small JSON file (pid, endpoints, run id, task, model, start time,
recording path) into a per-user folder, readable by its owner only (folder 0700, file
0600), and removes it when it exits. :func:`list_run_files` reads them back and drops the
files of processes that are gone (a trainer killed with SIGKILL cannot remove its own).

The folder is ``$OCTA_TUI_RUN_DIR`` if set, else ``$XDG_RUNTIME_DIR/octa-tui`` when that
exists and is ours, else ``~/.cache/octa-tui/run``.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path

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
        for key in ("run_id", "telemetry", "control", "task", "model", "recording", "host"):
            if key in values and not isinstance(values[key], str):
                raise ValueError(f"run file {key} must be a string")
        if "started_at" in values:
            started = values["started_at"]
            if isinstance(started, bool) or not isinstance(started, (int, float)):
                raise ValueError("run file started_at must be a number")
            values["started_at"] = float(started)
        return cls(**values)


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
    """Write ``info`` as the run file of ``info.pid`` (0600, replaced atomically); returns its path."""
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
        found.append(info)
    found.sort(key=lambda info: (info.started_at, info.pid))
    return found
