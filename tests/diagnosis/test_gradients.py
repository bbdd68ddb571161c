"""Gradient health: one ratio, one format; weight layers compared over time; unused layers apart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from octa_tui.diagnosis.gradients import (
    RATIO_NAME,
    format_ratio,
    gradient_health,
    is_norm_layer,
    shallow_deep,
    weight_layers,
)


@pytest.mark.parametrize(
    ("ratio", "text"),
    [(13.04, "13x"), (0.0539, "0.054x"), (3.7e-9, "3.7e-9x"), (144386189.6, "1.4e8x"), (1.0, "1x"),
     (math.nan, "-"), (math.inf, "inf")],
)
def test_format_ratio(ratio: float, text: str) -> None:
    assert format_ratio(ratio) == text


def test_the_ratio_is_first_weight_layer_over_last() -> None:
    assert RATIO_NAME == "shallow/deep"
    health = gradient_health(("conv1", "bn1", "head"), np.array([[0.05, 1e-6, 0.25]] * 10), None)
    assert health is not None and health.ratio == pytest.approx(0.2) and not health.vanishing


def test_normalisation_layers_by_kind_or_name() -> None:
    assert is_norm_layer("enc1.block.1", "BatchNorm2d") and not is_norm_layer("enc1.block.0", "Conv2d")
    assert is_norm_layer("encoder.bn1") and is_norm_layer("layer1.0.norm") and not is_norm_layer("head")
    assert weight_layers(["bn0", "conv", "gn1", "head"]) == [1, 3]
    assert weight_layers(["a", "b", "c"], ["BatchNorm2d", "Conv2d", "Conv2d"]) == [1, 2]


def test_vanishing_must_hold_in_the_earlier_window_too() -> None:
    # GIVEN ends 1e4 apart now but only 10x apart in the window before (a transient)
    now = np.array([[1e-5, 0.1]] * 10)
    before = np.array([[0.01, 0.1]] * 10)
    assert not gradient_health(("c1", "head"), now, before, floor=1e-6).vanishing
    # WHEN it held in both windows THEN it is vanishing
    assert gradient_health(("c1", "head"), now, now, floor=1e-6).vanishing


def test_unused_layers_are_named_and_left_out() -> None:
    rows = np.array([[0.02, np.nan, 0.01]] * 5)
    health = gradient_health(("a", "aux", "c"), rows, None)
    assert health.unused == ("aux",) and health.ratio == pytest.approx(2.0) and health.level == 0


def test_shallow_deep_of_one_row_skips_norm_and_unused_layers() -> None:
    names = ("enc1.conv", "enc1.bn", "aux", "head")
    assert shallow_deep(names, (0.05, 1e-6, float("nan"), 0.25)) == pytest.approx(0.2)
    assert math.isnan(shallow_deep(("a",), (0.1,)))
