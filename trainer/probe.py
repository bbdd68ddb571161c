"""The probe: a few calls that make any PyTorch training loop observable.

A :class:`Probe` wraps a model and, once per step, measures what the monitor shows and the
diagnosis rules read: per-layer gradient norms (named by module, shallow to deep), the
total norm and how many parameters exceed the explosion bound, the loss and its
components, the output range before and after the activation, the settings in force and
the throughput. The built-in trainer uses it exactly as a user's own loop does::

    probe = Probe.start(model, task="segmentation", loss_components=("bce", "dice"),
                        optimizer=optimizer, criterion=criterion)
    for images, masks in loader:
        logits = model(images)
        out = criterion(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        out.total.backward()
        probe.clip_(1.0)                  # or probe.after_backward() when not clipping
        optimizer.step()
        probe.end_step(loss=out.total, components=out.components, outputs=logits)
    probe.close()

``octa_tui.watch`` and ``octa-tui run`` drive the same probe from the optimizer's step hooks.

The probe composes the attach core (:mod:`octa_tui.trainer.core`), one job per module:
measuring on the device (:mod:`~octa_tui.trainer.core.measure`), the vector layout by named
slot and its assembly on the host (:mod:`~octa_tui.trainer.core.layout`), the CUDA copy
pipeline (:mod:`~octa_tui.trainer.core.pipeline`), the publisher thread
(:mod:`~octa_tui.trainer.core.publisher`), the link service
(:mod:`~octa_tui.trainer.core.service`) and the GradScaler's facts
(:mod:`~octa_tui.trainer.core.amp`).

Cost: all gradient norms come from one ``torch._foreach_norm`` over every gradient, stacked
once; the total norm and clipping reuse them. The other device numbers of a step are 0-d
tensors: the losses, one ``aminmax`` and one ``sum`` per output tensor, and for the
activated outputs one ``sum`` (with ``activation="sigmoid"`` their range is the sigmoid of
the raw range, worked out on the host). On CUDA they are stacked after the norms and copied
once, to pinned host memory without blocking, and read when the copy's event has completed
(normally one step later), so the probe adds no host-device synchronisation per step; on the
CPU they are in host memory already. Everything after that is host work the loop need not
wait for: a publisher thread (:class:`~octa_tui.trainer.core.publisher.StepPublisher`) reads
the numbers (on the CPU, the step's 0-d tensors themselves), lays the steps pending out with
a few array operations over all of them (layer norms, the count over the bound, the largest
norm), sends, keeps and records them, in order, a few milliseconds later. The training
thread's part of ``end_step`` is the output statistics' torch calls and handing the step
over. ``bench/bench_probe.py`` and part 1 of ``bench/bench_peers.py`` measure both threads.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from octa_tui.protocol.messages import (
    EpochSummary,
    Event,
    ModelSummary,
    Preview,
    Schema,
    new_run_id,
)

from .core.amp import AmpFacts, scaler_enabled
from .core.layout import VectorLayout
from .core.measure import (
    PREVIEW_SIDE,
    Layer,
    ProbeError,
    UpdateMeter,
    count_outside,
    find_layers,
    first_channel,
    float_sum,
    fraction_outside,
    output_tensors,
    preview_array,
    process_memory_mb,
    range_stats,
    sigmoid,
    sigmoid_array,
)
from .core.pipeline import PENDING_VECTORS, DeviceCopies
from .core.publisher import StepPublisher
from .core.service import SERVICE_INTERVAL_S, LinkService, open_link

__all__ = [
    "ACTIVATIONS", "EXPLOSION_BOUND", "GRADSTAT_CHANNELS", "OUT_CHANNELS", "PENDING_VECTORS", "PREVIEW_SIDE",
    "SERVICE_INTERVAL_S", "TIME_CHANNELS", "Layer", "Probe", "ProbeError", "UpdateMeter", "find_layers",
    "preview_array", "process_memory_mb",
]

GRADSTAT_CHANNELS = ("total_norm", "n_over_bound", "max_param_norm", "nonfinite")
AMP_GRADSTAT = "amp_skipped"  # 1.0 when a GradScaler skipped the step (inf/NaN gradients)
AMP_OPT = "amp_scale"  # the GradScaler's scale in force for the step
AMP_EVENT_INTERVAL_S = 1.0  # "amp_step_skipped" events: at most one a second
OUT_CHANNELS = ("raw_min", "raw_max", "raw_mean", "act_min", "act_max", "act_mean", "frac_outside_01")
ACTIVATIONS = ("sigmoid",)  # what end_step(activation=...) can apply to the outputs itself
TIME_CHANNELS = ("step_s", "samples_per_s", "memory_mb")
LOSS_WEIGHT_ATTRIBUTES = ("bce_weight", "dice_weight", "pos_weight")

_GRAD = operator.attrgetter("grad")
_NONE_MISSING: frozenset[int] = frozenset()

EXPLOSION_BOUND = 10.0  # seed 002: parameters with a gradient norm above 10
MEMORY_INTERVAL_S = 1.0
# On the CPU, outputs up to this many elements (256 KiB of float32) are handed to the publisher
# thread, which takes their statistics; larger ones are measured at end_step (holding them
# until the publisher runs would keep their memory).
DEFER_OUTPUT_ELEMENTS = 1 << 16  # peak resident memory is a system call: read once a second


class OutputsPart:
    """What the host needs to finish a step's output statistics.

    Element counts (means are sums divided on the host), on the CPU the activated tensors
    whose fraction outside [0, 1] the host settles (None: nothing to settle), and whether
    the activated range is the sigmoid of the raw range (worked out on the host).
    ``deferred`` (CPU, small outputs): the (raw, activated or None) tensors, detached, whose
    statistics the publisher thread takes itself.
    """

    __slots__ = ("raw_count", "act_count", "outside_check", "derived", "deferred")

    def __init__(self, raw_count: int, act_count: int, outside_check: list[torch.Tensor] | None,
                 derived: bool, deferred: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> None:
        self.raw_count = raw_count
        self.act_count = act_count
        self.outside_check = outside_check
        self.derived = derived
        self.deferred = deferred


class HostPart:
    """A step's host-side numbers: values in host-key order, losses given as plain numbers
    (key, value), the outputs' part, the parameters that had no gradient, and the wall time
    the step ended (its time stamp; None: when it is published)."""

    __slots__ = ("values", "overrides", "outputs", "missing", "ended")

    def __init__(self, values: list[float], overrides: list[tuple[str, float]], outputs: OutputsPart | None,
                 missing: frozenset[int], ended: float | None = None) -> None:
        self.values = values
        self.overrides = overrides
        self.outputs = outputs
        self.missing = missing
        self.ended = ended


# What the training thread hands the publisher per step: (step, epoch, wall time it ended,
# parameter norms (tensor) or the host vector, device scalars or None, host part).
StepItem = tuple[int, int, "float | None", Any, "list[Any] | None", HostPart]


class Probe:
    """Per-step measurements of a training loop, published to a monitor.

    Call order per step: ``loss.backward()``; ``after_backward()`` (or ``clip_(max_norm)``,
    which measures and clips with the same norms); ``optimizer.step()``;
    ``end_step(loss=..., components=..., outputs=..., activated=...)``. ``after_backward``
    may be skipped when gradients are still in place at ``end_step`` (no ``zero_grad`` in
    between); the update size is then not measured.

    ``link`` is a :class:`~octa_tui.protocol.link.TrainerLink` (or anything with its
    ``publish_step``/``publish``/``poll_commands``/``tick``/``close``), attached later with
    :meth:`attach` since the link needs this probe's :attr:`schema`; :meth:`start` builds
    both. Without a link the probe still measures: :attr:`last_values` holds the latest
    vector and ``on_values`` callbacks receive every one.

    Channels: ``loss`` (total then ``loss_components``), ``grad`` (one per layer; NaN for a
    layer none of whose parameters received a gradient), ``gradstat``, ``out``, ``opt`` (lr,
    the criterion's bce/dice/pos weights when it has them, clip, update_ratio) and ``time``;
    with a GradScaler (``scaler=``) also ``opt/amp_scale`` and ``gradstat/amp_skipped``; see
    :mod:`octa_tui.protocol.channels`. ``update_ratio`` (|delta w| / |w| of one optimizer
    step) is measured every ``update_every`` steps and repeated in between (it keeps one copy
    of the parameters for that); ``memory_mb`` is CUDA memory allocated (every step), or the
    process's peak resident memory on the CPU (a system call: read at most once a second,
    repeated between).

    Steps are published by a publisher thread (``background=False``: on the training thread,
    at ``end_step``): :meth:`flush` publishes what is pending, and :attr:`last_values` and
    :attr:`published` do so before they answer. ``on_values`` callbacks run on the thread
    that publishes (normally the publisher's): keep them short, and read what they gather
    after :meth:`flush`. On the CPU the step's 0-d tensors (losses given as tensors
    included) are read there, a few milliseconds later: a tensor changed in place after
    ``end_step`` would be read changed. Nothing the publisher does raises into the loop: a
    step that cannot be published is skipped, counted (``publisher.failed_items``) and said
    in a warning event; a publisher more than ``MAX_PENDING_STEPS`` behind drops steps and
    says how many.

    ``end_step`` also heartbeats the link and answers commands (every 20 ms at most). A loop
    that spends long between steps (validation) should call :meth:`serve` there too; a
    :class:`~octa_tui.trainer.control.Controller` attached to the probe applies commands,
    otherwise they are refused with a reason.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        task: str = "custom",
        loss_components: Sequence[str] = (),
        optimizer: torch.optim.Optimizer | None = None,
        criterion: Any = None,
        loss_expects_probabilities: bool = True,
        config: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        run_id: str | None = None,
        start_step: int = 0,
        start_epoch: int = 0,
        explosion_bound: float = EXPLOSION_BOUND,
        preview_every: int = 0,
        update_every: int = 20,
        group_depth: int | None = None,
        link: Any = None,
        scaler: Any = None,
        scaler_watch: Any = None,
        background: bool = True,
    ) -> None:
        names = [str(n) for n in loss_components]
        if "total" in names or len(set(names)) != len(names):
            raise ProbeError(f"loss_components must be distinct names other than 'total', got {names}")
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        self.explosion_bound = float(explosion_bound)
        self.preview_every = int(preview_every)
        self.update_every = int(update_every)
        self.step = int(start_step)  # the next step to run
        self.epoch = int(start_epoch)
        self.clip = 0.0
        self._last_values: np.ndarray | None = None
        self._published = 0
        self.on_values: list[Callable[[int, int, np.ndarray], None]] = []
        self.command_handler: Any = None  # a Controller takes commands over; see control.py
        self.lr_scale: Any = None  # a Controller's LrScale: opt/lr is the lr the step really used

        self._params, self._layers = find_layers(model, group_depth)
        self.device = self._params[0].device
        self._components = tuple(names)
        self._no_components = (math.nan,) * len(names)
        self._component_set = frozenset(names)
        self._weights = tuple(a for a in LOSS_WEIGHT_ATTRIBUTES if criterion is not None and hasattr(criterion, a))
        self.scaler = scaler if scaler_enabled(scaler) else None
        amp = self.scaler is not None
        opt = ("lr", *self._weights, "clip", "update_ratio", *((AMP_OPT,) if amp else ()))
        gradstat = GRADSTAT_CHANNELS + ((AMP_GRADSTAT,) if amp else ())
        config = dict(config or {})
        if amp:
            config.setdefault("amp", "fp16")
        parameters = sum(p.numel() for p in model.parameters())
        self.schema = Schema(
            run_id=run_id or new_run_id(),
            task=task,
            model=ModelSummary(model_name or type(model).__name__, int(parameters), str(self.device)),
            loss=("total", *self._components),
            grad=tuple(layer.name for layer in self._layers),
            gradstat=gradstat,
            out=OUT_CHANNELS,
            opt=opt,
            time=TIME_CHANNELS,
            loss_expects_probabilities=bool(loss_expects_probabilities),
            started_at=time.time(),
            config=config,
        )
        # The device scalars in the order end_step stacks them; the host values in the order
        # it lists them (nonfinite is settled from the total norm when the step is assembled).
        device_keys = ["gradstat/total_norm", *(f"loss/{n}" for n in self.schema.loss)]
        device_keys += [f"out/{n}" for n in OUT_CHANNELS]
        device_keys.append("opt/update_ratio")
        if amp:
            device_keys += [f"opt/{AMP_OPT}", f"gradstat/{AMP_GRADSTAT}"]
        host_keys = ["gradstat/nonfinite", "opt/lr", *(f"opt/{w}" for w in self._weights), "opt/clip"]
        host_keys += [f"time/{n}" for n in TIME_CHANNELS]
        self.layout = VectorLayout(self.schema, self._layers, len(self._params), device_keys, host_keys)
        self._out_offset = device_keys.index(f"out/{OUT_CHANNELS[0]}")  # the output statistics' first scalar
        self._nan = torch.full((), math.nan, device=self.device)
        self._zero = torch.zeros((), device=self.device)
        self._update_ratio = self._nan
        self._no_outputs = [self._nan] * len(OUT_CHANNELS)
        self._update_meter = UpdateMeter(self._params)
        self._snapshot_taken = False
        # On the CPU every number is in host memory already: end_step reads them directly
        # instead of stacking them into one vector for a device copy.
        self._on_host = self.device.type == "cpu"
        self._on_cuda = self.device.type == "cuda"  # read per step: torch.device.type is not free
        self._copies = DeviceCopies(self._deliver_copy)
        # Reading, laying out and publishing each step happen on a publisher thread: the
        # training thread hands it the step's tensors (CPU) or host copy (CUDA) and goes on.
        self._publisher = StepPublisher(self._publish_items, on_error=self._publisher_failed,
                                        on_dropped=self._publisher_dropped, background=background)
        self._publisher_warned = False
        self._norms: torch.Tensor | None = None  # this step's per-parameter norms, stacked
        self._plain_grads: bool | None = None  # all norms float32 on self.device: no conversion
        self._grads: list[torch.Tensor] = []
        self._total: torch.Tensor | None = None
        self._memory = math.nan
        self._memory_read_at = -math.inf
        self._clip_used = 0.0
        self._weight_cache: dict[str, tuple[int, float]] = {}
        self._timer = time.perf_counter()
        self._closed = False
        self._service = LinkService()
        self._missing: frozenset[int] = frozenset()  # parameters without a gradient this step
        self._unused_reported = False
        self._amp = AmpFacts(self.scaler, self.device, scaler_watch) if amp else None
        self._amp_event_at = -math.inf
        if link is not None:
            self.attach(link)

    # --- set-up -------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        model: nn.Module,
        *,
        telemetry: str = "tcp://127.0.0.1:0",
        control: str = "tcp://127.0.0.1:0",
        record: str | None = None,
        announce: bool = True,
        link_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> Probe:
        """Build a probe and its link in one call: binds the endpoints, records to ``record``.

        ``kwargs`` are :class:`Probe`'s. The endpoints actually bound are
        ``probe.link.telemetry_endpoint`` and ``probe.link.control_endpoint``. With
        ``announce`` a run file tells ``octa-tui`` on this machine where to attach; it is
        removed by :meth:`close`. ``link_options`` go to the
        :class:`~octa_tui.protocol.link.TrainerLink` (``curve=`` keys or ``insecure=True``
        for an address beyond loopback; ``spill=None`` keeps the history in RAM). By default
        the history kept for monitors that join late is paged to an unnamed file in the
        user's cache folder (``$OCTA_TUI_SPILL_DIR``), so a long run does not grow the
        training process by ~0.6 KB a step.
        """
        probe = cls(model, **kwargs)
        probe.attach(open_link(probe.schema, telemetry, control, record, link_options))
        if announce:
            probe._service.announce(probe.schema, record or "")
        return probe

    def attach(self, link: Any) -> None:
        """Publish to ``link`` from now on (a TrainerLink built from :attr:`schema`)."""
        self._service.link = link

    @property
    def link(self) -> Any:
        """The TrainerLink this probe publishes to (None: measuring only)."""
        return self._service.link

    @link.setter
    def link(self, link: Any) -> None:
        self._service.link = link

    @property
    def run_id(self) -> str:
        """The run this probe reports."""
        return self.schema.run_id

    @property
    def layer_names(self) -> tuple[str, ...]:
        """Gradient channels, shallow to deep."""
        return self.schema.grad

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """The module type of each gradient channel (``Conv2d``, ``BatchNorm2d``, ...)."""
        return tuple(layer.kind for layer in self._layers)

    # --- per step -------------------------------------------------------------------------

    @torch.no_grad()
    def after_backward(self) -> torch.Tensor:
        """Measure every gradient now (after ``backward``, before ``optimizer.step``).

        One ``torch._foreach_norm`` gives each parameter's norm; a layer's norm is the square
        root of the sum of its parameters' squared norms (summed on the host when the step is
        published). Returns the total norm (a device tensor, not read on the host). Under a
        GradScaler, norms measured before ``scaler.unscale_`` are unscaled here (and that is
        said once); calling ``scaler.unscale_(optimizer)`` first saves the division.
        """
        return self._measure(before_step=True)

    def _measure(self, before_step: bool) -> torch.Tensor:
        """after_backward's work, for callers already under ``torch.no_grad``."""
        grads = list(map(_GRAD, self._params))
        missing: list[int] = []
        try:
            norms = torch._foreach_norm(grads)  # refuses a None: no per-parameter check when all have one
        except TypeError:
            missing = [i for i, g in enumerate(grads) if g is None]
            if not missing:
                raise
            if len(missing) == len(grads):
                raise ProbeError("no parameter has a gradient: call after_backward() after loss.backward() "
                                 "and before optimizer.zero_grad()") from None
            grads = [g for g in grads if g is not None]
            norms = torch._foreach_norm(grads)
        if self._amp is not None:
            norms, unscaled = self._amp.measured(list(norms), self.optimizer, before_step)
            if unscaled:
                self._say_before_unscale()
        if self._plain_grads is None:
            self._plain_grads = all(n.device == self.device and n.dtype == torch.float32 for n in norms)
        if not self._plain_grads:
            norms = [n.to(self.device, torch.float32, non_blocking=True) for n in norms]
        if missing:  # a parameter without a gradient has norm 0; its layer is NaN if none has one
            present = iter(norms)
            absent = frozenset(missing)
            norms = [self._zero if i in absent else next(present) for i in range(len(self._params))]
            if absent != self._missing:
                self._note_unused(absent)
        self._missing = frozenset(missing) if missing else _NONE_MISSING
        self._grads = grads
        self._norms = torch.stack(norms)  # stacked once: the total and the step's vector use it
        self._total = torch.linalg.vector_norm(self._norms)
        self._clip_used = 0.0
        if before_step and self.update_every > 0 and self.step % self.update_every == 0:
            self._update_meter.before_step()
            self._snapshot_taken = True
        return self._total

    def _say_before_unscale(self) -> None:
        """Measuring before ``scaler.unscale_`` is said once, loudly (stderr and a warning event)."""
        assert self._amp is not None
        if self._amp.warned:
            return
        self._amp.warned = True
        text = ("the probe measured gradients before scaler.unscale_(optimizer): the norms are divided by the "
                "GradScaler's scale here; call scaler.unscale_(optimizer) before measuring (or use octa_tui.watch, "
                "which measures at the optimizer step)")
        print(f"octa-tui: {text}", file=sys.stderr)
        self.event("warning", text, source="amp")

    def mark_skipped(self) -> None:
        """Say that the GradScaler skipped this step's ``optimizer.step`` (inf/NaN gradients)."""
        if self._amp is not None:
            self._amp.mark_skipped()

    def _note_unused(self, absent: frozenset[int]) -> None:
        """Report, once, the layers none of whose parameters received a gradient."""
        layers = [layer.name for layer in self._layers if all(i in absent for i in layer.params)]
        if layers and not self._unused_reported:
            self._unused_reported = True
            shown = ", ".join(layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
            self.event("unused_parameters", f"{len(layers)} layer(s) never received a gradient: {shown} "
                       "(their gradient channels are NaN, not vanishing)", layers=layers)

    @torch.no_grad()
    def clip_(self, max_norm: float | None) -> torch.Tensor:
        """Clip all gradients to a total norm of ``max_norm`` (0 or None: no clipping).

        Same result as ``torch.nn.utils.clip_grad_norm_`` but reuses the norms of
        :meth:`after_backward` (measured here if not yet this step), so it costs one
        ``torch._foreach_mul_``. Returns the total norm before clipping.
        """
        if self._total is None:
            self._measure(before_step=True)
        assert self._total is not None
        max_norm = float(max_norm or 0.0)
        if not math.isfinite(max_norm) or max_norm < 0:
            raise ProbeError(f"clip max_norm must be a finite number >= 0 (0 turns clipping off), got {max_norm}")
        if max_norm > 0:
            coef = torch.clamp(max_norm / (self._total + 1e-6), max=1.0)
            by_device: dict[torch.device, list[torch.Tensor]] = {}
            for g in self._grads:
                by_device.setdefault(g.device, []).append(g)
            for device, grads in by_device.items():
                torch._foreach_mul_(grads, coef.to(device, non_blocking=True))
        self._clip_used = max_norm
        self.clip = max_norm
        return self._total

    def _output_stats(self, outputs: Any, activated: Any, activation: str | None
                      ) -> tuple[list[torch.Tensor], OutputsPart]:
        """raw min/max/sum, activated min/max/sum and the fraction outside [0, 1] (seven tensors),
        and what the host needs to finish them (:class:`OutputsPart`).

        Exact over every element (a single outlier must show), from one ``aminmax`` and one
        ``sum`` per tensor. With ``activation="sigmoid"`` the activated range is the sigmoid
        of the raw range, computed on the host (the sigmoid is monotone), so only the sum of
        the activated values is taken on the device. On the CPU the fraction outside is
        settled on the host when the step is published (nothing to count when the range is
        inside [0, 1], which a sigmoid's always is unless an output is NaN). On the CPU,
        outputs of at most ``DEFER_OUTPUT_ELEMENTS`` elements (one tensor each) are handed to
        the publisher thread, detached, which takes the same statistics there.
        """
        derived = False
        if activation is not None:
            if activated is not None:
                raise ProbeError("pass either activated= (the activated outputs) or activation= (what to apply), "
                                 "not both")
            if activation not in ACTIVATIONS:
                raise ProbeError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}; "
                                 "for another one pass its result as activated=")
            derived = True
        if (self._on_host and type(outputs) is torch.Tensor and outputs.numel() <= DEFER_OUTPUT_ELEMENTS
                and (activated is None or (type(activated) is torch.Tensor
                                           and activated.numel() <= DEFER_OUTPUT_ELEMENTS))):
            count = outputs.numel()
            act = activated.detach() if activated is not None else None
            return self._no_outputs, OutputsPart(count, count if act is None else act.numel(), None, derived,
                                                 (outputs.detach(), act))
        raw = output_tensors(outputs)
        if derived:
            act_list = [torch.sigmoid(t) for t in raw]
        else:
            act_list = output_tensors(activated) if activated is not None else raw
        stats, raw_count, act_count, check = self._stat_tensors(raw, act_list, derived)
        return stats, OutputsPart(raw_count, act_count, check, derived)

    def _stat_tensors(self, raw: list[torch.Tensor], act: list[torch.Tensor], derived: bool
                      ) -> tuple[list[torch.Tensor], int, int, list[torch.Tensor] | None]:
        """The seven output statistics as tensors, the element counts, and the activated
        tensors whose fraction outside [0, 1] the host settles (CPU; None: nothing to settle)."""
        raw_stats, raw_count = range_stats(raw)
        if derived:
            act_count = raw_count
            act_stats = [self._nan, self._nan, float_sum(act)]  # min and max: sigmoid of raw's, on the host
        elif act is raw:
            act_stats, act_count = raw_stats, raw_count
        else:
            act_stats, act_count = range_stats(act)
        check = None
        if not self.schema.loss_expects_probabilities:
            outside = self._nan
        elif self._on_host:
            outside, check = self._nan, act
        else:
            outside = count_outside(act) / float(act_count)
        return [*raw_stats, *act_stats, outside], raw_count, act_count, check

    def _deferred_stats(self, outputs: OutputsPart) -> list[float]:
        """On the publisher thread: the seven output statistics of deferred outputs, read."""
        assert outputs.deferred is not None
        raw, act = outputs.deferred
        outputs.deferred = None  # the tensors are not kept beyond this
        with torch.no_grad():
            raw_list = [raw]
            if outputs.derived:
                act_list = [torch.sigmoid(raw)]
            else:
                act_list = raw_list if act is None else [act]
            stats, _, _, check = self._stat_tensors(raw_list, act_list, outputs.derived)
            outputs.outside_check = check
            return [v.item() if isinstance(v, torch.Tensor) else v for v in stats]

    def _loss_values(self, loss: Any, components: Mapping[str, Any] | None) -> list[Any]:
        """The loss total and components in schema order, as given (tensors or numbers; NaN
        for a declared component not given)."""
        if components:
            if components.keys() == self._component_set:  # the usual case: every declared component
                return [loss, *map(components.__getitem__, self._components)]
            unknown = components.keys() - self._component_set
            if unknown:
                raise ProbeError(
                    f"loss component(s) {sorted(unknown)} were not declared; declared: {list(self._components)} "
                    "(pass loss_components=... when creating the probe)"
                )
            get = components.get
            return [loss, *[get(name, math.nan) for name in self._components]]
        return [loss, *self._no_components]

    def _loss_scalars(self, values: list[Any]) -> tuple[list[torch.Tensor], list[tuple[str, float]]]:
        """For the device vector (CUDA): the losses as tensors, and (key, value) for plain numbers.

        A plain number needs no device tensor: its slot holds NaN and the host writes the value.
        Tensors are taken as they are (device and shape are settled by :meth:`_stack`).
        """
        scalars = [v if isinstance(v, torch.Tensor) else self._nan for v in values]
        overrides = [(f"loss/{name}", float(v)) for name, v in zip(self.schema.loss, values)
                     if not isinstance(v, torch.Tensor)]
        return scalars, overrides

    def _setting(self, name: str) -> float:
        value = getattr(self.criterion, name, None)
        if value is None:
            return 1.0 if name == "pos_weight" else math.nan
        if isinstance(value, torch.Tensor):
            # Read a tensor setting once per object, not once per step (it may live on the GPU).
            cached = self._weight_cache.get(name)
            if cached is None or cached[0] != id(value):
                cached = (id(value), float(value.detach().float().mean()))
                self._weight_cache[name] = cached
            return cached[1]
        return float(value)

    def end_step(
        self,
        loss: Any,
        components: Mapping[str, Any] | None = None,
        outputs: Any = None,
        activated: Any = None,
        *,
        activation: str | None = None,
        lr: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Close the step: gather its numbers into one vector and publish it.

        ``loss`` is the total (a tensor or float); ``components`` maps the declared
        component names to their values; ``outputs`` are the model's raw outputs and
        ``activated`` what the loss compares with the target (defaults to ``outputs``);
        either may be a tensor or a sequence of tensors. ``activation="sigmoid"`` (instead
        of ``activated``) lets the probe apply a sigmoid itself, cheaply (a monotone
        activation's range is that of the raw range), but only when the loss applies one
        (``BCEWithLogitsLoss``): on a loss that compares the raw outputs (MSE) it would hide
        a missing sigmoid. ``lr`` defaults to the lr group 0's last step used (the live
        scale included); ``batch_size`` to the outputs' first dimension.
        """
        if self._closed:
            raise ProbeError("end_step() after close(); create a new probe for a new run")
        grad_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(False)  # torch.no_grad(), without the context manager's cost per step
        try:
            self._end_step(loss, components, outputs, activated, activation, lr, batch_size)
        finally:
            torch._C._set_grad_enabled(grad_enabled)

    def _end_step(self, loss: Any, components: Mapping[str, Any] | None, outputs: Any, activated: Any,
                  activation: str | None, lr: float | None, batch_size: int | None) -> None:
        if self._total is None:
            self._measure(before_step=False)  # the optimizer has stepped: no update size
        assert self._total is not None and self._norms is not None
        if self._snapshot_taken:
            self._update_ratio = self._update_meter.ratio()
            self._snapshot_taken = False
        losses = self._loss_values(loss, components)
        if outputs is not None:
            out, outputs_part = self._output_stats(outputs, activated, activation)
        elif activation is not None or activated is not None:
            raise ProbeError("activated= or activation= was given without outputs=; pass the model's raw outputs too")
        else:
            out, outputs_part = self._no_outputs, None
        if self._on_host:  # the publisher thread reads tensors and plain numbers alike
            overrides: list[tuple[str, float]] = []
        else:
            losses, overrides = self._loss_scalars(losses)
        scalars = [self._total, *losses, *out, self._update_ratio]
        if self._amp is not None:
            amp = self._amp.scalars(self.optimizer)
            # The scaler's scale is updated in place: on the CPU, read it now, not on the publisher thread.
            scalars += [float(a) for a in amp] if self._on_host else amp

        now = time.perf_counter()
        step_s = now - self._timer
        self._timer = now
        if batch_size is None:
            if outputs is None:
                batch_size = 0
            else:
                first = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else outputs
                batch_size = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 0
        if lr is None:
            if self.lr_scale is not None and self.lr_scale.used:
                lr = self.lr_scale.used[0]
            elif self.optimizer is not None:
                lr = float(self.optimizer.param_groups[0]["lr"])
            else:
                lr = math.nan
        host = [0.0, float(lr), *[self._setting(w) for w in self._weights], self._clip_used,
                step_s, batch_size / step_s if step_s > 0 and batch_size else math.nan, self._memory_mb(now)]
        part = HostPart(host, overrides, outputs_part, self._missing, time.time())
        if self._on_host:  # every number is in host memory: the publisher thread reads them
            self._publisher.submit((self.step, self.epoch, part.ended, self._norms, scalars, part))
        else:
            self._copies.submit(self.step, self.epoch, torch.cat((self._norms, self._stack(scalars))), part)
        self._norms = self._total = None
        self._grads = []
        self.step += 1
        if self.command_handler is None:
            self.serve()

    def _stack(self, parts: list[Any]) -> torch.Tensor:
        """The step's device scalars in one op (on CUDA; they follow the stacked parameter norms).

        Parts are normally 0-d float32 tensors on the probe's device; any other (a loss of
        shape (1,), on another device, in another dtype) is converted on a second try.
        """
        try:
            return torch.stack(parts)
        except RuntimeError:
            return torch.stack([p.detach().reshape(()).to(self.device, torch.float32) for p in parts])

    def _memory_mb(self, now: float) -> float:
        """CUDA memory allocated (a cheap counter, read every step); on the CPU the process's peak
        resident memory, a system call, read at most once every MEMORY_INTERVAL_S and repeated."""
        if self._on_cuda:
            return torch.cuda.memory_allocated(self.device) / 2**20
        if now - self._memory_read_at >= MEMORY_INTERVAL_S:
            self._memory = process_memory_mb()
            self._memory_read_at = now
        return self._memory

    def _deliver_copy(self, step: int, epoch: int, measured: np.ndarray, part: HostPart) -> None:
        """A CUDA step's host copy is ready: hand a copy of it (the pinned buffer is reused) on."""
        self._publisher.submit((step, epoch, part.ended, measured.copy(), None, part))

    def _publish_items(self, items: list[StepItem]) -> None:
        """The publisher thread's work for the steps pending: read, lay out, publish.

        An item is (step, epoch, wall time it ended, norms, scalars, host part). ``scalars``
        None: ``norms`` is the step's host vector already (CUDA); else ``norms`` is the
        stacked parameter norms and ``scalars`` the device scalars (0-d CPU tensors or
        numbers), read here. A step whose numbers cannot be read is reported and skipped.
        """
        count = self.layout.param_count
        out_first = count + self._out_offset
        measured = np.empty((len(items), self.layout.device_count), dtype=np.float32)
        good: list[StepItem] = []
        for item in items:
            row = measured[len(good)]
            norms, scalars = item[3], item[4]
            try:
                if scalars is None:
                    row[:] = norms
                else:
                    row[:count] = norms.numpy()
                    row[count:] = [p.item() if isinstance(p, torch.Tensor) else p for p in scalars]
                    outputs = item[5].outputs
                    if outputs is not None and outputs.deferred is not None:
                        row[out_first : out_first + len(OUT_CHANNELS)] = self._deferred_stats(outputs)
            except Exception as exc:
                self._publisher.report_failure(f"step {item[0]}: {type(exc).__name__}: {exc}")
                continue
            good.append(item)
        if good:
            self._assemble_rows(measured[: len(good)], good)

    def _assemble(self, step: int, epoch: int, measured: np.ndarray, part: HostPart) -> None:
        """Lay one step out in schema order and publish it (what the publisher does for each step)."""
        self._assemble_rows(measured[None, :], [(step, epoch, part.ended, None, None, part)])

    def _publisher_failed(self, reason: str) -> None:
        """A step could not be published (the publisher thread caught it): said once, counted."""
        if self._publisher_warned:
            return
        self._publisher_warned = True
        text = (f"publishing a step failed ({reason}); training goes on, steps that fail are skipped and "
                "counted")
        print(f"octa-tui: {text}", file=sys.stderr)
        self._publish_now(Event(run_id=self.run_id, step=self.step, time=time.time(), kind="warning",
                                message=text, data={"source": "publisher"}))

    def _publisher_dropped(self, count: int) -> None:
        """The publisher's queue was full: steps were dropped rather than slow the loop."""
        text = (f"{count} step(s) were not published: the publisher fell {self._publisher.max_pending} steps behind "
                "the training loop (training was never slowed for it)")
        print(f"octa-tui: {text}", file=sys.stderr)
        self._publish_now(Event(run_id=self.run_id, step=self.step, time=time.time(), kind="warning",
                                message=text, data={"source": "publisher", "dropped": count}))

    def _assemble_rows(self, measured: np.ndarray, items: list[StepItem]) -> None:
        """Lay steps out in schema order (by named slot), with array operations over all of
        them, and publish them in order: the link, :attr:`last_values`, ``on_values``."""
        layout = self.layout
        slot = layout.slot
        parts = [item[5] for item in items]
        host = np.array([part.values for part in parts], dtype=np.float64)
        vectors = layout.assemble_rows(measured, host, self.explosion_bound)
        vectors[:, slot["gradstat/nonfinite"]] = ~np.isfinite(vectors[:, slot["gradstat/total_norm"]])
        outs = [part.outputs for part in parts]
        if any(o is not None for o in outs):
            self._finish_outputs(vectors, outs)
        for r, part in enumerate(parts):
            for key, value in part.overrides:
                vectors[r, slot[key]] = value
            if part.missing:  # a layer none of whose parameters had a gradient: NaN ("unused"), not 0
                missing = part.missing
                for row, layer in enumerate(self._layers):
                    if all(i in missing for i in layer.params):
                        vectors[r, layout.grad_pos[row]] = math.nan
        steps = [item[0] for item in items]
        if self._amp is not None:
            for r in np.flatnonzero(vectors[:, slot[f"gradstat/{AMP_GRADSTAT}"]] > 0.5):
                self._skipped_step(steps[r], vectors[r])
        self._last_values = vectors[-1]
        self._published += len(items)
        epochs = [item[1] for item in items]
        link = self._service.link
        if link is not None:
            publish_steps = getattr(link, "publish_steps", None)
            if publish_steps is not None:
                publish_steps(steps, epochs, [item[2] for item in items], vectors)
            else:  # a link with publish_step only
                for r in range(len(items)):
                    link.publish_step(steps[r], epochs[r], vectors[r])
        for callback in self.on_values:
            for r in range(len(items)):
                try:
                    callback(steps[r], epochs[r], vectors[r])
                except Exception as exc:
                    self._publisher.report_failure(f"on_values callback {getattr(callback, '__name__', callback)!r} "
                                                   f"at step {steps[r]}: {type(exc).__name__}: {exc}")
                    break

    def _finish_outputs(self, vectors: np.ndarray, outs: list[OutputsPart | None]) -> None:
        """Output statistics the host finishes: means from sums, a derived sigmoid range, the
        fraction outside [0, 1] where the activated range leaves it (CPU)."""
        slot = self.layout.slot
        raw_min, raw_max = slot["out/raw_min"], slot["out/raw_max"]
        act_min, act_max = slot["out/act_min"], slot["out/act_max"]
        if len(outs) == 1:  # one step (the usual case when steps are slower than the publisher)
            outputs, vector = outs[0], vectors[0]
            assert outputs is not None
            vector[slot["out/raw_mean"]] /= outputs.raw_count
            vector[slot["out/act_mean"]] /= outputs.act_count
            if outputs.derived:
                vector[act_min] = sigmoid(float(vector[raw_min]))
                vector[act_max] = sigmoid(float(vector[raw_max]))
            if outputs.outside_check is not None:
                inside = vector[act_min] >= 0.0 and vector[act_max] <= 1.0
                vector[slot["out/frac_outside_01"]] = 0.0 if inside else fraction_outside(outputs.outside_check)
            return
        vectors[:, slot["out/raw_mean"]] /= [o.raw_count if o is not None else 1 for o in outs]
        vectors[:, slot["out/act_mean"]] /= [o.act_count if o is not None else 1 for o in outs]
        derived = [r for r, o in enumerate(outs) if o is not None and o.derived]
        if derived:
            vectors[derived, act_min] = sigmoid_array(vectors[derived, raw_min])
            vectors[derived, act_max] = sigmoid_array(vectors[derived, raw_max])
        checked = [r for r, o in enumerate(outs) if o is not None and o.outside_check is not None]
        if checked:
            inside = (vectors[checked, act_min] >= 0.0) & (vectors[checked, act_max] <= 1.0)
            frac = slot["out/frac_outside_01"]
            for r, ok in zip(checked, inside.tolist()):
                check = outs[r].outside_check  # type: ignore[union-attr]
                vectors[r, frac] = 0.0 if ok else fraction_outside(check)

    def _skipped_step(self, step: int, vector: np.ndarray) -> None:
        """A step the GradScaler skipped: its gradients were discarded, not applied.

        The gradient channels hold NaN (nothing was applied), ``nonfinite`` stays 0 (the
        scaler's overflow is its normal working, not a diverging run) and an
        ``amp_step_skipped`` event says so, at most once a second.
        """
        layout, slot = self.layout, self.layout.slot
        vector[layout.grad_pos] = math.nan
        vector[slot["gradstat/total_norm"]] = math.nan
        vector[slot["gradstat/max_param_norm"]] = math.nan
        vector[slot["gradstat/n_over_bound"]] = 0.0
        vector[slot["gradstat/nonfinite"]] = 0.0
        now = time.monotonic()
        if self._amp is not None and now - self._amp_event_at >= AMP_EVENT_INTERVAL_S:
            self._amp_event_at = now
            old = float(vector[slot[f"opt/{AMP_OPT}"]])
            new = old * self._amp.backoff
            self._publish_now(Event(run_id=self.run_id, step=step, time=time.time(), kind="amp_step_skipped",
                               message=f"the GradScaler skipped step {step} (inf/NaN in the fp16 gradients): "
                               f"scale {old:g} -> {new:g}; a normal part of fp16 training, not a fault",
                               data={"scale": old, "new_scale": new}))

    def flush(self) -> None:
        """Publish every measured step now (waits for the GPU; at epoch ends and before pausing).

        After it, :attr:`last_values`, the ``on_values`` callbacks and the link have seen every
        step ended so far.
        """
        self._copies.flush()
        self._publisher.drain()

    @property
    def last_values(self) -> np.ndarray | None:
        """The newest published step vector (schema order); reading it publishes what is pending."""
        self._publisher.drain()
        return self._last_values

    @property
    def published(self) -> int:
        """How many steps were published so far (reading it publishes what is pending)."""
        self._publisher.drain()
        return self._published

    @property
    def publisher(self) -> StepPublisher:
        """The thread that publishes steps: its ``cpu_s``/``handled`` say what it cost, ``dropped`` and
        ``failures`` what it could not publish."""
        return self._publisher

    def restart_timer(self) -> None:
        """Start the next step's clock now, so validation or a pause is not counted as a step."""
        self._timer = time.perf_counter()

    # --- every so often -------------------------------------------------------------------

    def serve(self, state: str = "running", force: bool = False) -> list[Any]:
        """Heartbeat the link and take pending commands (at most every 20 ms unless ``force``).

        With a command handler attached (a Controller) the commands are returned for it to
        apply; without one, setting commands are answered with an error, since nothing here
        could apply them.
        """
        return self._service.serve(state, force, self.step, self.command_handler is not None)

    @property
    def preview_due(self) -> bool:
        """Whether the step just ended is one at which a preview should be sent."""
        return self.preview_every > 0 and self.step > 0 and self.step % self.preview_every == 0

    def preview(self, image: Any, target: Any, prediction: Any) -> Preview:
        """Publish one validation image, its target and the prediction, downsampled to uint8.

        ``image`` is (C, H, W) (normalised values are stretched to 0..255); ``target`` and
        ``prediction`` are (C, H, W) or (H, W) probabilities, first channel shown.
        """
        msg = Preview(
            run_id=self.run_id,
            step=max(self.step - 1, 0),
            epoch=self.epoch,
            image=preview_array(image, rescale=True),
            target=first_channel(preview_array(target, rescale=False)),
            prediction=first_channel(preview_array(prediction, rescale=False)),
        )
        self.publish(msg)
        return msg

    def end_epoch(self, train: Mapping[str, float], val: Mapping[str, float]) -> EpochSummary:
        """Publish the finished epoch's metrics and move on to the next epoch."""
        self.flush()
        msg = EpochSummary(
            run_id=self.run_id,
            epoch=self.epoch,
            step=max(self.step - 1, 0),
            time=time.time(),
            train={k: float(v) for k, v in train.items()},
            val={k: float(v) for k, v in val.items()},
        )
        self.publish(msg)
        self.epoch += 1
        return msg

    def event(self, kind: str, message: str, **data: Any) -> Event:
        """Publish something that happened at the current step (kind from ``EVENT_KINDS``)."""
        msg = Event(run_id=self.run_id, step=self.step, time=time.time(), kind=kind, message=message, data=data)
        self.publish(msg)
        return msg

    def publish(self, msg: Any) -> None:
        """Send a record (EpochSummary, Event, DatasetReport, Preview) to the link, if any.

        The steps ended before it are published first, so every reader sees the record
        after them.
        """
        self._publisher.drain()
        self._publish_now(msg)

    def _publish_now(self, msg: Any) -> None:
        link = self._service.link
        if link is not None:
            link.publish(msg)

    def close(self, state: str = "finished") -> None:
        """Publish what is pending, then close the link (and its recording). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            try:
                self._copies.flush()
            finally:
                self._publisher.close()
        finally:
            if self._amp is not None:
                self._amp.close()
            self._service.close(state)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close("finished" if exc_type is None else "failed")
