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
    """Scales every parameter group's lr around its optimizer's step, for one or more optimizers.

    Call :meth:`before_step` just before ``optimizer.step()`` and :meth:`after_step` right
    after it (an optimizer step pre/post hook does both: :meth:`hook`); with several
    optimizers (separate encoder/decoder optimizers stepped in one iteration) pass the one
    about to step, or none for all. Between steps the groups hold the scheduler's values.
    The groups are numbered across the optimizers, in the order they were given
    (:attr:`optimizers`; :meth:`add` follows one more). :attr:`used` holds group 0's
    effective lr of the first optimizer's last step (what the step really used), as the
    group holds it: a float, or a device tensor that is read only when it is published.
    """

    def __init__(self, optimizer: Any, scale: float = 1.0) -> None:
        self.optimizers: list[Any] = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
        self.optimizer = self.optimizers[0]
        self.scale = float(scale)
        # Group 0's effective lr of the last step, the one the stream reports (one value a
        # step, kept as the group holds it: converting a device tensor would cost a host read).
        self.used: list[Any] = []
        self._saved: dict[int, list[tuple[dict, Any, Any]]] = {}
        self._handles: list[Any] = []

    def add(self, optimizer: Any) -> None:
        """Follow one more optimizer (its groups are numbered after those already followed)."""
        if all(optimizer is not o for o in self.optimizers):
            self.optimizers.append(optimizer)
            if self._handles:
                self._hook_one(optimizer)

    @property
    def param_groups(self) -> list[dict]:
        """Every followed optimizer's parameter groups, in order."""
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    def group_owners(self) -> list[int]:
        """For each group of :attr:`param_groups`, the index of its optimizer."""
        return [index for index, optimizer in enumerate(self.optimizers) for _ in optimizer.param_groups]

    # --- around the step ---------------------------------------------------------------------

    def before_step(self, optimizer: Any = None) -> None:
        """Write scheduler's lr x scale into the groups of ``optimizer`` (default: every followed one)."""
        for current in self._chosen(optimizer):
            key = id(current)
            if key in self._saved:  # a step that never reached after_step: restore first
                self._restore(key)
            groups = current.param_groups
            scale = self.scale
            if scale == 1.0:
                if current is self.optimizer:
                    self.used = [groups[0]["lr"]] if groups else []
                continue
            saved = []
            for group in groups:
                lr = group["lr"]
                scaled = lr * scale
                group["lr"] = scaled
                saved.append((group, lr, scaled))
            self._saved[key] = saved
            if current is self.optimizer:
                self.used = [saved[0][2]] if saved else []

    def after_step(self, optimizer: Any = None) -> None:
        """Put the groups' scheduler lr back (unless something else wrote it meanwhile)."""
        for current in self._chosen(optimizer):
            self._restore(id(current))

    def _chosen(self, optimizer: Any) -> list[Any]:
        if optimizer is None:
            return self.optimizers
        return [optimizer] if any(optimizer is o for o in self.optimizers) else []

    def _restore(self, key: int) -> None:
        saved = self._saved.pop(key, None)
        if not saved:
            return
        for group, lr, scaled in saved:
            if group.get("lr") is scaled:
                group["lr"] = lr

    def hook(self) -> LrScale:
        """Register :meth:`before_step`/:meth:`after_step` as the followed optimizers' step hooks."""
        if not self._handles:
            for optimizer in self.optimizers:
                self._hook_one(optimizer)
        return self

    def _hook_one(self, optimizer: Any) -> None:
        self._handles += [
            optimizer.register_step_pre_hook(lambda o, *_: self.before_step(o)),
            optimizer.register_step_post_hook(lambda o, *_: self.after_step(o)),
        ]

    def unhook(self) -> None:
        """Remove the hooks (and restore the scheduler's lr if a step is under way)."""
        self.after_step()
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # --- what a command sees -----------------------------------------------------------------

    def scheduled(self) -> list[float]:
        """Each group's lr as the scheduler has it now (between steps), across the optimizers."""
        values = []
        for optimizer in self.optimizers:
            saved = self._saved.get(id(optimizer))
            if saved is not None:
                values += [_as_float(lr) for _, lr, _ in saved]
            else:
                values += [_as_float(g["lr"]) for g in optimizer.param_groups]
        return values

    def effective(self, scale: float | None = None) -> list[float]:
        """Each group's effective lr (scheduler's x ``scale``, default the current one)."""
        factor = self.scale if scale is None else scale
        return [lr * factor for lr in self.scheduled()]

    def set_lr(self, lr: float) -> tuple[list[float], list[float]]:
        """Make group 0's effective lr ``lr``; every other group (of every followed optimizer)
        keeps its ratio to group 0.

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
        return _as_float(self.used[0]) if self.used else math.nan
