"""GIVEN demos and trainers started without a folder WHEN they make their run folders THEN the
folders are private, in the user's data folder (never /tmp), old runs are pruned by rule, a
running run is never removed, and the exit message says how to replay the recording."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from octa_tui.protocol import run_store
from octa_tui.protocol.run_store import (
    MARKER,
    StoredRun,
    new_run_folder,
    prune_runs,
    runs_root,
    runs_to_prune,
)


def test_the_root_is_the_override_else_the_xdg_data_folder_else_local_share():
    assert runs_root({"OCTA_TUI_RUNS_DIR": "/x/runs", "XDG_DATA_HOME": "/d"}) == Path("/x/runs")
    assert runs_root({"XDG_DATA_HOME": "/d"}) == Path("/d/octa-tui/runs")
    assert runs_root({"XDG_DATA_HOME": "relative"}) == Path.home() / ".local/share/octa-tui/runs"
    assert runs_root({}) == Path.home() / ".local/share/octa-tui/runs"


def test_a_new_run_folder_is_private_and_names_its_owner(tmp_path):
    root = tmp_path / "open"
    root.mkdir(mode=0o755)
    first = new_run_folder("demo", root, now=lambda: 0.0)
    second = new_run_folder("demo", root, now=lambda: 0.0)  # same second: a suffix, not a clash
    assert first != second and second.name == first.name + "-1"
    for folder in (root, first, second):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert (first / MARKER).read_text() == str(os.getpid())


def _run(name: str, mb: float, age_s: float, running: bool = False) -> StoredRun:
    return StoredRun(Path(name), int(mb * 1024**2), 10_000.0 - age_s, running)


def test_retention_keeps_the_newest_within_count_and_size_and_never_a_running_or_fresh_run():
    runs = [_run("new", 1, 120), _run("live", 50, 200, running=True), _run("mid", 1, 300), _run("old", 1, 400),
            _run("older", 1, 500)]
    gone = runs_to_prune(runs, keep=3, keep_bytes=1024**3, now=10_000.0)
    assert [r.path.name for r in gone] == ["old", "older"]  # the running one counts, and stays
    by_size = runs_to_prune(runs, keep=10, keep_bytes=int(52.5 * 1024**2), now=10_000.0)
    assert [r.path.name for r in by_size] == ["old", "older"]
    nothing_fresh = runs_to_prune([_run("a", 1, 10), _run("b", 1, 20)], keep=0, keep_bytes=0, now=10_000.0)
    assert nothing_fresh == []


def test_pruning_removes_only_old_runs_it_made(tmp_path):
    root = tmp_path / "runs"
    old = [new_run_folder("demo", root, pid=999_999_999) for _ in range(3)]  # owners long gone
    for i, folder in enumerate(old):
        (folder / "x.octa").write_bytes(b"r" * 10)
        when = time.time() - 3600 * (i + 1)
        for path in (folder / "x.octa", folder / MARKER, folder):
            os.utime(path, (when, when))
    running = new_run_folder("demo", root)  # this process: alive
    os.utime(running, (time.time() - 7200, time.time() - 7200))
    (running / MARKER).touch()
    mine = root / "notes"  # the user's own folder: no marker
    mine.mkdir()
    removed = prune_runs(root, keep=1, keep_bytes=1024**3)
    assert sorted(removed) == sorted(old)  # the running run (newest) fills the one place kept
    assert running.is_dir() and mine.is_dir()


def test_a_demo_without_a_run_dir_keeps_its_run_in_the_store_and_threads_to_one_on_a_small_machine(tmp_path,
                                                                                                   monkeypatch):
    from octa_tui.tui.demo import DemoTrainer, demo_threads, demo_trainer_args

    monkeypatch.setenv(run_store.ENV_RUNS_DIR, str(tmp_path / "store"))
    assert demo_threads(2) == 1 and demo_threads(4) == 1 and demo_threads(16) == 0
    assert demo_trainer_args(threads=1)[-2:] == ["--threads", "1"]
    assert "--threads" not in demo_trainer_args(threads=0)
    with DemoTrainer(demo_trainer_args(threads=1)) as trainer:
        folder = trainer.run_dir
        assert folder.parent == tmp_path / "store" and folder.name.startswith("demo-")
        assert not str(folder).startswith("/tmp/octa-demo-")
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert (folder / MARKER).read_text() == str(os.getpid())
    assert (folder / MARKER).read_text() == "0"  # released: retention may remove it later


def test_the_demo_opens_its_screen_at_once_and_says_how_to_replay_the_recording(tmp_path, monkeypatch, capsys):
    from octa_tui.tui import cli, demo, sources

    recording = tmp_path / "store" / "demo-1" / "run" / "20261206 104828.octa"

    class Started:
        def __init__(self, args, run_dir=None):
            self.args, self.run_dir, self.log_path = args, recording.parents[1], tmp_path / "trainer.log"
            self.telemetry = self.control = "tcp://127.0.0.1:1"

        def start(self):
            recording.parent.mkdir(parents=True)
            recording.write_bytes(b"")

        def recording(self):
            return recording

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    screens = []

    def run_app(source, **options):
        # THEN the screen opens before the trainer has started (loading torch takes seconds) ...
        screens.append(source.status().detail)
        source.open()  # ...and the monitor's worker starts it
        return 0

    monkeypatch.setattr(demo, "DemoTrainer", Started)
    monkeypatch.setattr(sources.LiveSource, "open", lambda self: None)
    monkeypatch.setattr(cli, "_run_app", run_app)
    assert cli.main(["demo"]) == 0
    assert screens == [demo.STARTING]
    err = capsys.readouterr().err
    assert f"the recording is {recording}" in err
    assert f"replay it:  octa-tui replay '{recording}'" in err


def test_octa_train_without_a_folder_gets_one_in_the_store(tmp_path, monkeypatch):
    from octa_tui.trainer.cli import UsageError, main, set_threads, with_run_folder
    from octa_tui.trainer.config import TrainConfig

    monkeypatch.setenv(run_store.ENV_RUNS_DIR, str(tmp_path / "store"))
    made = with_run_folder(TrainConfig(synthetic=8), environ={})
    assert Path(made.checkpoint_dir).parent == tmp_path / "store"
    assert Path(made.checkpoint_dir).name.startswith("segmentation-")
    given = TrainConfig(synthetic=8, checkpoint_dir=str(tmp_path / "mine"))
    assert with_run_folder(given, environ={}) == given
    assert with_run_folder(TrainConfig(synthetic=8), environ={"RANK": "1"}).checkpoint_dir is None
    with pytest.raises(UsageError, match="--threads"):
        set_threads(-1)
    assert main(["--synthetic", "8", "--threads", "-2"]) == 2
