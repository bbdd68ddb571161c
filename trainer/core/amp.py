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


def scaler_enabled(scaler: Any) -> bool:
    """Whether ``scaler`` is a GradScaler that scales (a disabled one changes nothing)."""
    if scaler is None:
        return False
    try:
        return bool(scaler.is_enabled())
    except Exception:  # noqa: BLE001 - not a GradScaler
        return False


def unscaled_already(scaler: Any, optimizer: Any, before_step: bool) -> bool:
    """Whether ``scaler.unscale_(optimizer)`` ran for this step (the gradients are true values).

    Before the optimizer's step the scaler has no state for it until ``unscale_``; after the
    step (measured from ``end_step``) ``scaler.step`` has unscaled them, and ``update()`` may
    have cleared the state since.
    """
    states = getattr(scaler, "_per_optimizer_states", None)
    state = states.get(id(optimizer)) if isinstance(states, dict) else None
    if state is None:
        return not before_step
    stage = state.get("stage")
    return getattr(stage, "name", "") in ("UNSCALED", "STEPPED")


class AmpFacts:
    """The GradScaler side of one probe: the scale in force, skipped steps, unscaling.

    Uses ``scaler_watch`` when one is given (a Watch owns it), else builds its own (closed by
    :meth:`close`). All numbers stay device tensors.
    """

    def __init__(self, scaler: Any, device: torch.device, scaler_watch: ScalerWatch | None = None) -> None:
        self.scaler = scaler
        self.device = device
        self.watch = scaler_watch or ScalerWatch(scaler)
        self._own_watch = scaler_watch is None
        self._updates_seen = 0
        self._scale: torch.Tensor | None = None  # the scale when the step was measured
        self._skipped: torch.Tensor | None = None  # set by mark_skipped()
        self._nan = torch.full((), float("nan"), device=device)
        self._zero = torch.zeros((), device=device)
        self._one = torch.ones((), device=device)
        self.warned = False

    def measured(self, norms: list[torch.Tensor], optimizer: Any, before_step: bool) -> tuple[list[torch.Tensor], bool]:
        """Note the scale in force; returns the norms unscaled and whether they had to be.

        Norms measured before ``scaler.unscale_(optimizer)`` are divided by the scale here.
        """
        scale = getattr(self.scaler, "_scale", None)
        if scale is None:  # the scaler has not scaled anything yet
            self._scale = self._nan
            return norms, False
        self._scale = scale.detach().reshape(()).to(self.device, torch.float32, non_blocking=True).clone()
        if optimizer is None or unscaled_already(self.scaler, optimizer, before_step):
            return norms, False
        inverse = (1.0 / scale.detach().reshape(()).double()).float()
        return list(torch._foreach_mul(norms, inverse.to(norms[0].device))), True

    def mark_skipped(self) -> None:
        """This step's ``optimizer.step`` was skipped by the scaler."""
        self._skipped = self._one

    def scalars(self, optimizer: Any) -> list[torch.Tensor]:
        """The step's [scale in force, skipped 1.0/0.0] as device scalars, without a synchronisation.

        Skipped comes from the scaler's inf check for this optimizer when ``update()`` has not
        run yet, else from what the last ``update()`` saw.
        """
        watch = self.watch
        scale, skipped = self._scale, self._skipped
        if watch.updates != self._updates_seen and watch.scale is not None:  # update() ran for this step
            self._updates_seen = watch.updates
            scale = watch.scale
            if skipped is None:
                skipped = watch.skipped
        if scale is None:
            live = getattr(self.scaler, "_scale", None)
            scale = self._nan if live is None else live.detach().reshape(()).to(torch.float32).clone()
        if skipped is None:
            skipped = watch.found_inf(optimizer)
        if skipped is None:
            skipped = self._zero
        self._scale = self._skipped = None
        return [scale.to(self.device), skipped.to(self.device)]

    @property
    def backoff(self) -> float:
        """The factor a skipped step multiplies the scale by."""
        return float(getattr(self.scaler, "_backoff_factor", 0.5))

    def close(self) -> None:
        """Give the scaler its methods back (when this owns the observer)."""
        if self._own_watch:
            self.watch.close()
