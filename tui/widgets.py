"""Thin widgets: each holds what to draw and passes its size to a pure render function."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

from rich.console import RenderableType
from rich.text import Text
from textual.binding import Binding
from textual.widget import Widget
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from .fit import Part, fit_parts
from .panels import render_verdict

Draw = Callable[[int, int], RenderableType]


class Panel(Widget):
    """A bordered panel whose content is drawn at its current size by a pure function.

    The app calls :meth:`show` with a key that names the data; when the key is unchanged
    nothing is redrawn (the redraw timer calls every panel every tick).
    """

    DEFAULT_CSS = """
    Panel { height: 1fr; width: 1fr; text-wrap: nowrap; text-overflow: clip; }
    """

    def __init__(self, title: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = title
        self._draw: Draw | None = None
        self._key: Hashable = object()

    def show(self, key: Hashable, draw: Draw) -> bool:
        """Set what to draw; refreshes only when ``key`` differs from the last one."""
        if key == self._key:
            return False
        self._key = key
        self._draw = draw
        self.refresh()
        return True

    def render(self) -> RenderableType:
        if self._draw is None:
            return Text("waiting for data...", style="bright_black")
        size = self.content_size
        return self._draw(max(size.width, 1), max(size.height, 1))


class VerdictList(OptionList, inherit_bindings=False):
    """The verdicts, most severe first; the highlighted one is what ``f`` applies.

    Only up/down and page keys move the highlight; home and end stay the replay's.
    """

    BINDINGS = [
        Binding("up", "cursor_up", "Previous verdict", show=False),
        Binding("down", "cursor_down", "Next verdict", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
    ]

    DEFAULT_CSS = """
    VerdictList { height: 1fr; width: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "Verdicts"
        self.verdicts: list = []
        self._shown: tuple | None = None  # nothing shown yet: the first list, even empty, is drawn

    def show_verdicts(self, verdicts: Sequence) -> None:
        """Replace the list, keeping the highlight on the same verdict code when it is still there."""
        verdicts = list(verdicts)
        signature = tuple((v.code, int(v.severity), v.evidence, v.fixes, v.instruction) for v in verdicts)
        if signature == self._shown:
            return
        self._shown = signature
        selected = self.selected_verdict()
        self.verdicts = verdicts
        if not verdicts:
            self.set_options([Option(Text("no warnings: nothing looks wrong so far", style="green"), id="none",
                                     disabled=True)])
            return
        self.set_options([Option(render_verdict(v), id=v.code) for v in verdicts])
        codes = [v.code for v in verdicts]
        self.highlighted = codes.index(selected.code) if selected is not None and selected.code in codes else 0

    def selected_verdict(self):
        """The highlighted verdict, or None."""
        index = self.highlighted
        if index is None or not self.verdicts or index >= len(self.verdicts):
            return None
        return self.verdicts[index]


class KeyBar(Widget):
    """The bottom line: the keys that matter now, most useful first, as many as fit, and
    ``? all keys`` always (the help lists the rest)."""

    DEFAULT_CSS = """
    KeyBar { height: 1; width: 1fr; background: $panel; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.keys: tuple[tuple[str, str], ...] = ()

    def show_keys(self, keys: Sequence[tuple[str, str]]) -> None:
        """Show these (key, what it does) pairs, most useful first."""
        keys = tuple(keys)
        if keys != self.keys:
            self.keys = keys
            self.refresh()

    def render(self) -> RenderableType:
        parts = [Part(" ? all keys", "bold", keep=len(self.keys) + 2, gap="")]
        for i, (key, description) in enumerate(self.keys):
            text = Text.assemble((key, "bold cyan"), " ", description)
            parts.append(Part(text.plain, keep=len(self.keys) - i, rich=text))
        return fit_parts(parts, self.content_size.width or 80)
