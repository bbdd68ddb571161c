"""A full disk never kills training: a checkpoint that cannot be written is a warning, the previous one intact."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from octa_tui.trainer.checkpoint import (
    CheckpointWriteError,
    load_checkpoint,
    save_checkpoint,
    try_save_checkpoint,
)

MAIN = Path(__file__).with_name("checkpoint_main.py")


def _state(values: int, step: int) -> dict:
    return {"model": {"w": torch.arange(values, dtype=torch.float32)}, "optimizer": {}, "step": step, "epoch": 0,
            "run_id": "0123456789abcdef", "config": {}}


def _left_over(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "last.pt")


def test_a_checkpoint_over_the_file_size_limit_is_a_warning_and_the_previous_one_stays(tmp_path):
    # GIVEN a process whose files may not grow past 64 KB (RLIMIT_FSIZE), with a checkpoint written
    result = subprocess.run([sys.executable, str(MAIN), str(tmp_path), str(64 * 1024)], capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS="1"))
    # THEN the process lived through a checkpoint it could not write
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first"] == [True, ""]
    ok, message = report["second"]
    assert not ok and "file-size limit" in message and "previous checkpoint there is intact" in message
    assert "training goes on" in message
    # AND save_checkpoint raised its own OSError, never torch's RuntimeError
    assert report["raised"].startswith("CheckpointWriteError: checkpoint")
    # AND the first checkpoint is whole and readable, private, and no temporary file is left
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.arange(16, dtype=torch.float32))
    assert stat.S_IMODE((tmp_path / "last.pt").stat().st_mode) == 0o600
    assert _left_over(tmp_path) == []


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 256 KB tmpfs (needs root and a kernel that lets this process mount)."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'}); "
                    "the RLIMIT_FSIZE test covers the same path")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_a_full_disk_is_a_warning_and_the_previous_checkpoint_stays(tiny_tmpfs):
    # GIVEN a small checkpoint on a nearly empty 256 KB disk
    first = try_save_checkpoint(tiny_tmpfs / "last.pt", _state(1000, 1))
    assert first.ok and first.path == tiny_tmpfs / "last.pt"
    # WHEN a checkpoint bigger than the free space is written
    second = try_save_checkpoint(tiny_tmpfs / "last.pt", _state(200_000, 2))
    # THEN it is a warning naming the full disk, nothing raised
    assert not second.ok and "the disk is full" in second.message, second.message
    with pytest.raises(CheckpointWriteError, match="the disk is full"):
        save_checkpoint(tiny_tmpfs / "last.pt", _state(200_000, 3))
    # AND the previous checkpoint is intact, and the space is given back (no temporary file)
    assert load_checkpoint(tiny_tmpfs / "last.pt")["step"] == 1
    assert _left_over(tiny_tmpfs) == []
    # AND once space is there again, checkpoints are written again
    assert try_save_checkpoint(tiny_tmpfs / "last.pt", _state(1000, 4)).ok
    assert load_checkpoint(tiny_tmpfs / "last.pt")["step"] == 4


def test_checkpoints_and_their_folder_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "run" / "best.pt", _state(4, 1))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_an_unwritable_folder_is_a_warning_too(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    outcome = try_save_checkpoint(blocker / "last.pt", _state(4, 1))
    assert not outcome.ok and "not written" in outcome.message and not bool(outcome)
