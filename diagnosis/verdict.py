"""What the engine says: a verdict with its severity, evidence, cause and fix."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from octa_tui.protocol.messages import Command

LANGS = ("en", "zh")

MEASURED = "measured"
HYPOTHESIS = "hypothesis"
CONFIDENCES = (MEASURED, HYPOTHESIS)


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


def severity_name(severity: Severity, lang: str = "en") -> str:
    """The display name of a severity ("warning", "警告", ...)."""
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

    def __post_init__(self) -> None:
        if self.confidence not in CONFIDENCES:
            raise ValueError(f"confidence must be one of {CONFIDENCES}, got {self.confidence!r}")

    @property
    def fix(self) -> Command | None:
        """The first suggested command, or None when the fix is an instruction only."""
        return self.fixes[0] if self.fixes else None
