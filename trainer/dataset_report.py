"""The seed's ``diagnose_dataset``: are the masks binary, is the foreground large enough, which files are bad.

``scan_folder`` (a folder on disk) and ``report_from_arrays`` (data in memory, e.g. the
synthetic generator's) build a :class:`~octa_tui.protocol.messages.DatasetReport`; the
trainer sends it once at run start and the monitor's rules read it. ``assess`` turns a
report into findings with OK/warning marks, ``render_report`` draws them as rich tables, and
``diagnose_dataset_main`` is ``octa-tui diagnose-dataset PATH``. No torch here: the monitor
runs this module.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..protocol.messages import DatasetReport, FileProblem
from .folder import DataPathError, iter_pairs

LOW_FOREGROUND = 0.02  # seed 000 1b: a mean foreground ratio below 2% is a severe class imbalance
MAX_MASK_VALUES = 16  # sample values kept in the report

OK, WARN, ERROR = "ok", "warn", "error"

# How the Dice this project reports treats an image whose mask has no foreground. Both the
# training Dice term (soft Dice, smoothing 1) and validation Dice (thresholded predictions) pool
# the pixels of a whole batch / the whole validation set: 2 * overlap / (predicted + true).
EMPTY_MASK_POLICY = (
    "Dice pools the pixels of the whole batch (training) and of the whole validation set: an empty "
    "mask adds only its false positives, and is never scored 1 (nothing predicted) or 0 (anything "
    "predicted) on its own as a per-image mean Dice would."
)
_MARKS = {OK: ("✓", "green"), WARN: ("⚠", "yellow"), ERROR: ("✗", "red")}


class _MaskTally:
    """Running statistics over uint8 masks: value histogram and per-image foreground ratios."""

    def __init__(self) -> None:
        self.histogram = np.zeros(256, dtype=np.int64)
        self.ratios: list[float] = []

    def add(self, mask: np.ndarray) -> None:
        counts = np.bincount(mask.reshape(-1), minlength=256)
        self.histogram += counts
        self.ratios.append(float(counts[128:].sum() / max(mask.size, 1)))

    def fields(self) -> dict:
        total = int(self.histogram.sum())
        present = np.flatnonzero(self.histogram)
        fg = int(self.histogram[128:].sum())
        scaled = np.arange(256, dtype=np.float64) / 255.0
        mean = float((self.histogram * scaled).sum() / total) if total else math.nan
        second = float((self.histogram * scaled**2).sum() / total) if total else math.nan
        return {
            "unique_mask_values": int(present.size),
            "mask_values": _sample_values(present),
            "foreground_ratio": float(np.mean(self.ratios)) if self.ratios else math.nan,
            "foreground_ratios": tuple(self.ratios),
            "suggested_pos_weight": (total - fg) / fg if fg else math.nan,
            "target_mean": mean,
            "target_var": max(second - mean * mean, 0.0) if total else math.nan,
        }


def _sample_values(values: np.ndarray) -> tuple[float, ...]:
    """All values when there are at most 16, else 16 spread evenly from the smallest to the largest."""
    if values.size <= MAX_MASK_VALUES:
        return tuple(float(v) for v in values)
    picks = np.unique(np.linspace(0, values.size - 1, MAX_MASK_VALUES).round().astype(int))
    return tuple(float(values[i]) for i in picks)


def scan_folder(path: str | Path, run_id: str = "") -> DatasetReport:
    """Check every file of a folder data set (images/ + masks/) at its native size.

    Raises DataPathError when ``path`` is not a data set folder; every other problem
    (unreadable file, missing pair, size mismatch) is listed in the report.
    """
    tally = _MaskTally()
    problems: list[FileProblem] = []
    sizes: Counter[tuple[int, int]] = Counter()
    for item in iter_pairs(path, channels=1):
        if isinstance(item, FileProblem):
            problems.append(item)
            continue
        _, image, mask = item
        sizes[image.shape[:2]] += 1
        tally.add(mask)
    image_size = sizes.most_common(1)[0][0] if sizes else (0, 0)
    return DatasetReport(
        run_id=run_id,
        source=str(path),
        pairs=len(tally.ratios),
        problems=tuple(problems),
        image_size=(int(image_size[0]), int(image_size[1])),
        **tally.fields(),
    )


def report_from_arrays(
    images: np.ndarray,
    targets: np.ndarray,
    source: str = "arrays",
    run_id: str = "",
    problems: Sequence[FileProblem] = (),
    train_images: int = 0,
    val_images: int = 0,
) -> DatasetReport:
    """A report on data in memory: uint8 masks (n, h, w) / (n, 1, h, w), or float heatmaps.

    Float targets (heatmaps in [0, 1]) have no masks to check: ``unique_mask_values`` is 0,
    the foreground fields and pos_weight are NaN, and only the target statistics are filled.
    """
    images = np.asarray(images)
    targets = np.asarray(targets)
    image_size = (int(images.shape[1]), int(images.shape[2])) if images.ndim >= 3 else (0, 0)
    common = {
        "run_id": run_id,
        "source": source,
        "pairs": int(targets.shape[0]),
        "problems": tuple(problems),
        "image_size": image_size,
        "train_images": train_images,
        "val_images": val_images,
    }
    if targets.dtype == np.uint8:
        tally = _MaskTally()
        for mask in targets.reshape(targets.shape[0], -1):
            tally.add(mask)
        return DatasetReport(**common, **tally.fields())
    values = targets.astype(np.float64)
    per_channel = (
        values.transpose(1, 0, 2, 3).reshape(values.shape[1], -1)
        if values.ndim == 4
        else values.reshape(1, -1)
    )
    return DatasetReport(
        **common,
        unique_mask_values=0,
        mask_values=(),
        foreground_ratio=math.nan,
        foreground_ratios=(),
        suggested_pos_weight=math.nan,
        target_mean=float(values.mean()),
        target_var=float(per_channel.var(axis=1).mean()),
    )


@dataclass(frozen=True)
class Finding:
    """One line of the report: what was checked, what was found, how bad, and what to do."""

    check: str
    result: str
    level: str  # "ok", "warn" or "error"
    fix: str = ""


def _percent(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"


def _values_text(values: Sequence[float]) -> str:
    return ", ".join(f"{v:g}" for v in values)


def assess(report: DatasetReport) -> list[Finding]:
    """The seed's checks on a report, in its order: pairs, binary masks, foreground ratio, pos_weight."""
    findings: list[Finding] = []
    skipped = sum(1 for p in report.problems if p.problem.endswith("(skipped)"))
    if report.pairs == 0:
        if report.problems:
            # The files are where they belong; none could be read or paired.
            findings.append(
                Finding(
                    "pairs",
                    f"no readable image/mask pair: {len(report.problems)} problem file(s), listed below",
                    ERROR,
                    "fix or replace the files listed below (unreadable, unpaired or mismatched)",
                )
            )
        else:
            findings.append(
                Finding("pairs", "no image/mask pairs found", ERROR,
                        "put images in images/ and masks in masks/, paired by file stem")
            )
        return findings  # nothing was read: there are no masks or targets to judge
    elif report.problems:
        note = f", {skipped} skipped" if skipped else ""
        findings.append(
            Finding(
                "pairs",
                f"{report.pairs} image/mask pairs; {len(report.problems)} problem file(s){note}",
                ERROR,
                "fix or remove the files listed below",
            )
        )
    else:
        findings.append(Finding("pairs", f"{report.pairs} image/mask pairs, every file readable", OK))

    is_masks = report.unique_mask_values > 0
    if is_masks:
        if report.masks_binary:
            findings.append(
                Finding("mask values", f"masks are binary ({_values_text(report.mask_values)})", OK)
            )
        else:
            findings.append(
                Finding(
                    "mask values",
                    f"masks contain {report.unique_mask_values} unique values (expected 2): "
                    f"{_values_text(report.mask_values[:8])}{', ...' if len(report.mask_values) > 8 else ''}",
                    WARN,
                    "binarise the masks: mask > 127 -> 255, else 0 (the trainer's binarise option)",
                )
            )
        ratio = report.foreground_ratio
        if not math.isfinite(ratio) or ratio == 0.0:
            findings.append(
                Finding(
                    "foreground",
                    "no foreground pixels (> 127) in any mask",
                    ERROR,
                    "vessels must be stored as 255",
                )
            )
        elif ratio < LOW_FOREGROUND:
            findings.append(
                Finding(
                    "foreground",
                    f"mean foreground ratio only {_percent(ratio)} (<2%): severe class imbalance",
                    WARN,
                    f"weight the foreground: pos_weight = {report.suggested_pos_weight:.1f}",
                )
            )
        else:
            findings.append(Finding("foreground", f"mean foreground ratio {_percent(ratio)} (normal)", OK))
        ratios = np.asarray(report.foreground_ratios)
        if ratios.size:
            empty = empty_masks(report)
            spread = f"per image: min {_percent(ratios.min())}, median {_percent(float(np.median(ratios)))}, max {_percent(ratios.max())}"
            findings.append(Finding("per image", spread, OK))
            # Empty masks are legitimate (images without vessels); say how many and how Dice counts them.
            findings.append(
                Finding(
                    "empty masks",
                    empty_mask_line(report),
                    WARN if empty == ratios.size else OK,
                    "check the mask files and their pairing" if empty == ratios.size else "",
                )
            )
        if math.isfinite(report.suggested_pos_weight):
            findings.append(
                Finding(
                    "pos_weight",
                    f"suggested pos_weight = background/foreground = {report.suggested_pos_weight:.2f}",
                    OK,
                )
            )
    else:
        findings.append(Finding("targets", "continuous targets (heatmaps): no masks to check", OK))
    if math.isfinite(report.target_mean):
        findings.append(
            Finding(
                "baseline",
                f"target mean {report.target_mean:.4f}; predicting it everywhere scores MSE {report.target_var:.4f}",
                OK,
            )
        )
    return findings


def empty_masks(report: DatasetReport) -> int:
    """How many images' masks hold no foreground at all (0 for heatmaps or without per-image ratios)."""
    ratios = np.asarray(report.foreground_ratios, dtype=np.float64)
    return int((ratios == 0).sum()) if ratios.size and report.unique_mask_values > 0 else 0


def empty_mask_line(report: DatasetReport) -> str:
    """``"3 of 250 masks are empty (no foreground); Dice pools ..."``: the count and the Dice policy."""
    count = len(report.foreground_ratios)
    return f"{empty_masks(report)} of {count} masks are empty (no foreground). {EMPTY_MASK_POLICY}"


def has_issues(report: DatasetReport) -> bool:
    """Whether the report holds any warning or error (the command's exit status is 1 then)."""
    return any(f.level != OK for f in assess(report))


def render_report(report: DatasetReport):
    """The report as rich tables: a summary with OK/warning marks, then the problem files."""
    summary = Table(title=f"Dataset check: {report.source}", title_justify="left", show_lines=False)
    summary.add_column("", width=1)
    summary.add_column("check", style="bold")
    summary.add_column("result")
    summary.add_column("fix", style="cyan")
    for finding in assess(report):
        mark, colour = _MARKS[finding.level]
        summary.add_row(
            Text(mark, style=colour),
            finding.check,
            Text(finding.result, style=None if finding.level == OK else colour),
            finding.fix,
        )
    parts: list = [summary]
    if report.problems:
        problems = Table(title=f"Problem files ({len(report.problems)})", title_justify="left")
        problems.add_column("file", style="bold")
        problems.add_column("problem")
        for problem in report.problems:
            problems.add_row(problem.file, problem.problem)
        parts.append(problems)
    issues = [f for f in assess(report) if f.level != OK]
    if issues:
        parts.append(
            Text(f"{len(issues)} issue(s) found: fix the data before training.", style="bold yellow")
        )
    else:
        parts.append(Text("The data set looks fine.", style="bold green"))
    return Group(*parts)


def diagnose_dataset_main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """``octa-tui diagnose-dataset PATH``: print the report; 0 when fine, 1 on issues, 2 on a bad path."""
    parser = argparse.ArgumentParser(
        prog="octa-tui diagnose-dataset",
        description="Check an image/mask folder (images/ + masks/, paired by file stem) before training: "
        "binary masks, foreground ratio, suggested pos_weight, unreadable or unpaired files.",
    )
    parser.add_argument("path", help="the data set folder, holding images/ and masks/")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    console = console or Console()
    try:
        report = scan_folder(args.path)
    except DataPathError as exc:
        print(f"octa-tui diagnose-dataset: {exc}", file=sys.stderr)
        return 2
    console.print(render_report(report))
    return 1 if has_issues(report) else 0
