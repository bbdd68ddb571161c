"""``watch``: one call that makes a plain PyTorch loop observable and steerable.

::

    import octa_tui
    w = octa_tui.watch(model, optimizer)          # before the loop; that is all
    for x, y in loader:                           # the loop is unchanged
        loss = F.mse_loss(model(x), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
    w.close()                                     # optional: also done when the process exits

A :class:`Watch` hooks the optimizer's step (its own step pre/post hooks, or the global ones
when no optimizer is given: the first optimizer that steps is adopted, and its model is found
as the module that owns its parameters). At the pre-hook, on the training thread, between
``backward`` and the update: commands from the monitor are applied (lr as a scale around this
step, loss-term weights as a factor on what an observed loss function returns from the next
step on, clipping, pause, checkpoint, stop), the gradients are measured (already unscaled when a
GradScaler calls the step) and clipped when the monitor asked for it. After the step the step's
vector is published. The loss terms, the outputs and whether the loss expects probabilities
are observed at the ``torch.nn.functional`` losses (:mod:`octa_tui.trainer.observe`), the
total at ``backward``; epochs are inferred from ``model.train()``/``model.eval()`` switches
(validation -> training = an epoch ended) unless :meth:`Watch.end_epoch` is called. A
GradScaler (passed, set with :meth:`Watch.set_scaler`, or found by ``octa-tui run``) adds its
scale and skipped steps. The run is announced (``octa-tui`` lists it) at the first step, when
the loss terms are known.

Nothing here raises into the user's loop: an internal failure is said once on stderr and the
Watch stops measuring; the loop goes on. The one exception is asked for: with
``on_stop="exit"`` (what ``octa-tui run`` uses) a ``stop`` from the monitor raises
:class:`StopRun` (a ``SystemExit``) at the next step boundary, before that step's update.
"""

from __future__ import annotations

import atexit
import copy
import functools
import math
import os
import sys
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import observe
from .control import Controller
from .core.loss_weights import TermWeights
from .probe import Probe

DEFAULT_ENDPOINT = "tcp://127.0.0.1:0"


class StopRun(SystemExit):
    """Raised at a step boundary when the monitor stopped a run started with ``on_stop="exit"``."""

    def __init__(self, step: int) -> None:
        super().__init__(0)
        self.step = step

    def __str__(self) -> str:
        return f"stopped from the monitor before step {self.step}"


def find_model(optimizer: Any, candidates: list[nn.Module] | None = None) -> nn.Module | None:
    """The module that owns the optimizer's parameters: the smallest one that holds most of them.

    ``optimizer`` may be a list of optimizers: the module owning the parameters of them all.

    Of modules holding the same parameters the outermost is taken (a LightningModule rather
    than the network inside it: the names then read as the user's code has them), except
    that a DataParallel/DistributedDataParallel or ``torch.compile`` wrapper is unwrapped.
    ``candidates`` default to every live module, scanned once.
    """
    optimizers = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    wanted = {id(p) for o in optimizers for group in o.param_groups for p in group["params"]}
    if not wanted:
        return None
    if candidates is None:
        candidates = live_modules()
    best: tuple[int, int] | None = None
    chosen: nn.Module | None = None
    for module in candidates:
        try:
            ids = {id(p) for p in module.parameters()}
        except Exception:  # noqa: BLE001 - a half-built module
            continue
        covered = len(ids & wanted)
        if covered == 0:
            continue
        key = (-covered, len(ids))
        if best is None or key < best:
            best, chosen = key, module
        elif key == best and chosen is not None and chosen in set(module.modules()):
            chosen = module  # same parameters: the outer module
    while chosen is not None:
        kind = type(chosen).__name__
        if kind in ("DistributedDataParallel", "DataParallel") and isinstance(getattr(chosen, "module", None),
                                                                             nn.Module):
            chosen = chosen.module
        elif kind == "OptimizedModule" and isinstance(getattr(chosen, "_orig_mod", None), nn.Module):
            chosen = chosen._orig_mod
        else:
            break
    return chosen


def live_modules() -> list[nn.Module]:
    """Every module alive in the process (one scan of the garbage collector's objects)."""
    import gc

    return [o for o in gc.get_objects() if issubclass(type(o), nn.Module)]


def _param_ids(optimizer: Any) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def sibling_optimizers(first: Any, modules: list[nn.Module]) -> list[Any]:
    """``first`` and the other live optimizers that update the same network as it.

    An optimizer is a sibling when one module holds its parameters and ``first``'s together
    (an encoder's and a decoder's optimizer in one UNet, a GAN's two in one LightningModule);
    an optimizer of an unrelated model (an earlier run's in the same process) is not.
    """
    import gc

    others = [o for o in gc.get_objects() if issubclass(type(o), torch.optim.Optimizer) and o is not first]
    if not others:
        return [first]
    mine = _param_ids(first)
    holders = []
    for module in modules:
        try:
            ids = {id(p) for p in module.parameters()}
        except Exception:  # noqa: BLE001 - a half-built module
            continue
        if mine <= ids:
            holders.append(ids)
    chosen = [first]
    for other in others:
        theirs = _param_ids(other)
        if theirs and not theirs & mine and any(theirs <= ids for ids in holders):
            chosen.append(other)
    return chosen


class Watch:
    """A run watched through its optimizer's steps; see :func:`watch` and the module docstring.

    Properties: :attr:`probe` (None until the first step), :attr:`stop_requested`,
    :attr:`paused`, :attr:`clip` (the max norm the monitor asked for, 0 = off; applied here).

    Several optimizers (an encoder's and a decoder's, a GAN's generator and discriminator):
    ``optimizer`` may be a list; with none given, the optimizers that update the same network
    as the first one that steps are followed (:func:`sibling_optimizers`), and one created
    later over the model's parameters joins at its first step. One iteration = one step of
    each: the commands and the boundary run at the first one's step, the gradients of all
    are measured there when they all have gradients (one backward for all), else at the
    step that completes the set (a backward per optimizer, as a GAN does), the live lr
    scales every group of every optimizer, and the step is published when each has stepped
    (or when the first steps again).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        optimizer: Any = None,
        *,
        task: str = "custom",
        data: str | os.PathLike[str] | None = None,
        record: str | os.PathLike[str] | None = None,
        scaler: Any = None,
        telemetry: str | None = DEFAULT_ENDPOINT,
        control: str | None = DEFAULT_ENDPOINT,
        name: str | None = None,
        announce: bool = True,
        observe_loss: bool = True,
        infer_epochs: bool = True,
        on_stop: str = "flag",
        checkpoint_dir: str | os.PathLike[str] | None = None,
        link_options: Mapping[str, Any] | None = None,
        find_modules: Any = None,
        verbose: bool = False,
        **probe_kwargs: Any,
    ) -> None:
        if on_stop not in ("flag", "exit"):
            raise ValueError(f"on_stop must be 'flag' or 'exit', got {on_stop!r}")
        self.model = model
        given = list(optimizer) if isinstance(optimizer, (list, tuple)) else ([optimizer] if optimizer is not None
                                                                               else [])
        self.optimizers: list[Any] = given  # the run's optimizers; the first is the primary
        self.optimizer = given[0] if given else None
        self._fixed = bool(given)  # the optimizers were given: no other is followed
        self._rejected: weakref.WeakSet[Any] = weakref.WeakSet()  # optimizers of other models
        self._model_ids: set[int] | None = None
        self._pre_ids: set[int] = set()  # optimizers whose step began in the open iteration
        self._post_ids: set[int] = set()  # ... and ended
        self._open = False  # an iteration's boundary ran and its step is not yet published
        self._measured = False
        self._candidates: list[nn.Module] | None = None  # the live modules, scanned at the first step
        self.task = task
        self.name = name
        self.record = None if record is None else str(record)
        self.telemetry, self.control, self.announce = telemetry, control, announce
        self.on_stop = on_stop
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.link_options = dict(link_options or {})
        self.probe_kwargs = dict(probe_kwargs)
        self.controller: Controller | None = None
        self.scaler: Any = None
        self.scaler_watch: Any = None
        self.failed: str | None = None  # why the watch stopped measuring, if it did
        self.checkpoints: list[str] = []
        self._find_modules = find_modules  # () -> candidate modules, for octa-tui run
        self.verbose = verbose
        self._probe: Probe | None = None
        self._handles: list[Any] = []
        self._closed = False
        self._stepped = False  # the optimizer's step ran since the scaler's last update
        self._observe = observe_loss
        self._auto_epochs = infer_epochs
        self._in_validation = False
        self._steps_in_epoch = 0
        # the epoch's running [sum of the step losses, sum of their observed terms] (a device
        # tensor: no growth with the epoch's length) and the number of steps summed
        self._epoch_sums: torch.Tensor | None = None
        self._epoch_count = 0
        self._train_wrapped: nn.Module | None = None
        # this step's observations
        self._totals: list[torch.Tensor] = []
        self._calls: dict[str, list[torch.Tensor]] = {}
        self._occurrence: dict[str, int] = {}
        self._order: list[str] = []  # component names in first-seen order
        self._functions: list[str] = []  # torch.nn.functional losses seen, first-seen order
        self._output: tuple[str, Any] | None = None  # (function, input) the loss saw first
        self._expects: bool | None = None
        self._autocast: str | None = None
        self._clipped_before: float | None = None  # clip_grad_norm_'s max_norm, seen before the first step
        self._clip_kind = "norm"  # "value": clip_grad_value_ (its bound is per element, not a norm)
        # live factors on the observed loss terms (set from the monitor; 1 = the script as written)
        self.term_weights = TermWeights()
        self._val: dict[str, list[torch.Tensor]] = {}
        self._noted_loss: Any = None
        self._noted_components: Mapping[str, Any] | None = None
        self._noted_outputs: Any = None
        self._data_report: Any = None
        self._scan_done = threading.Event()
        self._lock = threading.Lock()
        if scaler is not None:
            self.set_scaler(scaler)
        if data is not None:
            self._scan_data(data)
        self._hook()
        if observe_loss:
            observe.listen(self)
        _open_watches.add(self)

    # --- public ------------------------------------------------------------------------------

    @property
    def probe(self) -> Probe | None:
        """The probe measuring the run (built at the first optimizer step)."""
        return self._probe

    @property
    def stop_requested(self) -> bool:
        """Whether the monitor asked the run to stop (check it in the loop to stop cleanly)."""
        return self.controller is not None and self.controller.stop_requested

    @property
    def paused(self) -> bool:
        """Whether the run is paused by the monitor (the next step waits)."""
        return self.controller is not None and self.controller.paused

    @property
    def clip(self) -> float:
        """The max gradient norm the monitor asked for (0 = off); the Watch applies it itself."""
        return self.controller.clip if self.controller is not None else 0.0

    def set_scaler(self, scaler: Any) -> None:
        """Use this GradScaler's scale and skipped steps (call before the first step)."""
        from .core.amp import ScalerWatch, scaler_enabled

        if scaler is None or scaler is self.scaler:
            return
        if self._probe is not None:
            print("octa-tui: set_scaler() after the first step: the run's channels are fixed, the scaler is "
                  "not reported (pass scaler= to watch())", file=sys.stderr)
            return
        if not scaler_enabled(scaler):
            return
        if self.scaler_watch is not None:
            self.scaler_watch.close()
        self.scaler = scaler
        self.scaler_watch = ScalerWatch(scaler)
        self.scaler_watch.on_update.append(self._scaler_updated)

    def note_loss(self, loss: Any, components: Mapping[str, Any] | None = None) -> None:
        """Give this step's loss (and its terms) instead of what was observed."""
        self._noted_loss, self._noted_components = loss, components

    def note_outputs(self, outputs: Any) -> None:
        """Give this step's model outputs (used when no loss function saw them)."""
        self._noted_outputs = outputs

    def end_epoch(self, train: Mapping[str, float], val: Mapping[str, float]) -> None:
        """Publish an epoch's metrics yourself (epochs are then no longer inferred)."""
        self._auto_epochs = False
        if self._probe is None or self.failed:
            return
        self._guard(lambda: self._probe.end_epoch(train, val))
        self._steps_in_epoch = 0
        self._epoch_sums, self._epoch_count = None, 0

    def serve(self) -> None:
        """Heartbeat and take commands between steps (a long validation); applied at the next step."""
        if self.controller is not None and not self.failed:
            self._guard(self.controller.heartbeat)

    def suspend(self) -> None:
        """Stop observing for a while (hooks and loss observation off; the link stays open).

        For a stretch the monitor should not see (an expensive side computation that steps
        another optimizer), and for benchmarks that measure with-minus-without in one process.
        """
        if self._closed or not self._handles:
            return
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._observe:
            observe.stop_listening(self)

    def resume(self) -> None:
        """Observe again after :meth:`suspend`."""
        if self._closed or self._handles:
            return
        self._hook()
        if self._observe:
            observe.listen(self)
        if self._probe is not None:
            self._probe.restart_timer()

    def close(self, state: str = "finished") -> None:
        """Finish the run: the last epoch (if inferred), the link, the hooks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _open_watches.discard(self)
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._observe:
            observe.stop_listening(self)
        if self._train_wrapped is not None:
            self._train_wrapped.__dict__.pop("train", None)
            self._train_wrapped = None
        if self.scaler_watch is not None:
            self.scaler_watch.close()
        if self._probe is None:
            return
        if self._open and self._post_ids and not self.failed:  # an iteration some optimizers stepped in
            self._open = False
            self._guard(self._finish_step)
        if self._auto_epochs and self._in_validation and self._steps_in_epoch and not self.failed:
            self._guard(self._infer_epoch_end)
        try:
            self._publish_data_report()
            if self.controller is not None:
                self.controller.lr_scale.after_step()
                self.controller.close()
            if state == "finished" and self.stop_requested:
                state = "stopped"
            self._probe.event("run_finished", f"run {state} at step {self._probe.step}", state=state)
            self._probe.close(state)
        except Exception as exc:  # noqa: BLE001
            print(f"octa-tui: could not close the run cleanly ({type(exc).__name__}: {exc})", file=sys.stderr)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close("finished" if exc_type is None or isinstance(exc, StopRun) else "failed")

    # --- hooks -------------------------------------------------------------------------------

    def _hook(self) -> None:
        if self._fixed:
            self._handles = [handle for o in self.optimizers for handle in
                             (o.register_step_pre_hook(self._pre_step), o.register_step_post_hook(self._post_step))]
        else:
            from torch.optim.optimizer import (
                register_optimizer_step_post_hook,
                register_optimizer_step_pre_hook,
            )

            self._handles = [register_optimizer_step_pre_hook(self._pre_step),
                             register_optimizer_step_post_hook(self._post_step)]

    def _ours(self, optimizer: Any) -> bool:
        if self.failed or self._closed:
            return False
        if any(optimizer is o for o in self.optimizers):
            return True
        if self._fixed or optimizer in self._rejected:
            return False
        return bool(self._guard(lambda: self._adopt(optimizer)))

    def _adopt(self, optimizer: Any) -> bool:
        """Whether an optimizer not followed yet is the run's (then it is followed from now on)."""
        if self.model is not None:
            if self._model_ids is None:
                self._model_ids = {id(p) for p in self.model.parameters()}
            if not _param_ids(optimizer) & self._model_ids:
                self._rejected.add(optimizer)
                return False
        if not self.optimizers:  # the first optimizer that steps: it and its siblings are the run's
            modules = self._find_modules() if self._find_modules is not None else live_modules()
            siblings = sibling_optimizers(optimizer, modules)
            if self.model is not None:
                wanted = {id(p) for p in self.model.parameters()}
                siblings = [o for o in siblings if o is optimizer or _param_ids(o) & wanted]
            self.optimizers = siblings
            self.optimizer = optimizer
            self._candidates = modules
            return True
        followed = set().union(*(_param_ids(o) for o in self.optimizers))
        if self.model is None or _param_ids(optimizer) & followed:
            # stepping before the first boundary built the probe, or a wrapper of (or a second optimizer
            # over) parameters already followed (Accelerate's AcceleratedOptimizer): not one more
            self._rejected.add(optimizer)
            return False
        self.optimizers.append(optimizer)  # a new optimizer over the model's parameters
        if self.controller is not None:
            self.controller.lr_scale.add(optimizer)
        return True

    def _pre_step(self, optimizer: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if not self._ours(optimizer):
            return None
        self._stepped = True
        kwargs = kwargs or {}
        closure = kwargs.get("closure")
        if closure is None and args and callable(args[0]):
            closure = args[0]
        if closure is not None:
            # optimizer.step(closure) (Lightning's automatic optimization, LBFGS): forward and
            # backward run inside the step, so the boundary work runs at the end of the closure.
            wrapped = self._wrap_closure(closure, optimizer)
            if "closure" in kwargs:
                return args, {**kwargs, "closure": wrapped}
            return (wrapped, *args[1:]), kwargs
        self._step_boundary(optimizer)
        return None

    def _step_boundary(self, optimizer: Any = None) -> None:
        """Just before an optimizer's update: at an iteration's first, the boundary (commands,
        measurement, clipping); for each, its lr scale (may raise StopRun)."""
        stop = self._guard(lambda: self._before_step(optimizer))
        if stop:
            raise StopRun(self._probe.step if self._probe is not None else 0)

    def _wrap_closure(self, closure: Any, optimizer: Any = None) -> Any:
        done = False

        def closure_then_boundary(*args: Any, **kwargs: Any) -> Any:
            nonlocal done
            result = closure(*args, **kwargs)
            if not done:  # LBFGS calls it again: the boundary is the first call's end
                done = True
                self._step_boundary(optimizer)
            return result

        return closure_then_boundary

    def _before_step(self, optimizer: Any = None) -> bool:
        optimizer = self.optimizer if optimizer is None else optimizer
        if self._open and id(optimizer) in self._pre_ids:  # it steps again: the last iteration is over
            self._open = False
            self._finish_step()
        if not self._open:
            self._ensure_probe()
            controller, probe = self.controller, self._probe
            assert controller is not None and probe is not None
            if self._in_validation and self._auto_epochs:  # validation ran since the last step: an epoch ended
                self._infer_epoch_end()
            self._publish_data_report()
            controller.poll()  # commands at the step boundary; waits here while paused
            if controller.stop_requested and self.on_stop == "exit":
                return True
            self._open, self._measured = True, False
            self._pre_ids, self._post_ids = set(), set()
        self._pre_ids.add(id(optimizer))
        controller, probe = self.controller, self._probe
        assert controller is not None and probe is not None
        if not self._measured and (len(self.optimizers) == 1 or self._all_have_gradients(optimizer)):
            probe.clip_(controller.clip)  # measures every gradient; clips when the monitor asked
            self._measured = True
        controller.lr_scale.before_step(optimizer)
        return False

    def _all_have_gradients(self, optimizer: Any) -> bool:
        """Whether every followed optimizer still to step (or this one) has its gradients now:
        one backward for all (measure now) or a backward per optimizer (measure at the last)."""
        if all(id(o) in self._pre_ids for o in self.optimizers):
            return True
        for other in self.optimizers:
            if other is optimizer or id(other) in self._pre_ids:
                continue
            params = [p for group in other.param_groups for p in group["params"] if p.requires_grad]
            if params and all(p.grad is None for p in params):
                return False
        return True

    def _post_step(self, optimizer: Any, *_: Any) -> None:
        if not self._ours(optimizer) or self._probe is None:
            return
        if self.controller is not None:
            self.controller.lr_scale.after_step(optimizer)
        self._post_ids.add(id(optimizer))
        if self._open and all(id(o) in self._post_ids for o in self.optimizers):
            self._open = False
            self._guard(self._finish_step)

    def _scaler_updated(self, scaler_watch: Any) -> None:
        """The scaler's update(): a step it skipped never reached the optimizer: publish it here."""
        stepped, self._stepped = self._stepped, False
        if stepped or self.failed or self._closed:
            return
        if self.optimizer is None and scaler_watch.optimizers:  # skipped before any step reached the hooks
            first = scaler_watch.optimizers[0]()
            if first is not None:
                self._ours(first)
        if self.optimizer is None or scaler_watch.found_inf(self.optimizer) is None:
            self._reset_step()  # scaler.step was not called for this optimizer: nothing to publish
            return
        self._guard(self._skipped_step)

    def _skipped_step(self) -> None:
        self._ensure_probe()
        assert self._probe is not None and self.controller is not None
        self.controller.poll()
        self._probe.mark_skipped()
        self._finish_step()

    def _finish_step(self) -> None:
        probe = self._probe
        assert probe is not None
        loss, components, outputs, activation = self._step_numbers()
        probe.end_step(loss=loss, components=components, outputs=outputs, activation=activation)
        if self._auto_epochs:
            self._steps_in_epoch += 1
            if isinstance(loss, torch.Tensor):
                total = loss.detach().reshape(()).float()
                terms = [v for v in components.values() if isinstance(v, torch.Tensor)]
                if terms and len(terms) == len(components):
                    observed = torch.stack([t.reshape(()).to(total.device, torch.float32) for t in terms]).sum()
                else:
                    observed = total.new_full((), math.nan)
                pair = torch.stack((total, observed))
                sums = self._epoch_sums
                self._epoch_sums = pair if sums is None else sums + pair.to(sums.device)
                self._epoch_count += 1
        self._reset_step()

    # --- observations ------------------------------------------------------------------------

    def loss_called(self, function: str, input: Any, target: Any, value: Any) -> Any:
        """A ``torch.nn.functional`` loss ran (see :mod:`octa_tui.trainer.observe`).

        Returns the value weighted by the term's live factor when the monitor set one (the
        loss function then returns that), else None.
        """
        if self.failed or self._closed or not isinstance(value, torch.Tensor):
            return None
        training = torch.is_grad_enabled() and value.requires_grad
        if self.model is not None and not self.model.training:
            training = False
        short = observe.LOSS_FUNCTIONS.get(function, (function, ""))[0]
        if not training:
            if self._probe is not None and self._auto_epochs:  # read only by an inferred epoch's end
                with self._lock:
                    self._val.setdefault(short, []).append(value.detach().float().mean())
                if self._steps_in_epoch:
                    self._in_validation = True
                self.serve()
            return None
        count = self._occurrence.get(short, 0) + 1
        self._occurrence[short] = count
        key = short if count == 1 else f"{short}_{count}"
        weighted = None
        factor = self.term_weights.factors.get(key)
        if factor is not None:  # a live weight from the monitor: the term as the script now sees it
            weighted = value = value * factor
        self._calls.setdefault(key, []).append(value.detach().float().mean())
        if function not in self._functions:
            self._functions.append(function)
        if self._probe is None and key not in self._order:
            self._order.append(key)
        first_term = bool(self._order) and key == self._order[0]
        if isinstance(input, torch.Tensor) and (self._output is None or first_term):
            self._output = (function, input.detach())
        if self._expects is None and self._probe is None and isinstance(input, torch.Tensor):
            self._expects = observe.expects_probabilities(function, target)
        if self._autocast is None and isinstance(input, torch.Tensor):
            if input.dtype == torch.float16:
                self._autocast = "fp16"
            elif input.dtype == torch.bfloat16:
                self._autocast = "bf16"
        return weighted

    def backward_called(self, tensor: torch.Tensor) -> None:
        """``backward`` ran on a one-element tensor: the step's (micro-batch's) total loss."""
        if self.failed or self._closed or not tensor.requires_grad:
            return
        value = tensor.detach().reshape(()).float()
        scale = getattr(self.scaler, "_scale", None) if self.scaler is not None else None
        if scale is not None:  # scaler.scale(loss).backward(): the total as the user computed it
            value = value / scale.reshape(()).to(value.device)
        self._totals.append(value)
        self._occurrence = {}

    def clip_called(self, max_norm: float, total_norm: Any, kind: str = "norm") -> None:
        """``torch.nn.utils.clip_grad_norm_`` (or ``clip_grad_value_``) ran before the optimizer's step.

        The gradients the probe measures are then the clipped ones: the schema says so
        (``grads_clipped_before_probe`` = the bound, ``grads_clip_kind`` = "norm"/"value").
        """
        if self._closed or self._clipped_before is not None:
            return
        self._clipped_before = float(max_norm)
        self._clip_kind = kind
        if self._probe is not None and not self.failed:  # clipping that starts after the first step: say it once
            what = "clip_grad_value_" if kind == "value" else "clip_grad_norm_"
            self._guard(lambda: self._probe.event(
                "warning", f"the script clips the gradients ({what} at {max_norm:g}) from step {self._probe.step} "
                "on, before the optimizer's step: the gradient norms measured from here are the clipped ones",
                source="clipping", grads_clipped_before_probe=float(max_norm), grads_clip_kind=kind))

    def _step_numbers(self) -> tuple[Any, dict[str, Any], Any, str | None]:
        """This step's loss, components (means over micro-batches), outputs and activation."""
        components: dict[str, Any] = {}
        known = self._probe.schema.loss[1:] if self._probe is not None else ()
        for name, values in self._calls.items():
            if name in known:
                components[name] = values[0] if len(values) == 1 else torch.stack(values).mean()
        if self._noted_loss is not None:
            loss = self._noted_loss
            if self._noted_components is not None:
                components = {k: v for k, v in self._noted_components.items() if k in known}
        elif self._totals:
            loss = self._totals[0] if len(self._totals) == 1 else torch.stack(self._totals).sum()
        elif components:
            loss = sum(components.values())
        else:
            loss = math.nan
        outputs, activation = None, None
        if self._output is not None:
            function, outputs = self._output
            if observe.LOSS_FUNCTIONS.get(function, ("", ""))[0] == "bce" and function.endswith("_with_logits"):
                activation = "sigmoid"  # the loss applies it: its outputs are what the loss compared
        elif self._noted_outputs is not None:
            outputs = self._noted_outputs
        return loss, components, outputs, activation

    def _reset_step(self) -> None:
        self._totals = []
        self._calls = {}
        self._occurrence = {}
        self._output = None
        self._noted_loss = self._noted_components = self._noted_outputs = None

    # --- epochs from train()/eval() ------------------------------------------------------------

    def _wrap_train(self, model: nn.Module) -> None:
        model.__dict__["train"] = _TrainSwitch(model, self)
        self._train_wrapped = model

    def _mode(self, training: bool) -> None:
        """An eval() switch after training steps starts a validation; the epoch ends at the next
        training step (or at close). Frameworks that restore the training flags without
        train() (Lightning) are covered by the next step too.

        Nothing is flushed here (on CUDA a flush waits for the GPU): the epoch's last steps
        reach the monitor at the epoch's end, which flushes once, or with the next step."""
        if not self._auto_epochs or self._probe is None:
            return
        if not training and self._steps_in_epoch:
            self._in_validation = True

    def _infer_epoch_end(self) -> None:
        probe = self._probe
        assert probe is not None
        train: dict[str, float] = {}
        whole = False  # the observed terms make up the whole loss (no hand-written term beside them)
        if self._epoch_sums is not None and self._epoch_count:
            loss_mean, terms_mean = (self._epoch_sums / self._epoch_count).tolist()
            train["loss"] = loss_mean
            whole = math.isclose(terms_mean, loss_mean, rel_tol=1e-4, abs_tol=1e-7)
        with self._lock:
            val = {name: float(torch.stack(values).mean()) for name, values in self._val.items() if values}
            self._val = {}
        if val and whole:  # the validation loss is the sum of its terms only when training's was
            val["loss"] = sum(val.values())
        probe.end_epoch(train, val)
        self._in_validation = False
        self._steps_in_epoch = 0
        self._epoch_sums, self._epoch_count = None, 0

    # --- set-up at the first step -------------------------------------------------------------

    def _ensure_probe(self) -> None:
        if self._probe is not None:
            return
        if self.model is None:
            candidates = self._candidates
            if candidates is None and self._find_modules is not None:
                candidates = self._find_modules()
            self.model = find_model(self.optimizers or self.optimizer, candidates)
            if self.model is None:
                raise RuntimeError("could not find the model whose parameters the optimizer updates")
        kwargs = dict(self.probe_kwargs)
        config = dict(kwargs.pop("config", None) or {})
        if self._functions:
            config["loss_functions"] = list(self._functions)
        if self._autocast and self.scaler is None:
            config.setdefault("amp", self._autocast)
        if self.name:
            config["name"] = self.name
        if self._clipped_before is not None:  # the gradients this probe measures were clipped already
            config.setdefault("grads_clipped_before_probe", self._clipped_before)
            config.setdefault("grads_clip_kind", self._clip_kind)
        components = tuple(kwargs.pop("loss_components", ()) or self._order)
        if "loss_expects_probabilities" not in kwargs:
            kwargs["loss_expects_probabilities"] = True if self._expects is None else self._expects
        if self._expects is not None:
            config["loss_expects_probabilities_observed"] = True
        kwargs.setdefault("model_name", type(self.model).__name__)
        common = dict(task=self.task, loss_components=components, optimizer=self.optimizer, config=config,
                      scaler=self.scaler, scaler_watch=self.scaler_watch, **kwargs)
        if self.telemetry is None or self.control is None:
            probe = Probe(self.model, **common)
        else:
            if self.record:
                Path(self.record).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = Probe.start(self.model, telemetry=self.telemetry, control=self.control, record=self.record,
                                announce=self.announce, link_options=self.link_options, **common)
        self._probe = probe
        self._candidates = None  # no reference kept to every module of the process
        self.term_weights.terms = tuple(self._order)  # the observed terms are the ones a command may weight
        from .core.lr import LrScale

        # a criterion= given to watch() (with bce_weight/dice_weight/pos_weight) is steered as the
        # built-in trainer's is; without one, set_loss_weights weights the observed terms
        self.controller = Controller(probe, self.optimizer, criterion=probe.criterion,
                                     save_checkpoint=self._save_checkpoint, hook=False,
                                     term_weights=self.term_weights, lr_scale=LrScale(list(self.optimizers)))
        if self._auto_epochs:
            self._wrap_train(self.model)
        losses = ", ".join(self._functions) or "not observed"
        probe.event("run_started", f"{self.task} run started: {type(self.model).__name__}, "
                    f"{len(probe.layer_names)} layers, loss {losses}")
        if self.verbose and probe.link is not None:
            print(f"octa-tui: streaming run {probe.run_id} ({type(self.model).__name__}, {len(probe.layer_names)} "
                  f"layers, loss {losses}): open `octa-tui` to watch it (telemetry {probe.link.telemetry_endpoint}, "
                  f"control {probe.link.control_endpoint})", file=sys.stderr)

    def _save_checkpoint(self) -> str:
        probe = self._probe
        assert probe is not None and self.model is not None
        folder = self.checkpoint_dir
        if folder is None:
            if self.record:
                folder = Path(self.record).resolve().parent
            else:
                folder = Path.home() / ".cache" / "octa-tui" / "checkpoints" / probe.run_id
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        from .checkpoint import save_checkpoint

        path = save_checkpoint(folder / f"step-{probe.step:08d}.pt", {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **({"optimizers": [o.state_dict() for o in self.optimizers]} if len(self.optimizers) > 1 else {}),
            "step": probe.step,
            "epoch": probe.epoch,
            "run_id": probe.run_id,
            "config": dict(probe.schema.config),
            "settings": {"lr_scale": self.controller.lr_scale.scale if self.controller else 1.0,
                         "clip": self.clip, "loss_term_factors": self.term_weights.all_factors()},
        })
        os.chmod(path, 0o600)
        self.checkpoints.append(str(path))
        probe.event("checkpoint_saved", f"checkpoint {path.name} written (from the monitor)", path=str(path),
                    step=probe.step)
        return str(path)

    # --- the data set report -------------------------------------------------------------------

    def _scan_data(self, path: str | os.PathLike[str]) -> None:
        def scan() -> None:
            try:
                from .dataset_report import scan_folder

                self._data_report = scan_folder(path)
            except Exception as exc:  # noqa: BLE001 - a data report never stops training
                self._data_report = exc
            finally:
                self._scan_done.set()

        threading.Thread(target=scan, name="octa-tui dataset report", daemon=True).start()

    def _publish_data_report(self) -> None:
        report = self._data_report
        if report is None or self._probe is None:
            return
        self._data_report = None
        if isinstance(report, Exception):
            self._probe.event("warning", f"the dataset report could not be made: {report}", source="data")
            return
        from dataclasses import replace

        self._probe.publish(replace(report, run_id=self._probe.run_id))

    # --- failures ------------------------------------------------------------------------------

    def _guard(self, work: Any) -> Any:
        """Run ``work``; a failure is said once and stops the watch, never raised into the loop."""
        try:
            return work()
        except StopRun:
            raise
        except Exception as exc:  # noqa: BLE001
            if self.failed is None:
                self.failed = f"{type(exc).__name__}: {exc}"
                print(f"octa-tui: stopped watching this run after an internal error ({self.failed}); "
                      "training goes on", file=sys.stderr)
                if self.controller is not None:
                    self.controller.lr_scale.after_step()
            return None


class _TrainSwitch:
    """The watched model's ``train`` (set on the instance): its class's ``train``, then the switch told to the Watch.

    A copy of the model (``copy.deepcopy``: a best-model snapshot, an EMA) gets its class's
    plain ``train`` bound to the copy, and pickling the model (``torch.save(model)``) stores
    that instead of the switch: a copy never switches the watched model's mode.
    """

    __slots__ = ("module", "watch")

    def __init__(self, module: nn.Module, watch: Watch) -> None:
        self.module = module
        self.watch = weakref.ref(watch)

    def __call__(self, mode: bool = True) -> nn.Module:
        result = type(self.module).train(self.module, mode)
        current = self.watch()
        if current is not None:
            current._guard(lambda: current._mode(bool(mode)))
        return result

    def __reduce__(self) -> tuple[Any, ...]:
        return functools.partial, (type(self.module).train, self.module)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return functools.partial(type(self.module).train, copy.deepcopy(self.module, memo))


_open_watches: weakref.WeakSet[Watch] = weakref.WeakSet()


@atexit.register
def _close_open_watches() -> None:
    for w in list(_open_watches):
        w.close()


def watch(
    model: nn.Module | None = None,
    optimizer: Any = None,
    *,
    task: str = "custom",
    data: str | os.PathLike[str] | None = None,
    record: str | os.PathLike[str] | None = None,
    scaler: Any = None,
    telemetry: str | None = DEFAULT_ENDPOINT,
    control: str | None = DEFAULT_ENDPOINT,
    **probe_kwargs: Any,
) -> Watch:
    """Watch a training loop through its optimizer's steps: one call, before the loop.

    ``model`` and ``optimizer`` may be left out (the first optimizer that steps, the other
    optimizers of the same network, and the module owning their parameters are used);
    ``optimizer`` may be a list (an encoder's and a decoder's optimizer: one run). ``data`` is a data set folder (images/ + masks/) scanned in
    the background for the dataset report; ``record`` a recording file; ``scaler`` a GradScaler.
    ``telemetry``/``control`` are the endpoints to bind (loopback, any free port, by default;
    None for both measures without a link). Other keywords go to the Watch (``name``,
    ``on_stop``, ``checkpoint_dir``, ``infer_epochs``, ``observe_loss``, ``link_options``) or
    the :class:`~octa_tui.trainer.probe.Probe` (``explosion_bound``, ``group_depth``, ...).
    """
    return Watch(model, optimizer, task=task, data=data, record=record, scaler=scaler, telemetry=telemetry,
                 control=control, **probe_kwargs)


__all__ = ["StopRun", "Watch", "find_model", "watch"]
