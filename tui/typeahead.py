"""Keys typed ahead into a prompt that is still opening.

Over a slow SSH link the keys a person typed arrive together: ``r`` (open the lr prompt),
then ``BSpace BSpace 3 e - 4 Enter``. The prompt's field cannot take them until it is on
screen with the focus, so without care they run as monitor keys (``3`` hides a panel, ``c``
opens another prompt). :class:`TypeAhead` holds every key that follows a prompt key until the
prompt takes them (:meth:`take`, which the prompt calls once its field has the focus) and
types them in order; if no prompt opens, they are let go as the keys they are.
"""

from __future__ import annotations

from typing import Any

from textual import events

PROMPT_KEYS = {"r": "prompt_lr", "w": "prompt_pos_weight", "c": "prompt_clip"}
HOLD_S = 2.0  # how long keys are held for a prompt that has not opened yet (renewed while it opens)


class TypeAhead:
    """Holds the keys that follow a prompt key, for the prompt (see the module doc)."""

    def __init__(self, app: Any, prompt_type: type) -> None:
        self.app = app
        self.prompt_type = prompt_type
        self.held: list[events.Key] | None = None  # None: not holding
        self._opener: events.Key | None = None

    def intercept(self, event: events.Key) -> bool:
        """Whether ``event`` is held (the app must not run it now)."""
        if event is self._opener:
            return False  # the key that opens the prompt passes (it comes back as it bubbles)
        if self.held is not None:
            self.held.append(event)
            return True
        action = PROMPT_KEYS.get(event.key)
        app = self.app
        if action is not None and app.screen is app.screen_stack[0] and app.check_action(action, ()) is True:
            self.held, self._opener = [], event
            app.set_timer(HOLD_S, self._let_go)
        return False

    def take(self) -> list[events.Key]:
        """The keys held so far (the prompt types them in); stops holding."""
        keys, self.held, self._opener = self.held or [], None, None
        return keys

    def _let_go(self) -> None:
        """No prompt took the held keys: they run as the keys they are (or, while the prompt
        is still opening on a loaded machine, wait on)."""
        if self.held is None:
            return
        if isinstance(self.app.screen, self.prompt_type):
            self.app.set_timer(HOLD_S, self._let_go)
            return
        for key in self.take():
            self.app.post_message(events.Key(key.key, key.character))
