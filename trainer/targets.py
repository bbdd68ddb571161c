"""Statistics of training targets, without torch: foreground ratio, pos_weight, constant baseline.

Masks may be uint8 (0..255, foreground where > 127, the seed's threshold) or float in
[0, 1] (foreground where > 0.5). The same functions serve ``pos_weight auto`` in the trainer
and the dataset report, so both say the same number.
"""

from __future__ import annotations

import numpy as np


def foreground(masks: np.ndarray) -> np.ndarray:
    """Boolean foreground of masks: > 127 for uint8 masks, > 0.5 for float masks in [0, 1]."""
    masks = np.asarray(masks)
    return masks > (127 if masks.dtype == np.uint8 else 0.5)


def foreground_ratios(masks: np.ndarray) -> np.ndarray:
    """Fraction of foreground pixels of each mask (first axis = images), float64 (n,)."""
    fg = foreground(masks)
    return fg.reshape(fg.shape[0], -1).mean(axis=1)


def compute_pos_weight(masks: np.ndarray) -> float:
    """The seed's ``pos_weight``: background pixels / foreground pixels over all training masks.

    Raises ValueError when there is no foreground at all (the weight would be infinite):
    the masks are empty or use values the threshold does not see (e.g. 0/1 in uint8).
    """
    fg = int(np.count_nonzero(foreground(masks)))
    total = int(np.asarray(masks).size)
    if fg == 0:
        raise ValueError(
            "the training masks contain no foreground pixels (> 127), so pos_weight auto is undefined; "
            "check that vessels are stored as 255 (not 1) or set pos_weight by hand"
        )
    return (total - fg) / fg


def target_stats(targets: np.ndarray) -> tuple[float, float]:
    """(mean target value, MSE of predicting each target channel's mean) - the constant baseline.

    ``targets`` is uint8 masks (n, h, w) (scaled to [0, 1]) or float targets (n, h, w) or
    (n, c, h, w) in [0, 1]. The MSE is per element, averaged over channels: for a loss that
    sums per-channel MSEs (region + affinity) the constant baseline is ``c`` times it.
    """
    data = np.asarray(targets)
    values = data.astype(np.float64) / 255.0 if data.dtype == np.uint8 else data.astype(np.float64)
    if values.ndim == 4:
        per_channel = values.transpose(1, 0, 2, 3).reshape(values.shape[1], -1)
    else:
        per_channel = values.reshape(1, -1)
    return float(values.mean()), float(per_channel.var(axis=1).mean())
