"""The step vector's layout by named slot, assembled on the host (pure logic, no torch model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from octa_tui.protocol.messages import ModelSummary, Schema
from octa_tui.trainer.core.layout import VectorLayout
from octa_tui.trainer.core.measure import Layer


def _schema(grad: tuple[str, ...]) -> Schema:
    return Schema(run_id="0123456789abcdef", task="custom", model=ModelSummary("m", 1), loss=("total", "bce"),
                  grad=grad, gradstat=("total_norm", "n_over_bound", "max_param_norm", "nonfinite"),
                  out=("raw_min",), opt=("lr",), time=("step_s",))


DEVICE = ["gradstat/total_norm", "loss/total", "loss/bce", "out/raw_min"]
HOST = ["gradstat/nonfinite", "opt/lr", "time/step_s"]


def test_layer_norms_are_root_sum_squares_of_their_parameters_and_every_slot_is_named():
    # GIVEN two layers: "a" owns parameters 0 and 2, "b" owns parameter 1
    layout = VectorLayout(_schema(("a", "b")), [Layer("a", "Conv2d", (0, 2)), Layer("b", "Linear", (1,))], 3,
                          DEVICE, HOST)
    measured = np.array([3.0, 20.0, 4.0, 5.0, 0.7, 0.4, -2.0], dtype=np.float32)
    vector = layout.assemble(measured, [0.0, 1e-3, 0.05], bound=10.0)
    slot = layout.slot
    assert vector[slot["grad/a"]] == pytest.approx(5.0) and vector[slot["grad/b"]] == pytest.approx(20.0)
    assert vector[slot["gradstat/n_over_bound"]] == 1 and vector[slot["gradstat/max_param_norm"]] == 20.0
    assert vector[slot["loss/bce"]] == pytest.approx(0.4) and vector[slot["out/raw_min"]] == -2.0
    assert vector[slot["opt/lr"]] == pytest.approx(1e-3) and vector[slot["time/step_s"]] == pytest.approx(0.05)
    assert vector.dtype == np.float32 and len(vector) == layout.width == 11


def test_a_nan_norm_stays_in_its_own_layer_and_in_the_largest():
    layout = VectorLayout(_schema(("a", "b")), [Layer("a", "Conv2d", (0,)), Layer("b", "Conv2d", (1,))], 2,
                          DEVICE, HOST)
    assert layout.one_per_layer
    vector = layout.assemble(np.array([math.nan, 1.0, 1.0, 0.5, 0.5, 0.0], np.float32), [0.0, 0.1, 0.1], 10.0)
    assert math.isnan(vector[layout.slot["grad/a"]]) and vector[layout.slot["grad/b"]] == 1.0
    assert math.isnan(vector[layout.slot["gradstat/max_param_norm"]])


def test_a_layout_that_misses_a_channel_is_refused_with_its_name():
    with pytest.raises(ValueError, match="opt/lr"):
        VectorLayout(_schema(("a",)), [Layer("a", "Conv2d", (0,))], 1, DEVICE, ["gradstat/nonfinite", "time/step_s"])
