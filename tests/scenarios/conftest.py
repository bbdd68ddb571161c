"""Each fault scenario is trained (with its fix) once per test session and shared by every test.

The checks on a scenario (the verdict within budget, the root cause ranked first, the trial of
its fix, the restart fix) are pure logic over the same recordings; training each once keeps
the suite's real-training time to one run per scenario and kind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from octa_tui.trainer.scenario_check import ScenarioResult, check_scenario


@pytest.fixture(scope="session")
def scenario_result(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], ScenarioResult]:
    """``scenario_result(name)``: the scenario's check (trained on first use, seed 0), cached."""
    cache: dict[str, ScenarioResult] = {}
    run_files = tmp_path_factory.mktemp("run-files")

    def get(name: str) -> ScenarioResult:
        if name not in cache:
            before = os.environ.get("OCTA_TUI_RUN_DIR")
            os.environ["OCTA_TUI_RUN_DIR"] = str(run_files)
            try:
                cache[name] = check_scenario(name, Path(tmp_path_factory.mktemp(name)))
            finally:
                if before is None:
                    os.environ.pop("OCTA_TUI_RUN_DIR", None)
                else:
                    os.environ["OCTA_TUI_RUN_DIR"] = before
        return cache[name]

    return get
