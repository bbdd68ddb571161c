"""Observe a training loop where it already passes: the loss functions and ``backward``.

Every loss in PyTorch ends in a ``torch.nn.functional`` loss (``nn.MSELoss``,
``nn.BCEWithLogitsLoss``, ... call them, and so do most hand-written losses), and every
training step calls ``backward`` on its loss. While :func:`listen` has a listener
installed, those functions are wrapped: each call is reported with the function's name, what
the loss was given (the model's outputs, the target) and its value; each ``backward`` on a
one-element tensor is reported with that tensor (the total loss, as scaled by a GradScaler);
each ``torch.nn.utils.clip_grad_norm_`` (and ``clip_grads_with_norm_``, ``clip_grad_value_``)
with its bound (a loop or framework that clips before the optimizer's step: the probe then
measures clipped gradients, and says so).
The wrappers return what the originals return and never raise anything of their own (a
listener that fails is dropped with one line on stderr); the one change they make is asked
for: a listener's ``loss_called`` may return a replacement for the loss value (the value
times a live weight set from the monitor, see :mod:`octa_tui.trainer.core.loss_weights`).
With no listener left, the originals are put back.

From these calls the attach core takes measured facts instead of declarations: the loss
terms (one component per call, named by function), whether the loss expects probabilities
(``binary_cross_entropy`` does; the ``_with_logits``, ``cross_entropy`` and ``nll_loss``
losses do not; a regression loss (MSE, L1, ...) does when its target lies in [0, 1], as a
mask or a heatmap does: outputs outside [0, 1] there are the missing-sigmoid fault), and the
outputs' statistics as the loss saw them.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F

# torch.nn.functional loss -> (component name, what the loss expects of its input:
# "probabilities", "logits", or "target" = probabilities when the target lies in [0, 1]).
LOSS_FUNCTIONS: dict[str, tuple[str, str]] = {
    "binary_cross_entropy": ("bce", "probabilities"),
    "binary_cross_entropy_with_logits": ("bce", "logits"),
    "cross_entropy": ("ce", "logits"),
    "nll_loss": ("nll", "logits"),
    "kl_div": ("kl", "logits"),
    "mse_loss": ("mse", "target"),
    "l1_loss": ("l1", "target"),
    "smooth_l1_loss": ("smooth_l1", "target"),
    "huber_loss": ("huber", "target"),
    "poisson_nll_loss": ("poisson_nll", "logits"),
    "gaussian_nll_loss": ("gaussian_nll", "target"),
    "soft_margin_loss": ("soft_margin", "logits"),
    "multilabel_soft_margin_loss": ("multilabel_soft_margin", "logits"),
    "focal_loss": ("focal", "logits"),
}


class LossListener(Protocol):
    """What :func:`listen` calls: one loss call, one backward, one clipping.

    ``loss_called`` returns None, or the value the loss function should return instead (a
    weighted value). ``clip_called`` gets ``kind`` "norm" (``max_norm`` and the total norm
    before clipping, a tensor) or "value" (``clip_value`` as the bound, no total norm).
    """

    def loss_called(self, function: str, input: Any, target: Any, value: Any) -> Any: ...

    def backward_called(self, tensor: torch.Tensor) -> None: ...

    def clip_called(self, max_norm: float, total_norm: Any, kind: str = "norm") -> None: ...


_listeners: list[LossListener] = []
_originals: dict[str, Callable[..., Any]] = {}
_original_backward: Callable[..., Any] | None = None
_original_clip: Callable[..., Any] | None = None
_original_clip_with_norm: Callable[..., Any] | None = None
_original_clip_value: Callable[..., Any] | None = None
_busy = threading.local()  # a loss that calls another loss reports only the outer one
_lock = threading.Lock()


def listen(listener: LossListener) -> None:
    """Install the wrappers (once) and report every loss call and backward to ``listener``."""
    with _lock:
        if listener in _listeners:
            return
        _listeners.append(listener)
        if len(_listeners) == 1:
            _install()


def stop_listening(listener: LossListener) -> None:
    """Stop reporting to ``listener``; the last one out puts the originals back."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)
        if not _listeners:
            _uninstall()


def installed() -> bool:
    """Whether the loss functions are wrapped now."""
    return bool(_originals)


def _install() -> None:
    global _original_backward, _original_clip, _original_clip_with_norm, _original_clip_value
    for name in LOSS_FUNCTIONS:
        original = getattr(F, name, None)
        if original is None or name in _originals:
            continue
        _originals[name] = original
        setattr(F, name, _wrap(name, original))
    if _original_backward is None:
        _original_backward = torch.Tensor.backward
        torch.Tensor.backward = _backward  # type: ignore[method-assign]
    if _original_clip is None:
        _original_clip = torch.nn.utils.clip_grad_norm_
        torch.nn.utils.clip_grad_norm_ = _clip_grad_norm_
    if _original_clip_with_norm is None and hasattr(torch.nn.utils, "clip_grads_with_norm_"):
        _original_clip_with_norm = torch.nn.utils.clip_grads_with_norm_
        torch.nn.utils.clip_grads_with_norm_ = _clip_grads_with_norm_
    if _original_clip_value is None:
        _original_clip_value = torch.nn.utils.clip_grad_value_
        torch.nn.utils.clip_grad_value_ = _clip_grad_value_


def _uninstall() -> None:
    global _original_backward, _original_clip, _original_clip_with_norm, _original_clip_value
    for name, original in _originals.items():
        setattr(F, name, original)
    _originals.clear()
    if _original_backward is not None:
        torch.Tensor.backward = _original_backward  # type: ignore[method-assign]
        _original_backward = None
    if _original_clip is not None:
        torch.nn.utils.clip_grad_norm_ = _original_clip
        _original_clip = None
    if _original_clip_with_norm is not None:
        torch.nn.utils.clip_grads_with_norm_ = _original_clip_with_norm
        _original_clip_with_norm = None
    if _original_clip_value is not None:
        torch.nn.utils.clip_grad_value_ = _original_clip_value
        _original_clip_value = None


def _drop(listener: LossListener, exc: BaseException) -> None:
    print(f"octa-tui: stopped observing the loss after an internal error ({type(exc).__name__}: {exc})",
          file=sys.stderr)
    if listener in _listeners:
        _listeners.remove(listener)


def _wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def observed(input: Any, target: Any = None, *args: Any, **kwargs: Any) -> Any:
        if getattr(_busy, "on", False):
            return original(input, target, *args, **kwargs)
        _busy.on = True
        try:
            value = original(input, target, *args, **kwargs)
        finally:
            _busy.on = False
        for listener in list(_listeners):
            try:
                replaced = listener.loss_called(name, input, target, value)
            except Exception as exc:  # noqa: BLE001 - observing never breaks the user's loss
                _drop(listener, exc)
                continue
            if replaced is not None:
                value = replaced
        return value

    observed.__name__ = getattr(original, "__name__", name)
    observed.__doc__ = original.__doc__
    observed.__wrapped__ = original  # type: ignore[attr-defined]
    return observed


def _backward(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    if self.numel() == 1:
        for listener in list(_listeners):
            try:
                listener.backward_called(self)
            except Exception as exc:  # noqa: BLE001
                _drop(listener, exc)
    assert _original_backward is not None
    return _original_backward(self, *args, **kwargs)


def _clip_grad_norm_(parameters: Any, max_norm: float, *args: Any, **kwargs: Any) -> Any:
    """``torch.nn.utils.clip_grad_norm_``, reported: the gradients are clipped before the step."""
    assert _original_clip is not None
    total = _original_clip(parameters, max_norm, *args, **kwargs)
    _report_clip(max_norm, total)
    return total


def _clip_grads_with_norm_(parameters: Any, max_norm: float, total_norm: Any, *args: Any, **kwargs: Any) -> Any:
    """``torch.nn.utils.clip_grads_with_norm_`` (what Accelerate clips with), reported like clip_grad_norm_."""
    assert _original_clip_with_norm is not None
    result = _original_clip_with_norm(parameters, max_norm, total_norm, *args, **kwargs)
    _report_clip(max_norm, total_norm)
    return result


def _clip_grad_value_(parameters: Any, clip_value: float, *args: Any, **kwargs: Any) -> Any:
    """``torch.nn.utils.clip_grad_value_`` (Lightning's ``gradient_clip_algorithm="value"``), reported."""
    assert _original_clip_value is not None
    result = _original_clip_value(parameters, clip_value, *args, **kwargs)
    _report_clip(clip_value, None, "value")
    return result


def _report_clip(max_norm: float, total_norm: Any, kind: str = "norm") -> None:
    for listener in list(_listeners):
        try:
            listener.clip_called(float(max_norm), total_norm, kind)
        except Exception as exc:  # noqa: BLE001
            _drop(listener, exc)


def expects_probabilities(function: str, target: Any) -> bool | None:
    """Whether a call of ``function`` with ``target`` expects probabilities (None: cannot tell).

    One host read of the target's range, done once per run by the caller.
    """
    kind = LOSS_FUNCTIONS.get(function, ("", ""))[1]
    if kind == "probabilities":
        return True
    if kind == "logits":
        return False
    if kind == "target" and isinstance(target, torch.Tensor) and target.numel() and target.is_floating_point():
        with torch.no_grad():
            low, high = torch.aminmax(target.detach())
        return bool(low >= 0) and bool(high <= 1)
    return None
