"""Measuring a step on the device: gradient norms, update size, output statistics, previews.

Pure torch, no I/O: every function returns device tensors (or host arrays for previews) and
leaves reading them to the caller, so nothing here synchronises with a GPU. The probe
(:mod:`octa_tui.trainer.probe`) composes them once per step.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

PREVIEW_SIDE = 64


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
            delta = total_norm(self._copies, params[0].device)
        weight = total_norm(params, params[0].device)
        return (delta / weight).to(torch.float32)


def total_norm(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """sqrt of the sum of squared norms of ``tensors``, from one ``_foreach_norm``, on ``device``."""
    norms = torch._foreach_norm(tensors)
    try:
        stacked = torch.stack(norms)
    except RuntimeError:  # tensors on several devices
        stacked = torch.stack([n.to(device, torch.float32) for n in norms])
    return torch.linalg.vector_norm(stacked)


def output_tensors(value: Any) -> list[torch.Tensor]:
    """The output tensors of a step (read under ``torch.no_grad``: no detached copies needed)."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Iterable):
        tensors = [v for v in value if isinstance(v, torch.Tensor)]
        if tensors:
            return tensors
    raise ProbeError(f"outputs must be a tensor or a sequence of tensors, got {type(value).__name__}")


def _sum32(t: torch.Tensor) -> torch.Tensor:
    """The float32 sum of one tensor (without the dtype argument when it is float32 already:
    the same result, a third cheaper to call)."""
    return torch.sum(t) if t.dtype is torch.float32 else torch.sum(t, dtype=torch.float32)


def float_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The float32 sum over all elements of the tensors, on their device."""
    if len(tensors) == 1:
        return _sum32(tensors[0])
    return sum(_sum32(t) for t in tensors)


def sigmoid(x: float) -> float:
    """The logistic function of one number, without overflow (NaN stays NaN)."""
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # also NaN for NaN (NaN >= 0 is False)
    return e / (1.0 + e)


def sigmoid_array(x: np.ndarray) -> np.ndarray:
    """The logistic function of each number (float64 inside: no overflow; NaN stays NaN);
    the same values as :func:`sigmoid` of each."""
    wide = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(wide))  # in (0, 1]: never overflows
    return np.where(wide >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


def range_stats(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """min, max and sum over all elements of the tensors (on their device), and the element count."""
    if len(tensors) == 1:
        t = tensors[0]
        low, high = torch.aminmax(t)
        return [low, high, _sum32(t)], t.numel()
    lows, highs = zip(*(torch.aminmax(t) for t in tensors))
    total = sum(_sum32(t) for t in tensors)
    return [torch.stack(lows).min(), torch.stack(highs).max(), total], sum(t.numel() for t in tensors)


def count_outside(tensors: list[torch.Tensor]) -> torch.Tensor:
    """How many elements are outside [0, 1] (NaN counts as outside), as a device tensor."""
    return sum(torch.count_nonzero(t - t.clamp(0, 1)) for t in tensors)


def fraction_outside(tensors: list[torch.Tensor]) -> float:
    """The fraction of elements outside [0, 1], read on the host (CPU tensors: no sync to speak of)."""
    return float(count_outside(tensors)) / sum(t.numel() for t in tensors)


def first_channel(array: np.ndarray) -> np.ndarray:
    """The first channel of an (h, w, c) preview; an (h, w) one as it is."""
    return array[..., 0] if array.ndim == 3 else array
