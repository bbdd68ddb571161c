"""The diagnosis engine: a run's history in, verdicts with evidence and a fix out. Pure numpy, no I/O.

Rules come from the two seeds (000: a UNet/OCTA run stuck at loss 0.6; 002: a CRAFT model
without a final sigmoid); their thresholds live in :class:`Thresholds`. Typical use::

    set_language("zh")                             # or OCTA_TUI_LANG=zh; default "en"
    engine = Engine()
    for verdict in engine.evaluate(history):      # debounced, in cause order (root cause first)
        print(severity_name(verdict.severity), verdict.title, verdict.evidence)
    fix = engine.root_cause()                      # the verdict whose fix the `f` key applies
    match = match_matrix(history)                  # seed 000's matrix, nearest row
    facts = run_facts(history)                     # baseline, settings, length, loss kind (panels too)
    format_ratio(13.0)                             # "13x": the shallow/deep gradient ratio, one format
    for step, shown in diagnose_growing(recorded, every=5):  # a recording shown as it grew
        ...
"""

from .baseline import Baseline, bce_baseline, dice_bce_baseline, dice_loss_baseline, mse_baseline
from .engine import Engine, Hysteresis
from .facts import ConstantBaseline, RunFacts, constant_baseline, run_facts
from .gradients import RATIO_NAME, format_ratio
from .growing import diagnose_growing, grow
from .matrix import MatrixMatch, MatrixRow, match_matrix, matrix_rows
from .rules import RULE_CODES, evaluate_rules
from .texts import get_language, set_language
from .thresholds import Thresholds
from .verdict import HYPOTHESIS, LANGS, MEASURED, STAGES, Severity, Verdict, root_cause, severity_name

__all__ = [
    "HYPOTHESIS",
    "RATIO_NAME",
    "STAGES",
    "ConstantBaseline",
    "RunFacts",
    "constant_baseline",
    "diagnose_growing",
    "format_ratio",
    "grow",
    "get_language",
    "root_cause",
    "run_facts",
    "set_language",
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
