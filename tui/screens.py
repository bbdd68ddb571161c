"""Modal screens: the help screen, a prompt for an exact value, and a yes/no confirmation."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.table import Table
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from ..protocol.messages import Command
from .control import CommandInputError


def bindings_table(rows: Sequence[tuple[str, str, str]]) -> Table:
    """A table of (key, what it does, when it is available)."""
    table = Table(box=None, padding=(0, 2), header_style="bold")
    table.add_column("key", style="bold cyan", no_wrap=True)
    table.add_column("does")
    table.add_column("available", style="bright_black")
    for key, description, availability in rows:
        table.add_row(key, description, availability)
    return table


class HelpScreen(ModalScreen[None]):
    """Every key of the monitor, what it does and when it works."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close help"),
        Binding("question_mark", "dismiss", "Close help"),
        Binding("q", "dismiss", "Close help", show=False),
    ]

    def __init__(self, rows: Sequence[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = list(rows)

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Label(Text("octa-tui keys  (esc or ? closes)", style="bold"))
            with VerticalScroll():
                yield Static(bindings_table(self.rows), id="help-table")


class PromptScreen(ModalScreen[Command | None]):
    """Asks for one value and turns it into a validated command; the error shows in place.

    ``parse`` builds the command from the typed text (raising CommandInputError with what
    would be accepted); the screen is dismissed with the command only once it is valid.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]
    AUTO_FOCUS = "#prompt-input"

    def __init__(self, question: str, parse: Callable[[str], Command], placeholder: str = "", value: str = "") -> None:
        super().__init__()
        self.question = question
        self.parse = parse
        self.placeholder = placeholder
        self.initial = value
        self._focus_settled = False

    def compose(self) -> ComposeResult:
        with Vertical(id="prompt-box"):
            yield Label(self.question, id="prompt-question")
            yield Input(value=self.initial, placeholder=self.placeholder, id="prompt-input")
            yield Label("enter sends, esc cancels", id="prompt-error")

    def on_mount(self) -> None:
        self.call_after_refresh(self._type_ahead)

    def _type_ahead(self) -> None:
        """Keys typed after the one that opened the prompt, before the field could take them
        (a burst, as over a slow SSH link: the app held them), go into the field in order,
        once the field has the focus (and its value is selected, as focusing it does): the
        same keys typed one by one would meet it so."""
        field = self.query_one("#prompt-input", Input)
        if not field.has_focus:
            field.focus()
            self.call_after_refresh(self._type_ahead)
            return
        if not self._focus_settled:  # the field's own focus handler selects its value: let it run first
            self._focus_settled = True
            self.call_after_refresh(self._type_ahead)
            return
        take = getattr(self.app, "take_typeahead", None)
        self.type_keys(take() if take is not None else [])

    def type_keys(self, keys: Sequence[events.Key]) -> None:
        """Type ``keys`` into the field as if pressed there: characters, backspace, enter, escape."""
        field = self.query_one("#prompt-input", Input)
        for key in keys:
            if self.is_attached is False or self.app.screen is not self:
                return  # submitted or cancelled by an earlier key
            if key.key == "escape":
                self.action_cancel()
            elif key.key == "enter":
                self.on_input_submitted(Input.Submitted(field, field.value))
            elif key.key == "backspace":
                field.action_delete_left()
            elif key.is_printable and key.character:
                if field.selection.is_empty:
                    field.insert_text_at_cursor(key.character)
                else:
                    field.replace(key.character, *field.selection)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            command = self.parse(event.value)
        except CommandInputError as err:
            self.query_one("#prompt-error", Label).update(Text(str(err), style="bold red"))
            return
        self.dismiss(command)

    def action_cancel(self) -> None:
        """Close without sending anything."""
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question for actions that cannot be undone (stopping the trainer)."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n", "answer(False)", "No"),
        Binding("escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Label(self.question, id="confirm-question")
            yield Label(Text("y: yes    n / esc: no", style="bold"))

    def action_answer(self, yes: bool) -> None:
        """Close with the answer."""
        self.dismiss(yes)
