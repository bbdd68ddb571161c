"""GIVEN a real trainer subprocess on small synthetic data WHEN the monitor follows it and a
key is pressed THEN the trainer's lr changes at the step the event log names, and the
trainer is stopped afterwards (no process left behind)."""

from __future__ import annotations

import asyncio
import time

import pytest
from screen_text import screen_text

from octa_tui.protocol import channels as ch
from octa_tui.tui.app import make_app
from octa_tui.tui.demo import DemoTrainer, demo_trainer_args
from octa_tui.tui.sources import LiveSource

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_a_key_press_changes_the_trainers_lr_at_the_step_shown(tmp_path):
    args = demo_trainer_args(steps=3000, images=16, image_size=32, base_width=8)
    with DemoTrainer(args, run_dir=str(tmp_path)) as trainer:
        trainer.start()
        source = LiveSource(trainer.telemetry, trainer.control)

        async def scenario() -> int:
            app = make_app(source)
            async with app.run_test(size=(200, 50)) as pilot:
                deadline = time.monotonic() + 120
                while not (app.opened and source.history is not None and len(source.history.steps) >= 3):
                    assert time.monotonic() < deadline, "no steps arrived from the trainer"
                    await pilot.pause(0.1)
                lr_before = float(source.history.steps.values[-1, source.history.schema.index(ch.OPT_LR)])
                await pilot.press("right_square_bracket")
                while not (app.commands.entries and app.commands.entries[-1].status != "pending"):
                    assert time.monotonic() < deadline, "the trainer never answered"
                    await pilot.pause(0.1)
                entry = app.commands.entries[-1]
                assert entry.status == "applied", entry.describe()
                history = source.history
                lr_col = history.schema.index(ch.OPT_LR)
                while int(history.steps.step[-1]) < entry.step:
                    assert time.monotonic() < deadline
                    await pilot.pause(0.1)
                await pilot.pause(0.5)
                steps = history.steps.step
                after = history.steps.values[steps >= entry.step, lr_col]
                before = history.steps.values[steps < entry.step, lr_col]
                assert after[0] == pytest.approx(2 * lr_before, rel=1e-5)
                assert before[-1] == pytest.approx(lr_before, rel=1e-5)
                # The event log redraws on the UI timer: give it a few frames on a busy machine.
                expected = f"applied at step {entry.step}"
                while expected not in screen_text(app):
                    assert time.monotonic() < deadline, f"the event log never showed {expected!r}"
                    await pilot.pause(0.2)
            return trainer.pid

        pid = asyncio.run(scenario())
        assert trainer.running()
    assert not trainer.running(), f"trainer {pid} is still running"
