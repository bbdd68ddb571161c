"""GIVEN a real 3-seed x 2-lr sweep recorded by real small runs (``octa-train --synthetic``)
WHEN ``octa-tui compare`` opens it (and, in the last test, two live trainers with it)
THEN the groups' means and bands equal what numpy computes straight from the recordings,
the screen stays usable at 80x24, exports work, Enter asks for the run's monitor, and a
command sent to a group is acknowledged by each run with its own step."""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from screen_text import screen_text

from octa_tui.protocol.messages import Schema, StepChunk
from octa_tui.protocol.recording import iter_recording
from octa_tui.tui.compare import cli
from octa_tui.tui.compare.app import CompareApp, CompareState, OpenMonitor, run_curve
from octa_tui.tui.compare.runs import CompareSession, Target, resolve_targets
from octa_tui.tui.compare.table import BY_ALL_BUT_SEED
from octa_tui.tui.compare.view import OUTCOME_GLYPHS, build_chart

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LRS = ("0.001", "0.0003")
SEEDS = (0, 1, 2)
STEPS = 60
TRAIN = ["--synthetic", "16", "--image-size", "32", "--base-width", "4", "--batch-size", "4", "--epochs", "100",
         "--quiet"]


def _train(folder: Path, lr: str, seed: int) -> Path:
    record = folder / f"lr{lr}-s{seed}.octa"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "-m", "octa_tui.trainer", *TRAIN, "--max-steps", str(STEPS), "--seed", str(seed), "--lr", lr,
         "--telemetry", "tcp://127.0.0.1:0", "--control", "tcp://127.0.0.1:0", "--record", str(record),
         "--checkpoint-dir", str(folder / "checkpoints")],
        cwd=folder, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300,
    )
    return record


@pytest.fixture(scope="session")
def sweep(tmp_path_factory) -> Path:
    """The sweep's folder of six recordings, trained once per test session (two at a time)."""
    folder = tmp_path_factory.mktemp("sweep")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda job: _train(folder, *job), [(lr, s) for lr in LRS for s in SEEDS]))
    return folder


def _raw(path: Path) -> tuple[Schema, np.ndarray, np.ndarray]:
    """Steps and loss/total of a recording, read record by record (not through the compare code)."""
    schema, steps, values = None, [], []
    for msg in iter_recording(path):
        if isinstance(msg, Schema):
            schema = msg
        elif isinstance(msg, StepChunk):
            steps.append(msg.step)
            values.append(msg.values)
    assert schema is not None
    return schema, np.concatenate(steps), np.concatenate(values)[:, schema.channels.index("loss/total")]


def test_group_means_and_bands_equal_numpy_over_the_recordings(sweep):
    session = CompareSession(resolve_targets([str(sweep)]), diagnose=False)
    session.open()
    assert [r.error for r in session.runs] == [""] * 6
    curves = [run_curve(run, "loss/total", "step") for run in session.runs]
    labels = [dict(run.history.schema.config) for run in session.runs]
    from octa_tui.tui.compare.table import group_labels, groups_of

    groups = groups_of(group_labels(labels, BY_ALL_BUT_SEED))
    assert sorted(groups) == ["lr=0.0003", "lr=0.001"] and all(len(m) == 3 for m in groups.values())
    width = 70
    view = build_chart(curves, width, 16, groups=groups)
    columns = 2 * (width - 9)

    # Independently: every recording read record by record; each step's column from its
    # step number; per group, per column, the mean of the runs' column means and the min/max
    # over all of the group's rows.
    raw = {Path(run.target.path).stem: _raw(Path(run.target.path)) for run in session.runs}
    lo = min(float(s.min()) for _, s, _ in raw.values())
    hi = max(float(s.max()) for _, s, _ in raw.values())
    for label, members in groups.items():
        means = np.full((len(members), columns), np.nan)
        low = np.full(columns, np.inf)
        high = np.full(columns, -np.inf)
        for k, i in enumerate(members):
            _, steps, loss = raw[Path(session.runs[i].target.path).stem]
            col = np.minimum(((steps - lo) / (hi - lo) * columns).astype(int), columns - 1)
            for c in np.unique(col):
                v = loss[col == c].astype(np.float64)
                means[k, c] = v.mean()
                low[c] = min(low[c], v.min())
                high[c] = max(high[c], v.max())
        present = np.isfinite(means).sum(axis=0)
        want_mean = np.where(present > 0, np.nansum(means, axis=0) / np.maximum(present, 1), np.nan)
        got = view.groups[label]
        filled = np.isfinite(want_mean)
        assert filled.sum() == STEPS  # 60 steps over 122 columns: one step per filled column
        np.testing.assert_allclose(got.mean[filled], want_mean[filled], rtol=1e-6)
        np.testing.assert_allclose(got.lo[filled], low[filled], rtol=1e-6)
        np.testing.assert_allclose(got.hi[filled], high[filled], rtol=1e-6)
        assert np.all(np.isnan(got.mean[~filled]))


def test_the_screen_at_80x24_keeps_the_chart_and_exports(sweep, tmp_path):
    session = CompareSession(resolve_targets([str(sweep)]))
    session.open()
    session.start()
    out = tmp_path / "exports"

    async def scenario():
        app = CompareApp(session, CompareState(), export_dir=str(out))
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.3)
            text = screen_text(app)
            chart = app.query_one("#chart")
            table = app.query_one("#runs")
            assert chart.size.height >= 8, text
            assert table.display and table.size.height >= 2, text
            assert "lr0.001-s0" in text and "loss/total" in text
            await pilot.press("g")  # group by everything but the seed
            await pilot.pause(0.3)
            text = screen_text(app)
            assert "lr=0.001 (3 runs, mean)" in text and "lr=0.0003 (3 runs, mean)" in text
            await pilot.press("e", "s")
            await pilot.pause(0.3)
            await pilot.press("down", "down", "enter")
            await pilot.pause(0.2)
        return app.return_value

    try:
        result = asyncio.run(scenario())
    finally:
        session.close()
    assert result == OpenMonitor(3)
    (table_csv,) = out.glob("*.csv")
    rows = list(csv.DictReader(table_csv.open()))
    assert [r["lr"] for r in rows].count("0.001") == 3 and {r["seed"] for r in rows} == {"0", "1", "2"}
    assert all(int(r["steps"]) == STEPS for r in rows)
    (svg,) = out.glob("*.svg")
    assert svg.read_text().lstrip().startswith("<svg")


def test_a_short_terminal_gives_up_the_table_before_the_chart(sweep):
    session = CompareSession(resolve_targets([str(sweep)]), diagnose=False)
    session.open()
    app = CompareApp(session)
    assert app.table_height(50) == 7  # six runs and the header
    assert app.table_height(24, legend=2) == 7  # 80x24: the chart keeps 12 rows
    assert app.table_height(18) == 6  # shorter: the table shrinks (it scrolls), the chart keeps 8
    assert app.table_height(14) == 2  # its header and the selected run; the chart still has 8 rows
    assert app.table_height(13) == 0  # the chart keeps its 8 rows; the table goes
    session.close()


def test_the_command_line_writes_the_run_table(sweep, tmp_path):
    out = tmp_path / "table.csv"
    assert cli.main([str(sweep), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6 and rows[0]["kind"] == "recorded"
    assert cli.main([str(tmp_path / "missing.octa")]) == 2


def test_live_and_recorded_in_one_view_and_a_group_command_acknowledged_per_run(sweep):
    from octa_tui.tui.demo import DemoTrainer, demo_trainer_args

    recording = sorted(sweep.glob("*.octa"))[0]
    trainers = [DemoTrainer(demo_trainer_args(steps=100000, images=16, image_size=32, base_width=4,
                                              extra=["--seed", str(seed), "--lr", "0.001"])) for seed in (0, 1)]
    with trainers[0], trainers[1]:
        for trainer in trainers:
            trainer.start()
        targets = [Target("recorded", path=str(recording))] + [
            Target("live", telemetry=t.telemetry, control=t.control) for t in trainers]
        session = CompareSession(targets, diagnose_every_s=0.5)
        session.open()
        assert [r.error for r in session.runs] == ["", "", ""]
        session.start()

        async def scenario():
            app = CompareApp(session, CompareState(group_by=BY_ALL_BUT_SEED))
            async with app.run_test(size=(120, 40)) as pilot:
                deadline = time.monotonic() + 120
                while not all(len(r.current.steps) >= 3 for r in session.runs[1:]):
                    assert time.monotonic() < deadline, "the live runs sent no steps"
                    await pilot.pause(0.2)
                await pilot.press("down")  # the first live run; its group is both live runs
                await pilot.press("a", "right_square_bracket")
                acks = list(session.acks)
                while any(a.status == "pending" for a in acks):
                    assert time.monotonic() < deadline, "a trainer never answered"
                    await pilot.pause(0.1)
                # The change becomes a fix trial of each run, drawn as a marker on its curve.
                while not all(any(t.step == a.step for t in session.runs[a.number - 1].trials) for a in acks):
                    assert time.monotonic() < deadline, "the changes never became fix trials"
                    await pilot.pause(0.2)
                await pilot.pause(0.6)
                app.refresh_view(force=True)
                markers = [g for g in OUTCOME_GLYPHS.values() if g in app.chart_view.text.plain]
                assert markers, app.chart_view.text.plain
                return acks, screen_text(app)

        try:
            acks, text = asyncio.run(scenario())
            assert sorted(a.number for a in acks) == [2, 3]
            assert all(a.status == "applied" and a.step >= 0 for a in acks), [a.describe() for a in acks]
            for ack in acks:
                assert f"#{ack.number} {ack.label}: set_lr" in ack.describe()
                assert f"applied at step {ack.step}" in ack.describe()
            # Each trainer says, in its own stream, that it applied the change at that step.
            deadline = time.monotonic() + 60
            for ack in acks:
                run = session.runs[ack.number - 1]
                while not any(e.kind == "command_applied" and e.step == ack.step for e in run.current.events):
                    assert time.monotonic() < deadline, f"run {ack.number} never reported the change"
                    time.sleep(0.1)
            assert "recorded" in text and "live" in text
        finally:
            session.close()


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, timeout=30).stdout


def _screen_when(session: str, predicate, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if predicate(screen):
            return screen
        time.sleep(0.3)
    raise AssertionError(f"timed out; the screen was:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed; the real-terminal test needs it")
def test_in_a_real_terminal_a_run_opens_in_its_monitor_and_the_comparison_comes_back(sweep):
    session = f"octa-compare-{uuid.uuid4().hex[:8]}"
    command = f"{sys.executable} -m octa_tui.tui.compare.cli {sweep} --group seed; echo OCTA-EXIT=$?; sleep 60"
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", command)
    try:
        screen = _screen_when(session, lambda s: "lr0.001-s0" in s and "steps" in s, 120)
        assert "compare" in screen and "(3 runs, mean)" in screen
        _tmux("send-keys", "-t", session, "Enter")  # the first run's full monitor, at its end
        screen = _screen_when(session, lambda s: "Loss" in s and "replay" in s, 120)
        _tmux("send-keys", "-t", session, "q")
        screen = _screen_when(session, lambda s: "(3 runs, mean)" in s or "OCTA-EXIT=" in s, 60)
        assert "OCTA-EXIT=" not in screen, "quitting the monitor should come back to the comparison"
        _tmux("send-keys", "-t", session, "q")
        screen = _screen_when(session, lambda s: "OCTA-EXIT=" in s, 60)
        assert "OCTA-EXIT=0" in screen and "Traceback" not in screen
    finally:
        _tmux("kill-session", "-t", session)
