"""The comparison's two pop-ups: pick a channel, and type a number (an lr for the runs)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList


class ChannelScreen(ModalScreen[str | None]):
    """A list of every channel the runs have; Enter picks one, Escape keeps the current."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    ChannelScreen { align: center middle; }
    ChannelScreen > Vertical { width: 60; max-width: 90%; height: 80%; border: round $accent; background: $surface; }
    ChannelScreen OptionList { height: 1fr; }
    """

    def __init__(self, channels: Sequence[str], current: str) -> None:
        super().__init__()
        self.channels = list(channels)
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("channel to compare (Enter picks, Esc cancels)")
            yield OptionList(*self.channels, id="channels")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        if self.current in self.channels:
            options.highlighted = self.channels.index(self.current)
        options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.channels[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


class NumberScreen(ModalScreen[float | None]):
    """One question and a number typed in; a typo is said at the prompt, nothing is sent."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    DEFAULT_CSS = """
    NumberScreen { align: center middle; }
    NumberScreen > Vertical { width: 64; max-width: 95%; height: auto; border: round $accent; background: $surface; }
    NumberScreen #error { color: $error; }
    """

    def __init__(self, question: str, placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(placeholder=self.placeholder, id="number")
            yield Label("", id="error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        try:
            value = float(text)
        except ValueError:
            self.query_one("#error", Label).update(f"{text!r} is not a number; type e.g. 1e-4")
            return
        if not math.isfinite(value) or value <= 0:
            self.query_one("#error", Label).update(f"{text!r}: type a positive finite number")
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
