"""ResNet image-to-image generator (Johnson et al. 2016, as used by CycleGAN), in 2D or 3D.

Architecture of the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, `ResnetGenerator`):
reflection-padded 7x7 conv, two stride-2 downsampling convs, `n_blocks` residual blocks at 4x the base width,
two transposed-conv upsamplings, a 7x7 conv and tanh. Instance norm without affine parameters, so convolutions
carry a bias. The output is in [-1, 1]; spatial sizes must be multiples of 4 (`pad_multiple`).

`build_generator` also offers MONAI's `UNet` (with a tanh head) as an alternative, chosen by config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pipeline.nets.fastconv import SingleOutputConv2d

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_REFLECT = {2: nn.ReflectionPad2d, 3: nn.ReflectionPad3d}

#: Factor the input's spatial sizes must divide by (two stride-2 stages).
PAD_MULTIPLE = 4


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


class ResnetBlock(nn.Module):
    """pad-conv3-norm-relu-(dropout)-pad-conv3-norm, added to the input."""

    def __init__(self, spatial_dims: int, channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        conv, norm, pad = _CONV[spatial_dims], _NORM[spatial_dims], _REFLECT[spatial_dims]
        layers: list[nn.Module] = [pad(1), conv(channels, channels, 3, bias=True), norm(channels), nn.ReLU(True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [pad(1), conv(channels, channels, 3, bias=True), norm(channels)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator with `n_blocks` residual blocks (6 for 128^2 inputs, 9 for 256^2 in the reference).

    Args:
        spatial_dims: 2 (slices) or 3 (volumes/patches).
        in_channels: input channels.
        out_channels: output channels.
        ngf: filters of the first layer (64 in the reference).
        n_blocks: residual blocks at the bottleneck.
        dropout: dropout inside the residual blocks (0 in CycleGAN).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        conv, convt = _CONV[spatial_dims], _CONVT[spatial_dims]
        norm, pad = _NORM[spatial_dims], _REFLECT[spatial_dims]
        self.spatial_dims = spatial_dims
        layers: list[nn.Module] = [pad(3), conv(in_channels, ngf, 7, bias=True), norm(ngf), nn.ReLU(True)]
        ch = ngf
        for _ in range(2):  # downsampling
            layers += [conv(ch, ch * 2, 3, stride=2, padding=1, bias=True), norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(spatial_dims, ch, dropout) for _ in range(n_blocks)]
        for _ in range(2):  # upsampling
            layers += [
                convt(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                norm(ch // 2),
                nn.ReLU(True),
            ]
            ch //= 2
        # the output convolution (one channel in our use): a faster formulation on CPU in 2D (pipeline.nets.fastconv)
        out_conv = SingleOutputConv2d if spatial_dims == 2 else conv
        layers += [pad(3), out_conv(ch, out_channels, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bad = [s for s in x.shape[2:] if s % PAD_MULTIPLE]
        if bad:
            raise ValueError(f"ResnetGenerator needs spatial sizes divisible by {PAD_MULTIPLE}, got {tuple(x.shape[2:])}")
        return self.model(x)


class TanhUNet(nn.Module):
    """MONAI's UNet with instance norm and a tanh head, so it is a drop-in for `ResnetGenerator`."""

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 256),
        num_res_units: int = 2,
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        from monai.networks.nets import UNet

        self.unet = UNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=num_res_units,
            norm="INSTANCE",
        )
        self.multiple = 2 ** (len(channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.unet(x))


def build_generator(kind: str, spatial_dims: int, in_channels: int = 1, out_channels: int = 1, **kw: Any) -> nn.Module:
    """A translation generator by name.

    Args:
        kind: "resnet_<n>blocks" (e.g. resnet_6blocks, resnet_9blocks; `ngf` in `kw`) or "unet"
            (MONAI UNet; `ngf` sets the first level's width, four levels).
    """
    ngf = int(kw.pop("ngf", 64))
    if kind.startswith("resnet_") and kind.endswith("blocks"):
        try:
            n_blocks = int(kind[len("resnet_") : -len("blocks")])
        except ValueError:
            raise ValueError(f"generator {kind!r}: expected resnet_<n>blocks, e.g. resnet_9blocks") from None
        return ResnetGenerator(spatial_dims, in_channels, out_channels, ngf=ngf, n_blocks=n_blocks, **kw)
    if kind == "unet":
        return TanhUNet(spatial_dims, in_channels, out_channels, channels=(ngf, ngf * 2, ngf * 4, ngf * 8), **kw)
    raise ValueError(f"unknown generator {kind!r}; choose resnet_<n>blocks (e.g. resnet_9blocks) or unet")


def generator_from_kwargs(kwargs: dict[str, Any]) -> nn.Module:
    """`build_generator` from a model file's ``generator.kwargs`` (its ``kind`` and the constructor arguments)."""
    kw = dict(kwargs)
    return build_generator(kw.pop("kind"), **kw)


def size_multiple(net: nn.Module) -> int:
    """The factor a generator's input sizes must divide by."""
    return int(getattr(net, "multiple", PAD_MULTIPLE))


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's 'normal' initialisation: conv weights ~ N(0, gain), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net
