"""What the engine says: a verdict with its severity, evidence, cause and fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from octa_tui.protocol.messages import Command

LANGS = ("en", "zh")

MEASURED = "measured"
HYPOTHESIS = "hypothesis"
CONFIDENCES = (MEASURED, HYPOTHESIS)

# Where a verdict sits in the chain of cause and effect, root causes first: the data, then a
# mismatch between the model's output and the loss, then the optimisation, then what those
# cause (no better than a constant, a plateau, an explosion, NaN, a validation collapse).
DATA, OUTPUT, OPTIMISATION, CONSEQUENCE = "data", "output", "optimisation", "consequence"
STAGES = (DATA, OUTPUT, OPTIMISATION, CONSEQUENCE)


class Severity(IntEnum):
    """How urgent a verdict is; ordered so verdicts sort most severe first."""

    OK = 0
    INFO = 1
    WARN = 2
    CRIT = 3


# The one place a severity becomes a word; the UI maps it to a colour the same way.
_SEVERITY_NAMES = {
    "en": {Severity.OK: "ok", Severity.INFO: "info", Severity.WARN: "warning", Severity.CRIT: "critical"},
    "zh": {Severity.OK: "正常", Severity.INFO: "提示", Severity.WARN: "警告", Severity.CRIT: "严重"},
}


def check_lang(lang: str) -> str:
    """Return ``lang`` if verdicts can be written in it, else raise ValueError naming the choices."""
    if lang not in LANGS:
        raise ValueError(f"language {lang!r} is not supported; choose one of {', '.join(LANGS)}")
    return lang


def severity_name(severity: Severity, lang: str | None = None) -> str:
    """The display name of a severity ("warning", "警告", ...); ``lang`` defaults to the language set
    with :func:`octa_tui.diagnosis.texts.set_language` (or ``OCTA_TUI_LANG``)."""
    if lang is None:
        from .texts import get_language

        lang = get_language()
    return _SEVERITY_NAMES[check_lang(lang)][Severity(severity)]


@dataclass(frozen=True)
class Verdict:
    """One diagnosis: what is wrong, the numbers that show it, why, and what to do.

    ``fixes`` are protocol commands the monitor can send as they are (one key applies them
    all, e.g. clip 1.0 and lr / 10 for an explosion); when the fix needs a restart there is
    no command and ``instruction`` says what to change. ``confidence`` is ``"measured"`` when
    the verdict states a fact read from the data (masks not binary, NaN, outputs outside
    [0, 1]) and ``"hypothesis"`` when it is one of the seeds' rules of thumb, worded as such.
    ``step`` is the newest training step the verdict was computed from (-1 before training).
    ``stage`` places it in the chain of cause and effect (:data:`STAGES`); a consequence names
    its likely cause in ``caused_by`` (another verdict's code, "" when none is measured).
    """

    code: str
    severity: Severity
    title: str
    evidence: str
    cause: str
    fixes: tuple[Command, ...] = ()
    instruction: str = ""
    confidence: str = MEASURED
    step: int = -1
    stage: str = OPTIMISATION
    caused_by: str = ""

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")

    @property
    def is_consequence(self) -> bool:
        """Whether this verdict is an effect of something else (a plateau, NaN, an explosion)."""
        return self.stage == CONSEQUENCE

    @property
    def fix(self) -> Command | None:
        """The first suggested command, or None when the fix is an instruction only."""
        return self.fixes[0] if self.fixes else None


def cause_order(verdict: Verdict) -> int:
    """The position of a verdict's stage in the chain, root causes first."""
    return STAGES.index(verdict.stage)


def sort_key(verdict: Verdict, index: int = 0) -> tuple[int, int, int, int]:
    """How verdicts are listed: what needs action before notes (info), then by cause stage, then
    most severe first, then ``index`` (the rule order) for ties."""
    return (verdict.severity <= Severity.INFO, cause_order(verdict), -int(verdict.severity), index)


def root_cause(verdicts: list[Verdict] | tuple[Verdict, ...]) -> Verdict | None:
    """The verdict whose fix the monitor's fix key applies: the first in cause order.

    Verdicts from :meth:`Engine.evaluate` are already in that order, so this is the first
    one; given any list, it picks the earliest stage (data before output before optimisation
    before consequences) among those that need action, most severe within a stage, keeping
    the list's order for ties.
    """
    if not verdicts:
        return None
    return min(enumerate(verdicts), key=lambda iv: sort_key(iv[1], iv[0]))[1]
