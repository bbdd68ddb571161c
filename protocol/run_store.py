"""Where runs live when nobody said where: one private folder per run, old ones pruned.

``octa-tui demo`` and ``octa-train`` without ``--checkpoint-dir`` keep each run (recording,
checkpoints, log) in a folder under :func:`runs_root`:

- ``$OCTA_TUI_RUNS_DIR`` when set, else ``$XDG_DATA_HOME/octa-tui/runs``, else
  ``~/.local/share/octa-tui/runs``. The data folder, not the cache: a recording is a result
  the user replays, exports and compares later, and cache cleaners may delete a cache at any
  time; the retention rule below is what keeps the folder bounded.
- Every folder is made 0700: recordings and checkpoints are the user's alone.
- Retention (:func:`prune_runs`, run whenever a new run folder is made): the newest
  :data:`KEEP_RUNS` runs are kept while together they stay under :data:`KEEP_BYTES`; older
  ones go. A run whose owner process is still alive (its ``.octa-run`` marker names the pid)
  is never deleted, nor is one touched in the last :data:`FRESH_S` seconds, nor any folder
  without the marker (only what octa-tui made is ever removed).

Used by both sides (trainer and monitor), so it lives here with no heavy imports.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ENV_RUNS_DIR = "OCTA_TUI_RUNS_DIR"
MARKER = ".octa-run"  # holds the pid of the process that owns the run while it runs
KEEP_RUNS = 20
KEEP_BYTES = 2 * 1024**3
FRESH_S = 60.0


def runs_root(environ: os._Environ | dict | None = None) -> Path:
    """The folder runs go to by default (see the module doc); not created here."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_RUNS_DIR)
    if override:
        return Path(override).expanduser()
    data = env.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data and os.path.isabs(os.path.expanduser(data)) else \
        Path.home() / ".local" / "share"
    return base / "octa-tui" / "runs"


def private_dir(path: Path) -> Path:
    """``path`` created (with its parents) and set to 0700; returned."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def new_run_folder(prefix: str, root: Path | None = None, pid: int | None = None,
                   now: Callable[[], float] = time.time) -> Path:
    """A fresh 0700 folder ``ROOT/PREFIX-YYYYmmdd-HHMMSS[-N]`` owned by ``pid`` (default: this
    process), after pruning old runs under ``root``."""
    root = private_dir(runs_root() if root is None else root)
    prune_runs(root)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now()))
    for n in range(1000):
        folder = root / (f"{prefix}-{stamp}" + (f"-{n}" if n else ""))
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(folder, 0o700)
        (folder / MARKER).write_text(str(os.getpid() if pid is None else pid))
        return folder
    raise FileExistsError(f"no free run folder name under {root} for {prefix}-{stamp}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@dataclass(frozen=True)
class StoredRun:
    """One run folder under the root: its size, last change, and whether its owner still runs."""

    path: Path
    bytes: int
    mtime: float
    running: bool


def stored_runs(root: Path, alive: Callable[[int], bool] = _alive) -> list[StoredRun]:
    """The run folders octa-tui made under ``root`` (those with the marker), newest first."""
    found = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for folder in entries:
        marker = folder / MARKER
        if folder.is_symlink() or not folder.is_dir() or not marker.is_file():
            continue
        try:
            text = marker.read_text().strip()
            owner = int(text) if text.isdigit() else 0
            size, newest = 0, folder.stat().st_mtime
            for path in folder.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    info = path.stat()
                    size += info.st_size
                    newest = max(newest, info.st_mtime)
        except OSError:
            continue
        found.append(StoredRun(folder, size, newest, owner > 0 and alive(owner)))
    found.sort(key=lambda run: run.mtime, reverse=True)
    return found


def runs_to_prune(runs: list[StoredRun], keep: int = KEEP_RUNS, keep_bytes: int = KEEP_BYTES,
                  now: float | None = None, fresh_s: float = FRESH_S) -> list[StoredRun]:
    """The runs the retention rule removes from ``runs`` (newest first): beyond the newest
    ``keep``, or once the newer ones add up to ``keep_bytes``; never a running or fresh one."""
    now = time.time() if now is None else now
    doomed, kept, total = [], 0, 0
    for run in runs:
        protected = run.running or now - run.mtime < fresh_s
        if protected or (kept < keep and total + run.bytes <= keep_bytes):
            kept += 1
            total += run.bytes
            continue
        doomed.append(run)
    return doomed


def prune_runs(root: Path, keep: int = KEEP_RUNS, keep_bytes: int = KEEP_BYTES,
               alive: Callable[[int], bool] = _alive) -> list[Path]:
    """Apply the retention rule under ``root``; the folders removed. Never raises for a folder
    that cannot be removed (it is left, and tried again next time)."""
    removed = []
    for run in runs_to_prune(stored_runs(root, alive), keep, keep_bytes):
        try:
            shutil.rmtree(run.path)
            removed.append(run.path)
        except OSError:
            continue
    return removed


def newest_recording(folder: Path) -> Path | None:
    """The most recently written ``*.octa`` in ``folder`` (or below it), if any."""
    try:
        found = [p for p in folder.rglob("*.octa") if p.is_file()]
    except OSError:
        return None
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def release(folder: Path) -> None:
    """Mark a run as no longer running (its marker keeps no pid), so retention may remove it later."""
    try:
        (folder / MARKER).write_text("0")
    except OSError:
        pass
