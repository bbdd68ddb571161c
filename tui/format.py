"""Numbers, rates and durations as short strings for a terminal panel.

Panels are narrow, so every value is printed in at most a few characters, with the unit
a person expects (``1.2k steps/s``, ``ETA 3m12s``, ``1.5e-04``). NaN and Inf are printed as
themselves: a diverging run must be visible, never hidden behind a dash.
"""

from __future__ import annotations

import math
import re


def format_number(value: float, digits: int = 3) -> str:
    """A float in ``digits`` significant figures, switching to exponent form when tiny or huge.

    >>> format_number(0.60312)
    '0.603'
    >>> format_number(1.5e-4)
    '1.50e-04'
    """
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0.0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.{max(digits - 1, 0)}e}"
    decimals = max(digits - 1 - int(math.floor(math.log10(magnitude))), 0)
    return f"{value:.{decimals}f}"


def format_count(count: float) -> str:
    """A count with a k/M/G suffix: ``1234 -> '1.2k'``, ``7_760_000 -> '7.8M'``."""
    count = float(count)
    if not math.isfinite(count):
        return format_number(count)
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= scale:
            scaled = count / scale
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return f"{count:.0f}"


def format_rate(steps_per_s: float | None) -> str:
    """Training speed as ``'12.3 steps/s'`` (or ``'-'`` when unknown)."""
    if steps_per_s is None or not math.isfinite(steps_per_s) or steps_per_s <= 0:
        return "- steps/s"
    if steps_per_s >= 1000:
        return f"{format_count(steps_per_s)} steps/s"
    if steps_per_s >= 10:
        return f"{steps_per_s:.0f} steps/s"
    return f"{steps_per_s:.2g} steps/s" if steps_per_s < 1 else f"{steps_per_s:.1f} steps/s"


def format_duration(seconds: float | None) -> str:
    """A duration as ``'45s'``, ``'3m12s'``, ``'2h05m'`` or ``'3d04h'`` (``'-'`` when unknown)."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def eta_seconds(current_step: int, total_steps: int | None, steps_per_s: float | None) -> float | None:
    """Seconds left until ``total_steps`` at the current speed, or None when unknown."""
    if not total_steps or steps_per_s is None or not math.isfinite(steps_per_s) or steps_per_s <= 0:
        return None
    return max(total_steps - current_step, 0) / steps_per_s


def format_eta(current_step: int, total_steps: int | None, steps_per_s: float | None) -> str:
    """``'ETA 3m12s'`` or ``'ETA -'`` when the run length or speed is unknown."""
    return f"ETA {format_duration(eta_seconds(current_step, total_steps, steps_per_s))}"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 step``, ``2 steps``, ``0 steps``: a count with its noun in the right number."""
    return f"{count:,} {noun if count == 1 else (nouns or noun + 's')}"


_ONE_OF_MANY = re.compile(r"(?<![\d.,])1 (step|epoch|param|frame|value|layer)s\b")


def singular_counts(text: str) -> str:
    """``(1 steps after the change)`` -> ``(1 step after the change)``: a count of one said
    in the singular, in text written with a plural noun whatever the count."""
    return _ONE_OF_MANY.sub(r"1 \1", text)


def format_command(op: str, args: dict) -> str:
    """A command as a person would type it: ``set_lr lr=0.001``."""
    if not args:
        return op
    parts = " ".join(f"{name}={format_number(value) if isinstance(value, float) else value}" for name, value in args.items())
    return f"{op} {parts}"
