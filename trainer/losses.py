"""Losses that report their components: the seed's Dice+BCE for vessels and the heatmap MSEs.

Each loss returns a :class:`LossOutput`: the total to back-propagate and each component as a
0-d tensor (never ``.item()``: reading values is the probe's job, off the critical path).
Weights and ``pos_weight`` are plain attributes; the control layer validates a change and
assigns it at a step boundary, and the next call uses it without rebuilding anything.

Two flags tell the probe how to read the model's output:
``input_is_logits`` - the loss applies the sigmoid itself (the model's output is logits);
``loss_expects_probabilities`` - the values the loss compares with its [0, 1] targets must be
probabilities, so outputs outside [0, 1] mean a missing sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LossOutput:
    """A loss value to back-propagate and its named components (0-d tensors, same device)."""

    total: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


def soft_dice_score(probabilities: torch.Tensor, targets: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over the whole batch: (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth)."""
    intersection = (probabilities * targets).sum()
    return (2.0 * intersection + smooth) / (probabilities.sum() + targets.sum() + smooth)


class DiceBCELoss(nn.Module):
    """The seed's segmentation loss: ``bce_weight * BCE + dice_weight * (1 - Dice)``, on logits.

    Components (unweighted, so they read like the seed's log lines): ``bce`` is
    BCE-with-logits averaged over pixels (foreground pixels weighted by ``pos_weight`` when
    set), ``dice`` is the soft Dice *loss*, 1 - Dice of sigmoid(logits), over the batch.
    Defaults 0.3/0.7 are the seed's. ``pos_weight=None`` means unweighted BCE; a number is
    background/foreground (see ``data.compute_pos_weight``). ``bce_weight=1, dice_weight=0``
    is a BCE-only loss that still reports the Dice term.
    """

    input_is_logits = True
    loss_expects_probabilities = True

    def __init__(
        self,
        bce_weight: float = 0.3,
        dice_weight: float = 0.7,
        pos_weight: float | None = None,
        smooth: float = 1.0,
    ) -> None:
        super().__init__()
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.pos_weight = None if pos_weight is None else float(pos_weight)
        self.smooth = float(smooth)
        self._pos_weight_cache: tuple[tuple[float, torch.device, torch.dtype], torch.Tensor] | None = None

    def _pos_weight_tensor(self, like: torch.Tensor) -> torch.Tensor | None:
        """``pos_weight`` as a tensor on the logits' device, rebuilt only when the value changes."""
        if self.pos_weight is None:
            return None
        key = (float(self.pos_weight), like.device, like.dtype)
        if self._pos_weight_cache is None or self._pos_weight_cache[0] != key:
            self._pos_weight_cache = (key, torch.tensor(key[0], device=like.device, dtype=like.dtype))
        return self._pos_weight_cache[1]

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Loss of ``logits`` (n, c, h, w) against ``targets`` of the same shape in [0, 1]."""
        if logits.shape != targets.shape:
            raise ValueError(
                f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape"
            )
        logits = logits.float()  # AMP: the loss is computed in float32
        targets = targets.to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self._pos_weight_tensor(logits))
        dice = 1.0 - soft_dice_score(torch.sigmoid(logits), targets, self.smooth)
        total = self.bce_weight * bce + self.dice_weight * dice
        return LossOutput(total, {"bce": bce, "dice": dice})


def _heatmap_pair(loss: str, predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and targets of a two-heatmap loss, checked to be (n, 2, h, w) alike, as float32."""
    if predictions.shape != targets.shape or predictions.ndim != 4 or predictions.shape[1] != 2:
        raise ValueError(
            f"{loss} needs predictions and targets of the same shape (n, 2, h, w), "
            f"got {tuple(predictions.shape)} and {tuple(targets.shape)}"
        )
    predictions = predictions.float()
    return predictions, targets.to(predictions.dtype)


class HeatmapMSELoss(nn.Module):
    """Seed 002's loss: MSE of the region heatmap plus MSE of the affinity heatmap.

    Predictions and targets are (n, 2, h, w): channel 0 region (the seed's "character"
    loss), channel 1 affinity (its "link" loss); ``total = region + affinity``. The
    predictions are compared directly with targets in [0, 1], so they must be probabilities:
    a model without a final sigmoid is the seed's bug.
    """

    input_is_logits = False
    loss_expects_probabilities = True

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Loss of ``predictions`` (n, 2, h, w) against ``targets`` (n, 2, h, w) in [0, 1]."""
        predictions, targets = _heatmap_pair("HeatmapMSELoss", predictions, targets)
        region = F.mse_loss(predictions[:, 0], targets[:, 0])
        affinity = F.mse_loss(predictions[:, 1], targets[:, 1])
        return LossOutput(region + affinity, {"region": region, "affinity": affinity})


def ohem_squared_error(
    predictions: torch.Tensor,
    targets: torch.Tensor,
    positive_threshold: float = 0.1,
    negative_ratio: int = 3,
    no_positive_pixels: int = 500,
) -> torch.Tensor:
    """A CRAFT-style pixel-wise squared error with online hard negative mining, averaged over images.

    Per image (predictions and targets (n, h, w)): positive pixels are those whose target is
    at least ``positive_threshold``; the loss is the squared error summed over all P
    positives and over the ``negative_ratio * P`` negatives with the largest error (all of
    them if there are fewer), divided by P. So the negatives the net gets most wrong always
    weigh as much as three times the positives, however well the rest is fitted. An image
    without positives gets the mean squared error of its ``no_positive_pixels`` worst pixels.
    """
    n = predictions.shape[0]
    errors = (predictions - targets).pow(2).reshape(n, -1)
    positive = targets.reshape(n, -1) >= positive_threshold
    count = positive.sum(dim=1)  # P per image
    positive_sum = (errors * positive).sum(dim=1)
    # Negatives sorted hardest first (positives pushed to the end), the first k = min(3P, negatives) kept.
    negative_errors = errors.masked_fill(positive, -1.0)
    hardest, _ = negative_errors.sort(dim=1, descending=True)
    k = torch.minimum(negative_ratio * count, positive.shape[1] - count)
    keep = torch.arange(hardest.shape[1], device=errors.device).unsqueeze(0) < k.unsqueeze(1)
    negative_sum = (hardest * keep).sum(dim=1)
    with_positives = (positive_sum + negative_sum) / count.clamp(min=1)
    worst, _ = errors.topk(min(no_positive_pixels, errors.shape[1]), dim=1)
    per_image = torch.where(count > 0, with_positives, worst.mean(dim=1))
    return per_image.mean()


class HeatmapOHEMLoss(nn.Module):
    """A CRAFT-style heatmap loss: region and affinity squared error with hard negative mining.

    Same shapes, components (``region``, ``affinity``; ``total = region + affinity``) and
    probability contract as :class:`HeatmapMSELoss`, but each term is
    :func:`ohem_squared_error`: the positives plus the three-times-as-many hardest negatives,
    normalised by the positive count. Unlike a mean over all pixels, it cannot be made small
    by fitting the easy background, so it stays large - and its gradients with it - while any
    region is badly wrong (a loss around 2 with outputs far outside [0, 1], as in seed 002).
    """

    input_is_logits = False
    loss_expects_probabilities = True

    def __init__(self, positive_threshold: float = 0.1, negative_ratio: int = 3, no_positive_pixels: int = 500) -> None:
        super().__init__()
        if not 0.0 < positive_threshold <= 1.0:
            raise ValueError(f"positive_threshold must be in (0, 1], got {positive_threshold!r}")
        if negative_ratio < 1 or no_positive_pixels < 1:
            raise ValueError(
                f"negative_ratio and no_positive_pixels must be >= 1, got {negative_ratio!r}, {no_positive_pixels!r}"
            )
        self.positive_threshold = float(positive_threshold)
        self.negative_ratio = int(negative_ratio)
        self.no_positive_pixels = int(no_positive_pixels)

    def forward(self, predictions: torch.Tensor, targets: torch.Tensor) -> LossOutput:
        """Loss of ``predictions`` (n, 2, h, w) against ``targets`` (n, 2, h, w) in [0, 1]."""
        predictions, targets = _heatmap_pair("HeatmapOHEMLoss", predictions, targets)
        terms = [
            ohem_squared_error(predictions[:, c], targets[:, c], self.positive_threshold, self.negative_ratio,
                               self.no_positive_pixels)
            for c in (0, 1)
        ]
        return LossOutput(terms[0] + terms[1], {"region": terms[0], "affinity": terms[1]})


LOSSES = ("dice_bce", "bce", "mse", "mse_ohem")


def make_loss(name: str, bce_weight: float = 0.3, dice_weight: float = 0.7, pos_weight: float | None = None):
    """Build the loss a run's config names: ``dice_bce``, ``bce`` (BCE-only Dice+BCE), ``mse`` or
    ``mse_ohem`` (heatmaps: mean MSE, or a CRAFT-style hard-negative-mined squared error)."""
    if name == "dice_bce":
        return DiceBCELoss(bce_weight, dice_weight, pos_weight)
    if name == "bce":
        return DiceBCELoss(bce_weight=1.0, dice_weight=0.0, pos_weight=pos_weight)
    if name == "mse":
        return HeatmapMSELoss()
    if name == "mse_ohem":
        return HeatmapOHEMLoss()
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
