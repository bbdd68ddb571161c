"""Lines that fit their width without cutting a word: parts are hidden whole, by rule.

A panel line is made of parts (``■ dice 0.342``, ``explosions 0 steps``, ``(epoch 11)``).
When the line is too long for its cell, cropping it at the edge leaves half a word on
screen (``explosio``, ``(epo``), which reads as a different word or a broken number.
:func:`fit_parts` instead leaves out whole parts, the least important first (each part says
how long it is kept with ``keep``), and keeps the rest in their order. Only when even the
most important part is wider than the cell is it shortened, at a word boundary where it
has one, with an ``…`` that says something was cut.

:func:`abbreviate` is the one rule for names that must fit a column (layer names):
the start of the name and an ``…``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

ELLIPSIS = "…"


@dataclass(frozen=True)
class Part:
    """One piece of a line: its text, its style, and how long it is kept when the line is
    too narrow (higher ``keep`` stays longer; among equals the later part goes first).
    ``gap`` is the text put before it when a part precedes it on the line."""

    text: str
    style: str = ""
    keep: int = 0
    gap: str = "  "
    rich: Text | None = None  # drawn instead of ``text`` (same characters) when it has styles of its own


def fit_parts(parts: Sequence[Part], width: int) -> Text:
    """The parts that fit ``width`` cells, whole, in their order (see the module doc)."""
    width = max(int(width), 0)
    chosen = [p for p in parts if p.text]
    while chosen and _length(chosen) > width:
        if len(chosen) == 1:
            only = chosen[0]
            chosen = [Part(shorten(only.text, width), only.style, only.keep)]
            break
        lowest = min(p.keep for p in chosen)
        drop = max(i for i, p in enumerate(chosen) if p.keep == lowest)
        del chosen[drop]
    out = Text(no_wrap=True, overflow="crop")
    for i, part in enumerate(chosen):
        if i:
            out.append(part.gap)
        if part.rich is not None and part.rich.plain == part.text:
            out.append_text(part.rich)
        else:
            out.append(part.text, style=part.style)
    return out


def _length(parts: Sequence[Part]) -> int:
    return sum(len(p.text) for p in parts) + sum(len(p.gap) for p in parts[1:])


def shorten(text: str, width: int) -> str:
    """``text`` in at most ``width`` cells: whole, or cut after its last whole word that
    fits (a single long word: its start) followed by ``…``."""
    width = max(int(width), 0)
    if len(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head = text[: width - 1]
    space = head.rstrip().rfind(" ")
    if space > 0 and text[width - 1] != " ":
        head = head[:space]
    return head.rstrip() + ELLIPSIS


def abbreviate(name: str, width: int) -> str:
    """A name in at most ``width`` cells: whole, or its start and ``…`` (``bottlene…``)."""
    width = max(int(width), 0)
    if len(name) <= width:
        return name
    if width <= 1:
        return ELLIPSIS[:width]
    return name[: width - 1] + ELLIPSIS


def wrap_words(text: str, width: int) -> list[str]:
    """``text`` broken into lines of at most ``width`` cells at spaces (a word longer than a
    line is split, never lost)."""
    width = max(int(width), 1)
    lines: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > width:
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:width])
            word = word[width:]
        if not current:
            current = word
        elif len(current) + 1 + len(word) <= width:
            current += " " + word
        else:
            lines.append(current)
            current = word
    if current or not lines:
        lines.append(current)
    return lines
