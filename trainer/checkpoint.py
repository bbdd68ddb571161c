"""Checkpoints written atomically, read back safely, so ``--resume`` continues the same run.

A checkpoint holds the model and optimizer state, where the run stands (run id, next step,
epoch, best validation Dice), the live settings (lr override, loss weights, pos_weight,
clip) and the run's config. It is written to a temporary file in the same folder (0600),
flushed and fsynced, then moved over the old one with ``os.replace`` and the folder
fsynced: a crash or a full disk never leaves a torn file, and the previous checkpoint
stays whole until the new one is complete. It is read with
``torch.load(weights_only=True)``, which refuses anything but tensors and plain values.

A checkpoint that cannot be written (disk full, file-size limit, folder gone) must not end
the training it protects: :func:`try_save_checkpoint` never raises and returns a
:class:`CheckpointOutcome` whose ``message`` is the warning to show;
:func:`save_checkpoint` raises only :class:`CheckpointWriteError` (an ``OSError``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit this run; the message says which and why."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous one is intact. The message says why and what to do."""


@dataclass(frozen=True)
class CheckpointOutcome:
    """What became of one checkpoint write: ``ok`` with its ``path``, or the ``message`` to warn with."""

    ok: bool
    path: Path
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok


def _file_size_limit() -> int | None:
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _reason(exc: BaseException) -> str:
    number = getattr(exc, "errno", None)
    text = str(exc)
    if number == errno.EFBIG or "File too large" in text:
        return "the file-size limit was reached"
    if "unexpected pos" in text or "write" in text.lower() and isinstance(exc, RuntimeError):
        # torch's writer loses the errno: a full disk, or a file-size limit if one is set
        limit = _file_size_limit()
        if limit is not None:
            return f"the disk is full or the file-size limit ({limit} bytes) was reached"
        return "the disk is full"
    if number == errno.ENOSPC or "No space left" in text:
        return "the disk is full"
    if number == errno.EDQUOT:
        return "the disk quota is exceeded"
    if number in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    return f"{type(exc).__name__}: {text}"


def try_save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> CheckpointOutcome:
    """Write ``state`` to ``path`` atomically (0600); never raises for a write that fails.

    On failure the temporary file is removed, ``path`` (the previous checkpoint, if any) is
    untouched, and the outcome's ``message`` says what happened and what to do.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    except (OSError, RuntimeError, ValueError) as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        previous = "the previous checkpoint there is intact" if path.exists() else "no checkpoint was there before"
        return CheckpointOutcome(False, path, f"checkpoint {path} not written: {_reason(exc)}; {previous}; training "
                                 "goes on (free some space or move --checkpoint-dir, then press the checkpoint key)")
    return CheckpointOutcome(True, path)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable (POSIX); a folder that cannot be opened is left as it is."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) to ``path`` atomically; returns the path.

    Raises :class:`CheckpointWriteError` (an ``OSError``, never a bare one nor torch's
    ``RuntimeError``) when it cannot be written; the previous checkpoint stays intact.
    """
    outcome = try_save_checkpoint(path, state)
    if not outcome.ok:
        raise CheckpointWriteError(outcome.message)
    return outcome.path


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The file ``--resume`` names: the file itself, or ``last.pt`` inside a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise CheckpointError(f"--resume {path}: no such checkpoint file (give a .pt file or a run folder with {LAST})")
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (CheckpointError if it is not one)."""
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise CheckpointError(f"--resume {path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"--resume {path}: not an octa-train checkpoint (format {FORMAT} expected)")
    for key in ("model", "optimizer", "step", "epoch", "run_id", "config"):
        if key not in state:
            raise CheckpointError(f"--resume {path}: the checkpoint lacks {key!r}; it may be from another program")
    return state
