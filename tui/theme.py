"""The one place that maps a verdict's severity (and a connection state) to a colour.

Severity is an ordered enum in the diagnosis package (OK < INFO < WARN < CRIT); the monitor
compares by value, so this module needs no import of it.
"""

from __future__ import annotations

SEVERITY_STYLES = {0: "green", 1: "cyan", 2: "bold yellow", 3: "bold red"}
SEVERITY_LABELS = {0: "OK", 1: "INFO", 2: "WARN", 3: "CRIT"}
CONNECTION_STYLES = {
    "live": "bold green",
    "stalled": "bold yellow",
    "lost": "bold red",
    "connecting": "yellow",
    "replay": "bold cyan",
    "paused": "bold yellow",
    "finished": "cyan",
    "stopped": "cyan",
    "failed": "bold red",
}
SERIES_COLORS = ("bright_white", "cyan", "magenta", "yellow", "green", "bright_blue", "red", "bright_magenta")
NONFINITE_STYLE = "bold red"
REFERENCE_STYLE = "bright_black"
MARKER_STYLE = "yellow"


def severity_style(severity: int) -> str:
    """Rich style of a severity (unknown values are shown as the most severe)."""
    return SEVERITY_STYLES.get(int(severity), SEVERITY_STYLES[3])


def severity_label(severity: int) -> str:
    """Four-letter label of a severity: OK, INFO, WARN, CRIT."""
    return SEVERITY_LABELS.get(int(severity), "CRIT")


def connection_style(state: str) -> str:
    """Rich style of a connection state shown in the header."""
    return CONNECTION_STYLES.get(state, "bold red")
