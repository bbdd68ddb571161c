"""CraftVGG16: the seed-shaped CRAFT net - its layout and start, its settings checks (its outputs:
test_models.py, with CraftLike)."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from octa_tui.trainer.config import ConfigError, TrainConfig
from octa_tui.trainer.loop import build_model
from octa_tui.trainer.models import CraftVGG16


def test_it_has_the_vgg16_encoder_the_upconv_decoder_and_crafts_head_in_forward_order():
    model = CraftVGG16(base_width=4, batch_norm=False)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    # 13 VGG16 convolutions (2, 2, 3, 3, 3), 4 upconv blocks of 2, a head of 5
    assert len(convs) == 26
    per_stage = [sum(isinstance(m, nn.Conv2d) for m in getattr(model, f"stage{i}").modules()) for i in range(1, 6)]
    assert per_stage == [2, 2, 3, 3, 3]
    order = list(dict.fromkeys(name.split(".")[0] for name, _ in model.named_parameters()))
    assert order == ["stage1", "stage2", "stage3", "stage4", "stage5",
                     "upconv4", "upconv3", "upconv2", "upconv1", "conv_cls"]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in CraftVGG16(base_width=4).modules())


def test_it_starts_as_crafts_code_starts_its_layers_xavier_weights_zero_biases():
    torch.manual_seed(0)
    model = CraftVGG16(base_width=8, batch_norm=False)
    conv = model.stage4[1]  # after the 2x2 max-pool
    fan_in, fan_out = conv.weight.shape[1] * 9, conv.weight.shape[0] * 9
    bound = (6.0 / (fan_in + fan_out)) ** 0.5  # Xavier-uniform; PyTorch's default would be ~sqrt(1/fan_in)
    assert conv.weight.abs().max() <= bound
    assert conv.weight.abs().max() > 0.9 * bound
    assert all(not m.bias.detach().any() for m in model.modules() if isinstance(m, nn.Conv2d))


def test_raw_pixels_without_normalisation_start_far_outside_zero_one():
    # Seed 002's state: a plain net on 0-255 pixels puts out values in the tens (seed: [-8.5, 1.5]).
    torch.manual_seed(0)
    model = CraftVGG16(base_width=32, output_activation="none", batch_norm=False)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32) * 255.0)
    assert float(out.abs().max()) > 5.0


def test_input_sizes_must_be_divisible_by_16():
    model = CraftVGG16(base_width=4)
    with pytest.raises(ValueError, match="divisible by 16"):
        model(torch.rand(1, 3, 40, 32))
    with pytest.raises(ValueError, match="output_activation"):
        CraftVGG16(output_activation="relu")


def test_the_trainer_builds_it_for_heatmaps_and_checks_the_image_size():
    config = TrainConfig(synthetic=8, task="heatmap", model="craft_vgg16", image_size=32, base_width=4,
                         output_activation="none", batch_norm=False).check()
    model = build_model(config)
    assert isinstance(model, CraftVGG16)
    assert model.output_activation == "none"
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ConfigError, match="divisible by 16"):
        replace(config, image_size=40).check()
    with pytest.raises(ConfigError, match="--model"):
        TrainConfig(synthetic=8, task="segmentation", model="craft_vgg16").check()
