"""The diagnosis engine: a run's history in, verdicts with evidence and a fix out. Pure numpy, no I/O.

Rules come from the two seeds (000: a UNet/OCTA run stuck at loss 0.6; 002: a CRAFT model
without a final sigmoid); their thresholds live in :class:`Thresholds`. Typical use::

    engine = Engine(lang="zh")
    for verdict in engine.evaluate(history):      # debounced, most severe first
        print(severity_name(verdict.severity, "zh"), verdict.title, verdict.evidence)
    match = match_matrix(history)                  # seed 000's matrix, nearest row
"""

from .baseline import Baseline, bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline
from .engine import Engine, Hysteresis
from .matrix import MatrixMatch, MatrixRow, match_matrix, matrix_rows
from .rules import RULE_CODES, evaluate_rules
from .thresholds import Thresholds
from .verdict import HYPOTHESIS, LANGS, MEASURED, Severity, Verdict, severity_name

__all__ = [
    "HYPOTHESIS",
    "LANGS",
    "MEASURED",
    "RULE_CODES",
    "Baseline",
    "Engine",
    "Hysteresis",
    "MatrixMatch",
    "MatrixRow",
    "Severity",
    "Thresholds",
    "Verdict",
    "bce_baseline",
    "dice_bce_baseline",
    "dice_loss_baseline",
    "evaluate_rules",
    "match_matrix",
    "matrix_rows",
    "mse_baseline",
    "severity_name",
]
