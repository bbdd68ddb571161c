"""Commands from the monitor, applied on the training thread at a step boundary.

The loop calls :meth:`Controller.poll` at the top of every step (a Watch calls it from the
optimizer's step pre-hook). Each command is checked against what this run can do, applied,
answered (ok with the step at which it takes effect, i.e. the next step to run; or error
with the reason and nothing changed) and logged as a ``command_applied`` event in the
stream and the recording. While paused, ``poll`` keeps heartbeating and answering
commands until ``resume`` or ``stop``.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .core.loss_weights import TermWeightError, TermWeights
from .core.lr import LrScale, LrScaleError
from .probe import Probe

PAUSE_POLL_S = 0.02


class ControlError(ValueError):
    """A command this run cannot apply now; the message says why (nothing was changed)."""


@dataclass
class LrSchedule:
    """The built-in trainer's step decay (StepLR: ``gamma`` every ``step_size`` epochs).

    It writes the scheduler's lr of each group; a live ``set_lr`` does not touch it: the
    :class:`Controller` multiplies the written lr by its scale just around the optimizer's
    step (:class:`~octa_tui.trainer.core.lr.LrScale`), as it does for any other scheduler.
    ``base_lrs`` holds one lr per parameter group; a group beyond the last uses the last.
    ``scale`` is the live scale a new Controller starts from (e.g. restored from a checkpoint).
    """

    base_lrs: tuple[float, ...]
    step_size: int
    gamma: float
    scale: float = 1.0

    def decay(self, epoch: int) -> float:
        """The schedule's factor at ``epoch``."""
        return self.gamma ** (epoch // self.step_size)

    def lr(self, epoch: int, group: int = 0) -> float:
        """The scheduler's lr of ``group`` at ``epoch`` (without the live scale)."""
        return self.base_lrs[min(group, len(self.base_lrs) - 1)] * self.decay(epoch)

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> float:
        """Write every group's scheduled lr for ``epoch``; returns group 0's."""
        for index, group in enumerate(optimizer.param_groups):
            group["lr"] = self.lr(epoch, index)
        return self.lr(epoch)


class Controller:
    """Applies validated commands to one run: lr, loss weights, pos_weight, clip, pause, stop.

    ``probe`` supplies the link, the step counter and the event stream; the controller
    takes over its command handling. ``set_lr`` is a scale around the optimizer's step
    (:attr:`lr_scale`, registered as the optimizer's step pre/post hooks), so it composes
    with any scheduler and any number of parameter groups; ``schedule`` (optional, the
    built-in trainer's) only sets the starting scale. ``criterion`` holds
    ``bce_weight``/``dice_weight``/``pos_weight`` when the task has them; without such a
    criterion, ``term_weights`` (a Watch's observed loss terms) serves ``set_loss_weights``
    as a factor per named term (effective weight = the script's own weight x factor);
    ``save_checkpoint`` (returns the file written) serves ``checkpoint``. ``clip`` is read
    by the loop each step (0 = off). No command raises into the training loop: a failure
    is an error reply with its reason.
    """

    def __init__(
        self,
        probe: Probe,
        optimizer: torch.optim.Optimizer,
        schedule: LrSchedule | None = None,
        criterion: Any = None,
        save_checkpoint: Callable[[], str] | None = None,
        clip: float = 0.0,
        *,
        lr_scale: LrScale | None = None,
        hook: bool = True,
        term_weights: TermWeights | None = None,
    ) -> None:
        self.probe = probe
        self.optimizer = optimizer
        self.schedule = schedule
        self.lr_scale = lr_scale or LrScale(optimizer, schedule.scale if schedule is not None else 1.0)
        if hook and lr_scale is None:
            self.lr_scale.hook()
        probe.lr_scale = self.lr_scale
        self.criterion = criterion
        self.term_weights = term_weights
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
        extra: dict[str, Any] = {}
        try:
            if handler is None:
                raise ControlError(f"{command.op}: the trainer does not apply this command")
            result = handler(dict(command.args))
            old, new, message = result[:3]
            if len(result) > 3:
                extra = result[3]
        except ControlError as exc:
            _answer(pending.error, f"{exc}; nothing was changed", step)
            return False
        except Exception as exc:  # noqa: BLE001 - a command never raises into the training loop
            _answer(pending.error, f"{command.op}: failed ({type(exc).__name__}: {exc})", step)
            return False
        self.applied += 1
        try:
            self.probe.event("command_applied", message, op=command.op, old=old, new=new,
                             request_id=command.request_id, **extra)
        except Exception as exc:  # noqa: BLE001 - the change stands; the event is best effort
            print(f"octa-tui: could not publish the command event ({exc})", file=sys.stderr)
        _answer(pending.ok, step, {"old": old, "new": new, **extra})
        return True

    # --- the commands --------------------------------------------------------------------

    def _set_lr(self, args: dict[str, Any]) -> tuple[Any, Any, str, dict[str, Any]]:
        lr = _positive_finite("set_lr", "lr", args.get("lr"))
        try:
            old, new = self.lr_scale.set_lr(lr)
        except LrScaleError as exc:
            raise ControlError(f"set_lr: {exc}") from exc
        groups = [{"old": o, "new": n} for o, n in zip(old, new)]
        optimizers = len(self.lr_scale.optimizers)
        if optimizers > 1:  # separate optimizers (an encoder's and a decoder's): each group names its own
            for group, owner in zip(groups, self.lr_scale.group_owners()):
                group["optimizer"] = owner
        more = f" ({len(groups)} parameter groups, each x{self.lr_scale.scale:.3g})" if len(groups) > 1 else ""
        if optimizers > 1:
            more = f" ({len(groups)} parameter groups of {optimizers} optimizers, each x{self.lr_scale.scale:.3g})"
        message = f"lr {old[0]:.3g} -> {new[0]:.3g} (scheduler's lr x{self.lr_scale.scale:.3g}){more}"
        return old[0], new[0], message, {"groups": groups, "scale": self.lr_scale.scale}

    def _loss_attribute(self, op: str, name: str) -> float | None:
        if self.criterion is None or not hasattr(self.criterion, name):
            raise ControlError(f"{op}: this run's loss has no {name} (it applies to the Dice+BCE segmentation loss)")
        return getattr(self.criterion, name)

    def _set_loss_weights(self, args: dict[str, Any]) -> tuple[Any, ...]:
        has_pair = self.criterion is not None and hasattr(self.criterion, "bce_weight") \
            and hasattr(self.criterion, "dice_weight")
        if self.term_weights is not None and not has_pair:
            return self._set_term_weights(args)
        missing = [name for name in ("bce", "dice") if name not in args]
        if has_pair and missing:
            raise ControlError(f"set_loss_weights: this run's loss is weighted by bce and dice; {missing[0]!r} "
                               f"is missing (got {', '.join(sorted(args)) or 'no weights'})")
        old_bce = self._loss_attribute("set_loss_weights", "bce_weight")
        old_dice = self._loss_attribute("set_loss_weights", "dice_weight")
        bce, dice = float(args["bce"]), float(args["dice"])
        if not (math.isfinite(bce) and math.isfinite(dice) and bce >= 0 and dice >= 0 and bce + dice > 0):
            raise ControlError("set_loss_weights: weights must be finite, >= 0 and not both 0")
        self.criterion.bce_weight, self.criterion.dice_weight = bce, dice
        old, new = {"bce": old_bce, "dice": old_dice}, {"bce": bce, "dice": dice}
        return old, new, f"loss weights BCE {old_bce:g}/Dice {old_dice:g} -> {bce:g}/{dice:g}"

    def _set_term_weights(self, args: dict[str, Any]) -> tuple[Any, Any, str, dict[str, Any]]:
        """Factors on the observed loss terms (``octa-tui run``/``watch``): the term's loss value
        is multiplied by its factor from the next step on; (old, new) are the named terms' factors."""
        assert self.term_weights is not None
        try:
            old, new = self.term_weights.set(args)
        except TermWeightError as exc:
            raise ControlError(f"set_loss_weights: {exc}") from exc
        changes = ", ".join(f"{name} x{old[name]:g} -> x{new[name]:g}" for name in new)
        message = f"loss term weights {changes} (the script's own weight x factor)"
        return old, new, message, {"factors": self.term_weights.all_factors()}

    def _set_pos_weight(self, args: dict[str, Any]) -> tuple[Any, Any, str]:
        old = self._loss_attribute("set_pos_weight", "pos_weight")
        value = _positive_finite("set_pos_weight", "pos_weight", args["pos_weight"])
        self.criterion.pos_weight = value
        # No pos_weight set weighs positives as 1: say so, as the monitor's panel shows it.
        old_text = "1 (none set)" if old is None else f"{old:g}"
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


def _answer(send: Callable[..., None], *args: Any) -> None:
    """Send a reply; a link that fails to send it must not stop the training loop."""
    try:
        send(*args)
    except Exception as exc:  # noqa: BLE001
        print(f"octa-tui: could not answer a command ({exc})", file=sys.stderr)


def _positive_finite(op: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ControlError(f"{op}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def _clip_text(clip: float) -> str:
    return f"{clip:g}" if clip > 0 else "off"
