"""Live weights of the observed loss terms: a factor on what each loss function returns.

Under ``octa-tui run`` and ``watch`` the loss terms are the ``torch.nn.functional`` loss
calls of a step (``mse``, ``bce``, a second MSE call ``mse_2``; see
:mod:`octa_tui.trainer.observe`). The user's own weights (``0.3 * bce + 0.7 * dice``) are
written in their code and cannot be read. So a live weight is a factor, as the live lr is a
scale: the observed function's return value is multiplied by it before the user's code sees
it, and "effective weight = the script's own weight x factor". The factors start at 1 (the
script as written) and go back to 1 by sending the old factors (what a command's reply
names as ``old``).

:class:`TermWeights` is the pure bookkeeping: which terms may be weighted (those observed
at the run's first step), their factors, and the check a command passes before anything
changes. The Watch applies the factors where the loss functions return.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

MAX_FACTOR = 1000.0


class TermWeightError(ValueError):
    """A weight command this run cannot apply; the message says why (nothing was changed)."""


class TermWeights:
    """The factor on each observed loss term (1 = the script as written).

    ``terms`` are the names a command may weight: the loss terms observed in the run's first
    step. :meth:`factor` is read on every observed loss call; :meth:`set` is a command's
    check-then-change.
    """

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.terms: tuple[str, ...] = tuple(terms)
        self.factors: dict[str, float] = {}  # only the terms whose factor is not 1

    def factor(self, term: str) -> float:
        """The factor on ``term`` now (1 when never changed or not a weighted term)."""
        return self.factors.get(term, 1.0)

    def all_factors(self) -> dict[str, float]:
        """Every weightable term's factor, in the order the terms were observed."""
        return {term: self.factor(term) for term in self.terms}

    def set(self, weights: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, float]]:
        """Set the factors of the named terms; returns (old, new) factors of those terms.

        Raises :class:`TermWeightError` and changes nothing when a name is not an observed
        term, a factor is not a finite number in [0, MAX_FACTOR], or every observed term
        would be weighted 0.
        """
        if not weights:
            raise TermWeightError("name at least one loss term and its factor")
        if not self.terms:
            raise TermWeightError("no loss term was observed in this run (no torch.nn.functional loss was called "
                                  "in its first step), so there is no term to weight")
        observed = ", ".join(self.terms)
        new: dict[str, float] = {}
        for name, value in weights.items():
            if name not in self.terms:
                raise TermWeightError(
                    f"{name!r} is not a loss term observed in this run; its terms are {observed} (one per "
                    "torch.nn.functional loss call of a step). A term computed without one (a hand-written Dice) "
                    "has no factor of its own: weight the observed terms instead")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0.0 <= value <= MAX_FACTOR:
                raise TermWeightError(f"the factor of {name!r} must be a finite number in [0, {MAX_FACTOR:g}], "
                                      f"got {value!r}")
            new[name] = float(value)
        after = {**self.all_factors(), **new}
        if all(f == 0.0 for f in after.values()):
            raise TermWeightError(f"every observed loss term ({observed}) would be weighted 0; keep one above 0 "
                                  "(to stop training, pause or stop the run)")
        old = {name: self.factor(name) for name in new}
        for name, value in new.items():
            if value == 1.0:
                self.factors.pop(name, None)
            else:
                self.factors[name] = value
        return old, new


__all__ = ["MAX_FACTOR", "TermWeightError", "TermWeights"]
