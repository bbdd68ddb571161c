"""The probe: its numbers equal brute-force references, and it instruments loops it did not write."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from octa_tui.trainer.models import UNet
from octa_tui.trainer.probe import Probe, ProbeError, find_layers, preview_array


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and the test machine's cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _value(probe: Probe, key: str) -> float:
    assert probe.last_values is not None
    return float(probe.last_values[probe.schema.index(key)])


def _brute_force_layer_norms(model: nn.Module) -> dict[str, float]:
    """Per module: sqrt of the sum of squared per-parameter gradient norms, computed one by one."""
    norms: dict[str, float] = {}
    for name, module in model.named_modules():
        squares = [
            torch.linalg.vector_norm(p.grad.double()).item() ** 2
            for _, p in module.named_parameters(recurse=False)
            if p.grad is not None
        ]
        if squares:
            norms[name or type(model).__name__] = math.sqrt(sum(squares))
    return norms


def _segmentation_step(model: nn.Module, scale: float = 1.0) -> torch.Tensor:
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    masks = (torch.rand(2, 1, 32, 32) > 0.8).float()
    logits = model(images)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, masks) * scale
    loss.backward()
    return logits


def test_layer_norms_equal_a_brute_force_per_parameter_computation():
    # GIVEN a UNet after one backward pass
    torch.manual_seed(0)
    model = UNet(base_width=8)
    probe = Probe(model, task="segmentation")
    logits = _segmentation_step(model)
    expected = _brute_force_layer_norms(model)
    # WHEN the probe measures the step
    probe.after_backward()
    probe.end_step(loss=torch.tensor(0.5), outputs=logits, activated=torch.sigmoid(logits))
    # THEN every layer's norm, named by module, matches the reference, and so does the total
    assert list(probe.layer_names) == list(expected)
    for name, norm in expected.items():
        assert _value(probe, f"grad/{name}") == pytest.approx(norm, rel=1e-5)
    total = math.sqrt(sum(n * n for n in expected.values()))
    assert _value(probe, "gradstat/total_norm") == pytest.approx(total, rel=1e-5)
    assert _value(probe, "gradstat/nonfinite") == 0.0


def test_layers_are_ordered_shallow_to_deep_by_registration():
    # GIVEN the UNet, whose modules are registered encoder -> bottleneck -> decoder -> head
    probe = Probe(UNet(base_width=8))
    names = probe.layer_names
    # THEN the first gradient channel is the first encoder convolution and the last is the head
    assert names[0] == "enc1.block.0"
    assert names[-1] == "head"
    assert names.index("bottleneck.block.0") < names.index("dec3.up") < names.index("dec1.conv.block.0")


def test_explosion_count_and_largest_parameter_norm_match_the_parameters():
    # GIVEN gradients scaled up so that some parameters exceed the bound of 10
    torch.manual_seed(0)
    model = UNet(base_width=8)
    probe = Probe(model)
    _segmentation_step(model, scale=2000.0)
    per_param = [torch.linalg.vector_norm(p.grad).item() for p in model.parameters()]
    # WHEN measured
    probe.end_step(loss=1.0)
    # THEN the count over 10 and the largest norm are those of the parameters themselves
    assert _value(probe, "gradstat/n_over_bound") == sum(n > 10.0 for n in per_param) > 0
    assert _value(probe, "gradstat/max_param_norm") == pytest.approx(max(per_param), rel=1e-5)


def test_clipping_matches_torch_clip_grad_norm():
    # GIVEN two identical models with identical gradients
    torch.manual_seed(0)
    model = UNet(base_width=8)
    twin = copy.deepcopy(model)
    _segmentation_step(model, scale=50.0)
    _segmentation_step(twin, scale=50.0)
    probe = Probe(model)
    # WHEN one is clipped by the probe and the other by torch
    total = probe.clip_(0.5)
    reference_total = torch.nn.utils.clip_grad_norm_(twin.parameters(), 0.5)
    # THEN the returned pre-clip norms and the clipped gradients agree
    assert total.item() == pytest.approx(reference_total.item(), rel=1e-5)
    assert total.item() > 0.5
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-8)
    clipped = math.sqrt(sum(torch.linalg.vector_norm(p.grad).item() ** 2 for p in model.parameters()))
    assert clipped == pytest.approx(0.5, rel=1e-4)


def test_clipping_at_zero_leaves_gradients_alone():
    torch.manual_seed(0)
    model = UNet(base_width=8)
    _segmentation_step(model, scale=50.0)
    before = [p.grad.clone() for p in model.parameters()]
    Probe(model).clip_(0)
    for grad, p in zip(before, model.parameters()):
        assert torch.equal(grad, p.grad)


def test_output_statistics_before_and_after_the_activation():
    # GIVEN raw outputs in [-8.5, 1.5] fed straight to a loss that expects probabilities (seed 002)
    model = nn.Conv2d(3, 2, 1)
    probe = Probe(model, loss_expects_probabilities=True)
    model(torch.rand(1, 3, 4, 4)).sum().backward()
    raw = torch.linspace(-8.5, 1.5, 40).reshape(2, 2, 10)
    # WHEN the step reports the raw outputs (no activation)
    probe.end_step(loss=2.39, outputs=raw)
    # THEN the range and the fraction outside [0, 1] are those of the outputs
    assert _value(probe, "out/raw_min") == pytest.approx(-8.5)
    assert _value(probe, "out/act_max") == pytest.approx(1.5)
    assert _value(probe, "out/raw_mean") == pytest.approx(raw.mean().item(), abs=1e-6)
    expected_outside = ((raw < 0) | (raw > 1)).float().mean().item()
    assert _value(probe, "out/frac_outside_01") == pytest.approx(expected_outside)
    # AND with a sigmoid in place nothing is outside
    model(torch.rand(1, 3, 4, 4)).sum().backward()
    probe.end_step(loss=0.1, outputs=raw, activated=torch.sigmoid(raw))
    assert _value(probe, "out/frac_outside_01") == 0.0
    assert _value(probe, "out/act_min") == pytest.approx(torch.sigmoid(torch.tensor(-8.5)).item(), rel=1e-5)


def test_update_ratio_is_the_relative_size_of_the_optimizer_step():
    # GIVEN a probe measuring the update on every step and a plain SGD step
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = Probe(model, optimizer=optimizer, update_every=1)
    model(torch.rand(5, 4)).pow(2).mean().backward()
    before = [p.detach().clone() for p in model.parameters()]
    probe.after_backward()
    optimizer.step()
    probe.end_step(loss=1.0)
    # THEN |delta w| / |w| is what the parameters show
    delta = math.sqrt(sum(((p - b) ** 2).sum().item() for p, b in zip(model.parameters(), before)))
    weight = math.sqrt(sum((p**2).sum().item() for p in model.parameters()))
    assert _value(probe, "opt/update_ratio") == pytest.approx(delta / weight, rel=1e-5)
    assert _value(probe, "opt/lr") == pytest.approx(0.1)


def test_probe_instruments_a_loop_it_did_not_write(tmp_path, monkeypatch):
    # GIVEN someone's own regression loop: a tiny MLP, MSE, Adam, with two named loss parts,
    # instrumented with Probe.start (real endpoints on loopback, a recording)
    from octa_tui.protocol.recording import read_recording
    from octa_tui.protocol.runfiles import list_run_files

    monkeypatch.setenv("OCTA_TUI_RUN_DIR", str(tmp_path / "run-files"))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    probe = Probe.start(model, task="regression", loss_components=("mse", "l2"), optimizer=optimizer,
                        loss_expects_probabilities=False, record=str(tmp_path / "mine.octa"))
    assert [info.run_id for info in list_run_files()] == [probe.run_id]
    x = torch.rand(64, 2)
    y = (x[:, :1] * 3 - x[:, 1:] * 2).detach()
    # WHEN it adds the probe's calls and trains
    for _ in range(60):
        prediction = model(x)
        mse = nn.functional.mse_loss(prediction, y)
        l2 = 1e-4 * sum((p**2).sum() for p in model.parameters())
        loss = mse + l2
        optimizer.zero_grad()
        loss.backward()
        probe.clip_(5.0)
        optimizer.step()
        probe.end_step(loss=loss, components={"mse": mse, "l2": l2}, outputs=prediction)
    assert _value(probe, "loss/mse") == pytest.approx(mse.item(), rel=1e-5)
    probe.close()
    # THEN every step was recorded in order with its loss, and the loss fell
    history = read_recording(tmp_path / "mine.octa").history
    schema = history.schema
    assert list(history.steps.step) == list(range(60))
    losses = history.steps.values[:, schema.index("loss/total")]
    assert losses[-1] < 0.2 * losses[0]
    assert schema.grad == ("0", "2")
    values = history.steps.values[-1]
    assert values[schema.index("opt/clip")] == 5.0
    assert values[schema.index("opt/lr")] == pytest.approx(1e-2)
    assert math.isnan(values[schema.index("out/frac_outside_01")])  # the loss does not expect probabilities
    assert values[schema.index("time/samples_per_s")] > 0
    # AND the run file is gone once the probe is closed
    assert list_run_files() == []


def test_lazy_measurement_without_after_backward_gives_the_same_norms():
    torch.manual_seed(0)
    model = UNet(base_width=8)
    _segmentation_step(model)
    expected = _brute_force_layer_norms(model)
    probe = Probe(model)
    probe.end_step(loss=0.3)
    assert _value(probe, "grad/head") == pytest.approx(expected["head"], rel=1e-5)


def test_a_layer_without_gradients_is_nan_not_vanishing():
    # GIVEN a model with a branch that the loss does not use
    model = nn.ModuleDict({"used": nn.Linear(3, 3), "unused": nn.Linear(3, 3)})
    probe = Probe(model)
    model["used"](torch.rand(2, 3)).sum().backward()
    probe.end_step(loss=1.0)
    # THEN its channel says "no gradient" (NaN), not a vanishing 0, and the run is not called non-finite
    assert math.isnan(_value(probe, "grad/unused"))
    assert _value(probe, "grad/used") > 0
    assert _value(probe, "gradstat/nonfinite") == 0.0
    assert math.isfinite(_value(probe, "gradstat/total_norm"))


def test_undeclared_loss_component_is_refused_with_the_fix():
    model = nn.Linear(2, 1)
    probe = Probe(model, loss_components=("bce",))
    model(torch.rand(1, 2)).sum().backward()
    with pytest.raises(ProbeError, match="loss_components"):
        probe.end_step(loss=1.0, components={"dice": 0.3})


def test_a_model_without_trainable_parameters_is_refused():
    with pytest.raises(ProbeError, match="no trainable parameters"):
        Probe(nn.ReLU())


def test_group_depth_merges_modules_under_a_prefix():
    _, layers = find_layers(UNet(base_width=8), group_depth=1)
    assert [layer.name for layer in layers][:3] == ["enc1", "enc2", "enc3"]


def test_preview_is_downsampled_to_64_pixels_as_uint8():
    # GIVEN a 128x96 normalised image, its mask and a prediction
    image = torch.randn(3, 128, 96)
    target = (torch.rand(1, 128, 96) > 0.5).float()
    # WHEN turned into preview arrays
    img = preview_array(image, rescale=True)
    tgt = preview_array(target, rescale=False)
    # THEN the long side is 64, aspect kept, values span 0..255
    assert img.shape == (64, 48, 3) and img.dtype == np.uint8
    assert img.min() == 0 and img.max() == 255
    assert tgt.shape == (64, 48) and tgt.dtype == np.uint8


def test_preview_is_due_every_n_steps_and_published_as_a_message():
    # GIVEN a probe on a real link, asked for a preview every 2 steps
    from octa_tui.protocol.link import TrainerLink

    model = nn.Conv2d(3, 1, 1)
    probe = Probe(model, preview_every=2)
    probe.attach(TrainerLink(probe.schema))
    try:
        due = []
        for _ in range(4):
            model(torch.rand(1, 3, 8, 8)).sum().backward()
            probe.end_step(loss=1.0)
            due.append(probe.preview_due)
        # WHEN a preview is sent after the fourth step
        msg = probe.preview(torch.rand(3, 8, 8), torch.ones(1, 8, 8), torch.zeros(1, 8, 8))
        # THEN it was due every second step, names the step it shows and is in the run's history
        assert due == [False, True, False, True]
        assert msg.step == 3 and msg.target.max() == 255 and msg.prediction.max() == 0
        assert probe.link.history.previews == [msg]
        assert len(probe.link.history.steps) == 4
    finally:
        probe.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_adds_no_host_device_synchronisation_per_step_on_cuda():
    # GIVEN a model on the GPU and CUDA's sync debug mode set to raise on any synchronising call
    device = torch.device("cuda")
    model = UNet(base_width=8).to(device)
    optimizer = torch.optim.Adam(model.parameters())
    probe = Probe(model, optimizer=optimizer, loss_components=("bce",))
    images = torch.rand(2, 3, 32, 32, device=device)
    masks = (torch.rand(2, 1, 32, 32, device=device) > 0.8).float()
    for step in range(6):
        logits = model(images)
        bce = nn.functional.binary_cross_entropy_with_logits(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        bce.backward()
        if step >= 2:  # allocations of the first steps (pinned buffers) are set-up, not per step
            torch.cuda.set_sync_debug_mode("error")
        try:
            probe.clip_(1.0)
            optimizer.step()
            probe.end_step(loss=bce, components={"bce": bce}, outputs=logits, activated=torch.sigmoid(logits))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    probe.flush()
    assert probe.published == 6
    assert _value(probe, "loss/bce") == pytest.approx(bce.item(), rel=1e-5)


class _TiedAndFrozen(nn.Module):
    """An encoder and a decoder sharing one weight, with a frozen layer between them."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 6))
        self.frozen = nn.Linear(6, 6)
        self.frozen.requires_grad_(False)
        self.decoder = nn.Sequential(nn.Linear(6, 6), nn.Linear(6, 6, bias=False))
        self.decoder[1].weight = self.encoder[1].weight  # tied: counted once, with its first owner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.frozen(self.encoder(x)).tanh())


def _reference_layers(model: nn.Module, depth: int | None) -> dict[str, float]:
    """Per layer, computed independently of the probe: modules in registration order, each
    trainable parameter once (with its first owner), grouped by the first ``depth`` name parts."""
    seen: set[int] = set()
    squares: dict[str, float] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            key = name if depth is None else ".".join(name.split(".")[:depth])
            squares[key] = squares.get(key, 0.0) + torch.linalg.vector_norm(p.grad.double()).item() ** 2
    return {key: math.sqrt(value) for key, value in squares.items()}


@pytest.mark.parametrize("depth", [None, 1])
def test_layer_norms_match_a_per_module_reference_with_tied_and_frozen_parameters(depth):
    # GIVEN a model with a weight shared by two modules and a frozen layer, after a backward pass
    torch.manual_seed(0)
    model = _TiedAndFrozen()
    probe = Probe(model, group_depth=depth)
    model(torch.rand(5, 4)).pow(2).sum().backward()
    expected = _reference_layers(model, depth)
    # WHEN measured
    probe.end_step(loss=1.0)
    # THEN the layers, their order and their norms are the reference's: the shared weight counts
    # once (with the encoder), the frozen layer has no channel
    assert list(probe.layer_names) == list(expected)
    assert "frozen" not in probe.layer_names and "decoder.1" not in probe.layer_names
    for name, norm in expected.items():
        assert _value(probe, f"grad/{name}") == pytest.approx(norm, rel=1e-6)
    total = math.sqrt(sum(n * n for n in expected.values()))
    assert _value(probe, "gradstat/total_norm") == pytest.approx(total, rel=1e-6)


def test_a_non_finite_gradient_shows_in_its_own_layer_only():
    # GIVEN two layers, one of whose gradients has an infinite entry and another a NaN
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3))
    probe = Probe(model)
    model(torch.rand(2, 3)).sum().backward()
    model[1].weight.grad[0, 0] = math.inf
    model[2].bias.grad[0] = math.nan
    expected_first = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model[0].parameters()])).item()
    # WHEN measured
    probe.end_step(loss=1.0)
    # THEN the healthy layer keeps its finite norm, the broken ones show inf and NaN, and the step is flagged
    assert _value(probe, "grad/0") == pytest.approx(expected_first, rel=1e-6)
    assert _value(probe, "grad/1") == math.inf
    assert math.isnan(_value(probe, "grad/2"))
    assert _value(probe, "gradstat/nonfinite") == 1.0
    assert math.isnan(_value(probe, "gradstat/max_param_norm"))
    assert _value(probe, "gradstat/n_over_bound") == 1.0  # inf is over the bound, NaN is not


def test_losses_as_plain_numbers_and_odd_tensors_are_reported_as_given():
    # GIVEN a loop that passes its total as a shape-(1,) tensor, one component as a float64
    # tensor and another as a plain float
    model = nn.Linear(2, 1)
    probe = Probe(model, loss_components=("a", "b"))
    model(torch.rand(3, 2)).sum().backward()
    # WHEN the step ends
    probe.end_step(loss=torch.tensor([0.75]), components={"a": torch.tensor(0.5, dtype=torch.float64), "b": 0.25})
    # THEN each value is where the schema says
    assert _value(probe, "loss/total") == 0.75
    assert _value(probe, "loss/a") == 0.5
    assert _value(probe, "loss/b") == 0.25


def test_update_ratio_with_parameters_of_mixed_dtypes():
    # GIVEN parameters in float32 and float64 (no single flat copy is possible) and an SGD step
    torch.manual_seed(0)
    model = nn.ParameterDict({"w32": nn.Parameter(torch.rand(4)), "w64": nn.Parameter(torch.rand(3, dtype=torch.float64))})
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    probe = Probe(model, optimizer=optimizer, update_every=1)
    (model["w32"].pow(2).sum() + model["w64"].pow(3).sum()).backward()
    before = [p.detach().clone().double() for p in model.values()]
    # WHEN measured around the step
    probe.clip_(0)
    optimizer.step()
    probe.end_step(loss=1.0)
    # THEN |delta w| / |w| is what the parameters show
    delta = math.sqrt(sum(((p.double() - b) ** 2).sum().item() for p, b in zip(model.values(), before)))
    weight = math.sqrt(sum((p.double() ** 2).sum().item() for p in model.values()))
    assert _value(probe, "opt/update_ratio") == pytest.approx(delta / weight, rel=1e-5)


def test_fraction_outside_counts_nan_outputs_as_outside():
    # GIVEN activated outputs with one NaN and one value above 1 among 8
    model = nn.Linear(2, 1)
    probe = Probe(model, loss_expects_probabilities=True)
    model(torch.rand(1, 2)).sum().backward()
    activated = torch.tensor([0.1, 0.2, 0.3, math.nan, 0.5, 1.5, 0.7, 0.8])
    # WHEN the step reports them
    probe.end_step(loss=1.0, outputs=activated)
    # THEN two of eight are outside [0, 1]
    assert _value(probe, "out/frac_outside_01") == pytest.approx(2 / 8)


def test_a_started_probe_pages_its_history_to_the_spill_folder_unless_told_not_to(tmp_path, monkeypatch) -> None:
    # GIVEN a spill folder named by the environment
    monkeypatch.setenv("OCTA_TUI_SPILL_DIR", str(tmp_path / "spill"))
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 1))
    # WHEN a probe starts its link with the defaults, and another with spill=None
    spilled = Probe.start(model, announce=False)
    kept = Probe.start(model, announce=False, link_options={"spill": None})
    try:
        # THEN the first keeps its history for late joiners there (where the file system allows
        # spilling at all), the second in memory
        from octa_tui.protocol.spill import IN_PLACE_FILESYSTEMS, filesystem_type

        if filesystem_type(tmp_path) in IN_PLACE_FILESYSTEMS:
            assert spilled.link.history.steps.spill.path == tmp_path / "spill"
        else:
            assert spilled.link.history.steps.spill is None
        assert kept.link.history.steps.spill is None
    finally:
        spilled.close()
        kept.close()


def _out_stats(probe: Probe) -> dict[str, float]:
    return {name: _value(probe, f"out/{name}") for name in probe.schema.out}


def _ulps_apart(a: float, b: float) -> int:
    """How many float32 steps separate two float32 numbers (0: identical)."""
    return abs(int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32)))


@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_sigmoid_applied_by_the_probe_reports_what_a_sigmoid_tensor_reports(scale):
    # GIVEN logits of several tensors (moderate, and large enough to saturate the sigmoid)
    torch.manual_seed(1)
    model = nn.Linear(2, 1)
    logits = [torch.randn(2, 1, 16, 16) * scale, torch.randn(3, 1, 8, 8) * scale - 2.0]
    by_tensor = Probe(model, loss_expects_probabilities=True)
    by_name = Probe(model, loss_expects_probabilities=True)
    model(torch.rand(1, 2)).sum().backward()
    # WHEN one probe is given the sigmoid's result and the other asked to apply it
    by_tensor.end_step(loss=1.0, outputs=logits, activated=[torch.sigmoid(t) for t in logits])
    by_name.end_step(loss=1.0, outputs=logits, activation="sigmoid")
    # THEN every output statistic agrees (the range to float32 rounding, the rest exactly)
    direct, derived = _out_stats(by_tensor), _out_stats(by_name)
    for name in ("raw_min", "raw_max", "raw_mean", "act_mean", "frac_outside_01"):
        assert derived[name] == direct[name], name
    for name in ("act_min", "act_max"):
        assert _ulps_apart(derived[name], direct[name]) <= 1, (name, derived[name], direct[name])
    # AND they are the brute-force values over every element
    activated = torch.cat([torch.sigmoid(t).flatten() for t in logits]).double()
    assert derived["act_min"] == pytest.approx(activated.min().item(), rel=1e-6, abs=1e-30)
    assert derived["act_max"] == pytest.approx(activated.max().item(), rel=1e-6)
    assert derived["act_mean"] == pytest.approx(activated.mean().item(), rel=1e-6)
    assert derived["frac_outside_01"] == 0.0


def test_sigmoid_applied_by_the_probe_handles_infinite_and_nan_outputs():
    # GIVEN logits with -inf, +inf, a huge negative value and one NaN among 8
    model = nn.Linear(2, 1)
    probe = Probe(model, loss_expects_probabilities=True)
    logits = torch.tensor([-math.inf, -1000.0, -1.0, 0.0, 1.0, 1000.0, math.inf, 0.5])
    model(torch.rand(1, 2)).sum().backward()
    # WHEN the probe applies the sigmoid
    probe.end_step(loss=1.0, outputs=logits, activation="sigmoid")
    # THEN the activated range is [0, 1] without overflow and nothing is outside
    assert _value(probe, "out/act_min") == 0.0
    assert _value(probe, "out/act_max") == 1.0
    assert _value(probe, "out/frac_outside_01") == 0.0
    # AND WHEN one output is NaN, THEN the range shows it and it counts as outside, as with a tensor
    logits[7] = math.nan
    model(torch.rand(1, 2)).sum().backward()
    probe.end_step(loss=1.0, outputs=logits, activation="sigmoid")
    assert math.isnan(_value(probe, "out/act_min")) and math.isnan(_value(probe, "out/act_max"))
    assert _value(probe, "out/frac_outside_01") == pytest.approx(1 / 8)


def test_an_unknown_or_doubled_activation_is_refused_with_the_fix():
    model = nn.Linear(2, 1)
    probe = Probe(model)
    logits = torch.randn(4)
    model(torch.rand(1, 2)).sum().backward()
    with pytest.raises(ProbeError, match="activated="):
        probe.end_step(loss=1.0, outputs=logits, activation="tanh")
    with pytest.raises(ProbeError, match="not both"):
        probe.end_step(loss=1.0, outputs=logits, activated=torch.sigmoid(logits), activation="sigmoid")
    with pytest.raises(ProbeError, match="outputs="):
        probe.end_step(loss=1.0, activation="sigmoid")


def test_total_norm_returned_before_the_step_equals_the_published_one():
    # GIVEN a UNet after backward, measured by clip_(0) as the demo loop does
    torch.manual_seed(0)
    model = UNet(base_width=8)
    probe = Probe(model)
    logits = _segmentation_step(model)
    reference = math.sqrt(sum(torch.linalg.vector_norm(p.grad.double()).item() ** 2 for p in model.parameters()))
    # WHEN the step ends
    total = probe.clip_(0).item()
    probe.end_step(loss=1.0, outputs=logits, activation="sigmoid")
    # THEN the returned total, the published total and the reference agree
    assert total == pytest.approx(reference, rel=1e-5)
    assert _value(probe, "gradstat/total_norm") == pytest.approx(reference, rel=1e-5)
