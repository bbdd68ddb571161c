"""Under torchrun: two gloo ranks on the CPU train one run that a monitor sees, steers and stops as one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from octa_tui.protocol.commands import make_command
from octa_tui.protocol.follow import RunFollower
from octa_tui.protocol.messages import Command
from octa_tui.protocol.recording import read_recording
from octa_tui.protocol.runfiles import list_run_files
from octa_tui.trainer.distributed import (
    WIRE_SIZE,
    WIRE_SLOTS,
    DistEnv,
    DistributedError,
    decode_commands,
    encode_commands,
    stragglers,
)

SMALL = ["--synthetic", "40", "--image-size", "32", "--base-width", "8", "--batch-size", "4",
         "--preview-every", "0", "--device", "cpu"]


def _torchrun(tmp_path: Path, *args: str) -> subprocess.Popen:
    """Two ranks of octa-train under torchrun, their run files and per-rank lr logs in ``tmp_path``."""
    env = dict(os.environ, OCTA_TUI_RUN_DIR=str(tmp_path / "run-files"), OCTA_TUI_RANK_LOG=str(tmp_path / "ranks"),
               OCTA_TUI_DDP_TIMEOUT_S="60", OCTA_TUI_RANK_TIMES_EVERY="5", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "octa_tui.trainer", *SMALL, "--checkpoint-dir", str(tmp_path / "ckpt"),
               "--record", str(tmp_path / "run.octa"), *args]
    with open(tmp_path / "out.txt", "w") as out:  # a file: a pipe nobody reads would block the ranks
        return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _output(tmp_path: Path) -> str:
    return (tmp_path / "out.txt").read_text()


def _rank_log(tmp_path: Path, rank: int, column: int = 1) -> tuple[int, dict[int, float]]:
    """(pid, {step: lr}) from one rank's log (column 2: its own loss); empty until the rank has started."""
    path = tmp_path / "ranks" / f"rank{rank}.txt"
    if not path.exists():
        return 0, {}
    lines = path.read_text().splitlines()
    pid = int(lines[0].split()[-1]) if lines else 0
    steps = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) == 3:
            steps[int(parts[0])] = float(parts[column])
    return pid, steps


def _wait_for(condition, proc: subprocess.Popen, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"torchrun ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _end(proc: subprocess.Popen, tmp_path: Path) -> None:
    """Kill whatever is left of the job: torchrun, then each rank by the pid in its log."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(30)
    for rank in (0, 1):
        pid, _ = _rank_log(tmp_path, rank)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_two_ranks_are_one_run_that_takes_an_lr_command_at_the_same_step_and_stops_together(tmp_path: Path):
    # GIVEN a long two-rank run under torchrun
    proc = _torchrun(tmp_path, "--epochs", "500")
    follower = None
    try:
        run_dir = tmp_path / "run-files"
        _wait_for(lambda: run_dir.is_dir() and list_run_files(run_dir), proc, 120, "the run file")
        # THEN one run is announced, by rank 0, and a monitor attached to it sees a run of 2 ranks
        [info] = list_run_files(run_dir)
        assert info.pid == _rank_log(tmp_path, 0)[0]
        follower = RunFollower(info.telemetry, info.control, timeout_s=10.0)
        schema = follower.connect().schema
        assert schema.config["world_size"] == 2 and schema.config["backend"] == "gloo"
        assert schema.config["steps_per_epoch"] == 32 // 2 // 4  # 40 images, 20% held out, 2 ranks, batch 4
        _wait_for(lambda: len(_rank_log(tmp_path, 1)[1]) >= 3, proc, 60, "three steps on rank 1")

        # WHEN the monitor sets the lr
        reply = follower.request(make_command("set_lr", lr=0.0123))
        # THEN from the step the reply names, and not before, both ranks' optimizers train with it
        assert reply.ok, reply.reason
        step = reply.step
        _wait_for(lambda: all(step + 1 in _rank_log(tmp_path, r)[1] for r in (0, 1)), proc, 60, f"step {step + 1}")
        for rank in (0, 1):
            lrs = _rank_log(tmp_path, rank)[1]
            assert lrs[step - 1] == pytest.approx(1e-3), rank
            assert lrs[step] == pytest.approx(0.0123) and lrs[step + 1] == pytest.approx(0.0123), rank

        # WHEN the monitor pauses the run
        assert follower.request(make_command("pause")).ok
        time.sleep(0.5)
        paused_at = [max(_rank_log(tmp_path, r)[1]) for r in (0, 1)]
        time.sleep(1.0)
        # THEN both ranks wait at the same step, and rank 0 still answers
        assert paused_at[0] == paused_at[1] == max(_rank_log(tmp_path, 0)[1]) == max(_rank_log(tmp_path, 1)[1])
        assert follower.request(make_command("ping")).ok
        # WHEN it resumes, THEN both ranks train on
        assert follower.request(make_command("resume")).ok
        # (and train past step 10, so the ranks' step times have been gathered twice, at 5 and 10)
        resumed_to = max(paused_at[0] + 2, 11)
        _wait_for(lambda: all(resumed_to in _rank_log(tmp_path, r)[1] for r in (0, 1)), proc, 120, "resume")

        # WHEN the monitor sends stop
        assert follower.request(make_command("stop")).ok
        # THEN both ranks end and torchrun exits cleanly
        proc.wait(timeout=120)
    finally:
        if follower is not None:
            follower.close()
        _end(proc, tmp_path)
    assert proc.returncode == 0, _output(tmp_path)
    final = {rank: max(_rank_log(tmp_path, rank)[1]) for rank in (0, 1)}
    assert final[0] == final[1]
    # AND the recording is the one run: stopped, with the command and the 2 ranks in it
    history = read_recording(tmp_path / "run.octa").history
    assert history.schema.config["world_size"] == 2
    ops = [e.data["op"] for e in history.events if e.kind == "command_applied"]
    assert ops == ["set_lr", "pause", "resume", "stop"]
    # AND every 5 steps the ranks' step times were gathered into the stream
    times = [e for e in history.events if e.kind == "rank_times"]
    assert len(times) >= 2 and all(len(e.data["step_s"]) == 2 and min(e.data["step_s"]) > 0 for e in times)
    assert history.events[-1].kind == "run_finished" and history.events[-1].data["state"] == "stopped"
    assert list(history.steps.step) == list(range(final[0] + 1))
    # AND the published loss of each step is the mean of the two ranks' own losses
    own = [_rank_log(tmp_path, rank, column=2)[1] for rank in (0, 1)]
    published = history.steps.values[:, history.schema.index("loss/total")]
    expected = [(own[0][s] + own[1][s]) / 2 for s in history.steps.step]
    assert published == pytest.approx(expected, rel=1e-5)
    assert any(abs(own[0][s] - own[1][s]) > 1e-4 for s in history.steps.step)  # the ranks saw different data
    assert (tmp_path / "ckpt" / "last.pt").is_file()


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_with_a_clear_message_and_a_readable_recording(tmp_path: Path):
    # GIVEN a long two-rank run that has trained a few steps
    proc = _torchrun(tmp_path, "--epochs", "500")
    try:
        _wait_for(lambda: len(_rank_log(tmp_path, 1)[1]) >= 3, proc, 120, "three steps on rank 1")
        # WHEN rank 1 is killed
        os.kill(_rank_log(tmp_path, 1)[0], signal.SIGKILL)
        # THEN the job ends by itself, rank 0 saying why
        proc.wait(timeout=120)
    finally:
        _end(proc, tmp_path)
    out = _output(tmp_path)
    assert proc.returncode != 0
    assert "another rank died or stopped answering" in out, out
    # AND rank 0 closed its recording: readable, ending with the failure
    recording = read_recording(tmp_path / "run.octa")
    history = recording.history
    assert len(history.steps) >= 3 and recording.truncated_bytes == 0
    warnings = [e for e in history.events if e.kind == "warning" and e.data.get("source") == "distributed"]
    assert warnings and "another rank died" in warnings[0].message
    assert history.events[-1].kind == "run_finished" and history.events[-1].data["state"] == "failed"
    assert list((tmp_path / "run-files").glob("[0-9]*.json")) == []  # no run file left (a key file may stay)


# --- the pieces, without processes --------------------------------------------------------------------


def test_commands_survive_the_wire_and_a_stop_from_any_rank_adds_up():
    # GIVEN rank 0's commands and a stop asked of rank 1 alone
    commands = [Command("set_lr", {"lr": 0.0123}), Command("set_loss_weights", {"bce": 0.25, "dice": 0.75}),
                Command("pause", {})]
    rank0 = encode_commands(commands)
    rank1 = encode_commands([], stop=True)
    assert rank0.shape == (WIRE_SIZE,) and rank0.dtype == torch.float64
    # WHEN the ranks' wires are summed (what the all_reduce does)
    decoded, stop = decode_commands(rank0 + rank1)
    # THEN every rank reads rank 0's commands exactly, and the stop
    assert [(c.op, dict(c.args)) for c in decoded] == [(c.op, dict(c.args)) for c in commands]
    assert stop
    assert decode_commands(rank0) == (decoded, False)


def test_the_wire_refuses_what_it_cannot_carry():
    with pytest.raises(ValueError, match="at most"):
        encode_commands([Command("pause", {})] * (WIRE_SLOTS + 1))
    with pytest.raises(ValueError, match="ping"):
        encode_commands([Command("ping", {})])


def test_a_straggler_is_a_rank_over_one_and_a_half_times_the_median():
    assert stragglers([0.10, 0.11, 0.10, 0.30]) == [3]
    assert stragglers([0.10, 0.14, 0.12]) == []
    assert stragglers([0.1, 0.4]) == [1]  # two ranks: the median is their mean
    assert stragglers([0.1, float("nan")]) == []


def test_torchrun_environment_is_read_or_refused_by_name():
    assert DistEnv.from_environ({}) is None
    env = DistEnv.from_environ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h",
                                "MASTER_PORT": "29500"})
    assert env == DistEnv(1, 2, 1) and not env.is_main
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        DistEnv.from_environ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_PORT": "1"})
    with pytest.raises(DistributedError, match="outside WORLD_SIZE"):
        DistEnv.from_environ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
