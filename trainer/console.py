"""What ``octa-train`` prints: one line per epoch, the seed's gradient line, a progress bar on a terminal.

The line formats are pure functions (tested without a terminal). :class:`PlainReporter`
writes them to a stream (logs, pipes, CI); :class:`RichReporter` adds a live progress bar
when stdout is a terminal. Both implement the loop's ``Reporter`` protocol.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import Trainer, TrainResult

from octa_tui.diagnosis.gradients import RATIO_NAME, format_ratio, shallow_deep, weight_layers
from octa_tui.diagnosis.thresholds import Thresholds

VANISHING_NORM = 1e-4  # seed 000: every layer should stay above 1e-4
# The engine's bound: first/last weight layer this far apart (either way) is vanishing. Seed 000's
# 10x flags healthy BatchNorm/skip nets (10x-20x) and the seed calls its own 18x run normal.
SHALLOW_DEEP_RATIO = Thresholds().grad_ratio_vanishing


def gradient_picks(names: Sequence[str], kinds: Sequence[str] = ()) -> list[int]:
    """Four layers to show, as the seed's log does: first, end of encoder, start of decoder, output.

    Normalisation layers (:func:`octa_tui.diagnosis.gradients.weight_layers`: by module kind,
    else by name) are passed over: the seed's line is about the weights that carry the signal.
    """
    candidates = weight_layers(names, kinds)
    n = len(candidates)
    if n <= 4:
        return candidates
    middle = (n - 1) // 2
    return [candidates[0], candidates[middle], candidates[middle + 1], candidates[-1]]


def gradient_hint(names: Sequence[str], norms: Sequence[float], kinds: Sequence[str] = ()) -> str:
    """The seed's verdict on one step's layer norms: all above 1e-4, a layer below it, or the ends apart.

    Like :func:`gradient_picks`, it judges the weight layers (not normalisation layers). The
    ratio is the one every surface prints: shallow/deep = first weight layer / last weight
    layer, formatted by :func:`octa_tui.diagnosis.gradients.format_ratio`, flagged when the ends
    are orders of magnitude apart (the engine's vanishing bound).
    """
    if not norms:
        return "no gradients"
    if any(not math.isfinite(v) for v in norms):
        bad = next(name for name, v in zip(names, norms) if not math.isfinite(v))
        return f"⚠ non-finite gradient in {bad}"
    weights = weight_layers(names, kinds)
    low = [(norms[i], names[i]) for i in weights if norms[i] < VANISHING_NORM]
    if low:
        value, name = min(low)
        return f"⚠ vanishing: {len(low)} layer(s) < 1e-4 (smallest {name}: {value:.2e})"
    ratio = shallow_deep(names, norms, kinds)  # every norm here is finite and >= 1e-4
    if ratio > SHALLOW_DEEP_RATIO or ratio < 1 / SHALLOW_DEEP_RATIO:
        return f"⚠ {RATIO_NAME} {format_ratio(ratio)} ({names[weights[0]]} vs {names[weights[-1]]}): vanishing"
    return "✓ all layers > 1e-4"


def gradient_line(epoch: int, step: int, names: Sequence[str], norms: Sequence[float],
                  kinds: Sequence[str] = ()) -> str:
    """``Epoch [5] Step 8 | enc1.block.0: 0.052314 | ... | Hint: ...`` - the seed's per-step line."""
    parts = [f"Epoch [{epoch}] Step {step}"]
    parts += [f"{names[i]}: {norms[i]:.6f}" for i in gradient_picks(names, kinds)]
    parts.append(f"Hint: {gradient_hint(names, norms, kinds)}")
    return " | ".join(parts)


def epoch_line(epoch: int, epochs: int, step: int, train: dict[str, float], val: dict[str, float],
               lr: float, seconds: float) -> str:
    """``epoch 3/10 step 48 | train loss 0.6123 (bce 0.3000, dice 0.4271) | val loss ... dice ...``."""
    components = ", ".join(f"{k[5:]} {v:.4f}" for k, v in train.items() if k.startswith("loss_"))
    text = f"epoch {epoch + 1}/{epochs} step {step} | train loss {train.get('loss', math.nan):.4f}"
    if components:
        text += f" ({components})"
    if val:
        text += f" | val loss {val.get('loss', math.nan):.4f}"
        if "dice" in val:
            text += f" dice {val['dice']:.3f}"
    return text + f" | lr {lr:.2e} | {seconds:.1f}s"


def _grad_values(trainer: Trainer) -> tuple[list[str], list[float]]:
    probe = trainer.probe
    if probe is None or probe.last_values is None:
        return [], []
    names = list(probe.schema.grad)
    first = probe.schema.index(f"grad/{names[0]}")
    return names, [float(v) for v in probe.last_values[first : first + len(names)]]


class PlainReporter:
    """Plain log lines: one per epoch plus the gradient line; messages as they come."""

    def __init__(self, stream: IO[str] | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self._epoch_started = time.monotonic()

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def started(self, trainer: Trainer) -> None:
        self._epoch_started = time.monotonic()

    def step(self, trainer: Trainer) -> None:
        """Nothing per step: plain output is one line per epoch."""

    def epoch(self, trainer: Trainer, train: dict[str, float], val: dict[str, float]) -> None:
        if self.quiet:
            return
        probe = trainer.probe
        assert probe is not None and trainer.schedule is not None
        seconds = time.monotonic() - self._epoch_started
        done = probe.epoch - 1
        lr = trainer.schedule.lr(done)
        self._print(epoch_line(done, trainer.config.epochs, probe.step, train, val, lr, seconds))
        names, norms = _grad_values(trainer)
        if names:
            self._print(gradient_line(done + 1, probe.step, names, norms, probe.layer_kinds))
        self._epoch_started = time.monotonic()

    def message(self, text: str) -> None:
        self._print(text)

    def finished(self, trainer: Trainer, result: TrainResult) -> None:
        if not self.quiet:
            self._print(f"run {result.state} after {result.steps} steps, {result.epochs} epochs")


class RichReporter(PlainReporter):
    """The plain lines plus a live progress bar of the current epoch (for a terminal)."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console()
        super().__init__(quiet=quiet)
        self._progress: Any = None
        self._task: Any = None
        self._last_draw = 0.0

    def _print(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def started(self, trainer: Trainer) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        super().started(trainer)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=self.console, transient=True,
        )
        self._progress.start()
        self._new_task(trainer)

    def _new_task(self, trainer: Trainer) -> None:
        assert trainer.probe is not None and trainer.data is not None
        total = trainer.data.steps_per_epoch(trainer.config.batch_size)
        description = f"epoch {trainer.probe.epoch + 1}/{trainer.config.epochs}"
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(description, total=total, completed=trainer.batch_in_epoch, status="")

    def step(self, trainer: Trainer) -> None:
        now = time.monotonic()
        if now - self._last_draw < 0.1 or self._progress is None:
            return
        self._last_draw = now
        probe = trainer.probe
        status = ""
        if probe is not None and probe.last_values is not None:
            values = probe.last_values
            status = f"loss {values[0]:.4f}  {values[probe.schema.index('time/samples_per_s')]:.0f} img/s"
        self._progress.update(self._task, completed=trainer.batch_in_epoch, status=status)

    def epoch(self, trainer: Trainer, train: dict[str, float], val: dict[str, float]) -> None:
        super().epoch(trainer, train, val)
        if self._progress is not None and trainer.probe is not None and trainer.probe.epoch < trainer.config.epochs:
            self._new_task(trainer)

    def finished(self, trainer: Trainer, result: TrainResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        super().finished(trainer, result)
