"""Run the fault scenarios for real (small, CPU) and check what the monitor would say.

For each scenario: train it with the real link and recording, read the recording back and
feed it to the diagnosis engine as it grows (as a monitor refreshing during the run would),
and find the step at which the expected verdict shows. Where the scenario has a live fix,
train it again with the same seed and send the fix through the control channel at
``fix_at`` (a :class:`~octa_tui.protocol.transport.ControlClient` request, applied by the
trainer's Controller at that step boundary); judge the change as a fix trial and compare the
fixed run with its unfixed twin over the steps that follow. Where the fix is a restart,
train the fixed configuration and check the verdict is gone.

``python -m octa_tui.trainer.scenario_check`` (and ``octa-tui scenarios``) prints the table.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from octa_tui.diagnosis import Engine, Severity, Verdict, severity_name
from octa_tui.diagnosis.growing import diagnose_growing
from octa_tui.diagnosis.trial import (
    HELPED,
    HURT,
    NO_EFFECT,
    VAL_DICE,
    TrialOutcome,
    TrialThresholds,
    trials,
)
from octa_tui.protocol.commands import make_command
from octa_tui.protocol.messages import Command
from octa_tui.protocol.recording import read_recording
from octa_tui.protocol.run import RunHistory
from octa_tui.protocol.transport import ControlClient

from .config import TrainConfig
from .loop import Trainer
from .scenarios import Scenario, ScenarioError, get_scenario, scenario_config, scenario_names

EVERY = 5  # steps between engine evaluations, as a monitor refreshing during a fast run would
# Live fixes that must help (better than the twin, trial "helped", verdict cleared); the other
# live fixes are trials whose outcome must agree with the twin comparison, whatever it is.
MUST_HELP = ("tiny-lr", "low-foreground")


@dataclass
class Sighting:
    """When the engine, fed the run as it grew, first showed each verdict code (and the verdict)."""

    first: dict[str, int] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)  # as first shown
    final: list[Verdict] = field(default_factory=list)  # shown at the end of the run
    loud: list[tuple[int, str]] = field(default_factory=list)  # (step, code) of every warn/crit shown
    shown: list[tuple[int, Verdict]] = field(default_factory=list)  # (step, verdict) of every evaluation
    ranked_first: dict[int, str] = field(default_factory=dict)  # step -> code listed first (the root cause)

    def first_at(self, code: str) -> tuple[int, str] | None:
        """(step, code ranked first then) at the first evaluation that showed ``code``; None if never."""
        step = self.first.get(code)
        return None if step is None else (step, self.ranked_first.get(step, ""))

    def worst(self, code: str) -> Severity:
        """The highest severity ``code`` was shown at (OK if never)."""
        return max((v.severity for _, v in self.shown if v.code == code), default=Severity.OK)

    def shown_at_end(self, code: str) -> bool:
        return any(v.code == code for v in self.final)


def diagnose_as_it_grows(full: RunHistory, every: int = EVERY, engine: Engine | None = None) -> Sighting:
    """Feed ``full`` to an engine ``every`` steps, with the epochs and events of those steps."""
    sighting = Sighting()
    for last, shown in diagnose_growing(full, every, engine):
        if shown:
            sighting.ranked_first.setdefault(last, shown[0].code)
        for v in shown:
            sighting.first.setdefault(v.code, last)
            sighting.verdicts.setdefault(v.code, v)
            sighting.shown.append((last, v))
            if v.severity >= Severity.WARN:
                sighting.loud.append((last, v.code))
        sighting.final = shown
    return sighting


class SendAtStep:
    """A loop reporter that sends commands through the control channel after step ``at``.

    The request goes over the real link (a ControlClient on the trainer's control
    endpoint); the training thread serves it through its Controller at this step boundary,
    exactly as the loop does at the top of a step, so the change takes effect at step ``at``
    in every run with the same seed.
    """

    def __init__(self, at: int, commands: Sequence[Command]) -> None:
        self.at = at
        self.commands = tuple(commands)
        self.replies: list[Any] = []

    def started(self, trainer: Trainer) -> None:
        pass

    def epoch(self, trainer: Trainer, train: dict[str, float], val: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finished(self, trainer: Trainer, result: Any) -> None:
        pass

    def step(self, trainer: Trainer) -> None:
        probe, controller = trainer.probe, trainer.controller
        if probe is None or controller is None or probe.step != self.at or self.replies:
            return
        endpoint = probe.link.control_endpoint
        errors: list[BaseException] = []

        def send() -> None:
            client = ControlClient(endpoint, timeout_s=10.0)
            try:
                for command in self.commands:
                    self.replies.append(client.request(command))
            except BaseException as exc:  # noqa: BLE001 - re-raised on the training thread
                errors.append(exc)
            finally:
                client.close()

        sender = threading.Thread(target=send, name="scenario-fix", daemon=True)
        sender.start()
        while sender.is_alive():
            controller.poll()
            time.sleep(0.005)
        if errors:
            raise errors[0]
        refused = [r for r in self.replies if r.status != "ok"]
        if refused:
            raise RuntimeError(f"the trainer refused the fix: {refused[0].reason}")


def train_recorded(config: TrainConfig, folder: Path, name: str, reporter: Any = None) -> RunHistory:
    """Train ``config`` with the real link (loopback, port 0) and recording; the recording, read back."""
    record = folder / f"{name}.octa"
    config = replace(config, runs_dir=str(folder), checkpoint_dir=str(folder / name), record=str(record),
                     preview_every=0, telemetry="tcp://127.0.0.1:0", control="tcp://127.0.0.1:0")
    Trainer(config, reporter=reporter).run()
    recording = read_recording(record)
    if recording.warnings:
        raise RuntimeError(f"recording {record} is damaged: {recording.warnings[0]}")
    return recording.history


@dataclass
class ScenarioResult:
    """What one scenario's check found; ``passed`` and ``problems`` say whether it met its bar."""

    name: str
    expected: str
    found: str = ""  # the expected code if shown, else the loudest verdict shown
    step: int | None = None  # first step the expected verdict was shown
    fix: str = "-"
    trial: TrialOutcome | None = None
    effect: str = "-"
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    twin: dict[str, float] = field(default_factory=dict)  # metric over the judged window: fixed/unfixed
    ranked_first: str = ""  # the verdict listed first (the root cause) when the expected one first showed
    seen: Sighting | None = None  # what the engine showed on the unfixed run, evaluation by evaluation

    @property
    def passed(self) -> bool:
        return not self.problems


def _metric_after(history: RunHistory, metric: str, start: int, steps: int) -> float:
    """Mean of ``metric`` (a step channel, or validation Dice per epoch) over [start, start+steps)."""
    if metric == VAL_DICE:
        dice = [float(e.val["dice"]) for e in history.epochs if "dice" in e.val and start <= e.step < start + steps]
        return float(np.mean(dice)) if dice and np.isfinite(dice).all() else -math.inf
    s = history.steps.step
    rows = (s >= start) & (s < start + steps)
    values = history.steps.column(history.schema.index(metric))[rows]
    return float(np.mean(values)) if values.size and np.isfinite(values).all() else math.inf


def _val_dice(history: RunHistory) -> float:
    for summary in reversed(history.epochs):
        if "dice" in summary.val:
            return float(summary.val["dice"])
    return math.nan


def _fix_commands(scenario: Scenario, verdict: Verdict | None) -> tuple[Command, ...]:
    live = scenario.live_fix
    assert live is not None
    if not live.from_verdict:
        return tuple(make_command(op, **dict(args)) for op, args in live.commands)
    if verdict is None or not verdict.fixes:
        return ()
    return tuple(verdict.fixes)


def twin_outcome(effect: float, noise: float, t: TrialThresholds) -> str:
    """The twin comparison's verdict, on the trial's own scale: relative effect vs margin and noise."""
    if effect > max(t.helped_margin, noise):
        return HELPED
    if -effect > max(t.hurt_margin, noise):
        return HURT
    return NO_EFFECT


def loss_twin_outcome(with_fix: float, without: float, noise: float, t: TrialThresholds) -> tuple[float, str]:
    """(relative loss reduction, verdict) of the fixed run against its twin, on the same steps.

    A run whose loss went NaN/Inf is the worse one: a fix that kept the loss finite where
    the twin diverged helped, one that made it diverge hurt; when both diverged there is
    nothing to tell them apart.
    """
    fixed_ok, twin_ok = math.isfinite(with_fix), math.isfinite(without)
    if fixed_ok and twin_ok:
        # Relative to the twin's loss; a loss of 0 or below (a custom loss) has no scale, so
        # the plain difference is judged against the same margins.
        effect = (without - with_fix) / without if without > 0 else without - with_fix
        return effect, twin_outcome(effect, noise, t)
    if fixed_ok:
        return math.inf, HELPED
    if twin_ok:
        return -math.inf, HURT
    return math.nan, NO_EFFECT


def check_scenario(name: str, folder: Path, seed: int = 0, trial_thresholds: TrialThresholds | None = None) -> ScenarioResult:
    """Run scenario ``name`` small, with its fix where it has one, and check it (see the module doc)."""
    began = time.monotonic()
    torch.set_num_threads(1)
    scenario = get_scenario(name)
    t = trial_thresholds or TrialThresholds()
    folder.mkdir(parents=True, exist_ok=True)
    config = scenario_config(name, small=True, seed=seed, max_steps=scenario.steps, epochs=10_000)
    result = ScenarioResult(name, scenario.expected or "none")
    unfixed = train_recorded(config, folder, f"{name}-{seed}")
    seen = diagnose_as_it_grows(unfixed)
    result.seen = seen
    if not scenario.expected:
        # A healthy run shows no verdict at all, notes (info) included.
        any_shown = [(step, v.code) for step, v in seen.shown]
        result.found = "none" if not any_shown else f"{any_shown[0][1]} @{any_shown[0][0]}"
        if any_shown:
            result.problems.append(f"a rule fired on the healthy run: {any_shown[0]}")
        result.effect = f"val Dice {_val_dice(unfixed):.2f}"
        result.seconds = time.monotonic() - began
        return result
    result.step = seen.first.get(scenario.expected)
    if result.step is not None:
        result.ranked_first = seen.ranked_first.get(result.step, "")
        result.found = f"{scenario.expected} ({severity_name(seen.worst(scenario.expected))})"
    else:
        result.found = ", ".join(sorted(seen.first)) or "nothing"
    if result.step is None or result.step > scenario.budget:
        result.problems.append(f"{scenario.expected} not shown by step {scenario.budget} (seen: {seen.first})")
    if scenario.live_fix is not None and scenario.fix_at:
        _check_live_fix(scenario, config, folder, seed, seen, unfixed, t, result)
    elif scenario.restart_fix is not None:
        fixed_config = replace(config, **scenario.restart_fix)
        fixed = train_recorded(fixed_config, folder, f"{name}-{seed}-restart")
        after = diagnose_as_it_grows(fixed)
        result.fix = "restart: " + " ".join(f"{k}={v}" for k, v in scenario.restart_fix.items())
        result.trial = None
        # Gone: never shown at the severity the fault raised (a milder note of the same rule may remain).
        severity = seen.worst(scenario.expected)
        late = [s for s, v in after.shown if v.code == scenario.expected and v.severity >= severity]
        gone = not late
        result.effect = "verdict gone" if gone else f"still shown @{late[0]}"
        if not gone:
            result.problems.append(f"{scenario.expected} still shown after the restart fix")
    result.seconds = time.monotonic() - began
    return result


def _check_live_fix(scenario: Scenario, config: TrainConfig, folder: Path, seed: int, seen: Sighting,
                    unfixed: RunHistory, t: TrialThresholds, result: ScenarioResult) -> None:
    commands = _fix_commands(scenario, seen.verdicts.get(scenario.expected))
    if not commands:
        result.problems.append("the verdict offered no fix to send")
        return
    sender = SendAtStep(scenario.fix_at, commands)
    fixed = train_recorded(config, folder, f"{scenario.name}-{seed}-fixed", reporter=sender)
    result.fix = " + ".join(f"{c.op} " + ",".join(f"{v:g}" for v in c.args.values()) for c in commands)
    found = [x for x in trials(fixed, t) if x.step == scenario.fix_at]
    if not found:
        result.problems.append(f"no trial at step {scenario.fix_at} (events: {[e.kind for e in fixed.events]})")
        return
    trial = result.trial = found[0]
    # The twin comparison: the same seed, the same steps after the change, with and without it.
    metric = trial.metric
    start = scenario.fix_at + t.settle_steps
    with_fix = _metric_after(fixed, metric, start, t.after_steps)
    without = _metric_after(unfixed, metric, start, t.after_steps)
    if metric == VAL_DICE:
        effect = with_fix - without
        twin = twin_outcome(effect, trial.noise, replace(t, helped_margin=t.dice_margin, hurt_margin=t.dice_margin))
        change = f"{effect:+.2f} vs twin"
    else:
        effect, twin = loss_twin_outcome(with_fix, without, trial.noise, t)
        if math.isfinite(effect):
            change = f"{-effect:+.0%} vs twin"
        elif math.isnan(effect):
            change = "both diverged"
        else:
            change = "the twin diverged" if effect > 0 else "the fixed run diverged"
    result.twin = {"fixed": with_fix, "unfixed": without, "effect": effect,
                   "val_dice_fixed": _val_dice(fixed), "val_dice_unfixed": _val_dice(unfixed)}
    dice = ""
    if metric != VAL_DICE and math.isfinite(result.twin["val_dice_fixed"]):
        dice = f", final val Dice {result.twin['val_dice_unfixed']:.2f}->{result.twin['val_dice_fixed']:.2f}"
    shown = ".2f" if metric == VAL_DICE else ".3g"
    result.effect = f"{metric} {without:{shown}}->{with_fix:{shown}} ({change}){dice}; twin: {twin}"
    if scenario.name in MUST_HELP:
        # A fix the monitor offers for a fault it named: it must help, and the verdict must clear.
        if trial.outcome != HELPED:
            result.problems.append(f"trial says {trial.outcome}, expected helped")
        if twin != HELPED:
            result.problems.append(f"the fixed run is not better than its twin by the margin: {result.effect}")
        after = diagnose_as_it_grows(fixed)
        if after.shown_at_end(scenario.expected):
            result.problems.append(f"{scenario.expected} still shown at the end of the fixed run")
    if scenario.name not in MUST_HELP and trial.outcome != twin:
        result.problems.append(f"trial says {trial.outcome} but the twin comparison says {twin}")


COLUMNS = ("scenario", "expected verdict", "verdict found", "step", "ranked first", "fix applied", "trial",
           "measured effect", "result")


def result_row(r: ScenarioResult) -> tuple[str, ...]:
    """One table row of a result."""
    if r.trial is None:
        trial = "-"
    elif r.trial.metric == VAL_DICE:
        trial = f"{r.trial.outcome} ({r.trial.effect:+.2f} val Dice)"
    else:
        trial = f"{r.trial.outcome} ({-r.trial.effect:+.0%} {r.trial.metric})"
    return (r.name, r.expected, r.found, "-" if r.step is None else str(r.step), r.ranked_first or "-", r.fix,
            trial, r.effect, "pass" if r.passed else "FAIL")


def format_table(results: Sequence[ScenarioResult]) -> str:
    """The results as a Markdown table, then one line per problem found."""
    rows = [COLUMNS, *(result_row(r) for r in results)]
    lines = ["| " + " | ".join(row) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("---" for _ in COLUMNS) + "|")
    for r in results:
        lines += [f"- {r.name}: {p}" for p in r.problems]
    return "\n".join(lines)


@dataclass
class ZooResult:
    """One run of the diagnosis zoo: every verdict shown (healthy: target none) or the one ranked first."""

    name: str
    seed: int
    expected: str  # "" for a healthy run
    shown: dict[str, int] = field(default_factory=dict)  # code -> first step shown
    ranked_first: str = ""  # faults: the verdict listed first when the expected one first showed
    step: int | None = None  # faults: the step the expected verdict first showed
    seconds: float = 0.0
    final_val: str = ""

    @property
    def passed(self) -> bool:
        if not self.expected:
            return not self.shown
        return self.step is not None and self.ranked_first == self.expected


def check_zoo_run(name: str, seed: int = 0) -> ZooResult:
    """Train one zoo run (:mod:`.zoo`) in its plain loop and read it with the engine as it grows."""
    from .zoo import FAULTS, HEALTHY, train_own_loop

    runs = {r.name: r for r in (*HEALTHY, *FAULTS)}
    run = runs[name]
    began = time.monotonic()
    torch.set_num_threads(1)
    history = train_own_loop(run, seed)
    seen = diagnose_as_it_grows(history)
    result = ZooResult(name, seed, run.expected, dict(seen.first), seconds=time.monotonic() - began)
    if run.expected:
        hit = seen.first_at(run.expected)
        if hit is not None:
            result.step, result.ranked_first = hit
        elif seen.ranked_first:
            result.ranked_first = seen.ranked_first[min(seen.ranked_first)]
    last = history.epochs[-1].val if history.epochs else {}
    result.final_val = (f"val Dice {last['dice']:.2f}" if "dice" in last
                        else f"val loss {last['loss']:.4f}" if "loss" in last else "-")
    return result


def format_zoo(results: Sequence[ZooResult]) -> str:
    """The zoo's two tables: healthy runs with every verdict raised, faults with the verdict ranked first."""
    healthy = [r for r in results if not r.expected]
    faults = [r for r in results if r.expected]
    lines = []
    if healthy:
        lines += ["| healthy run | seed | verdicts raised (target: none) | final | result |", "|---|---|---|---|---|"]
        for r in healthy:
            raised = ", ".join(f"{c} @{s}" for c, s in sorted(r.shown.items(), key=lambda x: x[1])) or "none"
            lines.append(f"| {r.name} | {r.seed} | {raised} | {r.final_val} | {'pass' if r.passed else 'FAIL'} |")
    if faults:
        lines += ["", "| fault run | seed | expected (root cause) | ranked first | step | also shown | result |",
                  "|---|---|---|---|---|---|---|"]
        for r in faults:
            others = ", ".join(c for c in r.shown if c != r.expected) or "-"
            step = "-" if r.step is None else str(r.step)
            lines.append(f"| {r.name} | {r.seed} | {r.expected} | {r.ranked_first or '-'} | {step} | {others} | "
                         f"{'pass' if r.passed else 'FAIL'} |")
    return "\n".join(lines)


def zoo_main(seeds: Sequence[int], names: Sequence[str] = ()) -> int:
    """``octa-tui scenarios --healthy-zoo``: every zoo run on each seed (healthy) / the first seed (faults)."""
    from .zoo import FAULTS, HEALTHY

    results = []
    for run in (*HEALTHY, *FAULTS):
        if names and run.name not in names:
            continue
        for seed in (seeds if not run.expected else seeds[:1]):
            r = check_zoo_run(run.name, seed)
            print(f"{run.name} seed {seed}: {'pass' if r.passed else 'FAIL'} in {r.seconds:.0f} s", file=sys.stderr,
                  flush=True)
            results.append(r)
    print(format_zoo(results))
    print(f"\n{sum(r.passed for r in results)}/{len(results)} zoo runs pass; "
          f"{sum(r.seconds for r in results):.0f} s of training on {torch.get_num_threads()} thread(s)")
    return 0 if all(r.passed for r in results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m octa_tui.trainer.scenario_check`` (``octa-tui scenarios``)."""
    parser = argparse.ArgumentParser(prog="octa-tui scenarios",
                                     description="Run every fault scenario small and check the monitor's verdicts.")
    parser.add_argument("names", nargs="*", help=f"scenarios to run (default: all: {', '.join(scenario_names())})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="keep the recordings in DIR (default: a temporary folder)")
    parser.add_argument("--list", action="store_true", help="list the scenarios (fault, verdict, fix) and exit")
    parser.add_argument("--healthy-zoo", action="store_true",
                        help="the diagnosis accuracy benchmark: healthy runs of five architectures x 3 seeds "
                        "(target: no verdict) and known faults in a plain training loop (target: the root cause first)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per healthy zoo run (default 3)")
    args = parser.parse_args(argv)
    if args.healthy_zoo:
        os.environ.setdefault("OCTA_TUI_RUN_DIR", tempfile.mkdtemp(prefix="octa-run-files-"))
        return zoo_main(list(range(args.seed, args.seed + args.seeds)), args.names)
    if args.list:
        for name in scenario_names():
            s = get_scenario(name)
            print(f"{name:16} {s.fault}\n{'':16} verdict: {s.expected or '-'}; fix: {s.fix}")
        return 0
    names = args.names or list(scenario_names())
    try:
        for name in names:
            get_scenario(name)
    except ScenarioError as exc:
        parser.error(str(exc))
    os.environ.setdefault("OCTA_TUI_RUN_DIR", tempfile.mkdtemp(prefix="octa-run-files-"))
    with tempfile.TemporaryDirectory(prefix="octa-scenarios-") as tmp:
        folder = Path(args.keep or tmp)
        results = []
        for name in names:
            r = check_scenario(name, folder / name, seed=args.seed)
            print(f"{name}: {'pass' if r.passed else 'FAIL'} in {r.seconds:.0f} s", file=sys.stderr, flush=True)
            results.append(r)
    print(format_table(results))
    print(f"\n{sum(r.passed for r in results)}/{len(results)} scenarios pass; "
          f"{sum(r.seconds for r in results):.0f} s of training on {torch.get_num_threads()} thread(s)")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
