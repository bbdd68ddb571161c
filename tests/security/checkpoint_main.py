"""Write checkpoints under a file-size limit (a subprocess of test_checkpoint_disk.py).

Usage: checkpoint_main.py FOLDER LIMIT_BYTES. Saves a small checkpoint, then one too big
for the limit, and prints one JSON line: both outcomes, and whether the process lived.
"""

from __future__ import annotations

import json
import resource
import signal
import sys
from pathlib import Path

import torch

from octa_tui.trainer.checkpoint import CheckpointWriteError, save_checkpoint, try_save_checkpoint


def state(values: int, step: int) -> dict:
    return {"model": {"w": torch.arange(values, dtype=torch.float32)}, "optimizer": {}, "step": step, "epoch": 0,
            "run_id": "0123456789abcdef", "config": {}}


def main(folder: str, limit: int) -> None:
    torch.set_num_threads(1)
    # A process over RLIMIT_FSIZE gets SIGXFSZ, which kills by default; writes then fail with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    first = try_save_checkpoint(Path(folder) / "last.pt", state(16, 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    second = try_save_checkpoint(Path(folder) / "last.pt", state(limit, 2))  # 4 bytes a value: over the limit
    try:
        save_checkpoint(Path(folder) / "last.pt", state(limit, 3))
        raised = ""
    except CheckpointWriteError as exc:
        raised = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"first": [first.ok, first.message], "second": [second.ok, second.message], "raised": raised}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
