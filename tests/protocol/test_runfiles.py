"""Run files: a monitor on this machine finds running trainers, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from octa_tui.protocol.runfiles import (
    RunFileInfo,
    list_run_files,
    remove_run_file,
    run_dir,
    write_run_file,
)


def _info(pid: int, started_at: float = 1.0) -> RunFileInfo:
    return RunFileInfo(pid=pid, run_id="0123456789abcdef", telemetry="tcp://127.0.0.1:5555",
                       control="tcp://127.0.0.1:5556", task="segmentation", model="unet",
                       started_at=started_at, recording="/tmp/r.octa")


def test_a_written_run_file_is_private_and_listed(tmp_path: Path):
    # GIVEN this process writes its run file
    path = write_run_file(_info(os.getpid()), tmp_path)
    # THEN only its owner can read it, and the list returns it as written
    assert path.stat().st_mode & 0o777 == 0o600
    assert list_run_files(tmp_path) == [_info(os.getpid())]
    # WHEN removed, THEN it is no longer listed
    remove_run_file(directory=tmp_path)
    assert list_run_files(tmp_path) == []


def test_run_files_of_dead_processes_are_dropped(tmp_path: Path):
    # GIVEN the run file of a process that has exited
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    write_run_file(_info(dead), tmp_path)
    write_run_file(_info(os.getpid(), started_at=2.0), tmp_path)
    # WHEN listed, THEN only the live one remains, and the dead one's file is gone
    assert [info.pid for info in list_run_files(tmp_path)] == [os.getpid()]
    assert not (tmp_path / f"{dead}.json").exists()


def test_unreadable_run_files_are_skipped(tmp_path: Path):
    (tmp_path / "123.json").write_text("{not json")
    (tmp_path / "124.json").write_text('{"pid": "x", "run_id": "a", "telemetry": "t", "control": "c"}')
    write_run_file(_info(os.getpid()), tmp_path)
    assert [info.pid for info in list_run_files(tmp_path)] == [os.getpid()]


def test_the_folder_is_per_user_and_can_be_redirected(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "mine"))
    assert run_dir() == tmp_path / "mine"
    monkeypatch.delenv("OCTA_TUI_RUN_DIR")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    directory = run_dir()
    assert directory == tmp_path / "octa-tui"
    assert directory.stat().st_mode & 0o777 == 0o700


def test_a_run_file_of_an_older_version_without_keys_still_reads(tmp_path: Path):
    import json

    old = {"pid": os.getpid(), "run_id": "0123456789abcdef", "telemetry": "tcp://127.0.0.1:5601",
           "control": "tcp://127.0.0.1:5602", "task": "segmentation", "model": "UNet", "started_at": 1.0,
           "recording": "", "host": "h"}
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps(old))
    (info,) = list_run_files(tmp_path)
    assert info.run_id == old["run_id"] and info.client_curve() is None


def test_a_default_trainers_run_file_carries_its_keys_and_hides_them_in_public(tmp_path: Path, monkeypatch):
    import stat

    from octa_tui.protocol import ModelSummary, Schema, new_run_id
    from octa_tui.protocol.keys import client_keys_for
    from octa_tui.protocol.link import TrainerLink
    from octa_tui.protocol.runfiles import USER_KEYS, keys_for_endpoint, user_keys

    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path))
    link = TrainerLink(Schema(run_id=new_run_id(), task="segmentation", model=ModelSummary("UNet", 10),
                              loss=("total",), grad=("a",), opt=("lr",)))
    try:
        # GIVEN a run file written for it, without naming keys (as Probe.start writes it)
        write_run_file(RunFileInfo(os.getpid(), link.run_id, link.telemetry_endpoint, link.control_endpoint),
                       tmp_path)
        (info,) = list_run_files(tmp_path)
        # THEN it carries the link's client keys, the user's keys file is private, and public() drops the secret
        assert info.client_curve() == client_keys_for(link.control_endpoint)
        assert info.client_curve().server_public == user_keys(tmp_path).server.public
        assert stat.S_IMODE((tmp_path / USER_KEYS).stat().st_mode) == 0o600
        assert "curve_secret" not in info.public() and info.public()["curve_server"] == info.curve_server
        assert keys_for_endpoint(link.telemetry_endpoint, tmp_path) == (True, info.client_curve())
    finally:
        link.close()


def test_malformed_keys_make_a_run_file_unreadable_not_a_crash(tmp_path: Path):
    import json

    bad = {"pid": os.getpid(), "run_id": "0123456789abcdef", "telemetry": "tcp://127.0.0.1:5601",
           "control": "tcp://127.0.0.1:5602", "curve_server": "short", "curve_public": "x" * 40, "curve_secret": ""}
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps(bad))
    assert list_run_files(tmp_path) == []
