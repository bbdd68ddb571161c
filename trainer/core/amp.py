"""What a GradScaler did at each step, read without a host-device synchronisation.

A GradScaler that finds inf/NaN in the fp16 gradients skips ``optimizer.step()`` and lowers
its scale in ``update()``; that is its normal working. :class:`ScalerWatch` wraps one
scaler's ``update`` (on the instance, undone by :meth:`ScalerWatch.close`) to keep, for the
last step, the scale that was in force and whether the step was skipped, as device tensors,
so the probe can publish them as ``opt/amp_scale`` and ``gradstat/amp_skipped``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch


class ScalerWatch:
    """Observes one GradScaler's ``update()`` calls.

    :attr:`updates` counts them; :attr:`scale` and :attr:`skipped` hold the last update's
    scale in force and 1.0/0.0 for "an optimizer step was skipped" (0-d float32 tensors on
    the scale's device). ``on_update(watch)`` callbacks run just before the scaler's own
    update (its state still tells which optimizers stepped).
    """

    def __init__(self, scaler: Any) -> None:
        self.scaler = scaler
        self.updates = 0
        self.scale: torch.Tensor | None = None
        self.skipped: torch.Tensor | None = None
        self.on_update: list[Callable[[ScalerWatch], None]] = []
        self.optimizers: list[weakref.ref] = []  # the optimizers scaler.step was given, in order
        self._original = scaler.update
        self._original_step = scaler.step
        scaler.update = self._update
        scaler.step = self._step

    def _step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if not any(ref() is optimizer for ref in self.optimizers):
                self.optimizers.append(weakref.ref(optimizer))
        except TypeError:  # not weakly referenceable
            pass
        return self._original_step(optimizer, *args, **kwargs)

    def _update(self, *args: Any, **kwargs: Any) -> Any:
        try:
            self._note()
        except Exception:  # noqa: BLE001 - observing never breaks the user's scaler
            pass
        return self._original(*args, **kwargs)

    def _note(self) -> None:
        scale = getattr(self.scaler, "_scale", None)
        if scale is None:
            return
        self.scale = scale.detach().reshape(()).to(torch.float32).clone()
        found = [v for state in self.scaler._per_optimizer_states.values()
                 for v in state.get("found_inf_per_device", {}).values()]
        if found:
            total = sum(v.to(self.scale.device, torch.float32) for v in found)
            self.skipped = (total > 0).to(torch.float32).reshape(())
        else:
            self.skipped = torch.zeros((), device=self.scale.device)
        self.updates += 1
        for callback in list(self.on_update):
            callback(self)

    def found_inf(self, optimizer: Any) -> torch.Tensor | None:
        """1.0/0.0 whether the scaler found inf/NaN for ``optimizer`` this step (None before its step)."""
        state = self.scaler._per_optimizer_states.get(id(optimizer))
        found = state.get("found_inf_per_device") if state else None
        if not found:
            return None
        total = sum(v.to(torch.float32) for v in found.values())
        return (total > 0).to(torch.float32).reshape(())

    def close(self) -> None:
        """Give the scaler its own ``update`` back."""
        if self.scaler.__dict__.get("update") == self._update:
            del self.scaler.update
        if self.scaler.__dict__.get("step") == self._step:
            del self.scaler.step
