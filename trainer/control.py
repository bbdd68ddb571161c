"""Commands from the monitor, applied on the training thread at a step boundary.

The loop calls :meth:`Controller.poll` at the top of every step, before the learning rate
for that step is written. Each command is checked against what this run can do, applied,
answered (ok with the step at which it takes effect, i.e. the next step to run; or error
with the reason and nothing changed) and logged as a ``command_applied`` event in the
stream and the recording. While paused, ``poll`` keeps heartbeating and answering
commands until ``resume`` or ``stop``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .probe import Probe

PAUSE_POLL_S = 0.02


class ControlError(ValueError):
    """A command this run cannot apply now; the message says why (nothing was changed)."""


@dataclass
class LrSchedule:
    """Step decay (StepLR: ``gamma`` every ``step_size`` epochs) times a live override.

    The effective lr of group ``i`` at ``epoch`` is ``base_lrs[i] * gamma ** (epoch //
    step_size) * scale``: ``set_lr`` changes ``scale``, so the schedule keeps decaying from
    the new value instead of overwriting it at the next step (timm's ``lr_scale``).
    """

    base_lrs: tuple[float, ...]
    step_size: int
    gamma: float
    scale: float = 1.0

    def decay(self, epoch: int) -> float:
        """The schedule's factor at ``epoch``, without the override."""
        return self.gamma ** (epoch // self.step_size)

    def lr(self, epoch: int, group: int = 0) -> float:
        """Effective lr of ``group`` at ``epoch``."""
        return self.base_lrs[group] * self.decay(epoch) * self.scale

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Write every group's effective lr for ``epoch``; returns group 0's."""
        for index, group in enumerate(optimizer.param_groups):
            group["lr"] = self.lr(epoch, index)
        return self.lr(epoch)

    def scale_for(self, lr: float, epoch: int) -> float:
        """The override that makes group 0's effective lr equal ``lr`` at ``epoch``."""
        return lr / (self.base_lrs[0] * self.decay(epoch))


class Controller:
    """Applies validated commands to one run: lr, loss weights, pos_weight, clip, pause, stop.

    ``probe`` supplies the link, the step counter and the event stream; the controller
    takes over its command handling. ``schedule`` composes with ``set_lr``; ``criterion``
    holds ``bce_weight``/``dice_weight``/``pos_weight`` when the task has them;
    ``save_checkpoint`` (returns the file written) serves ``checkpoint``. ``clip`` is read
    by the loop each step (0 = off).
    """

    def __init__(
        self,
        probe: Probe,
        optimizer: torch.optim.Optimizer,
        schedule: LrSchedule,
        criterion: Any = None,
        save_checkpoint: Callable[[], str] | None = None,
        clip: float = 0.0,
    ) -> None:
        self.probe = probe
        self.optimizer = optimizer
        self.schedule = schedule
        self.criterion = criterion
        self.save_checkpoint = save_checkpoint
        self.clip = float(clip)
        self.paused = False
        self.stop_requested = False
        self.applied = 0
        self._waiting: list[Any] = []
        probe.command_handler = self
        self._ops: dict[str, Callable[[dict[str, Any]], tuple[Any, Any, str]]] = {
            "set_lr": self._set_lr,
            "set_loss_weights": self._set_loss_weights,
            "set_pos_weight": self._set_pos_weight,
            "set_clip": self._set_clip,
            "pause": self._pause,
            "resume": self._resume,
            "checkpoint": self._checkpoint,
            "stop": self._stop,
        }

    def heartbeat(self) -> None:
        """Keep the link alive between step boundaries (e.g. during validation).

        Commands that arrive are held and applied at the next :meth:`poll`, so they still
        take effect at a step boundary, with the epoch of the step they name.
        """
        self._waiting.extend(self.probe.serve("paused" if self.paused else "running"))

    def poll(self) -> None:
        """Take and apply pending commands; while paused, wait here answering commands."""
        waiting, self._waiting = self._waiting, []
        for pending in waiting + self.probe.serve("paused" if self.paused else "running"):
            self.apply(pending)
        if not self.paused:
            return
        self.probe.flush()
        while self.paused and not self.stop_requested:
            time.sleep(PAUSE_POLL_S)
            for pending in self.probe.serve("paused", force=True):
                self.apply(pending)
        self.probe.restart_timer()

    def close(self) -> None:
        """Answer commands still held (the run ended before its next step boundary)."""
        waiting, self._waiting = self._waiting, []
        for pending in waiting:
            pending.error(f"{pending.command.op}: the run ended before it could be applied", self.probe.step)

    def apply(self, pending: Any) -> bool:
        """Apply one command and answer it; returns whether it took effect."""
        command = pending.command
        step = self.probe.step
        handler = self._ops.get(command.op)
        try:
            if handler is None:
                raise ControlError(f"{command.op}: the trainer does not apply this command")
            old, new, message = handler(dict(command.args))
        except ControlError as exc:
            pending.error(f"{exc}; nothing was changed", step)
            return False
        self.applied += 1
        self.probe.event("command_applied", message, op=command.op, old=old, new=new,
                         request_id=command.request_id)
        pending.ok(step, {"old": old, "new": new})
        return True

    # --- the commands --------------------------------------------------------------------

    def _set_lr(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        lr = _positive_finite("set_lr", "lr", args["lr"])
        epoch = self.probe.epoch
        old = self.schedule.lr(epoch)
        self.schedule.scale = self.schedule.scale_for(lr, epoch)
        new = self.schedule.apply(self.optimizer, epoch)
        return old, new, f"lr {old:.3g} -> {new:.3g} (schedule x{self.schedule.scale:.3g})"

    def _loss_attribute(self, op: str, name: str) -> float | None:
        if self.criterion is None or not hasattr(self.criterion, name):
            raise ControlError(f"{op}: this run's loss has no {name} (it applies to the Dice+BCE segmentation loss)")
        return getattr(self.criterion, name)

    def _set_loss_weights(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        old_bce = self._loss_attribute("set_loss_weights", "bce_weight")
        old_dice = self._loss_attribute("set_loss_weights", "dice_weight")
        bce, dice = float(args["bce"]), float(args["dice"])
        if not (math.isfinite(bce) and math.isfinite(dice) and bce >= 0 and dice >= 0 and bce + dice > 0):
            raise ControlError("set_loss_weights: weights must be finite, >= 0 and not both 0")
        self.criterion.bce_weight, self.criterion.dice_weight = bce, dice
        old, new = {"bce": old_bce, "dice": old_dice}, {"bce": bce, "dice": dice}
        return old, new, f"loss weights BCE {old_bce:g}/Dice {old_dice:g} -> {bce:g}/{dice:g}"

    def _set_pos_weight(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        old = self._loss_attribute("set_pos_weight", "pos_weight")
        value = _positive_finite("set_pos_weight", "pos_weight", args["pos_weight"])
        self.criterion.pos_weight = value
        old_text = "none" if old is None else f"{old:g}"
        return old, value, f"pos_weight {old_text} -> {value:g}"

    def _set_clip(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        clip = float(args["clip"])
        if not math.isfinite(clip) or clip < 0:
            raise ControlError(f"set_clip: clip must be finite and >= 0 (0 turns clipping off), got {clip!r}")
        old, self.clip = self.clip, clip
        return old, clip, f"gradient clipping {_clip_text(old)} -> {_clip_text(clip)}"

    def _pause(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        if self.paused:
            raise ControlError("pause: the run is already paused")
        self.paused = True
        return "running", "paused", f"paused before step {self.probe.step}"

    def _resume(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        if not self.paused:
            raise ControlError("resume: the run is not paused")
        self.paused = False
        return "paused", "running", f"resumed at step {self.probe.step}"

    def _checkpoint(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        if self.save_checkpoint is None:
            raise ControlError("checkpoint: this run has no checkpoint directory")
        try:
            path = self.save_checkpoint()
        except OSError as exc:
            raise ControlError(f"checkpoint: could not write it ({exc})") from exc
        return None, path, f"checkpoint written to {path}"

    def _stop(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        self.stop_requested = True
        self.paused = False
        return "running", "stopping", f"stop requested before step {self.probe.step}"


def _positive_finite(op: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ControlError(f"{op}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _clip_text(clip: float) -> str:
    return f"{clip:g}" if clip > 0 else "off"
