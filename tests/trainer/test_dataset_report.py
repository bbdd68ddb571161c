"""The dataset report (seed 000's diagnose_dataset) on generated data: what it flags and how it exits."""

import math

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from octa_tui.trainer.dataset_report import (
    WARN,
    assess,
    diagnose_dataset_main,
    has_issues,
    render_report,
    report_from_arrays,
    scan_folder,
)
from octa_tui.trainer.synthetic import synthetic_heatmaps, synthetic_vessels, write_synthetic_folder


def _text(renderable) -> str:
    console = Console(record=True, width=140, color_system=None)
    console.print(renderable)
    return console.export_text()


def test_a_healthy_folder_passes(tmp_path):
    # GIVEN 8 generated binary pairs
    root = write_synthetic_folder(tmp_path / "ok", 8, size=32, seed=0)
    # WHEN scanned
    report = scan_folder(root)
    # THEN every pair counts, masks are binary, foreground is normal, pos_weight = bg/fg
    assert report.pairs == 8 and report.problems == ()
    assert report.unique_mask_values == 2 and report.mask_values == (0.0, 255.0)
    assert len(report.foreground_ratios) == 8
    assert 0.05 < report.foreground_ratio < 0.3
    assert report.suggested_pos_weight == pytest.approx(
        (1 - report.foreground_ratio) / report.foreground_ratio, rel=1e-6
    )
    assert report.image_size == (32, 32)
    assert not has_issues(report)
    assert "looks fine" in _text(render_report(report))


def test_soft_masks_are_flagged_as_not_binary(tmp_path):
    report = scan_folder(write_synthetic_folder(tmp_path / "soft", 6, size=32, seed=1, soft_masks=True))
    assert report.unique_mask_values > 16
    assert len(report.mask_values) == 16  # a sample, smallest to largest
    assert report.mask_values[0] == 0.0 and report.mask_values[-1] == 255.0
    finding = next(f for f in assess(report) if f.check == "mask values")
    assert finding.level == WARN and "(expected 2)" in finding.result
    assert f"{report.unique_mask_values} unique values (expected 2)" in _text(render_report(report))


def test_low_foreground_is_flagged_with_a_pos_weight(tmp_path):
    report = scan_folder(write_synthetic_folder(tmp_path / "low", 6, size=64, seed=2, foreground="low"))
    assert report.foreground_ratio < 0.02
    assert report.suggested_pos_weight > 40
    text = _text(render_report(report))
    assert "severe class imbalance" in text
    assert f"pos_weight = {report.suggested_pos_weight:.1f}" in text


def test_missing_mask_and_corrupt_file_are_listed_by_name(tmp_path):
    # GIVEN a folder with one corrupt image and one image whose mask is missing
    root = write_synthetic_folder(tmp_path / "bad", 5, size=32, seed=3)
    (root / "images" / "0001.png").write_bytes(b"\x89PNG broken")
    (root / "masks" / "0003.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "masks" / "orphan.png")
    # WHEN scanned
    report = scan_folder(root)
    # THEN the three good pairs are counted and each bad file is named with its problem
    assert report.pairs == 3
    problems = {p.file: p.problem for p in report.problems}
    assert "unreadable image" in problems["images/0001.png"]
    assert "no mask" in problems["images/0003.png"]
    assert "mask without an image" in problems["masks/orphan.png"]
    text = _text(render_report(report))
    assert "images/0001.png" in text and "images/0003.png" in text and "masks/orphan.png" in text


def test_report_from_arrays_matches_the_folder_scan(tmp_path):
    images, masks = synthetic_vessels(6, size=32, seed=4)
    root = write_synthetic_folder(tmp_path / "same", 6, size=32, seed=4)
    from_arrays = report_from_arrays(images, masks, source="synthetic", train_images=5, val_images=1)
    from_folder = scan_folder(root)
    assert from_arrays.foreground_ratios == pytest.approx(from_folder.foreground_ratios)
    assert from_arrays.suggested_pos_weight == pytest.approx(from_folder.suggested_pos_weight)
    assert from_arrays.target_mean == pytest.approx(from_folder.target_mean)
    assert from_arrays.target_var == pytest.approx(from_arrays.target_mean * (1 - from_arrays.target_mean))
    assert (from_arrays.train_images, from_arrays.val_images) == (5, 1)


def test_heatmap_targets_have_no_masks_to_flag():
    images, region, affinity = synthetic_heatmaps(4, size=32, seed=0)
    report = report_from_arrays(images, np.stack([region, affinity], axis=1), source="text")
    assert report.unique_mask_values == 0 and report.masks_binary
    assert math.isnan(report.foreground_ratio) and math.isnan(report.suggested_pos_weight)
    assert 0.0 < report.target_var < 0.25
    assert not has_issues(report)


def test_main_exit_codes_and_output(tmp_path, capsys):
    good = write_synthetic_folder(tmp_path / "good", 4, size=32, seed=0)
    soft = write_synthetic_folder(tmp_path / "soft", 4, size=32, seed=0, soft_masks=True)
    console = Console(record=True, width=140, color_system=None)
    # healthy -> 0
    assert diagnose_dataset_main([str(good)], console=console) == 0
    # non-binary masks -> 1, and the output says so
    assert diagnose_dataset_main([str(soft)], console=console) == 1
    assert "unique values (expected 2)" in console.export_text()
    # a bad path -> 2 with one clear line on stderr
    assert diagnose_dataset_main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such folder" in err[0]
    assert diagnose_dataset_main([str(tmp_path / "good" / "images")]) == 2
    assert "no images/ folder" in capsys.readouterr().err


def test_no_readable_pair_says_so_and_judges_no_targets(tmp_path):
    # GIVEN a folder whose images and masks are in place but none can be read
    root = tmp_path / "broken"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        (root / "images" / f"{i}.png").write_bytes(b"not a png")
        (root / "masks" / f"{i}.png").write_bytes(b"not a png")
    report = scan_folder(root)
    findings = assess(report)
    text = _text(render_report(report))
    # THEN it names the unreadable files instead of asking to move them, and claims nothing about targets
    assert report.pairs == 0 and findings[0].level == "error"
    assert "no readable image/mask pair" in findings[0].result and "listed below" in findings[0].fix
    assert "put images in images/" not in text
    assert "no masks to check" not in text and [f.check for f in findings] == ["pairs"]


def test_empty_masks_are_counted_with_the_dice_policy():
    # GIVEN 6 masks of which 2 are empty
    images, masks = synthetic_vessels(6, size=32, seed=1)
    masks[[1, 4]] = 0
    report = report_from_arrays(images, masks)
    [finding] = [f for f in assess(report) if f.check == "empty masks"]
    # THEN the count and how Dice treats them are stated; empty masks alone are not an issue
    assert finding.result.startswith("2 of 6 masks are empty")
    assert "pools the pixels" in finding.result and finding.level == "ok"
