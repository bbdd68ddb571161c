"""Time to the first verdict: seconds from ``octa-tui demo --scenario NAME`` to the verdict the monitor shows.

For each scenario this starts the trainer the demo starts (:class:`octa_tui.tui.demo.DemoTrainer`
with :func:`~octa_tui.tui.demo.demo_trainer_args` and ``--scenario NAME``, the demo's sizes and
threads), follows it through the monitor's live source, and runs the monitor's diagnosis as the
monitor does (a live engine with its hysteresis, evaluated once per ``VERDICT_INTERVAL_S`` while
the history grows). The clock starts before the trainer is launched, so the figures include
loading torch and drawing the synthetic data, as a user waits for them.

Prints per scenario: seconds to the first step, to the first verdict shown (and which), to the
scenario's own verdict (and the step it showed at), and the steps/s measured. Stops a scenario
at its expected verdict or after ``--limit`` seconds.

Run: .venv/bin/python bench/bench_first_verdict.py [--limit 120] [names ...]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from octa_tui.tui.app import VERDICT_INTERVAL_S, default_diagnose
from octa_tui.tui.demo import DemoSource, DemoTrainer, demo_threads, demo_trainer_args

TARGET_S = 30.0  # every scenario's verdict shows within 30 s of the command


@dataclass
class Timing:
    """When one scenario's demo showed what (seconds since the command; NaN: not within the limit)."""

    name: str
    expected: str
    first_step_s: float = math.nan
    first_s: float = math.nan
    first_code: str = ""
    expected_s: float = math.nan
    expected_step: int = -1
    steps: int = 0
    steps_per_s: float = math.nan
    error: str = ""

    @property
    def passed(self) -> bool:
        if self.error:
            return False
        if not self.expected:  # the healthy run: nothing shown at all
            return not self.first_code
        return math.isfinite(self.expected_s) and self.expected_s <= TARGET_S


def time_scenario(name: str, expected: str, limit_s: float, folder: Path) -> Timing:
    """Start the demo's trainer for ``name``, follow it as the monitor does, time the verdicts."""
    timing = Timing(name, expected)
    began = time.monotonic()
    args = demo_trainer_args(extra=["--scenario", name])
    with DemoTrainer(args, run_dir=str(folder)) as trainer:
        source = DemoSource(trainer)
        try:
            source.open()
            diagnose = default_diagnose(True)
            last_eval, first_step_at, first_rows = -math.inf, math.nan, 0
            while time.monotonic() - began < limit_s:
                source.poll(0.05)
                history = source.history
                now = time.monotonic()
                rows = len(history.steps) if history is not None else 0
                if rows and math.isnan(timing.first_step_s):
                    timing.first_step_s, first_step_at, first_rows = now - began, now, rows
                if history is None or now - last_eval < VERDICT_INTERVAL_S:
                    continue
                last_eval = now
                verdicts, _ = diagnose(history)
                timing.steps = rows
                if rows > first_rows and now > first_step_at:
                    timing.steps_per_s = (rows - first_rows) / (now - first_step_at)
                if verdicts and not timing.first_code:
                    timing.first_s, timing.first_code = now - began, verdicts[0].code
                hit = next((v for v in verdicts if v.code == expected), None) if expected else None
                if hit is not None:
                    timing.expected_s, timing.expected_step = now - began, hit.step
                    break
                if not trainer.running():
                    timing.error = f"the trainer stopped: {trainer.last_line()}"
                    break
        except Exception as err:  # noqa: BLE001 - one failed scenario is one row, the others still run
            timing.error = str(err).splitlines()[0] if str(err) else type(err).__name__
        finally:
            source.close()
    return timing


def fmt(seconds: float) -> str:
    return f"{seconds:.1f}" if math.isfinite(seconds) else "-"


def format_table(timings: list[Timing], limit_s: float) -> str:
    """The Markdown table the README quotes."""
    lines = [
        "| scenario | expected verdict | first step (s) | first verdict shown | at (s) | expected verdict at (s) "
        "| step | steps/s | <= 30 s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in timings:
        expected_at = fmt(t.expected_s) if t.expected else "-"
        step = str(t.expected_step) if t.expected_step >= 0 else "-"
        ok = "pass" if t.passed else ("FAIL: " + t.error if t.error else "FAIL")
        lines.append(
            f"| {t.name} | {t.expected or 'none'} | {fmt(t.first_step_s)} | {t.first_code or 'none'} | "
            f"{fmt(t.first_s)} | {expected_at} | {step} | {fmt(t.steps_per_s)} | {ok} |"
        )
    lines.append(f"\n{sum(t.passed for t in timings)}/{len(timings)} within {TARGET_S:.0f} s "
                 f"(healthy: no verdict within {limit_s:.0f} s); trainer threads {demo_threads() or 'torch default'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from octa_tui.trainer.scenarios import get_scenario, scenario_names

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios (default: all)")
    parser.add_argument("--limit", type=float, default=90.0, help="seconds per scenario at most (default 90)")
    args = parser.parse_args(argv)
    names = args.names or list(scenario_names())
    os.environ.setdefault("OCTA_TUI_RUN_DIR", tempfile.mkdtemp(prefix="octa-run-files-"))
    load = os.getloadavg()
    timings = []
    with tempfile.TemporaryDirectory(prefix="octa-first-verdict-") as tmp:
        for name in names:
            t = time_scenario(name, get_scenario(name).expected, args.limit, Path(tmp) / name)
            print(f"{name}: first verdict {t.first_code or 'none'} at {fmt(t.first_s)} s, expected at "
                  f"{fmt(t.expected_s)} s, {fmt(t.steps_per_s)} steps/s {t.error}", file=sys.stderr, flush=True)
            timings.append(t)
    print(f"load average (1, 5, 15 min) at the start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(format_table(timings, args.limit))
    return 0 if all(t.passed for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
