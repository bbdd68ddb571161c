"""Which of the monitor's keys work now, which matter now, and how the help lists them.

The app asks this module three things: whether a key's action may run (``availability``:
True, None = greyed out, False = hidden), which keys the key bar shows now (``key_bar``),
and the help screen's rows (``help_rows``). Each reads only the app's state (its source,
whether it opened, the selected verdict, the command log); nothing here draws or sends.
"""

from __future__ import annotations

from typing import Any

from textual.binding import Binding

from ..protocol import channels as ch
from .replay_bar import REPLAY_ACTIONS

CONTROL_ACTIONS = frozenset(
    {"lr_up", "lr_down", "prompt_lr", "dice_up", "dice_down", "prompt_pos_weight", "prompt_clip", "pause_trainer",
     "checkpoint", "apply_fix", "undo_change", "stop_trainer"}
)
# Keys that change a loss setting: offered only when the run reports that setting.
LOSS_SETTING_ACTIONS = {"dice_up": ch.OPT_DICE_WEIGHT, "dice_down": ch.OPT_DICE_WEIGHT,
                        "prompt_pos_weight": ch.OPT_POS_WEIGHT}
# The key bar's order: the keys a person reaches for first (those that apply now are shown).
KEY_BAR_ORDER = ("quit_monitor", "pause_trainer", "apply_fix", "undo_change", "play_pause", "replay_speed",
                 "next_verdict", "next_event", "lr_up", "lr_down", "prompt_lr", "checkpoint", "zoom", "prompt_clip",
                 "dice_up", "dice_down", "prompt_pos_weight", "stop_trainer")
VERDICT_KEYS = (("up/down", "Select a verdict (f applies its fix)"),)


def run_has(app: Any, channel: str) -> bool:
    """Whether the run reports ``channel`` (True before its schema is known)."""
    history = app.source.history
    return history is None or history.schema.has(channel)


def can_control(app: Any) -> bool:
    """Whether commands can go to a trainer now."""
    return bool(app.source.can_control and app.opened and not app.failure)


def availability(app: Any, action: str) -> bool | None:
    """Trainer keys are greyed out (None) without a trainer (or in replay); replay keys are
    hidden (False) when not replaying, and so are keys for a loss setting the run does not
    report (Dice weight, pos_weight of a heatmap run)."""
    if action in CONTROL_ACTIONS:
        if action in LOSS_SETTING_ACTIONS and not run_has(app, LOSS_SETTING_ACTIONS[action]):
            return False  # e.g. a heatmap run's MSE has no Dice weight or pos_weight to change
        return True if can_control(app) else None
    if action in REPLAY_ACTIONS:
        return app.source.kind == "replay" and app.opened
    return True


def _binding_for(app: Any, action: str) -> Binding:
    return next(b for b in app.BINDINGS if isinstance(b, Binding) and b.action == action)


def useful_now(app: Any, action: str) -> bool:
    """Whether a key is worth a place on the key bar now (it works, and does something)."""
    if availability(app, action) is not True:
        return False
    if action == "apply_fix":
        verdicts = app._widgets.get("verdicts") if app._widgets else None
        return verdicts is not None and verdicts.selected_verdict() is not None
    if action == "undo_change":
        entry = app.commands.undoable()
        return entry is not None and entry.restore is not None
    return True


def key_bar(app: Any) -> list[tuple[str, str]]:
    """(key, what it does) of the keys that work and matter now, most useful first."""
    keys = []
    for action in KEY_BAR_ORDER:
        if useful_now(app, action):
            binding = _binding_for(app, action)
            description = binding.description
            if action == "pause_trainer":
                description = "Resume" if app.source.status().trainer_state == "paused" else "Pause"
            keys.append((app.get_key_display(binding), description))
    return keys


def help_rows(app: Any) -> list[tuple[str, str, str]]:
    """(key, description, availability) for the help screen: the keys that work now first,
    then the verdict selection and the panel toggles, then the keys that need a trainer when
    there is none. Replay keys are listed only in a replay."""
    now, toggles, later = [], [], []
    replay = app.source.kind == "replay"
    for binding in app.BINDINGS:
        assert isinstance(binding, Binding)
        action = binding.action.split("(")[0]
        row_key = app.get_key_display(binding)
        if action in REPLAY_ACTIONS:
            if replay:
                now.append((row_key, binding.description, "in replay"))
            continue
        if action == "toggle_panel":
            toggles.append((row_key, binding.description, "always"))
        elif action in LOSS_SETTING_ACTIONS and not run_has(app, LOSS_SETTING_ACTIONS[action]):
            later.append((row_key, binding.description, "with a trainer whose loss has this setting  (not this run)"))
        elif action in CONTROL_ACTIONS:
            if can_control(app):
                now.append((row_key, binding.description, "with a trainer"))
            else:
                later.append((row_key, binding.description, "with a trainer  (not now)"))
        else:
            now.append((row_key, binding.description, "always"))
    verdict_rows = [(key, description, "in the Verdicts panel") for key, description in VERDICT_KEYS]
    return now + verdict_rows + toggles + later
