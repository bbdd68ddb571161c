"""Settings every test shares: monitors spill their step columns into the test's own folder."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _spill_into_a_temporary_folder(tmp_path_factory: pytest.TempPathFactory):
    """Monitors started by tests (and their subprocesses) page old steps to a folder of the
    test session, not to the user's cache folder."""
    previous = os.environ.get("OCTA_TUI_SPILL_DIR")
    os.environ["OCTA_TUI_SPILL_DIR"] = str(tmp_path_factory.mktemp("spill"))
    yield
    if previous is None:
        os.environ.pop("OCTA_TUI_SPILL_DIR", None)
    else:
        os.environ["OCTA_TUI_SPILL_DIR"] = previous
