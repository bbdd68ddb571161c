"""Checkpoints written atomically, read back safely, so ``--resume`` continues the same run.

A checkpoint holds the model and optimizer state, where the run stands (run id, next step,
epoch, best validation Dice), the live settings (lr override, loss weights, pos_weight,
clip) and the run's config. It is written to a temporary file in the same folder and
moved over the old one with ``os.replace``, so a crash never leaves a torn file; it is
read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"
BEST = "best.pt"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit this run; the message says which and why."""


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors and plain values) to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save({"format": FORMAT, **state}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


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
