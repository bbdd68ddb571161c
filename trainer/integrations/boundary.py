"""A Watch for frameworks: where the step boundary is, and the epoch's mean loss.

A :class:`~octa_tui.trainer.watch.Watch` takes its step boundary (commands, measuring the
gradients, clipping) from the optimizer's step pre-hook. That is right for a plain loop, the
Hugging Face Trainer and Ignite, which call ``optimizer.step()`` after ``backward``. Lightning
does not: in automatic optimization (and in manual optimization through its
``LightningOptimizer``) it calls ``optimizer.step(closure)`` and the closure runs the
training step and ``backward`` *inside* the step, after the pre-hook; there the pre-hook sees
the previous step's gradients (or none), and with gradient accumulation it would clip a
half-accumulated sum. With ``external_boundary=True`` the framework's callback calls
:meth:`FrameworkWatch.boundary` where the gradients are complete (Lightning's
``on_before_optimizer_step``: after ``backward``, after the GradScaler's ``unscale_``,
before the framework's own clipping); the pre-hook then only applies the live lr scale.

Every framework also wants the epoch's mean training loss for its epoch summary:
:meth:`FrameworkWatch.take_epoch_loss` gives the mean of the losses published since it was
last called.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from typing import Any

from .. import watch as watch_module
from ..watch import Watch
from .metrics import mean

MULTI_PROCESS = ("this run has {n} processes and is watched from rank 0 only; a change applied on one rank "
                 "would split the run (use the commands on single-process runs)")


class FrameworkWatch(Watch):
    """A :class:`~octa_tui.trainer.watch.Watch` driven by a framework's callback.

    ``external_boundary``: the callback calls :meth:`boundary` once per optimizer step when
    the step's gradients are complete, and the optimizer's pre-hook only scales the lr.
    ``commands_refused``: a reason to answer every command with an error instead of applying
    it (a multi-process run served from rank 0 only: a change on one rank would split the
    run, a pause would hang the others in their next collective). Other keywords are the Watch's.
    """

    def __init__(self, *args: Any, external_boundary: bool = False, commands_refused: str | None = None,
                 **kwargs: Any) -> None:
        self.external_boundary = bool(external_boundary)
        self.commands_refused = commands_refused
        self._at_boundary = False  # boundary() ran for the step in progress
        self._in_step = False  # the optimizer's pre-hook ran, its post-hook not yet
        self._epoch_losses: list[float] = []
        self._loss_index = -1
        super().__init__(*args, **kwargs)

    # --- the step boundary, called by the framework ---------------------------------------------

    def boundary(self) -> None:
        """This optimizer step's gradients are complete: apply commands, measure, clip.

        Waits here while the monitor has the run paused (serving the link). Never raises into
        the framework: a failure is said once and the watch stops measuring.
        """
        if not self.external_boundary or self.failed or self._closed or self.optimizer is None or self.suspended:
            return
        self._guard(self._boundary)

    @property
    def suspended(self) -> bool:
        """Whether observing is off for now (:meth:`~octa_tui.trainer.watch.Watch.suspend`)."""
        return not self._closed and not self._handles

    def _boundary(self) -> None:
        self._ensure_probe()
        controller, probe = self.controller, self._probe
        assert controller is not None and probe is not None
        self._publish_data_report()
        controller.poll()
        probe.clip_(controller.clip)
        if self._in_step:  # the pre-hook already wrote this step's lr: write it with the scale now in force
            controller.lr_scale.before_step()
        self._at_boundary = True

    def _before_step(self, optimizer: Any = None) -> bool:
        if not self.external_boundary:
            return super()._before_step(optimizer)
        self._in_step = True
        self._open = True  # published at the step's post-hook
        if self.controller is not None:
            self.controller.lr_scale.before_step()
        return False

    def _finish_step(self) -> None:
        try:
            super()._finish_step()
        finally:
            self._at_boundary = False
            self._in_step = False

    # --- the epoch's loss ---------------------------------------------------------------------

    def _ensure_probe(self) -> None:
        created = self._probe is None
        super()._ensure_probe()
        if created and self._probe is not None:
            self._loss_index = self._probe.schema.index("loss/total")
            self._probe.on_values.append(self._tally)
            if self.commands_refused and self.controller is not None:
                self.controller.apply = self._refuse  # type: ignore[method-assign]

    def _refuse(self, pending: Any) -> bool:
        step = self._probe.step if self._probe is not None else 0
        pending.error(f"{pending.command.op}: {self.commands_refused}; nothing was changed", step)
        return False

    def _tally(self, step: int, epoch: int, vector: Any) -> None:
        self._epoch_losses.append(float(vector[self._loss_index]))

    def take_epoch_loss(self) -> float:
        """The mean training loss published since the last call (NaN when none was)."""
        if self._probe is not None:
            self._guard(self._probe.flush)
        losses, self._epoch_losses = self._epoch_losses, []
        return mean(losses) if losses else math.nan


def take_over_from_run(optimizer: Any) -> bool:
    """Close a Watch of ``octa-tui run`` that has not started a run yet and would watch ``optimizer``.

    A script with a framework callback, started under ``octa-tui run``, would otherwise stream
    two runs of the same training. The callback knows more (its framework's step boundary,
    validation metrics, stop), so it takes over; a run Watch that already publishes is left
    alone. Returns whether one was closed.
    """
    closed = False
    for other in list(getattr(watch_module, "_open_watches", ())):
        if isinstance(other, FrameworkWatch) or other.probe is not None:
            continue
        if other.optimizer is None or other.optimizer is optimizer:
            other.close()
            closed = True
    return closed


def start_watch(model: Any, optimizer: Any, options: Mapping[str, Any], config: Mapping[str, Any],
                defaults: Mapping[str, Any] | None = None, **fixed: Any) -> FrameworkWatch | None:
    """The :class:`FrameworkWatch` of a framework's callback, or None when it cannot start (said on stderr).

    ``options`` are the callback's watch keywords; their ``config`` is extended by the
    framework's ``config``; ``defaults`` (and ``verbose=True``) apply where ``options`` leave a
    keyword out; ``fixed`` are the callback's own (``task``, ``scaler``, ``external_boundary``,
    ``commands_refused``). Epochs are the framework's (``infer_epochs=False``) and a stop only
    sets the flag the callback reads. A Watch of ``octa-tui run`` for the same optimizer gives
    way (:func:`take_over_from_run`).
    """
    kwargs = {"verbose": True, **(defaults or {}), **options}  # verbose: one line, the run id and where to watch it
    merged = {**(kwargs.pop("config", None) or {}), **config}
    if take_over_from_run(optimizer):
        print("octa-tui: this run is watched by its callback, not by octa-tui run's global hooks", file=sys.stderr)
    try:
        return FrameworkWatch(model, optimizer, config=merged, infer_epochs=False, on_stop="flag", **fixed, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a monitor that cannot start never stops training
        print(f"octa-tui: not watching this run ({type(exc).__name__}: {exc})", file=sys.stderr)
        return None
