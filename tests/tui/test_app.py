"""GIVEN the monitor over a seeded run in memory WHEN a person looks and presses keys THEN the
panels show the run, keys that need a trainer are greyed without one, every key is in the
help, and each command shows its fate (applied at step N, or rejected with the reason)."""

from __future__ import annotations

import asyncio
import functools
import time

import pytest
from screen_text import screen_text
from seeded import seeded_history

from octa_tui.protocol.messages import Command, Reply
from octa_tui.tui.app import CONTROL_ACTIONS, REPLAY_ACTIONS, MonitorApp, make_app
from octa_tui.tui.screens import ConfirmScreen, HelpScreen, PromptScreen
from octa_tui.tui.sources import MemorySource

pytestmark = pytest.mark.timeout(60)


def run_async(test):
    """Run an async test body on a fresh event loop (no async pytest plugin needed)."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


async def wait_for(pilot, condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.05)


class Trainer:
    """Answers commands the way a trainer would: ok at the next step, or an error."""

    def __init__(self, reject: str = "") -> None:
        self.reject = reject
        self.received: list[Command] = []

    def __call__(self, command: Command) -> Reply:
        self.received.append(command)
        if self.reject:
            return Reply(command.request_id, "error", reason=self.reject, step=600)
        return Reply(command.request_id, "ok", step=600 + len(self.received))


def app_with(trainer: Trainer | None = None, **options) -> MonitorApp:
    return make_app(MemorySource(seeded_history(600), replies=trainer), **options)


@run_async
async def test_the_main_screen_shows_every_panel_at_200x50():
    app = app_with(Trainer())
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.opened and app.diagnosis is not None)
        await pilot.pause(0.3)
        text = screen_text(app)
    for title in ("Loss", "Gradients", "Verdicts", "Optimizer", "Outputs", "Event log", "Diagnosis matrix",
                  "Dataset", "Prediction preview"):
        assert title in text, title
    assert "■ total 0.382" in text and "val Dice" in text and "shallow/deep" in text
    assert "run 01234567" in text and "UNet 1.9M params" in text and "step 599" in text
    assert "WARN" in text, "the seeded plateau should be diagnosed"


@run_async
async def test_at_80x24_the_essential_panels_fit_and_others_can_be_toggled():
    app = app_with(Trainer())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        assert app.panel_visible("loss") and app.panel_visible("verdicts")
        assert not app.panel_visible("dataset")
        await pilot.press("8")
        assert app.panel_visible("dataset")
        await pilot.press("1")
        assert not app.panel_visible("loss")


@run_async
async def test_trainer_keys_are_greyed_and_send_nothing_without_a_trainer():
    source = MemorySource(seeded_history(600))
    app = make_app(source)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        for action in CONTROL_ACTIONS:
            assert app.check_action(action, ()) is None, action
        assert app.check_action("play_pause", ()) is False
        await pilot.press("right_square_bracket", "k", "space")
        await pilot.pause(0.2)
        assert app.commands.entries == []


@run_async
async def test_the_help_screen_lists_every_binding():
    app = app_with(Trainer())
    async with app.run_test(size=(120, 50)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = screen_text(app)
        for binding in MonitorApp.BINDINGS:
            if binding.action in REPLAY_ACTIONS:
                assert binding.description not in text, f"replay-only key listed live: {binding.description}"
            else:
                assert binding.description in text, binding.description
        assert "Select a verdict" in text and "up/down" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen))


@run_async
async def test_a_rejected_command_shows_the_trainers_reason():
    app = app_with(Trainer(reject="lr is locked"))
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.commands.entries and app.commands.entries[-1].status == "rejected")
        await pilot.pause(0.3)
        assert "set_lr lr=0.00100 -> rejected: lr is locked" in screen_text(app)


@run_async
async def test_lr_x2_is_applied_at_a_step_and_undo_sends_the_old_value():
    trainer = Trainer()
    app = app_with(trainer)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.commands.entries and app.commands.entries[-1].status == "applied")
        assert trainer.received[0].op == "set_lr" and trainer.received[0].args["lr"] == pytest.approx(1e-3)
        await pilot.pause(0.3)
        assert "applied at step 601" in screen_text(app)
        await pilot.press("u")
        await wait_for(pilot, lambda: len(trainer.received) == 2)
        assert trainer.received[1].args["lr"] == pytest.approx(5e-4)


@run_async
async def test_the_lr_prompt_refuses_a_typo_in_place_then_sends_the_value():
    trainer = Trainer()
    app = app_with(trainer)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("Input").value = "fast"
        await pilot.press("enter")
        await pilot.pause(0.1)
        assert isinstance(app.screen, PromptScreen) and "not a number" in screen_text(app)
        app.screen.query_one("Input").value = "2e-4"
        await pilot.press("enter")
        await wait_for(pilot, lambda: trainer.received)
        assert trainer.received[0].args == {"lr": pytest.approx(2e-4)}


@run_async
async def test_stopping_the_trainer_asks_first():
    trainer = Trainer()
    app = app_with(trainer)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("S")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await pilot.pause(0.2)
        assert trainer.received == []
        await pilot.press("S", "y")
        await wait_for(pilot, lambda: trainer.received)
        assert trainer.received[0].op == "stop"


@run_async
async def test_f_applies_the_selected_verdicts_fix():
    trainer = Trainer()
    # a run whose last steps exploded: the explosion verdict has a fix (clip and a lower lr)
    history = seeded_history(600)
    over, total = history.schema.index("gradstat/n_over_bound"), history.schema.index("gradstat/total_norm")
    history.steps.values[590:600, over] = 20
    history.steps.values[590:600, total] = 1e4
    app = make_app(MemorySource(history, replies=trainer))
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.diagnosis is not None and app.diagnosis.verdicts)
        verdicts = app.diagnosis.verdicts
        with_fix = next(i for i, v in enumerate(verdicts) if v.fixes)
        app.query_one("#verdicts").highlighted = with_fix
        await pilot.press("f")
        await wait_for(pilot, lambda: len(trainer.received) == len(verdicts[with_fix].fixes))
        assert [c.op for c in trainer.received] == [c.op for c in verdicts[with_fix].fixes]


@run_async
async def test_zoom_cycles_the_time_window():
    app = app_with(Trainer())
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        await pilot.press("z")
        await pilot.pause(0.3)
        assert app.window_steps == 10_000 and "last 10,000 steps" in screen_text(app)


@run_async
async def test_a_source_warning_that_appears_later_goes_to_the_event_log_once():
    # GIVEN a source that starts without warnings and later reports one (a spill file that
    # could not grow), as a live source does
    from dataclasses import replace

    class Warning(MemorySource):
        warning = ""

        def status(self):
            base = super().status()
            return replace(base, warnings=(self.warning,)) if self.warning else base

    source = Warning(seeded_history(600))
    app = make_app(source, refresh_hz=20)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        assert not [n for n in app.notes if "kept in memory" in n[1]]
        # WHEN the warning appears and the header refreshes many times
        source.warning = "steps now kept in memory: the spill file cannot grow (No space left on device)"
        await pilot.pause(0.5)
        # THEN the event log holds it exactly once
        assert [n[1] for n in app.notes].count(source.warning) == 1


@run_async
async def test_a_warning_verdict_goes_to_the_event_log_with_its_step_when_it_appears_and_when_it_clears():
    # GIVEN a live run whose engine names an explosion for a while, then nothing (a burst in the
    # first steps: the verdicts panel has moved on by the time a person looks)
    from seeded import seeded_chunk

    from octa_tui.diagnosis import Severity, Verdict

    history = seeded_history(100, lr_change_at=None)
    chunks = [[seeded_chunk(history.schema, 20, seed=i, start=100 + 20 * i)] for i in range(4)]
    explosion = Verdict("gradient_explosion", Severity.WARN, "Gradient explosion", "max 1870", "")
    script = iter([[explosion], [explosion], [], []])
    shown: list[list] = []

    def feed():
        # each batch arrives once the engine has judged the one before (diagnosis has its own worker)
        for i, chunk in enumerate(chunks):
            deadline = time.monotonic() + 120
            while len(shown) <= i and time.monotonic() < deadline:
                time.sleep(0.01)
            yield chunk

    def factory(live: bool):
        def diagnose(h):
            shown.append(next(script, []))
            return shown[-1], None
        return diagnose

    app = make_app(MemorySource(history, feed=feed()), diagnose_factory=factory, verdict_interval_s=0.0)
    async with app.run_test(size=(160, 40)) as pilot:
        await wait_for(pilot, lambda: len(shown) >= 4 and any("cleared" in n[1] for n in app.notes))
        notes = [n[1] for n in app.notes]
    # THEN the log says when it appeared and when it cleared, once each, with the step
    appeared = [n for n in notes if n.endswith("WARN Gradient explosion")]
    cleared = [n for n in notes if n.endswith("cleared: Gradient explosion")]
    assert len(appeared) == 1 and len(cleared) == 1, notes
    assert appeared[0].startswith("step ") and cleared[0].startswith("step ")
    assert int(appeared[0].split()[1].rstrip(":").replace(",", "")) < int(cleared[0].split()[1].rstrip(":").replace(",", ""))


@run_async
async def test_keys_for_loss_settings_a_run_does_not_have_are_not_offered():
    # GIVEN a heatmap run (MSE: no Dice weight, no pos_weight) with a trainer to steer
    from dataclasses import replace

    import numpy as np
    from seeded import seeded_schema

    from octa_tui.protocol.messages import StepChunk
    from octa_tui.protocol.run import RunHistory

    schema = replace(seeded_schema(), task="heatmap", loss=("total", "region", "affinity"),
                     opt=("lr", "clip", "update_ratio"), config={"loss": "mse"})
    history = RunHistory(schema)
    n = 20
    values = np.full((n, schema.width), 0.1, dtype=np.float32)
    history.add(StepChunk(schema.run_id, np.arange(n, dtype=np.uint64), np.arange(n, dtype=np.int64),
                          np.zeros(n, dtype=np.int32), np.arange(n, dtype=np.float64), values))
    app = make_app(MemorySource(history, replies=Trainer()))
    def footer() -> str:
        return screen_text(app).splitlines()[-1]

    async with app.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: app.opened and "lr x2" in footer())
        # THEN the Dice and pos_weight keys are neither shown nor live; the lr and clip keys are
        assert app.check_action("dice_up", ()) is False and app.check_action("prompt_pos_weight", ()) is False
        assert app.check_action("lr_up", ()) is True and app.check_action("prompt_clip", ()) is True
        assert "Dice +" not in footer() and "pos_weight" not in footer(), footer()
        rows = {description: when for _, description, when in app.binding_rows()}
        assert "(not this run)" in rows["pos_weight"]
    # and a segmentation run still offers them
    seg = app_with(Trainer())
    async with seg.run_test(size=(200, 50)) as pilot:
        await wait_for(pilot, lambda: seg.opened)
        assert seg.check_action("dice_up", ()) is True and seg.check_action("prompt_pos_weight", ()) is True


@run_async
async def test_the_help_lists_the_keys_that_work_now_first_and_no_replay_keys_live():
    # GIVEN a monitor without a trainer at 100x30 (the keys that need one do not work)
    app = app_with(None)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.opened)
        rows = app.binding_rows()
        whens = [when for _, _, when in rows]
        descriptions = [description for _, description, _ in rows]
        # THEN the keys that work now come first, then the verdict selection and the panel
        # toggles, and only then the keys that need a trainer ("not now"); no replay key at all
        first_not_now = next(i for i, when in enumerate(whens) if "not now" in when)
        assert all("not now" not in when for when in whens[:first_not_now])
        assert descriptions.index("Select a verdict (f applies its fix)") < first_not_now
        assert descriptions.index("Toggle the Loss panel") < first_not_now
        assert not any(d in descriptions for d in ("Play/pause", "Speed", "Next verdict", "Next event"))
        # and at 100x30 the help screen shows the toggles without scrolling
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        await pilot.pause(0.2)
        assert "Toggle the Loss panel" in screen_text(app)


@run_async
async def test_the_key_bar_shows_the_keys_that_matter_now_at_80_columns():
    # GIVEN a live trainer at 80x24
    app = app_with(Trainer())
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.opened and app.diagnosis is not None)
        await pilot.pause(0.3)
        bar = screen_text(app).splitlines()[-1]
        # THEN pause, the fix of the selected verdict and help are on it, nothing is cut
        assert "space Pause" in bar and "f Apply fix" in bar and "? all keys" in bar, bar
        assert "u Undo" not in bar, "nothing to undo yet"
        assert bar.rstrip().endswith(tuple(desc for _, desc in app.key_bar_keys())), bar
        # WHEN a change was applied THEN undo is offered too
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: app.commands.entries and app.commands.entries[-1].status == "applied")
        await pilot.pause(0.3)
        assert "u Undo" in screen_text(app).splitlines()[-1]


@run_async
async def test_a_run_with_no_verdict_says_nothing_looks_wrong():
    app = app_with(Trainer(), diagnose_factory=lambda live: (lambda history: ([], None)))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app.diagnosis is not None)
        await pilot.pause(0.3)
        assert "nothing looks wrong" in screen_text(app)
