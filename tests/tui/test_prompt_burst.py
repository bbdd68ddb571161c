"""GIVEN keys that arrive in one burst (a slow SSH link delivers what was typed all at once)
WHEN the first opens the lr prompt THEN the rest are typed into the prompt's field in order,
exactly as when typed one by one, instead of running as monitor keys (``3`` hiding a panel,
``c`` opening another prompt)."""

from __future__ import annotations

import asyncio
import time

import pytest
from seeded import seeded_history
from textual import events

from octa_tui.protocol.messages import Reply
from octa_tui.tui.app import make_app
from octa_tui.tui.screens import PromptScreen
from octa_tui.tui.sources import MemorySource

pytestmark = pytest.mark.timeout(60)


def _keys(*names: str) -> list[events.Key]:
    return [events.Key(name, name if len(name) == 1 else None) for name in names]


async def _wait(pilot, condition, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await pilot.pause(0.05)


def _typed(keys: list[str], burst: bool) -> tuple[str, list, dict]:
    """What the prompt's field holds after ``r`` and ``keys`` (and what was sent)."""
    sent = []

    def replies(command):
        sent.append(command)
        return Reply(command.request_id, "ok", step=600)

    app = make_app(MemorySource(seeded_history(600), replies=replies), diagnose_factory=None)

    async def run() -> tuple[str, dict]:
        async with app.run_test(size=(100, 30)) as pilot:
            await _wait(pilot, lambda: app.opened)
            shown = {pid: app.panel_visible(pid) for pid in ("loss", "gradients", "verdicts", "optimizer")}
            if burst:
                for key in _keys("r", *keys):
                    app.post_message(key)
                # the prompt takes the held keys once its field has the focus
                await _wait(pilot, lambda: isinstance(app.screen, PromptScreen) and app.typeahead.held is None or sent)
            else:
                await pilot.press("r")
                await _wait(pilot, lambda: isinstance(app.screen, PromptScreen))
                await pilot.pause(0.3)
                for key in keys:
                    await pilot.press(key)
            await pilot.pause(0.5)
            if "enter" in keys:
                await _wait(pilot, lambda: sent)
            value = app.screen.query_one("#prompt-input").value if isinstance(app.screen, PromptScreen) else ""
            after = {pid: app.panel_visible(pid) for pid in shown}
            return value, {pid: (shown[pid], after[pid]) for pid in shown}

    value, panels = asyncio.run(run())
    return value, sent, panels


def test_a_burst_types_into_the_prompt_as_slow_typing_does():
    keys = ["backspace", "backspace", "a", "b", "c"]
    burst, _, _ = _typed(keys, burst=True)
    slow, _, _ = _typed(keys, burst=False)
    assert burst == slow and "abc" in burst


def test_a_burst_with_digits_and_enter_sends_the_typed_lr_and_hides_no_panel():
    value, sent, panels = _typed(["backspace"] * 10 + list("3e-4") + ["enter"], burst=True)
    assert [(c.op, c.args["lr"]) for c in sent] == [("set_lr", pytest.approx(3e-4))]
    assert all(before == after for before, after in panels.values()), panels  # "3" did not toggle a panel
