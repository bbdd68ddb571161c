"""The current screen of a running test app as plain text (what a person would read)."""

from __future__ import annotations

import io

from rich.console import Console


def screen_text(app) -> str:
    """Render the app's screen as lines of plain text, at the app's size."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system="truecolor",
                      record=True, legacy_windows=False, safe_box=False)
    screen_render = app.screen._compositor.render_update(
        full=True, screen_stack=app.app._background_screens, simplify=True
    )
    console.print(screen_render)
    return console.export_text(styles=False)
