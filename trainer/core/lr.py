"""Live learning rate as a scale around the optimizer step, for any scheduler.

A user's scheduler owns ``group["lr"]``: StepLR, OneCycleLR, LambdaLR (every warm-up
schedule), CosineAnnealingWarmRestarts, ReduceLROnPlateau or a loop that writes the value
itself. Overwriting it from the monitor is undone at the scheduler's next step. Instead,
:class:`LrScale` multiplies every group's lr by ``scale`` just before ``optimizer.step()``
and puts the scheduler's value back right after it, so the scheduler never sees the
change and ``set_lr`` means "effective lr = the scheduler's lr x scale" for as long as the
run lasts (timm's ``lr_scale``, made scheduler-independent).
"""

from __future__ import annotations

import math
from typing import Any


class LrScaleError(ValueError):
    """The requested lr cannot be reached by a scale now; the message says why."""


def _as_float(value: Any) -> float:
    """A group's lr as a float (some optimizers hold it as a 0-d tensor)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class LrScale:
    """Scales every parameter group's lr around one optimizer's step.

    Call :meth:`before_step` just before ``optimizer.step()`` and :meth:`after_step` right
    after it (an optimizer step pre/post hook does both: :meth:`hook`). Between steps the
    groups hold the scheduler's values. :attr:`used` is each group's effective lr of the
    last step taken (what the step really used).
    """

    def __init__(self, optimizer: Any, scale: float = 1.0) -> None:
        self.optimizer = optimizer
        self.scale = float(scale)
        # Group 0's effective lr of the last step, the one the stream reports (read once a
        # step: an lr held as a device tensor costs a host read, so only one is read).
        self.used: list[float] = []
        self._saved: list[tuple[dict, Any, Any]] | None = None
        self._handles: list[Any] = []

    # --- around the step ---------------------------------------------------------------------

    def before_step(self) -> None:
        """Write scheduler's lr x scale into every group (remembering the scheduler's values)."""
        if self._saved is not None:  # a step that never reached after_step: restore first
            self.after_step()
        groups = self.optimizer.param_groups
        scale = self.scale
        if scale == 1.0:
            self.used = [_as_float(groups[0]["lr"])] if groups else []
            return
        saved = []
        for group in groups:
            lr = group["lr"]
            scaled = lr * scale
            group["lr"] = scaled
            saved.append((group, lr, scaled))
        self._saved = saved
        self.used = [_as_float(saved[0][2])] if saved else []

    def after_step(self) -> None:
        """Put every group's scheduler lr back (unless something else wrote it meanwhile)."""
        saved, self._saved = self._saved, None
        if not saved:
            return
        for group, lr, scaled in saved:
            if group.get("lr") is scaled:
                group["lr"] = lr

    def hook(self) -> LrScale:
        """Register :meth:`before_step`/:meth:`after_step` as this optimizer's step hooks."""
        if not self._handles:
            self._handles = [
                self.optimizer.register_step_pre_hook(lambda *_: self.before_step()),
                self.optimizer.register_step_post_hook(lambda *_: self.after_step()),
            ]
        return self

    def unhook(self) -> None:
        """Remove the hooks (and restore the scheduler's lr if a step is under way)."""
        self.after_step()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- what a command sees -----------------------------------------------------------------

    def scheduled(self) -> list[float]:
        """Each group's lr as the scheduler has it now (between steps)."""
        if self._saved is not None:
            return [_as_float(lr) for _, lr, _ in self._saved]
        return [_as_float(g["lr"]) for g in self.optimizer.param_groups]

    def effective(self, scale: float | None = None) -> list[float]:
        """Each group's effective lr (scheduler's x ``scale``, default the current one)."""
        factor = self.scale if scale is None else scale
        return [lr * factor for lr in self.scheduled()]

    def set_lr(self, lr: float) -> tuple[list[float], list[float]]:
        """Make group 0's effective lr ``lr``; every other group keeps its ratio to group 0.

        Returns (old, new) effective lrs of every group. Raises :class:`LrScaleError` (and
        changes nothing) when the scheduler's lr is 0 or not a number right now, e.g. at the
        first step of a warm-up that starts from 0.
        """
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise LrScaleError(f"lr must be a finite number > 0, got {lr!r}")
        scheduled = self.scheduled()
        if not scheduled:
            raise LrScaleError("the optimizer has no parameter groups")
        base = scheduled[0]
        if not (math.isfinite(base) and base > 0):
            raise LrScaleError(f"the scheduler's lr of group 0 is {base:g} right now (a warm-up starting at 0?); "
                               "a scale of it cannot make it a positive lr: try again after the first steps")
        old = [s * self.scale for s in scheduled]
        self.scale = lr / base
        new = [s * self.scale for s in scheduled]
        return old, new

    def first_used(self) -> float:
        """Group 0's effective lr of the last step (NaN before the first step)."""
        return self.used[0] if self.used else math.nan
