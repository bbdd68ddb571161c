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
        probe.end_step(loss=out.total, components=out.components,
                       outputs=logits, activation="sigmoid")
    probe.close()

Cost: all gradient norms come from one ``torch._foreach_norm`` over every gradient, stacked
once; the total norm and clipping reuse them. The other device numbers of a step are 0-d
tensors: the losses, one ``aminmax`` and one ``sum`` per output tensor, and for the
activated outputs one ``sum`` (with ``activation="sigmoid"`` their range is the sigmoid of
the raw range, worked out on the host). On CUDA they are stacked after the norms and copied
once, to pinned host memory without blocking, and read when the copy's event has completed
(normally one step later), so the probe adds no host-device synchronisation per step; on the
CPU they are in host memory already and are read directly. The host then sums the
per-parameter norms into layer norms (plain Python over a few dozen numbers: cheaper per
step than array calls), divides the sums into means and lays the vector out in schema
order. ``bench/bench_probe.py`` measures the cost on the demo model.
"""

from __future__ import annotations

import math
import operator
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
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

GRADSTAT_CHANNELS = ("total_norm", "n_over_bound", "max_param_norm", "nonfinite")
AMP_GRADSTAT = "amp_skipped"  # 1.0 when a GradScaler skipped the step (inf/NaN gradients)
AMP_OPT = "amp_scale"  # the GradScaler's scale in force for the step
AMP_EVENT_INTERVAL_S = 1.0  # "amp_step_skipped" events: at most one a second
OUT_CHANNELS = ("raw_min", "raw_max", "raw_mean", "act_min", "act_max", "act_mean", "frac_outside_01")
ACTIVATIONS = ("sigmoid",)  # what end_step(activation=...) can apply to the outputs itself
TIME_CHANNELS = ("step_s", "samples_per_s", "memory_mb")
LOSS_WEIGHT_ATTRIBUTES = ("bce_weight", "dice_weight", "pos_weight")

# What the host needs to finish the output statistics: the raw and activated element counts
# (means are sums divided on the host), on the CPU the activated tensors whose fraction
# outside [0, 1] the host settles, and whether the activated range is the sigmoid of the raw
# range (computed on the host); None when the step had no outputs.
OutputsPart = tuple[int, int, list[torch.Tensor] | None, bool] | None
# A step's host-side numbers: the values in host-channel order, (source position, value) for
# losses given as plain numbers, the outputs' part, and optionally the parameters that had no
# gradient (their layers publish NaN when none of their parameters had one).
HostPart = tuple[list[float], list[tuple[int, float]], OutputsPart] | tuple[
    list[float], list[tuple[int, float]], OutputsPart, frozenset[int]]

EXPLOSION_BOUND = 10.0  # seed 002: parameters with a gradient norm above 10
PREVIEW_SIDE = 64
PENDING_VECTORS = 4  # pinned buffers in flight on CUDA before the oldest is waited for
SERVICE_INTERVAL_S = 0.02
MEMORY_INTERVAL_S = 1.0  # peak resident memory is a system call: read once a second


class ProbeError(ValueError):
    """The probe was set up or called in a way it cannot measure; the message says the fix."""


@dataclass(frozen=True)
class Layer:
    """One gradient channel: a module's name, its type (e.g. ``Conv2d``) and its parameters' indices."""

    name: str
    kind: str
    params: tuple[int, ...]


def find_layers(model: nn.Module, group_depth: int | None = None) -> tuple[list[nn.Parameter], list[Layer]]:
    """The model's trainable parameters and the layers they belong to, shallow to deep.

    A layer is the module that owns a parameter directly, in registration order (the order
    ``model.named_modules()`` visits them), so names read as the network is written.
    ``group_depth`` merges modules by the first ``group_depth`` parts of their name (e.g.
    1 makes ``enc1.conv.0`` and ``enc1.conv.1`` one layer ``enc1``). A parameter shared by
    two modules counts once, with its first owner.
    """
    params: list[nn.Parameter] = []
    seen: set[int] = set()
    layer_params: dict[str, list[int]] = {}
    kinds: dict[str, str] = {}
    root_name = type(model).__name__
    for module_name, module in model.named_modules():
        for _, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = module_name or root_name
            if group_depth is not None and module_name:
                name = ".".join(module_name.split(".")[:group_depth])
            layer_params.setdefault(name, []).append(len(params))
            kinds.setdefault(name, type(module).__name__)
            params.append(param)
    if not params:
        raise ProbeError(f"{root_name} has no trainable parameters; the probe measures gradients and needs some")
    layers = [Layer(name, kinds[name], tuple(idx)) for name, idx in layer_params.items()]
    return params, layers


def process_memory_mb() -> float:
    """Peak resident memory of this process in MB (CPU runs), NaN where it cannot be read."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def preview_array(tensor: torch.Tensor | np.ndarray, *, rescale: bool, side: int = PREVIEW_SIDE) -> np.ndarray:
    """A (C, H, W) or (H, W) image as uint8 (h, w) or (h, w, 3), area-downsampled to <= ``side``.

    ``rescale`` stretches the image's own min..max to 0..255 (for normalised inputs);
    otherwise values are taken as probabilities in [0, 1] and clamped.
    """
    t = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise ProbeError(f"a preview needs a (C, H, W) or (H, W) array, got shape {tuple(t.shape)}")
    t = t[:3] if t.shape[0] >= 3 else t[:1]
    height, width = t.shape[-2:]
    scale = max(height, width) / side
    if scale > 1:
        size = (max(1, round(height / scale)), max(1, round(width / scale)))
        t = torch.nn.functional.adaptive_avg_pool2d(t[None], size)[0]
    if rescale:
        finite = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = finite.min(), finite.max()
        t = (finite - low) / (high - low) if high > low else torch.zeros_like(finite)
    t = torch.nan_to_num(t, nan=0.0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    array = t.numpy()
    return array[0] if array.shape[0] == 1 else np.ascontiguousarray(array.transpose(1, 2, 0))


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

    Channels: ``loss`` (total then ``loss_components``), ``grad`` (one per layer),
    ``gradstat``, ``out``, ``opt`` (lr, the criterion's bce/dice/pos weights when it has
    them, clip, update_ratio) and ``time``; see :mod:`octa_tui.protocol.channels`.
    ``update_ratio`` (|delta w| / |w| of one optimizer step) is measured every
    ``update_every`` steps and repeated in between (it keeps one copy of the parameters for
    that); ``memory_mb`` is CUDA memory allocated (every step), or the process's peak
    resident memory on the CPU (a system call: read at most once a second, repeated between).

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
        self.link = None
        self.last_values: np.ndarray | None = None
        self.published = 0
        self.on_values: list[Callable[[int, int, np.ndarray], None]] = []
        self.command_handler: Any = None  # a Controller takes commands over; see control.py
        self.lr_scale: Any = None  # a Controller's LrScale: opt/lr is the lr the step really used

        self._params, self._layers = find_layers(model, group_depth)
        self.device = self._params[0].device
        self._components = tuple(names)
        self._component_set = frozenset(names)
        self._weights = tuple(a for a in LOSS_WEIGHT_ATTRIBUTES if criterion is not None and hasattr(criterion, a))
        self.scaler = scaler if _scaler_enabled(scaler) else None
        self._amp = self.scaler is not None
        opt = ("lr", *self._weights, "clip", "update_ratio", *((AMP_OPT,) if self._amp else ()))
        gradstat = GRADSTAT_CHANNELS + ((AMP_GRADSTAT,) if self._amp else ())
        config = dict(config or {})
        if self._amp:
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
        self._layout_vector()
        self._nan = torch.full((), math.nan, device=self.device)
        self._zero = torch.zeros((), device=self.device)
        self._one = torch.ones((), device=self.device)
        self._update_ratio = self._nan
        self._no_outputs = [self._nan] * len(OUT_CHANNELS)
        self._update_meter = UpdateMeter(self._params)
        self._snapshot_taken = False
        # On the CPU every number is in host memory already: end_step reads them directly
        # instead of stacking them into one vector for a device copy.
        self._on_host = self.device.type == "cpu"
        self._norms: torch.Tensor | None = None  # this step's per-parameter norms, stacked
        self._plain_grads: bool | None = None  # all norms float32 on self.device: no conversion
        self._grads: list[torch.Tensor] = []
        self._total: torch.Tensor | None = None
        self._memory = math.nan
        self._memory_read_at = -math.inf
        self._clip_used = 0.0
        self._pinned: list[torch.Tensor] = []
        self._pending: deque[tuple[int, Any, int, int, HostPart]] = deque()
        self._weight_cache: dict[str, tuple[int, float]] = {}
        self._timer = time.perf_counter()
        self._last_service = 0.0
        self._closed = False
        self._run_file: Any = None  # written by start(announce=True), removed by close()
        self._missing: frozenset[int] = frozenset()  # parameters without a gradient this step
        self._unused_reported = False
        self._amp_scale: torch.Tensor | None = None  # the scaler's scale when the step was measured
        self._amp_skipped: torch.Tensor | None = None  # set by mark_skipped()
        self._amp_warned = False
        self._amp_event_at = -math.inf
        self._scaler_watch: Any = scaler_watch if self._amp else None
        self._own_scaler_watch = False
        self._updates_seen = 0
        if self._amp and self._scaler_watch is None:
            from .core.amp import ScalerWatch

            self._scaler_watch = ScalerWatch(self.scaler)
            self._own_scaler_watch = True
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
        from octa_tui.protocol.link import TrainerLink
        from octa_tui.protocol.spill import spill_dir

        probe = cls(model, **kwargs)
        recording = None
        if record is not None:
            from octa_tui.protocol.recording import RecordingWriter

            recording = RecordingWriter(record, probe.schema)
        try:
            options = dict(link_options or {})
            if "spill" not in options:
                options["spill"] = spill_dir()[0]  # None (RAM) where the folder cannot take it
            link = TrainerLink(probe.schema, telemetry=telemetry, control=control, recording=recording, **options)
        except BaseException:
            if recording is not None:
                recording.close()
            raise
        probe.attach(link)
        if announce:
            probe._announce(record or "")
        return probe

    def _announce(self, recording: str) -> None:
        import os
        import socket

        from octa_tui.protocol.runfiles import RunFileInfo, write_run_file

        schema, link = self.schema, self.link
        info = RunFileInfo(
            pid=os.getpid(), run_id=schema.run_id, telemetry=link.telemetry_endpoint,
            control=link.control_endpoint, task=schema.task, model=schema.model.name,
            started_at=schema.started_at, recording=os.path.abspath(recording) if recording else "",
            host=socket.gethostname(),
        )
        self._run_file = write_run_file(info)

    def attach(self, link: Any) -> None:
        """Publish to ``link`` from now on (a TrainerLink built from :attr:`schema`)."""
        self.link = link

    def _layout_vector(self) -> None:
        """Where each per-step number goes in the published vector.

        The measured side of a step is every parameter's gradient norm, then the device
        scalars (total norm, losses, output statistics, update ratio): on CUDA one stacked
        float32 tensor copied once, on the CPU the same numbers read directly. The host turns
        the parameter norms into layer norms, the count over the bound and the largest norm
        when it publishes.
        """
        schema = self.schema
        channels = schema.channels
        scalar_keys = ["gradstat/total_norm", *(f"loss/{n}" for n in schema.loss)]
        scalar_keys += [f"out/{n}" for n in schema.out]
        scalar_keys.append("opt/update_ratio")
        if self._amp:  # the scaler's scale and whether it skipped: device numbers too
            scalar_keys += [f"opt/{AMP_OPT}", f"gradstat/{AMP_GRADSTAT}"]
        # nonfinite is derived from the total norm on the host when the vector is published.
        device_opt = {"update_ratio", AMP_OPT}
        host_keys = ["gradstat/nonfinite"] + [f"opt/{n}" for n in schema.opt if n not in device_opt]
        host_keys += [f"time/{n}" for n in schema.time]
        self._param_count = len(self._params)
        layer_of_param = [0] * self._param_count
        for row, layer in enumerate(self._layers):
            for index in layer.params:
                layer_of_param[index] = row
        self._layer_list = layer_of_param
        # A published vector gathers its values from [device scalars, host values, layer
        # norms, count over the bound, largest norm]: _gather[channel] is the source index.
        source_keys = [*scalar_keys, *host_keys, *(f"grad/{n}" for n in schema.grad)]
        source_keys += ["gradstat/n_over_bound", "gradstat/max_param_norm"]
        gather = [source_keys.index(k) for k in channels]
        self._gather = operator.itemgetter(*gather)  # source list -> values in channel order
        self._nonfinite_source = source_keys.index("gradstat/nonfinite")
        self._raw_min_source = source_keys.index("out/raw_min")
        self._raw_max_source = source_keys.index("out/raw_max")
        self._act_min_source = source_keys.index("out/act_min")
        self._raw_mean_source = source_keys.index("out/raw_mean")
        self._act_mean_source = source_keys.index("out/act_mean")
        self._act_max_source = source_keys.index("out/act_max")
        self._outside_source = source_keys.index("out/frac_outside_01")
        self._total_source = source_keys.index("gradstat/total_norm")
        self._over_source = source_keys.index("gradstat/n_over_bound")
        self._max_source = source_keys.index("gradstat/max_param_norm")
        self._grad_sources = [source_keys.index(f"grad/{n}") for n in schema.grad]
        self._skipped_source = source_keys.index(f"gradstat/{AMP_GRADSTAT}") if self._amp else -1
        self._scale_source = source_keys.index(f"opt/{AMP_OPT}") if self._amp else -1
        # Plain-number losses are written over their device slot (NaN) by source index.
        self._loss_pos = list(range(1, 1 + len(schema.loss)))
        self._scalar_count = len(scalar_keys)
        self._host_count = len(host_keys)
        self._width = schema.width
        assert sorted(gather) == list(range(self._width))

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
        published). Returns the total norm (a device tensor, not read on the host). With a
        GradScaler, call ``scaler.unscale_`` first.
        """
        return self._measure(before_step=True)

    def _measure(self, before_step: bool) -> torch.Tensor:
        """after_backward's work, for callers already under ``torch.no_grad``."""
        grads = [p.grad for p in self._params]
        missing = [i for i, g in enumerate(grads) if g is None]
        if missing:
            if len(missing) == len(grads):
                raise ProbeError("no parameter has a gradient: call after_backward() after loss.backward() "
                                 "and before optimizer.zero_grad()")
            grads = [g for g in grads if g is not None]
        norms = torch._foreach_norm(grads)
        if self._amp:
            norms = self._unscaled(norms, before_step)
        if self._plain_grads is None:
            self._plain_grads = all(n.device == self.device and n.dtype == torch.float32 for n in norms)
        if not self._plain_grads:
            norms = [n.to(self.device, torch.float32, non_blocking=True) for n in norms]
        if missing:  # a parameter without a gradient has norm 0; its layer is NaN if none has one
            present = iter(norms)
            absent = frozenset(missing)
            norms = [self._zero if i in absent else next(present) for i in range(self._param_count)]
            if absent != self._missing:
                self._note_unused(absent)
        self._missing = frozenset(missing)
        self._grads = grads
        self._norms = torch.stack(norms)  # stacked once: the total and the step's vector use it
        self._total = torch.linalg.vector_norm(self._norms)
        self._clip_used = 0.0
        if before_step and self.update_every > 0 and self.step % self.update_every == 0:
            self._update_meter.before_step()
            self._snapshot_taken = True
        return self._total

    def _unscaled(self, norms: list[torch.Tensor], before_step: bool) -> list[torch.Tensor]:
        """Gradient norms divided by the GradScaler's scale when measured before ``unscale_``.

        Also keeps the scale in force (a device tensor: no synchronisation). Measuring before
        ``scaler.unscale_(optimizer)`` is said once, loudly (stderr and a warning event).
        """
        scaler = self.scaler
        scale = getattr(scaler, "_scale", None)
        if scale is None:  # the scaler has not scaled anything yet
            self._amp_scale = self._nan
            return norms
        self._amp_scale = scale.detach().reshape(()).to(self.device, torch.float32, non_blocking=True).clone()
        if self.optimizer is None or _unscaled_already(scaler, self.optimizer, before_step):
            return norms
        if not self._amp_warned:
            self._amp_warned = True
            text = ("the probe measured gradients before scaler.unscale_(optimizer): the norms are divided by the "
                    "GradScaler's scale here; call scaler.unscale_(optimizer) before measuring (or use octa_tui.watch, "
                    "which measures at the optimizer step)")
            print(f"octa-tui: {text}", file=sys.stderr)
            self.event("warning", text, source="amp")
        inverse = (1.0 / scale.detach().reshape(()).double()).float()
        return list(torch._foreach_mul(norms, inverse.to(norms[0].device)))

    def mark_skipped(self) -> None:
        """Say that the GradScaler skipped this step's ``optimizer.step`` (inf/NaN gradients)."""
        self._amp_skipped = self._one if self._amp else None

    def _amp_scalars(self) -> list[torch.Tensor]:
        """The step's scale in force and whether the scaler skipped it, as device scalars.

        Skipped is read without a synchronisation: from the scaler's inf check for this
        optimizer when ``update()`` has not run yet, else from the scale having dropped.
        """
        watch = self._scaler_watch
        scale, skipped = self._amp_scale, self._amp_skipped
        if watch.updates != self._updates_seen and watch.scale is not None:  # update() ran for this step
            self._updates_seen = watch.updates
            scale = watch.scale
            if skipped is None:
                skipped = watch.skipped
        if scale is None:
            live = getattr(self.scaler, "_scale", None)
            scale = self._nan if live is None else live.detach().reshape(()).to(torch.float32).clone()
        if skipped is None:
            skipped = watch.found_inf(self.optimizer)
        if skipped is None:
            skipped = self._zero
        self._amp_scale = self._amp_skipped = None
        return [scale.to(self.device), skipped.to(self.device)]

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

    def _output_stats(
        self, outputs: Any, activated: Any, activation: str | None
    ) -> tuple[list[torch.Tensor], OutputsPart]:
        """raw min/max/sum, activated min/max/sum and the fraction outside [0, 1] (seven tensors),
        and what the host needs to finish them: element counts (a mean is a sum divided on the
        host), on the CPU the activated tensors, and whether the activated range is derived.

        Exact over every element (a single outlier must show), from one ``aminmax`` and one
        ``sum`` per tensor. With ``activation="sigmoid"`` the activated range is the sigmoid
        of the raw range, computed on the host (the sigmoid is monotone), so only the sum of
        the activated values is taken on the device. On the CPU the fraction outside is
        settled on the host when the step is published (nothing to count when the range is
        inside [0, 1], which a sigmoid's always is unless an output is NaN).
        """
        raw = _tensors(outputs)
        derived = False
        if activation is not None:
            if activated is not None:
                raise ProbeError("pass either activated= (the activated outputs) or activation= (what to apply), "
                                 "not both")
            if activation not in ACTIVATIONS:
                raise ProbeError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}; "
                                 "for another one pass its result as activated=")
            act = [torch.sigmoid(t) for t in raw]
            derived = True
        else:
            act = _tensors(activated) if activated is not None else raw
        raw_stats, raw_count = _range_stats(raw)
        if derived:
            act_count = raw_count
            act_stats = [self._nan, self._nan, _sum(act)]  # min and max: sigmoid of raw's, on the host
        elif act is raw:
            act_stats, act_count = raw_stats, raw_count
        else:
            act_stats, act_count = _range_stats(act)
        check = None
        if not self.schema.loss_expects_probabilities:
            outside = self._nan
        elif self._on_host:
            outside, check = self._nan, act
        else:
            outside = _count_outside(act) / float(act_count)
        return [*raw_stats, *act_stats, outside], (raw_count, act_count, check, derived)

    def _loss_scalars(self, loss: Any, components: Mapping[str, Any] | None) -> tuple[list[torch.Tensor], list]:
        """The loss total and components as tensors, and (position, value) for plain numbers.

        A plain number needs no device tensor: its slot holds NaN and the host writes the value.
        Tensors are taken as they are (device and shape are settled by :meth:`_stack`).
        """
        components = components or {}
        unknown = components.keys() - self._component_set
        if unknown:
            raise ProbeError(
                f"loss component(s) {sorted(unknown)} were not declared; declared: {list(self._components)} "
                "(pass loss_components=... when creating the probe)"
            )
        values = [loss, *(components.get(name, math.nan) for name in self._components)]
        scalars = [v if isinstance(v, torch.Tensor) else self._nan for v in values]
        overrides = [(pos, float(v)) for pos, v in zip(self._loss_pos, values) if not isinstance(v, torch.Tensor)]
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

    @torch.no_grad()
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
        either may be a tensor or a sequence of tensors. When the model returns logits and
        nothing else needs their sigmoid, ``activation="sigmoid"`` (instead of
        ``activated``) lets the probe apply it: cheaper, since a monotone activation's range
        is that of the raw range and a sigmoid's output cannot leave [0, 1], so only the
        mean needs the activated values. ``lr`` defaults to the lr group 0's last step used (scale included);
        ``batch_size`` to the outputs' first dimension.
        """
        if self._closed:
            raise ProbeError("end_step() after close(); create a new probe for a new run")
        if self._total is None:
            self._measure(before_step=False)  # the optimizer has stepped: no update size
        assert self._total is not None
        if self._snapshot_taken:
            self._update_ratio = self._update_meter.ratio()
            self._snapshot_taken = False
        losses, overrides = self._loss_scalars(loss, components)
        if outputs is not None:
            out, outputs_part = self._output_stats(outputs, activated, activation)
        elif activation is not None or activated is not None:
            raise ProbeError("activated= or activation= was given without outputs=; pass the model's raw outputs too")
        else:
            out, outputs_part = self._no_outputs, None
        scalars = [self._total, *losses, *out, self._update_ratio]
        if self._amp:
            scalars += self._amp_scalars()

        now = time.perf_counter()
        step_s = now - self._timer
        self._timer = now
        if batch_size is None:
            first = outputs[0] if isinstance(outputs, (list, tuple)) and outputs else outputs
            batch_size = int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 0
        if lr is None:
            if self.lr_scale is not None and self.lr_scale.used:
                lr = self.lr_scale.used[0]
            elif self.optimizer is not None:
                lr = float(self.optimizer.param_groups[0]["lr"])
            else:
                lr = math.nan
        host = [0.0, float(lr), *(self._setting(w) for w in self._weights), self._clip_used]
        host += [step_s, batch_size / step_s if step_s > 0 and batch_size else math.nan, self._memory_mb(now)]
        if self._on_host:  # every number is in host memory: read them as they are, publish now
            values = self._norms.tolist()
            values += [p.item() for p in scalars]
            self._publish(self.step, self.epoch, values, (host, overrides, outputs_part, self._missing))
        else:
            device_vector = torch.cat((self._norms, self._stack(scalars)))
            self._queue(self.step, self.epoch, device_vector, (host, overrides, outputs_part, self._missing))
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
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device) / 2**20
        if now - self._memory_read_at >= MEMORY_INTERVAL_S:
            self._memory = process_memory_mb()
            self._memory_read_at = now
        return self._memory

    def _queue(self, step: int, epoch: int, device_vector: torch.Tensor, host: HostPart) -> None:
        if self.device.type != "cuda":
            self._publish(step, epoch, device_vector.tolist(), host)
            return
        if not self._pinned:
            self._pinned = [torch.empty(device_vector.shape, dtype=torch.float32, pin_memory=True)
                            for _ in range(PENDING_VECTORS)]
        if len(self._pending) == PENDING_VECTORS:
            self._publish_oldest(wait=True)
        slot = (self._pending[-1][0] + 1) % PENDING_VECTORS if self._pending else 0
        self._pinned[slot].copy_(device_vector, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self._pending.append((slot, event, step, epoch, host))
        while self._pending and self._pending[0][1].query():
            self._publish_oldest(wait=False)

    def _publish_oldest(self, wait: bool) -> None:
        slot, event, step, epoch, host = self._pending.popleft()
        if wait:
            event.synchronize()
        self._publish(step, epoch, self._pinned[slot].tolist(), host)

    def _publish(self, step: int, epoch: int, values: list[float], host: HostPart) -> None:
        """Lay one step's measured and host numbers out in schema order and send the vector.

        ``values`` are the parameter norms then the device scalars (see :meth:`_layout_vector`).
        About sixty numbers: plain Python over them costs less per step than array calls.
        Layer norms are sums of squared parameter norms per layer (in float64); a
        non-finite parameter norm shows in its own layer only.
        """
        host_values, overrides, outputs_part = host[:3]
        missing = host[3] if len(host) > 3 else None
        count = self._param_count
        bound = self.explosion_bound
        squares = [0.0] * len(self._layers)
        over = 0
        largest = 0.0
        for layer, norm in zip(self._layer_list, values):
            squares[layer] += norm * norm
            if norm > bound:
                over += 1
            if norm > largest or norm != norm:  # NaN sticks
                largest = norm
        total = values[count]
        source = [*values[count:], *host_values, *map(math.sqrt, squares), over, largest]
        source[self._nonfinite_source] = 0.0 if math.isfinite(total) else 1.0
        for pos, value in overrides:
            source[pos] = value
        if missing:  # a layer none of whose parameters had a gradient: NaN ("unused"), not 0
            for row, layer in enumerate(self._layers):
                if all(i in missing for i in layer.params):
                    source[self._grad_sources[row]] = math.nan
        if self._amp and source[self._skipped_source] > 0.5:
            self._skipped_step(step, source)
        if outputs_part is not None:
            raw_count, act_count, outside_check, derived = outputs_part
            source[self._raw_mean_source] /= raw_count
            source[self._act_mean_source] /= act_count
            if derived:
                source[self._act_min_source] = _sigmoid(source[self._raw_min_source])
                source[self._act_max_source] = _sigmoid(source[self._raw_max_source])
            if outside_check is not None:
                inside = source[self._act_min_source] >= 0.0 and source[self._act_max_source] <= 1.0
                source[self._outside_source] = 0.0 if inside else _fraction_outside(outside_check)
        vector = np.fromiter(self._gather(source), dtype=np.float32, count=self._width)
        self.last_values = vector
        self.published += 1
        if self.link is not None:
            self.link.publish_step(step, epoch, vector)
        for callback in self.on_values:
            callback(step, epoch, vector)

    def _skipped_step(self, step: int, source: list[float]) -> None:
        """A step the GradScaler skipped: its gradients were discarded, not applied.

        The gradient channels hold NaN (nothing was applied), ``nonfinite`` stays 0 (the
        scaler's overflow is its normal working, not a diverging run) and an
        ``amp_step_skipped`` event says so, at most once a second.
        """
        for pos in self._grad_sources:
            source[pos] = math.nan
        source[self._total_source] = math.nan
        source[self._max_source] = math.nan
        source[self._over_source] = 0.0
        source[self._nonfinite_source] = 0.0
        now = time.monotonic()
        if now - self._amp_event_at >= AMP_EVENT_INTERVAL_S:
            self._amp_event_at = now
            old = source[self._scale_source]
            new = old * float(getattr(self.scaler, "_backoff_factor", 0.5))
            self.publish(Event(run_id=self.run_id, step=step, time=time.time(), kind="amp_step_skipped",
                               message=f"the GradScaler skipped step {step} (inf/NaN in the fp16 gradients): "
                               f"scale {old:g} -> {new:g}; a normal part of fp16 training, not a fault",
                               data={"scale": old, "new_scale": new}))

    def flush(self) -> None:
        """Publish every measured step now (waits for the GPU; at epoch ends and before pausing)."""
        while self._pending:
            self._publish_oldest(wait=True)

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
        if self.link is None:
            return []
        now = time.monotonic()
        if not force and now - self._last_service < SERVICE_INTERVAL_S:
            return []
        self._last_service = now
        self.link.tick(state)
        pending = self.link.poll_commands()
        if self.command_handler is None:
            for request in pending:
                request.error(
                    f"{request.command.op}: this training loop does not take commands "
                    "(attach a Controller to the probe to enable them)",
                    self.step,
                )
            return []
        return pending

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
            target=_first_channel(preview_array(target, rescale=False)),
            prediction=_first_channel(preview_array(prediction, rescale=False)),
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
        """Send a record (EpochSummary, Event, DatasetReport, Preview) to the link, if any."""
        if self.link is not None:
            self.link.publish(msg)

    def close(self, state: str = "finished") -> None:
        """Publish what is pending, then close the link (and its recording). Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush()
        finally:
            if self._run_file is not None:
                self._run_file.unlink(missing_ok=True)
            if self._scaler_watch is not None and self._own_scaler_watch:
                self._scaler_watch.close()
            if self.link is not None:
                self.link.close(state)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.close("finished" if exc_type is None else "failed")


class UpdateMeter:
    """|delta w| / |w| of one optimizer step: copy the weights before it, compare after it.

    The copy lives in one flat buffer allocated on first use (one more copy of the
    parameters, kept), so the difference's norm is a single reduction. Parameters of mixed
    dtypes or devices get one buffer each instead.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self._params = params
        self._flat: torch.Tensor | None = None
        self._copies: list[torch.Tensor] = []

    @torch.no_grad()
    def before_step(self) -> None:
        """Remember the weights as they are now."""
        params = self._params
        if not self._copies:
            first = params[0]
            if all(p.dtype == first.dtype and p.device == first.device for p in params):
                self._flat = torch.empty(sum(p.numel() for p in params), dtype=first.dtype, device=first.device)
                self._copies = [c.view_as(p) for c, p in zip(self._flat.split([p.numel() for p in params]), params)]
            else:
                self._copies = [torch.empty_like(p) for p in params]
        torch._foreach_copy_(self._copies, params)

    @torch.no_grad()
    def ratio(self) -> torch.Tensor:
        """|w_now - w_before| / |w_now| as a 0-d float32 tensor (on the first parameter's device)."""
        params = self._params
        torch._foreach_sub_(self._copies, params)
        if self._flat is not None:
            delta = torch.linalg.vector_norm(self._flat)
        else:
            delta = _total_norm(self._copies, params[0].device)
        weight = _total_norm(params, params[0].device)
        return (delta / weight).to(torch.float32)


def _scaler_enabled(scaler: Any) -> bool:
    """Whether ``scaler`` is a GradScaler that scales (a disabled one changes nothing)."""
    if scaler is None:
        return False
    try:
        return bool(scaler.is_enabled())
    except Exception:  # noqa: BLE001 - not a GradScaler
        return False


def _optimizer_state(scaler: Any, optimizer: Any) -> dict | None:
    states = getattr(scaler, "_per_optimizer_states", None)
    return states.get(id(optimizer)) if isinstance(states, dict) else None


def _unscaled_already(scaler: Any, optimizer: Any, before_step: bool) -> bool:
    """Whether ``scaler.unscale_(optimizer)`` ran for this step (the gradients are true values).

    Before the optimizer's step the scaler has no state for it until ``unscale_``; after the
    step (measured from ``end_step``) ``scaler.step`` has unscaled them, and ``update()`` may
    have cleared the state since.
    """
    state = _optimizer_state(scaler, optimizer)
    if state is None:
        return not before_step
    stage = state.get("stage")
    return getattr(stage, "name", "") in ("UNSCALED", "STEPPED")


def _total_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """sqrt of the sum of squared norms of ``tensors``, from one ``_foreach_norm``, on ``device``."""
    norms = torch._foreach_norm(tensors)
    try:
        stacked = torch.stack(norms)
    except RuntimeError:  # tensors on several devices
        stacked = torch.stack([n.to(device, torch.float32) for n in norms])
    return torch.linalg.vector_norm(stacked)


def _tensors(value: Any) -> list[torch.Tensor]:
    """The output tensors of a step (read under ``torch.no_grad``: no detached copies needed)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Iterable):
        tensors = [v for v in value if isinstance(v, torch.Tensor)]
        if tensors:
            return tensors
    raise ProbeError(f"outputs must be a tensor or a sequence of tensors, got {type(value).__name__}")


def _sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The float32 sum over all elements of the tensors, on their device."""
    if len(tensors) == 1:
        return tensors[0].sum(dtype=torch.float32)
    return sum(t.sum(dtype=torch.float32) for t in tensors)


def _sigmoid(x: float) -> float:
    """The logistic function of one number, without overflow (NaN stays NaN)."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # also NaN for NaN (NaN >= 0 is False)
    return e / (1.0 + e)


def _range_stats(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """min, max and sum over all elements of the tensors (on their device), and the element count."""
    if len(tensors) == 1:
        low, high = torch.aminmax(tensors[0])
        return [low, high, tensors[0].sum(dtype=torch.float32)], tensors[0].numel()
    lows, highs = zip(*(torch.aminmax(t) for t in tensors))
    total = sum(t.sum(dtype=torch.float32) for t in tensors)
    return [torch.stack(lows).min(), torch.stack(highs).max(), total], sum(t.numel() for t in tensors)


def _count_outside(tensors: list[torch.Tensor]) -> torch.Tensor:
    """How many elements are outside [0, 1] (NaN counts as outside), as a device tensor."""
    return sum(torch.count_nonzero(t - t.clamp(0, 1)) for t in tensors)


def _fraction_outside(tensors: list[torch.Tensor]) -> float:
    return float(_count_outside(tensors)) / sum(t.numel() for t in tensors)


def _first_channel(array: np.ndarray) -> np.ndarray:
    return array[..., 0] if array.ndim == 3 else array
