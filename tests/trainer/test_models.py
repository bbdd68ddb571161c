"""Models: output shapes, parameter counts at the seed's scale, layer order, the output activation."""

import pytest
import torch

from octa_tui.trainer.models import (
    CraftLike,
    CraftVGG16,
    PlainSigmoidCNN,
    UNet,
    UNet_Transformer,
    count_parameters,
    describe_model,
)


def test_unet_returns_one_logit_map_per_image_at_input_resolution():
    # GIVEN a small UNet and a batch of 64x64 RGB images
    model = UNet(base_width=8)
    x = torch.rand(2, 3, 64, 64)
    # WHEN it runs
    y = model(x)
    # THEN one channel per pixel, unbounded logits (not squashed into [0, 1])
    assert y.shape == (2, 1, 64, 64)
    assert isinstance(model.out_activation, torch.nn.Identity)


def test_unet_transformer_accepts_non_square_sizes_and_is_larger_than_unet():
    # GIVEN the transformer variant at the same width as a UNet
    unet, transformer = UNet(base_width=8), UNet_Transformer(base_width=8, depth=2, heads=4)
    # WHEN it runs on two different sizes (the position encoding is computed per size)
    assert transformer(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)
    assert transformer(torch.rand(1, 3, 40, 56)).shape == (1, 1, 40, 56)
    # THEN it has more parameters than the plain UNet
    assert count_parameters(transformer) > count_parameters(unet)


def test_parameter_counts_at_the_seeds_scale():
    # GIVEN the seed's width (64) WHEN counting THEN UNet is ~7.7M and the transformer variant larger
    unet = count_parameters(UNet(base_width=64))
    transformer = count_parameters(UNet_Transformer(base_width=64))
    assert 7_500_000 <= unet <= 8_600_000
    assert transformer > 1.5 * unet


def test_unet_rejects_sizes_it_cannot_downsample_with_a_clear_message():
    with pytest.raises(ValueError, match="divisible by 8"):
        UNet(base_width=4)(torch.rand(1, 3, 60, 60))


def test_transformer_heads_must_divide_the_bottleneck_width():
    with pytest.raises(ValueError, match="heads"):
        UNet_Transformer(base_width=8, heads=3)


@pytest.mark.parametrize("net", [CraftLike, CraftVGG16])
def test_craft_nets_output_two_heatmaps_and_sigmoid_bounds_them(net):
    # GIVEN the same CRAFT weights with and without the final sigmoid
    torch.manual_seed(0)
    with_sigmoid = net(base_width=8, output_activation="sigmoid")
    without = net(base_width=8, output_activation="none")
    without.load_state_dict(with_sigmoid.state_dict())
    x = torch.rand(2, 3, 32, 48) * 255.0
    # WHEN both run
    bounded, raw = with_sigmoid(x), without(x)
    # THEN region and affinity maps at the input's size; the sigmoid one is in [0, 1], the other is its logit
    assert bounded.shape == raw.shape == (2, 2, 32, 48)
    assert bounded.min() >= 0.0 and bounded.max() <= 1.0
    torch.testing.assert_close(torch.sigmoid(raw), bounded)


def test_craftlike_rejects_an_unknown_activation():
    with pytest.raises(ValueError, match="output_activation"):
        CraftLike(output_activation="relu")


def test_parameters_are_registered_shallow_to_deep():
    # GIVEN the UNet WHEN listing parameters in registration order THEN encoder, bottleneck, decoder, head
    names = [name.split(".")[0] for name, _ in UNet(base_width=4).named_parameters()]
    order = list(dict.fromkeys(names))
    assert order == ["enc1", "enc2", "enc3", "bottleneck", "dec3", "dec2", "dec1", "head"]
    transformer_order = list(
        dict.fromkeys(n.split(".")[0] for n, _ in UNet_Transformer(base_width=4).named_parameters())
    )
    assert transformer_order.index("transformer") == transformer_order.index("bottleneck") + 1


def test_plain_sigmoid_cnn_gradients_vanish_towards_the_input():
    # GIVEN the 12-layer plain sigmoid net and a loss on its output
    torch.manual_seed(0)
    model = PlainSigmoidCNN(depth=12, width=16)
    x = torch.rand(4, 3, 32, 32)
    # WHEN back-propagating
    model(x).mean().backward()
    first = model.conv01.weight.grad.norm().item()
    last = model.head.weight.grad.norm().item()
    # THEN the first layer's gradient is many orders of magnitude smaller than the last one's
    assert [n for n, _ in model.named_children()][:2] == ["conv01", "conv02"]
    assert first < last * 1e-4


def test_describe_model_names_the_blocks_and_total():
    text = describe_model(UNet(base_width=8))
    assert text.startswith("UNet: ")
    assert "bottleneck" in text and "head" in text
