"""Measured quantities the rules share: a plateau test, the gradient state, explosions.

Each is a pure function of numpy arrays, so it can be checked against the seeds' numbers
directly; the rules decide what the quantities mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


# --- plateau ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlateauTest:
    """Seed 000's plateau check on a few loss values (epoch losses or block means of steps).

    ``variance`` is the population variance of the values. ``trend`` is how much the loss fell
    across them along a least-squares line (positive = improving); ``noise`` is the fall the
    scatter around that line could produce by itself (``sigmas`` standard errors of the slope);
    ``improvement`` is the fall beyond the noise. Seed 000's own example (five losses around
    0.612 that fall 0.00053 from first to last while scattering +-0.0005) is flagged as a
    plateau by its log, so a fall within the noise does not count as improvement.
    """

    values: tuple[float, ...]
    variance: float
    trend: float
    noise: float
    improvement: float
    flat: bool


def plateau_test(
    values: np.ndarray, variance_max: float, improvement_max: float, sigmas: float
) -> PlateauTest:
    """Run the test on ``values`` (at least 3, oldest first; non-finite values make it fail)."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if n < 3 or not np.isfinite(v).all():
        return PlateauTest(tuple(v.tolist()), math.nan, math.nan, math.nan, math.nan, False)
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    sxx = float(x @ x)
    slope = float(x @ (v - v.mean())) / sxx
    residuals = v - v.mean() - slope * x
    scatter = math.sqrt(float(residuals @ residuals) / (n - 2))
    span = n - 1
    trend = -slope * span
    noise = sigmas * scatter / math.sqrt(sxx) * span
    improvement = max(0.0, trend - noise)
    variance = float(v.var())
    flat = variance < variance_max and improvement < improvement_max
    return PlateauTest(tuple(v.tolist()), variance, trend, noise, improvement, flat)


def block_means(values: np.ndarray, blocks: int, block_size: int) -> np.ndarray | None:
    """Means of the finite values in ``blocks`` consecutive blocks at the end of ``values``."""
    need = blocks * block_size
    if values.size < need:
        return None
    tail = values[values.size - need :].reshape(blocks, block_size)
    finite = np.isfinite(tail)
    counts = finite.sum(axis=1)
    if (counts == 0).any():
        return None
    return np.where(finite, tail, 0.0).sum(axis=1) / counts


def finite_median(values: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """Median ignoring NaN/Inf (NaN where nothing is finite); np.median when all are finite (10x faster)."""
    finite = np.isfinite(values)
    if finite.all():
        return np.median(values, axis=axis)
    masked = np.where(finite, values, np.nan)
    if axis is None:
        return float(np.nanmedian(masked)) if finite.any() else np.nan
    out = np.full(np.delete(masked.shape, axis), np.nan)
    seen = finite.any(axis=axis)
    if seen.any():
        out[seen] = np.nanmedian(np.compress(seen, masked, axis=1 - axis), axis=axis)
    return out


# --- gradients ----------------------------------------------------------------------------
NONE, SLIGHT, MODERATE, STRONG = "none", "slight", "moderate", "strong"


@dataclass(frozen=True)
class GradientState:
    """Per-layer gradient norms (median over recent steps, shallow to deep) and what they show.

    ``ratio`` compares the first (shallowest) layer with the last (deepest), whichever way is
    larger, with ``direction`` saying which ("shallow/deep" as in seed 000's hint, or
    "deep/shallow" when the input side starves); seed 000 calls > 10x "slight". A layer below the
    floor (seed 000: 1e-4) makes it "strong" when it is one of the two ends, the classic
    signature of a starving input or output side; an inner layer below it (typically a
    normalisation layer with few parameters, which Adam still updates normally) makes it only
    "slight" unless the ratio says more.
    """

    layers: tuple[str, ...]
    norms: tuple[float, ...]
    ratio: float
    direction: str
    below_floor: tuple[tuple[str, float], ...]
    strength: str

    @property
    def vanishing(self) -> bool:
        """Whether anything beyond the seed's harmless "slight" spread shows."""
        return self.strength in (MODERATE, STRONG)

    @property
    def level(self) -> int:
        """0 healthy, 1 slight, 2 vanishing: the seed's matrix column (✓正常 / ⚠️轻微消失 / ❌消失)."""
        return {NONE: 0, SLIGHT: 1}.get(self.strength, 2)


def gradient_state(
    layers: tuple[str, ...],
    recent_norms: np.ndarray,
    floor: float,
    slight: float,
    moderate: float,
    strong: float,
) -> GradientState | None:
    """Grade ``recent_norms`` (rows = steps, columns = layers); None when no layer has data."""
    if recent_norms.size == 0 or not layers:
        return None
    norms = np.asarray(finite_median(recent_norms, axis=0), dtype=np.float64)
    if not np.isfinite(norms).any():
        return None
    present = [i for i in range(len(layers)) if np.isfinite(norms[i])]
    below = tuple((layers[i], float(norms[i])) for i in present if norms[i] < floor)
    shallow, deep = norms[present[0]], norms[present[-1]]
    ratio, direction = math.nan, "shallow/deep"
    if len(present) >= 2 and max(shallow, deep) > 0:
        if shallow >= deep:
            ratio = float(shallow / deep) if deep > 0 else math.inf
        else:
            ratio, direction = (float(deep / shallow) if shallow > 0 else math.inf), "deep/shallow"
    graded = not math.isnan(ratio)
    if graded and ratio > strong:
        strength = STRONG
    elif graded and ratio > moderate:
        strength = MODERATE
    elif graded and ratio > slight:
        strength = SLIGHT
    else:
        strength = NONE
    if shallow < floor or deep < floor:
        strength = STRONG
    elif below and strength == NONE:
        strength = SLIGHT
    return GradientState(tuple(layers), tuple(float(x) for x in norms), ratio, direction, below, strength)


# --- explosions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ExplosionSummary:
    """Recent steps whose parameter gradients exceeded the bound.

    ``count_at_worst`` is how many parameters were over the bound at the worst step (-1 when
    the run does not report a count); ``max_norm`` the largest parameter norm seen.
    """

    steps_over: int
    window: int
    worst_step: int
    count_at_worst: int
    max_norm: float


def explosion_summary(
    steps: np.ndarray, n_over: np.ndarray | None, max_norm: np.ndarray | None, bound: float
) -> ExplosionSummary | None:
    """Summarise the recent rows; None when the run reports neither a count nor a max norm."""
    if n_over is None and max_norm is None:
        return None
    rows = steps.size
    over = np.zeros(rows, dtype=bool)
    if n_over is not None:
        over |= np.nan_to_num(n_over, nan=0.0, posinf=0.0) > 0
    peak = np.full(rows, np.nan) if max_norm is None else np.where(np.isfinite(max_norm), max_norm, np.nan)
    over |= np.nan_to_num(peak, nan=0.0) > bound
    if not over.any():
        best = float(np.nanmax(peak)) if np.isfinite(peak).any() else math.nan
        return ExplosionSummary(0, rows, -1, 0, best)
    if n_over is not None and np.isfinite(n_over).any():
        counts = np.nan_to_num(n_over, nan=-1.0, posinf=-1.0)
        worst = rows - 1 - int(np.argmax(counts[::-1]))  # the newest of the worst steps
        count = int(counts[worst])
    else:
        worst, count = rows - 1 - int(np.nanargmax(peak[::-1])), -1
    best = float(np.nanmax(peak)) if np.isfinite(peak).any() else math.nan
    return ExplosionSummary(int(over.sum()), rows, int(steps[worst]), count, best)
