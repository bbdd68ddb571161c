"""Several monitor processes on one trainer process: late join, restart, and a new run.

Real processes on loopback. Each monitor is a RunFollower in its own process that prints
what it holds (see remote_follower_main.py).
"""

from __future__ import annotations

import signal

import pytest
from remote_helpers import FollowerProcess, TrainerProcess

from octa_tui.tui.attach import free_port

pytestmark = pytest.mark.slow


def test_monitors_join_late_restart_and_see_a_restarted_trainer_as_a_new_run(tmp_path):
    endpoints = ["--telemetry", f"tcp://127.0.0.1:{free_port()}", "--control", f"tcp://127.0.0.1:{free_port()}"]
    trainer = TrainerProcess(tmp_path, *endpoints, name="first")
    second = None
    followers: list[FollowerProcess] = []

    def follow(info) -> FollowerProcess:
        followers.append(FollowerProcess(info["telemetry"], info["control"], tmp_path / "run-files"))
        return followers[-1]

    try:
        info = trainer.wait_ready()
        early = follow(info)
        at_join = early.read(lambda r: r["rows"] > 100)
        # WHEN a second monitor joins late
        late = follow(info)
        joined = late.read(lambda r: r["rows"] > 0)
        # THEN it has the full history from step 0, no gap
        assert joined["contiguous"] and joined["rows"] >= at_join["rows"], (joined, at_join)
        # AND the trainer counts both monitors
        assert late.read(lambda r: r["monitors"] == 2)["monitors"] == 2
        # WHEN the early monitor is killed and started again
        early.signal(signal.SIGKILL)
        restarted = follow(info)
        again = restarted.read(lambda r: r["rows"] > joined["rows"])
        # THEN it resumes with the whole run again
        assert again["contiguous"] and again["run_id"] == joined["run_id"]
        # WHEN the trainer is restarted on the same endpoints
        assert trainer.stop() == 0, trainer.output()
        second = TrainerProcess(tmp_path, *endpoints, name="second")
        second_info = second.wait_ready()
        assert second_info["run_id"] != info["run_id"]
        # THEN the monitor shows the new run on its own, not mixed into the old one
        fresh = late.read(lambda r: r["run_id"] == second_info["run_id"] and r["rows"] > 0, timeout_s=60)
        assert fresh["contiguous"] and fresh["last_seq"] == fresh["rows"] - 1
    finally:
        for follower in followers:
            follower.close()
        trainer.kill()
        trainer.stop()
        if second is not None:
            assert second.stop() == 0, second.output()
