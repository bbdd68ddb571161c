"""GIVEN the octa-tui command line WHEN it is misused or has nothing to do THEN it says so in
one line with a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def octa_tui(*args: str, env_dir=None) -> subprocess.CompletedProcess:
    env = None
    if env_dir is not None:
        import os

        env = {**os.environ, "OCTA_TUI_RUN_DIR": str(env_dir)}
    return subprocess.run([sys.executable, "-m", "octa_tui.tui.cli", *args], capture_output=True, text=True,
                          timeout=50, env=env)


def test_replay_of_a_missing_file_is_one_line(tmp_path):
    result = octa_tui("replay", str(tmp_path / "nope.octa"))
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "no such recording" in result.stderr
    assert "Traceback" not in result.stderr


def test_replay_of_a_file_that_is_not_a_recording_is_one_line(tmp_path):
    bogus = tmp_path / "bogus.octa"
    bogus.write_bytes(b"hello, not a recording")
    result = octa_tui("replay", str(bogus))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("octa-tui: error:") and result.stderr.strip().count("\n") == 0


def test_connect_to_a_remote_address_says_to_tunnel():
    result = octa_tui("connect", "tcp://10.0.0.1:5555", "--control", "tcp://10.0.0.1:5556")
    assert result.returncode == 1 and "ssh" in result.stderr.lower() and "Traceback" not in result.stderr


def test_list_with_no_trainers(tmp_path):
    listed = octa_tui("list", "--json", env_dir=tmp_path)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    alone = octa_tui(env_dir=tmp_path)
    assert alone.returncode == 1 and "no trainer is running" in alone.stderr
