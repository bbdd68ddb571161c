"""Gradient health that tells a starving network from a healthy one with normalisation and skips.

Seed 000's hint compared the first layer's gradient norm with the last one's and called a
spread above 10x "slight vanishing"; on real healthy networks that cries wolf: BatchNorm
layers hold a few hundred parameters and sit below 1e-4, and a 1x1 head has a tenth of the
first convolution's gradient (healthy UNets, smp and MONAI nets: 10x-20x). The seed itself
calls its own 18x run "Gradient Norm 在正常范围，不是梯度消失". Real vanishing is orders of
magnitude: the 12-layer sigmoid CNN's first layer gets ~1e-9 of its last layer's gradient.

So this module compares like with like and looks over time:

- **weight layers only**: normalisation layers (by the module kinds the run reports in
  ``config["layer_kinds"]``, else by their names: ``bn``, ``norm``, ``ln``, ``gn``) and layers
  that never received a gradient (a NaN channel: unused parameters) are left out of the ends;
- **ends**: the first (shallowest) and the last (deepest) weight layers, as medians over the
  newest ``grad_steps`` steps and, when the run is long enough, over the ``grad_steps`` before;
- **the ratio** has one name and one direction everywhere: :data:`RATIO_NAME` = shallow/deep
  (seed 000's 浅层/深层), first weight layer over last, printed by :func:`format_ratio`;
- **vanishing** needs the ratio beyond ``grad_ratio_vanishing`` (1000x either way) in both
  windows, or an end below the floor (1e-4) with the other end ``grad_ratio_floor_spread``
  (100x) above it. An inner layer below the floor is never a verdict by itself.

``level`` keeps seed 000's matrix column (0 ✓正常 / 1 ⚠️轻微消失 / 2 ❌消失): 1 from 100x.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .signals import finite_median

RATIO_NAME = "shallow/deep"  # first weight layer's gradient norm over the last one's
_NORM_NAME = re.compile(r"(^|[._\-])(bn|norm|ln|gn|batchnorm|layernorm|groupnorm|instancenorm)\d*($|[._\-])", re.I)


def format_ratio(ratio: float) -> str:
    """The shallow/deep ratio as every surface prints it: ``13x``, ``0.054x``, ``3.4e-10x``, ``1.4e8x``."""
    if not math.isfinite(ratio):
        return "-" if math.isnan(ratio) else "inf"
    if ratio == 0:
        return "0x"
    if 1e-3 <= abs(ratio) < 1e4:
        return f"{ratio:.2g}x" if abs(ratio) < 10 else f"{ratio:.0f}x"
    mantissa, exponent = f"{ratio:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}x"


def is_norm_layer(name: str, kind: str = "") -> bool:
    """Whether a layer is a normalisation layer (by module kind when known, else by name)."""
    if kind:
        return "Norm" in kind
    return bool(_NORM_NAME.search(name))


def weight_layers(names: Sequence[str], kinds: Sequence[str] = ()) -> list[int]:
    """Indices of the layers that carry weights to compare (all when none qualifies)."""
    use_kinds = len(kinds) == len(names)
    chosen = [i for i, n in enumerate(names) if not is_norm_layer(n, kinds[i] if use_kinds else "")]
    return chosen or list(range(len(names)))


def shallow_deep(names: Sequence[str], norms: Sequence[float], kinds: Sequence[str] = ()) -> float:
    """:data:`RATIO_NAME` of one set of layer norms: the first weight layer's over the last one's.

    Layers without a finite norm (no gradient) and normalisation layers are skipped; NaN when
    fewer than two weight layers have a norm or the last one is 0. What the monitor's gradient
    panel and the console print, with :func:`format_ratio`, so every surface shows one number.
    """
    values = [float(v) for v in norms]
    use = [i for i in weight_layers(names, kinds) if i < len(values) and math.isfinite(values[i])]
    if len(use) < 2:
        return math.nan
    first, last = values[use[0]], values[use[-1]]
    return first / last if last > 0 else (math.inf if first > 0 else math.nan)


@dataclass(frozen=True)
class GradientHealth:
    """The gradient evidence of one evaluation (norms are medians over the newest steps).

    ``ratio`` is :data:`RATIO_NAME` (first weight layer over last, NaN when undefined);
    ``earlier_ratio`` the same over the window before (NaN when the run is too short);
    ``unused`` the layers whose channel carried no finite value in the window (no gradient);
    ``strength``: "none" | "vanishing"; ``level``: the seed matrix's 0 / 1 / 2.
    """

    layers: tuple[str, ...]
    norms: tuple[float, ...]
    first: int
    last: int
    ratio: float
    earlier_ratio: float
    unused: tuple[str, ...]
    starving_end: str  # "" | "first" | "last": an end below the floor, far below the other
    strength: str
    level: int

    @property
    def vanishing(self) -> bool:
        """Whether the gradients vanish across the network (a verdict)."""
        return self.strength == "vanishing"

    @property
    def first_name(self) -> str:
        return self.layers[self.first]

    @property
    def last_name(self) -> str:
        return self.layers[self.last]

    @property
    def spread(self) -> float:
        """How far apart the ends are, whichever way (>= 1; NaN when undefined)."""
        if not math.isfinite(self.ratio) or self.ratio <= 0:
            return math.inf if self.ratio == 0 or self.ratio == math.inf else math.nan
        return max(self.ratio, 1.0 / self.ratio)


def _ratio(norms: np.ndarray, first: int, last: int) -> float:
    a, b = float(norms[first]), float(norms[last])
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    if b == 0:
        return math.inf if a > 0 else math.nan
    return a / b


def gradient_health(
    layers: Sequence[str],
    recent: np.ndarray,
    earlier: np.ndarray | None,
    kinds: Sequence[str] = (),
    *,
    floor: float = 1e-4,
    vanishing_ratio: float = 1000.0,
    floor_spread: float = 100.0,
    slight_ratio: float = 100.0,
) -> GradientHealth | None:
    """Grade ``recent`` norms (rows = steps, columns = layers); ``earlier`` the window before (or None)."""
    if recent.size == 0 or not layers:
        return None
    finite = np.isfinite(recent)
    norms = np.asarray(finite_median(recent, axis=0), dtype=np.float64).reshape(-1)
    seen = finite.any(axis=0)
    if not seen.any():
        return None
    unused = tuple(layers[i] for i in range(len(layers)) if not seen[i])
    candidates = [i for i in weight_layers(layers, kinds) if seen[i]]
    if not candidates:
        candidates = [i for i in range(len(layers)) if seen[i]]
    first, last = candidates[0], candidates[-1]
    ratio = _ratio(norms, first, last) if first != last else math.nan
    earlier_ratio = math.nan
    if earlier is not None and earlier.size and first != last:
        old = np.asarray(finite_median(earlier, axis=0), dtype=np.float64).reshape(-1)
        earlier_ratio = _ratio(old, first, last)

    def spread(r: float) -> float:
        if math.isnan(r):
            return math.nan
        if r == 0 or r == math.inf:
            return math.inf
        return max(r, 1.0 / r)

    now, before = spread(ratio), spread(earlier_ratio)
    sustained = now > vanishing_ratio and (math.isnan(before) or before > vanishing_ratio)
    starving = ""
    a, b = float(norms[first]), float(norms[last])
    if first != last and math.isfinite(a) and math.isfinite(b):
        # One end below the floor while the other gets a real gradient far above it (all-zero
        # gradients are a constant output, not vanishing).
        if a < floor <= b and b >= floor_spread * a:
            starving = "first"
        elif b < floor <= a and a >= floor_spread * b:
            starving = "last"
    strength = "vanishing" if sustained or starving else "none"
    level = 2 if strength == "vanishing" else (1 if math.isfinite(now) and now > slight_ratio else 0)
    return GradientHealth(
        tuple(layers), tuple(float(x) for x in norms), first, last, ratio, earlier_ratio, unused, starving,
        strength, level,
    )
