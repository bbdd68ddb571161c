"""``octa-tui run`` on a script with two optimizers (encoder and decoder), unmodified.

The script (examples/foreign/two_optimizers.py) steps an Adam over the encoder and an SGD over
the decoder after one backward, each with its own scheduler. Under ``run`` both are followed:
the model is the network holding both, every layer is measured, one step per iteration, and
``set_lr`` scales every group of both optimizers (each one's scheduler keeps its own view),
the reply naming each group's optimizer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from octa_tui.protocol.recording import read_recording

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the integration tests' monitor (their package, as pytest imports it)
from integrations.monitor import Monitor, find_run, wait_for  # noqa: E402

SCRIPT = ROOT / "examples" / "foreign" / "two_optimizers.py"
EPOCHS, STEPS_PER_EPOCH = 300, 6


def _encoder_lrs() -> np.ndarray:
    """The encoder optimizer's lr at each step under the script's CosineAnnealingLR."""
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=EPOCHS * STEPS_PER_EPOCH)
    lrs = []
    for _ in range(EPOCHS * STEPS_PER_EPOCH):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs)


@pytest.mark.slow
def test_both_optimizers_are_followed_and_set_lr_scales_each(tmp_path: Path):
    record = tmp_path / "two.octa"
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "octa_tui.run", "--record", str(record), "--", str(SCRIPT),
                             "--epochs", str(EPOCHS), "--steps-per-epoch", str(STEPS_PER_EPOCH)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    monitor = None
    try:
        monitor = Monitor(find_run(tmp_path / "run", alive=lambda: proc.poll() is None))
        schema = monitor.schema
        # THEN the model is the network that holds both optimizers' parameters: every layer is there
        assert schema.model.name == "SegNet"
        assert schema.grad == ("encoder.stem", "encoder.down", "decoder.up", "decoder.head")
        wait_for(lambda: len(monitor.history.epochs) >= 2, "two inferred epochs", tick=monitor.poll)
        # WHEN the lr is set THEN both optimizers' groups are scaled alike, each named in the reply
        reply = monitor.request("set_lr", lr=2e-4)
        assert reply.status == "ok", reply.reason
        groups = reply.data["groups"]
        assert [g["optimizer"] for g in groups] == [0, 1]
        assert groups[0]["new"] == pytest.approx(2e-4)
        assert groups[1]["new"] / groups[1]["old"] == pytest.approx(groups[0]["new"] / groups[0]["old"])
        wait_for(lambda: monitor.steps()[-1] > reply.step + 4, "steps after set_lr", tick=monitor.poll)
        assert monitor.request("stop").status == "ok"
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finally:
        if monitor is not None:
            monitor.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    history = read_recording(record).history
    steps = np.asarray(history.steps.step)
    # one published step per iteration (not one per optimizer), every layer measured each time
    assert np.array_equal(steps, np.arange(len(steps)))
    assert np.array_equal(np.asarray(history.steps.epoch), steps // STEPS_PER_EPOCH)
    grads = np.stack([np.asarray(history.steps.column(schema.index(f"grad/{n}"))) for n in schema.grad])
    assert np.all(np.isfinite(grads)) and not [e for e in history.events if e.kind == "unused_parameters"]
    # the stream's lr is the encoder's (group 0): the scheduler's cosine, x the scale from the command on
    lr = np.asarray(history.steps.column(schema.index("opt/lr")), dtype=np.float64)
    scale = groups[0]["new"] / groups[0]["old"]
    expected = _encoder_lrs()[steps] * np.where(steps >= reply.step, scale, 1.0)
    assert lr == pytest.approx(expected, rel=1e-5)
