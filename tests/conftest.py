"""Settings every test shares: monitors spill their step columns into the test session's own
folder, runs started without a folder keep it there too, never in the user's home, and trainers
announce themselves in the session's own run-files folder (a trainer the user or another test
session has running is never listed, attached to or counted by a test)."""

from __future__ import annotations

import os

import pytest

from octa_tui.protocol.run_store import ENV_RUNS_DIR
from octa_tui.protocol.runfiles import ENV_RUN_DIR

SESSION_FOLDERS = {"OCTA_TUI_SPILL_DIR": "spill", ENV_RUNS_DIR: "runs", ENV_RUN_DIR: "run-files"}


@pytest.fixture(autouse=True, scope="session")
def _session_folders(tmp_path_factory: pytest.TempPathFactory):
    """Monitors started by tests (and their subprocesses) page old steps to a folder of the
    test session, not to the user's cache folder; demos and trainers started without
    --checkpoint-dir keep their run folders in the session's folder, not the user's data folder."""
    previous = {name: os.environ.get(name) for name in SESSION_FOLDERS}
    for name, folder in SESSION_FOLDERS.items():
        path = tmp_path_factory.mktemp(folder)
        path.chmod(0o700)  # the run-files folder must be private, as the product makes its own
        os.environ[name] = str(path)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
