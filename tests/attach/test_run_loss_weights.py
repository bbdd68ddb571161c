"""``octa-tui run`` on someone else's script: a loss-term weight sent mid-run, and its clipping seen.

The script (examples/foreign/plain_onecycle.py, unmodified) computes ``BCEWithLogitsLoss`` plus a
hand-written soft Dice and clips with ``clip_grad_norm_(..., 1.0)`` before the step. Under
``run`` the BCE is an observed term: a weight command from the monitor multiplies what the loss
module returns, and the stream shows the term (and the total) change; sending the old factor
back undoes it. The Dice is not observed: naming it is refused with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from octa_tui.protocol.commands import make_command
from octa_tui.protocol.errors import ProtocolError
from octa_tui.protocol.recording import read_recording

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the integration tests' monitor (their package, as pytest imports it)
from integrations.monitor import Monitor, find_run, wait_for  # noqa: E402

SCRIPT = ROOT / "examples" / "foreign" / "plain_onecycle.py"


def _term_names_accepted() -> bool:
    """Whether the protocol lets a command name an observed loss term (bce alone, mse, ...)."""
    try:
        make_command("set_loss_weights", bce=0.25)
    except ProtocolError:
        return False
    return True


def _start(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    record = tmp_path / "unet.octa"
    env = {**os.environ, "OCTA_TUI_RUN_DIR": str(tmp_path / "run"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "octa_tui.run", "--record", str(record), "--", str(SCRIPT),
                             "--epochs", "200"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, record


def _stop(monitor: Monitor | None, proc: subprocess.Popen) -> None:
    try:
        if monitor is not None and proc.poll() is None:
            assert monitor.request("stop").status == "ok"
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
    finally:
        if monitor is not None:
            monitor.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def _mean_after(monitor: Monitor, key: str, step: int, count: int = 6) -> float:
    wait_for(lambda: monitor.steps()[-1] >= step + count, f"{count} steps after step {step}", tick=monitor.poll)
    steps = monitor.steps()
    chosen = (steps >= step) & (steps < step + count)
    return float(np.mean(monitor.column(key)[chosen]))


@pytest.mark.slow
def test_a_term_that_is_not_observed_is_refused_and_the_scripts_clipping_is_a_fact(tmp_path: Path):
    proc, record = _start(tmp_path)
    monitor = None
    try:
        monitor = Monitor(find_run(tmp_path / "run", alive=lambda: proc.poll() is None))
        schema = monitor.schema
        # THEN the script's clip_grad_norm_ before its step is stated: the norms measured are clipped ones
        assert schema.config["grads_clipped_before_probe"] == 1.0 and schema.config["grads_clip_kind"] == "norm"
        assert schema.loss == ("total", "bce")
        monitor.wait_steps(3)
        # WHEN the built-in pair is sent (bce and dice): the Dice is hand-written, not observed
        reply = monitor.request("set_loss_weights", bce=0.5, dice=0.5)
        # THEN it is refused, naming the terms that can be weighted, and the loss is unchanged
        assert reply.status == "error"
        assert "'dice' is not a loss term observed in this run; its terms are bce" in reply.reason
        assert "nothing was changed" in reply.reason
        norms = monitor.column("gradstat/total_norm")
        assert np.all(norms[np.isfinite(norms)] <= 1.0 + 1e-4)
    finally:
        _stop(monitor, proc)
    events = read_recording(record).history.events
    assert not [e for e in events if e.kind == "command_applied" and e.data.get("op") == "set_loss_weights"]


@pytest.mark.slow
@pytest.mark.skipif(not _term_names_accepted(), reason="the protocol does not accept loss term names in "
                    "set_loss_weights yet (only the bce/dice pair)")
def test_a_weight_sent_mid_run_scales_the_observed_term_in_the_stream_and_undoes(tmp_path: Path):
    proc, record = _start(tmp_path)
    monitor = None
    try:
        monitor = Monitor(find_run(tmp_path / "run", alive=lambda: proc.poll() is None))
        monitor.wait_steps(12)
        # WHEN the BCE term is weighted x0.25 mid-run
        reply = monitor.request("set_loss_weights", bce=0.25)
        assert reply.status == "ok", reply.reason
        assert reply.data["old"] == {"bce": 1.0} and reply.data["new"] == {"bce": 0.25}
        before = _mean_after(monitor, "loss/bce", reply.step - 6)
        dice_before = _mean_after(monitor, "loss/total", reply.step - 6) - before
        after = _mean_after(monitor, "loss/bce", reply.step)
        dice_after = _mean_after(monitor, "loss/total", reply.step) - after
        # THEN the stream's BCE term is a quarter of what it was, and the total dropped by as much
        assert 0.15 < after / before < 0.4, (before, after)
        assert abs(dice_after - dice_before) < 0.1 * dice_before  # the (unobserved) Dice went on as before
        # WHEN the old factor is sent back (undo) THEN the term is as the script computes it again
        undo = monitor.request("set_loss_weights", **reply.data["old"])
        assert undo.status == "ok" and undo.data["old"] == {"bce": 0.25} and undo.data["new"] == {"bce": 1.0}
        restored = _mean_after(monitor, "loss/bce", undo.step)
        assert 0.6 < restored / before < 1.5, (before, restored)
    finally:
        _stop(monitor, proc)
    events = [e for e in read_recording(record).history.events
              if e.kind == "command_applied" and e.data.get("op") == "set_loss_weights"]
    assert [(e.data["old"], e.data["new"]) for e in events] == [({"bce": 1.0}, {"bce": 0.25}),
                                                                ({"bce": 0.25}, {"bce": 1.0})]
    assert events[0].data["factors"] == {"bce": 0.25}
