"""The models the trainer can train: the seeds' UNets, CRAFT-like heatmap nets, a vanishing-gradient net.

Every model registers its modules in forward order (encoder from shallow to deep, bottleneck,
decoder, head, output activation), so the probe, which names gradient norms by module in
registration order, lists layers shallow -> deep. Every model ends in ``out_activation``:
``nn.Identity`` for models that return logits (the loss applies the sigmoid itself) and
``nn.Sigmoid`` for the CRAFT nets with ``output_activation="sigmoid"``. A forward hook on
``model.out_activation`` therefore sees the raw output (its input) and what the loss sees
(its output) for every model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

OUTPUT_ACTIVATIONS = ("sigmoid", "none")


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by BatchNorm (optional) and ReLU: the UNet building block."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for cin, cout in ((in_channels, out_channels), (out_channels, out_channels)):
            layers.append(nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UpBlock(nn.Module):
    """Upsample x2 (transposed convolution), concatenate the skip connection, DoubleConv."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, batch_norm: bool) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels // 2 + skip_channels, out_channels, batch_norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_divisible_by_8(x: torch.Tensor, model: str) -> None:
    height, width = x.shape[-2:]
    if height % 8 or width % 8:
        raise ValueError(
            f"{model} needs an input height and width divisible by 8 (three 2x downsamplings), "
            f"got {height}x{width}; resize the images (e.g. --image-size 64)"
        )


class UNet(nn.Module):
    """The seed's UNet: four resolution levels, returns ``out_channels`` logits per pixel.

    Encoder widths ``base_width`` x (1, 2, 4), three 2x downsamplings, a bottleneck of
    8 x ``base_width`` at 1/8 resolution, a mirrored decoder with skip connections (transposed
    convolutions upsample), a 1x1 head. ``base_width=64`` has 7.70M parameters, the scale of
    the seed's "8.5M" UNet; ``base_width=16`` has 0.48M. Input sides must be divisible by 8.
    ``batch_norm=False`` gives the plain net that the exploding-gradient scenario needs.
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 1, base_width: int = 64, batch_norm: bool = True
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("base_width", base_width),
        ):
            _check_positive(name, value)
        self.base_width = w = base_width
        self.enc1 = DoubleConv(in_channels, w, batch_norm)
        self.enc2 = DoubleConv(w, 2 * w, batch_norm)
        self.enc3 = DoubleConv(2 * w, 4 * w, batch_norm)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(4 * w, 8 * w, batch_norm)
        self._build_bottleneck_extra()
        self.dec3 = UpBlock(8 * w, 4 * w, 4 * w, batch_norm)
        self.dec2 = UpBlock(4 * w, 2 * w, 2 * w, batch_norm)
        self.dec1 = UpBlock(2 * w, w, w, batch_norm)
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)
        self.out_activation: nn.Module = nn.Identity()

    def _build_bottleneck_extra(self) -> None:
        """Hook for subclasses that add modules right after the bottleneck (registration order)."""

    def _bottleneck_extra(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible_by_8(x, type(self).__name__)
        s1 = self.enc1(x)
        s2 = self.enc2(self.pool(s1))
        s3 = self.enc3(self.pool(s2))
        b = self._bottleneck_extra(self.bottleneck(self.pool(s3)))
        y = self.dec3(b, s3)
        y = self.dec2(y, s2)
        y = self.dec1(y, s1)
        return self.out_activation(self.head(y))


def sinusoidal_position_encoding_2d(
    height: int, width: int, channels: int, device=None, dtype=None
) -> torch.Tensor:
    """A fixed 2-D sine/cosine encoding of shape (height*width, channels), for any grid size.

    Half the channels encode the row, half the column, at geometrically spaced frequencies,
    so a transformer at the bottleneck works on any input size the UNet accepts.
    """
    if channels % 4:
        raise ValueError(f"the 2-D position encoding needs channels divisible by 4, got {channels}")
    quarter = channels // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    rows = torch.arange(height, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    cols = torch.arange(width, device=device, dtype=torch.float32)[:, None] * freq[None, :]
    row_enc = torch.cat([rows.sin(), rows.cos()], dim=1)  # (h, c/2)
    col_enc = torch.cat([cols.sin(), cols.cos()], dim=1)  # (w, c/2)
    grid = torch.cat(
        [row_enc[:, None, :].expand(height, width, -1), col_enc[None, :, :].expand(height, width, -1)], dim=2
    )
    return grid.reshape(height * width, channels).to(dtype or torch.float32)


class BottleneckTransformer(nn.Module):
    """Transformer encoder layers over the flattened bottleneck feature map (one token per position)."""

    def __init__(self, channels: int, depth: int, heads: int) -> None:
        super().__init__()
        _check_positive("depth", depth)
        _check_positive("heads", heads)
        if channels % heads:
            raise ValueError(
                f"the bottleneck has {channels} channels, not divisible by heads={heads}; "
                f"choose heads dividing {channels} or another base_width"
            )
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                d_model=channels,
                nhead=heads,
                dim_feedforward=4 * channels,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (n, h*w, c)
        tokens = tokens + sinusoidal_position_encoding_2d(h, w, c, device=x.device, dtype=x.dtype)
        for layer in self.layers:
            tokens = layer(tokens)
        tokens = self.norm(tokens)
        # Residual around the whole block keeps the convolutional path intact at initialisation.
        return x + tokens.transpose(1, 2).reshape(n, c, h, w)


class UNet_Transformer(UNet):  # noqa: N801 - the seed's name, kept so users recognise it
    """The seed's UNet with transformer encoder layers at the bottleneck: the larger model.

    Same encoder/decoder as :class:`UNet`; ``depth`` pre-norm transformer layers (``heads``
    attention heads, feed-forward 4x wider) run over the bottleneck tokens with a 2-D
    sinusoidal position encoding. Larger than UNet at the same width (14.0M parameters at
    ``base_width=64``, 0.88M at 16), which is what the oversized-model scenario needs.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        base_width: int = 64,
        depth: int = 2,
        heads: int = 4,
    ) -> None:
        self._depth = depth
        self._heads = heads
        super().__init__(in_channels, out_channels, base_width, batch_norm=True)

    def _build_bottleneck_extra(self) -> None:
        self.transformer = BottleneckTransformer(8 * self.base_width, self._depth, self._heads)

    def _bottleneck_extra(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer(x)


def _check_heatmap_net(in_channels: int, base_width: int, output_activation: str) -> None:
    """The settings both CRAFT nets take, checked alike."""
    _check_positive("in_channels", in_channels)
    _check_positive("base_width", base_width)
    if output_activation not in OUTPUT_ACTIVATIONS:
        raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}")


def _conv_bn_relu(in_channels: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class CraftLike(nn.Module):
    """A small CRAFT-style net regressing two heatmaps per pixel: region (channel 0) and affinity (1).

    A VGG-like encoder (three stages, two 2x downsamplings), an upsampling decoder with skip
    connections, and the seed's ``conv_cls`` head ending in a 1x1 convolution to 2 channels.
    ``output_activation="sigmoid"`` puts the seed's fix (a final Sigmoid) in place;
    ``"none"`` reproduces the seed's bug: unbounded outputs fed to an MSE on [0,1] targets.
    Input height and width must be divisible by 4.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_width: int = 16,
        output_activation: str = "sigmoid",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_heatmap_net(in_channels, base_width, output_activation)
        self.output_activation = output_activation
        w = base_width
        self.stage1 = nn.Sequential(
            _conv_bn_relu(in_channels, w, batch_norm), _conv_bn_relu(w, w, batch_norm)
        )
        self.stage2 = nn.Sequential(
            _conv_bn_relu(w, 2 * w, batch_norm), _conv_bn_relu(2 * w, 2 * w, batch_norm)
        )
        self.stage3 = nn.Sequential(
            _conv_bn_relu(2 * w, 4 * w, batch_norm), _conv_bn_relu(4 * w, 4 * w, batch_norm)
        )
        self.pool = nn.MaxPool2d(2)
        self.up2 = _conv_bn_relu(4 * w + 2 * w, 2 * w, batch_norm)
        self.up1 = _conv_bn_relu(2 * w + w, w, batch_norm)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, 16, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(16, 2, kernel_size=1),
        )
        self.out_activation: nn.Module = nn.Sigmoid() if output_activation == "sigmoid" else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 4 or width % 4:
            raise ValueError(
                f"CraftLike needs an input height and width divisible by 4, got {height}x{width}"
            )
        f1 = self.stage1(x)
        f2 = self.stage2(self.pool(f1))
        f3 = self.stage3(self.pool(f2))
        y = nn.functional.interpolate(f3, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.up2(torch.cat([y, f2], dim=1))
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        y = self.up1(torch.cat([y, f1], dim=1))
        return self.out_activation(self.conv_cls(y))


class CraftVGG16(nn.Module):
    """A CRAFT-shaped heatmap net: a VGG16-layout encoder, CRAFT's upconv decoder and head.

    Deeper than :class:`CraftLike` and closer to the seed's model: thirteen 3x3 convolutions in
    five stages (2, 2, 3, 3, 3; widths w, 2w, 4w, 8w, 8w; four 2x downsamplings), four upconv
    blocks (a 1x1 then a 3x3 convolution on the upsampled features joined with the encoder's
    at that scale) and CRAFT's ``conv_cls`` head, 26 convolutions in all. Weights start as
    CRAFT's own code starts the layers it does not take from a pretrained VGG16: Xavier-uniform
    weights and zero biases. Without BatchNorm and fed raw 0-255 pixels this net starts with
    outputs in the tens and gradient norms in the hundreds to thousands - seed 002's state. Input height and
    width must be divisible by 16.
    """

    def __init__(
        self,
        in_channels: int = 3,
        base_width: int = 8,
        output_activation: str = "sigmoid",
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        _check_heatmap_net(in_channels, base_width, output_activation)
        self.output_activation = output_activation
        w = base_width

        def stage(first: int, width: int, convs: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if pool else []
            for i in range(convs):
                layers.extend(_conv_bn_relu(first if i == 0 else width, width, batch_norm))
            return nn.Sequential(*layers)

        self.stage1 = stage(in_channels, w, 2, pool=False)
        self.stage2 = stage(w, 2 * w, 2, pool=True)
        self.stage3 = stage(2 * w, 4 * w, 3, pool=True)
        self.stage4 = stage(4 * w, 8 * w, 3, pool=True)
        self.stage5 = stage(8 * w, 8 * w, 3, pool=True)
        half = max(1, w // 2)
        self.upconv4 = self._upconv(8 * w + 8 * w, 4 * w, 2 * w, batch_norm)
        self.upconv3 = self._upconv(2 * w + 4 * w, 2 * w, w, batch_norm)
        self.upconv2 = self._upconv(w + 2 * w, w, half, batch_norm)
        self.upconv1 = self._upconv(half + w, half, half, batch_norm)
        quarter = max(1, half // 2)
        self.conv_cls = nn.Sequential(
            nn.Conv2d(half, half, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(half, quarter, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(quarter, quarter, 1), nn.ReLU(inplace=True),
            nn.Conv2d(quarter, 2, kernel_size=1),
        )
        self.out_activation: nn.Module = nn.Sigmoid() if output_activation == "sigmoid" else nn.Identity()
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    @staticmethod
    def _upconv(in_channels: int, middle: int, out_channels: int, batch_norm: bool) -> nn.Sequential:
        """CRAFT's ``double_conv``: 1x1 to ``middle``, then 3x3 to ``out_channels``."""
        layers: list[nn.Module] = [nn.Conv2d(in_channels, middle, 1, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm2d(middle))
        layers.append(nn.ReLU(inplace=True))
        layers.extend(_conv_bn_relu(middle, out_channels, batch_norm))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % 16 or width % 16:
            raise ValueError(
                f"CraftVGG16 needs an input height and width divisible by 16, got {height}x{width}"
            )
        f1 = self.stage1(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        y = self.stage5(f4)
        for skip, upconv in ((f4, self.upconv4), (f3, self.upconv3), (f2, self.upconv2), (f1, self.upconv1)):
            y = nn.functional.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = upconv(torch.cat([y, skip], dim=1))
        return self.out_activation(self.conv_cls(y))


class PlainSigmoidCNN(nn.Module):
    """A deep plain convolutional net with sigmoid activations and no normalisation.

    ``depth`` 3x3 convolutions (the last is the 1x1 ``head``), sigmoid after each but the
    head, returning one channel of logits at full resolution. Each sigmoid scales the
    backward signal by at most 0.25, so the first layers' gradients are orders of magnitude
    smaller than the last ones': the vanishing-gradient scenario.
    """

    def __init__(self, depth: int = 12, width: int = 16, in_channels: int = 3, out_channels: int = 1) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2 (hidden layers plus the head), got {depth!r}")
        _check_positive("width", width)
        self.depth = depth
        digits = len(str(depth - 1))
        channels = in_channels
        convs = []
        for index in range(1, depth):
            conv = nn.Conv2d(channels, width, 3, padding=1)
            self.add_module(f"conv{index:0{digits}d}", conv)
            convs.append(conv)
            channels = width
        self._convs = tuple(convs)  # the same modules, kept in forward order
        self.act = nn.Sigmoid()
        self.head = nn.Conv2d(width, out_channels, kernel_size=1)
        self.out_activation: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self._convs:
            x = self.act(conv(x))
        return self.out_activation(self.head(x))


class SmallBNCNN(nn.Module):
    """A plain small CNN with BatchNorm and no skip connections: ``depth`` 3x3 conv-BN-ReLU layers at
    full resolution and a 1x1 head returning logits. A healthy architecture unlike the UNets (no
    encoder/decoder, no skips) for the diagnosis benchmark's zoo."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_width: int = 16, depth: int = 6) -> None:
        super().__init__()
        _check_positive("base_width", base_width)
        _check_positive("depth", depth)
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [nn.Conv2d(channels, base_width, 3, padding=1, bias=False), nn.BatchNorm2d(base_width),
                       nn.ReLU(inplace=True)]
            channels = base_width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(base_width, out_channels, kernel_size=1)
        self.out_activation: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_activation(self.head(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, a projected shortcut when the shape changes, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResUNet(nn.Module):
    """A UNet with a ResNet-style encoder (a stem, then four stages of two basic blocks, strides 1, 2, 2,
    2), the layout smp's ``Unet(encoder_name="resnet18")`` uses, written here since the pretrained
    packages cannot be installed everywhere. Decoder: upsample, concatenate the skip, two conv-BN-ReLU,
    then a 1x1 head. Input sides must be divisible by 8."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, base_width: int = 16) -> None:
        super().__init__()
        _check_positive("base_width", base_width)
        w = base_width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                                  nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w))
        self.dec3 = UpBlock(8 * w, 4 * w, 4 * w, batch_norm=True)
        self.dec2 = UpBlock(4 * w, 2 * w, 2 * w, batch_norm=True)
        self.dec1 = UpBlock(2 * w, w, w, batch_norm=True)
        self.head = nn.Conv2d(w, out_channels, kernel_size=1)
        self.out_activation: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_divisible_by_8(x, type(self).__name__)
        s1 = self.layer1(self.stem(x))
        s2 = self.layer2(s1)
        s3 = self.layer3(s2)
        y = self.dec3(self.layer4(s3), s3)
        y = self.dec2(y, s2)
        y = self.dec1(y, s1)
        return self.out_activation(self.head(y))


HEAD_FAULTS = ("sigmoid", "relu", "softmax")


class UNetHeadFault(UNet):
    """The demo UNet with an activation inside its head that the loss does not expect (a known fault).

    The loss (Dice+BCE on logits) applies its own sigmoid, so: ``"sigmoid"`` squashes what it sees
    into [0.5, 0.73] (a sigmoid applied twice); ``"relu"`` keeps every logit >= 0, so background can
    never be predicted (BCE near ln 2); ``"softmax"`` over the single output channel is always 1: the
    output is constant and no gradient reaches the weights. The activation sits in ``head`` (before
    ``out_activation``), so the probe sees what the loss receives as the model's raw output.
    """

    def __init__(self, fault: str, in_channels: int = 3, out_channels: int = 1, base_width: int = 16) -> None:
        if fault not in HEAD_FAULTS:
            raise ValueError(f"fault must be one of {HEAD_FAULTS}, got {fault!r}")
        super().__init__(in_channels, out_channels, base_width, batch_norm=True)
        activation = {"sigmoid": nn.Sigmoid(), "relu": nn.ReLU(), "softmax": nn.Softmax(dim=1)}[fault]
        self.head = nn.Sequential(nn.Conv2d(base_width, out_channels, kernel_size=1), activation)
        self.fault = fault


def unet_double_sigmoid(base_width: int = 16, **kwargs) -> UNetHeadFault:
    """The UNet ending in a sigmoid, trained with a loss that applies one too."""
    return UNetHeadFault("sigmoid", base_width=base_width, **kwargs)


def unet_relu_head(base_width: int = 16, **kwargs) -> UNetHeadFault:
    """The UNet ending in a ReLU before BCEWithLogits."""
    return UNetHeadFault("relu", base_width=base_width, **kwargs)


def unet_softmax_head(base_width: int = 16, **kwargs) -> UNetHeadFault:
    """The UNet ending in a softmax over its single output channel."""
    return UNetHeadFault("softmax", base_width=base_width, **kwargs)


MODELS = {
    "unet": UNet,
    "unet_transformer": UNet_Transformer,
    "craft": CraftLike,
    "craft_vgg16": CraftVGG16,
    "plain_sigmoid": PlainSigmoidCNN,
    "small_bn_cnn": SmallBNCNN,
    "res_unet": ResUNet,
    "unet_double_sigmoid": unet_double_sigmoid,
    "unet_relu_head": unet_relu_head,
    "unet_softmax_head": unet_softmax_head,
}


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """How many (trainable) parameters a model has: the 'model too large' rule compares it to the data."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def format_count(count: int) -> str:
    """A parameter count as people say it: 7.85M, 118.4k, 950."""
    if count >= 1_000_000:
        return f"{count / 1_000_000:.2f}M"
    if count >= 1_000:
        return f"{count / 1_000:.1f}k"
    return str(count)


def describe_model(model: nn.Module) -> str:
    """A one-line summary and the parameter count of each top-level block, shallow -> deep."""
    lines = [f"{type(model).__name__}: {format_count(count_parameters(model))} parameters"]
    for name, child in model.named_children():
        count = count_parameters(child)
        if count:
            lines.append(f"  {name:<14} {format_count(count):>8}")
    return "\n".join(lines)
