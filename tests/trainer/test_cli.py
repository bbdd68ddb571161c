"""octa-train: clear errors for bad flags, endpoints and run file at start, a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from octa_tui.protocol.recording import read_recording
from octa_tui.trainer.cli import main
from octa_tui.trainer.console import epoch_line, gradient_hint, gradient_line, gradient_picks

SMALL = ["--image-size", "32", "--base-width", "8", "--batch-size", "4", "--preview-every", "0"]


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        (["--synthetic", "16", "--lr", "-1"], "--lr"),
        (["--synthetic", "0"], "--synthetic"),
        (["--synthetic", "abc"], "--synthetic"),
        (["--data", "/no/such/folder"], "/no/such/folder"),
        (["--synthetic", "8", "--data", "/tmp"], "--data"),
        (["--synthetic", "8", "--task", "segmentation", "--model", "craft"], "--model"),
        (["--synthetic", "8", "--pos-weight", "lots"], "--pos-weight"),
        (["--synthetic", "8", "--telemetry", "tcp://0.0.0.0:5555"], "--telemetry"),
        (["--synthetic", "8", "--resume", "/no/such/last.pt"], "--resume"),
        (["--synthetic", "8", "--image-size", "30"], "--image-size"),
        (["--synthetic", "8", "--warp-speed"], "--warp-speed"),
        (["--synthetic", "8", "--weight-decay", "-1"], "--weight-decay"),
        (["--synthetic", "8", "--weight-decay", "nan"], "--weight-decay"),
    ],
)
def test_bad_flags_get_one_clear_error_line_and_exit_status_2(argv, names, capsys):
    # WHEN octa-train is given a flag that cannot work
    status = main(argv)
    # THEN it exits 2 with one line naming the flag, and no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1 and err[0].startswith("octa-train: error:") and names in err[0], err
    assert "Traceback" not in "\n".join(err)


def test_weight_decay_reaches_the_optimizer_setting():
    from octa_tui.trainer.cli import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--synthetic", "8", "--optimizer", "adamw",
                                                          "--weight-decay", "0.05"]))
    assert (config.optimizer, config.weight_decay) == ("adamw", 0.05)


def test_a_data_folder_without_images_is_named_in_the_error(tmp_path: Path, capsys):
    (tmp_path / "masks").mkdir()
    assert main(["--data", str(tmp_path), *SMALL, "--telemetry", "tcp://127.0.0.1:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0]


def test_a_data_folder_with_bad_files_suggests_the_flag_that_skips_them(tmp_path: Path, capsys):
    from octa_tui.trainer.synthetic import write_synthetic_folder

    # GIVEN a data folder whose first image is not an image
    root = write_synthetic_folder(tmp_path / "ds", 4, size=32, seed=0)
    (root / "images" / "0000.png").write_bytes(b"garbage")
    # WHEN octa-train is pointed at it
    assert main(["--data", str(root), *SMALL, "--telemetry", "tcp://127.0.0.1:0"]) == 2
    # THEN the one error line names the file and the flag that leaves bad files out
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "images/0000.png" in err[0], err
    assert "--skip-bad-files" in err[0] and "(skip_bad)" not in err[0], err


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OCTA_TUI_RUN_DIR=str(tmp_path / "run-files"), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


@pytest.mark.slow
def test_octa_train_prints_endpoints_writes_its_run_file_and_leaves_a_recording(tmp_path: Path):
    # GIVEN octa-train started as a user would, on synthetic data, with the run-file folder in tmp
    proc = subprocess.Popen(
        [sys.executable, "-m", "octa_tui.trainer", "--synthetic", "16", "--epochs", "1", *SMALL],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        out, err = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
    # THEN it finished, printed both endpoints and the recording path
    assert proc.returncode == 0, err
    telemetry = re.search(r"telemetry\s+(tcp://127\.0\.0\.1:\d+)", out)
    control = re.search(r"control\s+(tcp://127\.0\.0\.1:\d+)", out)
    recording = re.search(r"recording\s+(\S+\.octa)", out)
    assert telemetry and control and recording, out
    assert telemetry.group(1) != control.group(1)
    # AND one epoch line plus the gradient line were logged (stdout is not a terminal)
    assert re.search(r"^epoch 1/1 step \d+ \| train loss", out, re.M)
    assert re.search(r"^Epoch \[1\] Step \d+ \| enc1\.block\.0: .* \| Hint: ", out, re.M)
    # AND the recording is readable and the run file is gone
    history = read_recording(tmp_path / recording.group(1)).history
    assert len(history.steps) >= 1 and history.events[-1].kind == "run_finished"
    assert [p for p in (tmp_path / "run-files").glob("*.json") if p.stem.isdigit()] == []  # (keys.json stays)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_final_checkpoint_and_removes_the_run_file(tmp_path: Path):
    # GIVEN a long run
    proc = subprocess.Popen(
        [sys.executable, "-m", "octa_tui.trainer", "--synthetic", "32", "--epochs", "500", *SMALL,
         "--checkpoint-dir", str(tmp_path / "ckpt")],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    run_file = tmp_path / "run-files" / f"{proc.pid}.json"
    try:
        deadline = time.monotonic() + 300  # a ceiling for a loaded machine
        while not run_file.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run file appeared"
            time.sleep(0.05)
        # THEN while it runs, its run file says how to reach it, readable by its owner only
        info = json.loads(run_file.read_text())
        assert info["pid"] == proc.pid and info["task"] == "segmentation" and info["model"] == "UNet"
        assert info["telemetry"].startswith("tcp://127.0.0.1:") and info["recording"].endswith(".octa")
        assert run_file.stat().st_mode & 0o777 == 0o600
        time.sleep(1.0)  # let it train a few steps
        # WHEN it gets Ctrl-C
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # THEN it exits 0 with a final checkpoint, a closed recording and no run file
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not run_file.exists()
    assert (tmp_path / "ckpt" / "last.pt").is_file()
    recording = read_recording(info["recording"])
    assert recording.warnings == []
    last = recording.history.events[-1]
    assert last.kind == "run_finished" and last.data["state"] == "stopped"


def test_python_dash_m_shows_the_help():
    out = subprocess.run([sys.executable, "-m", "octa_tui.trainer", "--help"], capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0 and "--synthetic" in out.stdout and "--resume" in out.stdout


# --- the log lines --------------------------------------------------------------------------------

NAMES = ["enc1.conv", "enc1.bn", "enc2.conv", "bottleneck.conv", "dec1.up", "dec1.conv", "head"]
KINDS = ["Conv2d", "BatchNorm2d", "Conv2d", "Conv2d", "ConvTranspose2d", "Conv2d", "Conv2d"]


def test_gradient_line_shows_the_seeds_four_layers_skipping_normalisation():
    picks = gradient_picks(NAMES, KINDS)
    assert [NAMES[i] for i in picks] == ["enc1.conv", "bottleneck.conv", "dec1.up", "head"]
    line = gradient_line(5, 8, NAMES, [0.05, 0.01, 0.02, 0.003, 0.004, 0.004, 0.003], KINDS)
    assert line.startswith("Epoch [5] Step 8 | enc1.conv: 0.050000 | bottleneck.conv: 0.003000 | dec1.up: 0.004000 |")


def test_gradient_hint_follows_the_seed():
    healthy = [0.01] * len(NAMES)
    assert gradient_hint(NAMES, healthy, KINDS) == "✓ all layers > 1e-4"
    vanishing = [0.01, 0.01, 0.01, 5e-5, 0.01, 0.01, 0.01]
    assert "vanishing" in gradient_hint(NAMES, vanishing, KINDS) and "bottleneck.conv" in gradient_hint(NAMES, vanishing, KINDS)
    a_few_times = [0.05, 0.01, 0.01, 0.003, 0.01, 0.01, 0.01]  # first/last weight layer 5x: common, not flagged
    assert gradient_hint(NAMES, a_few_times, ["Conv2d"] * 7) == "✓ all layers > 1e-4"
    apart = [0.5, 0.01, 0.01, 0.003, 0.01, 0.01, 0.0002]  # 2500x: the ends orders of magnitude apart
    assert gradient_hint(NAMES, apart, ["Conv2d"] * 7).startswith("⚠ shallow/deep 2500x (enc1.conv vs head)")
    assert "non-finite" in gradient_hint(NAMES, [float("nan")] + healthy[1:], KINDS)
    small_norm_layer = [0.01, 5e-5, 0.01, 0.01, 0.01, 0.01, 0.01]  # only the BatchNorm is tiny
    assert gradient_hint(NAMES, small_norm_layer, KINDS) == "✓ all layers > 1e-4"


def test_epoch_line_reads_like_the_seeds_log():
    line = epoch_line(4, 10, 48, {"loss": 0.6123, "loss_bce": 0.3, "loss_dice": 0.4271},
                      {"loss": 0.61, "dice": 0.402}, 1e-3, 2.5)
    assert line == ("epoch 5/10 step 48 | train loss 0.6123 (bce 0.3000, dice 0.4271) | val loss 0.6100 "
                    "dice 0.402 | lr 1.00e-03 | 2.5s")


def _small_file_limit() -> None:
    """In the child: every file it writes stops growing at 96 KB, as on a disk that is full."""
    import resource

    resource.setrlimit(resource.RLIMIT_FSIZE, (96 * 1024, 96 * 1024))


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_training_goes_on(tmp_path: Path):
    # GIVEN octa-train whose checkpoints (3.6 MB each at width 16) cannot fit, as on a full disk,
    # with its recording in the same folder
    folder = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "octa_tui.trainer", "--synthetic", "16", "--epochs", "2", *SMALL,
         "--base-width", "16", "--checkpoint-dir", str(folder)],
        cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=_small_file_limit,
    )
    try:
        out, err = proc.communicate(timeout=480)
    finally:
        if proc.poll() is None:
            proc.kill()
    # THEN training ran both epochs and ended normally (it used to die at the end of epoch 1)
    assert proc.returncode == 0, err
    assert re.search(r"^epoch 2/2 step \d+", out, re.M), out
    # AND each failed write was said as a warning, and no half-written checkpoint was left
    assert "checkpoint last.pt not written" in err, err
    assert not [p for p in folder.glob("*.pt")], list(folder.iterdir())
    assert not [p for p in folder.glob(".*.tmp")], list(folder.iterdir())
