"""SRResNet generator (Ledig et al. 2017, "Photo-realistic single image super-resolution using a GAN").

head conv (9x9) + PReLU -> B residual blocks (conv-norm-PReLU-conv-norm, + input) -> conv-norm, + head
(global skip) -> sub-pixel upsampling x2 per stage (MONAI `SubpixelUpsample`) + PReLU -> tail conv (9x9).

For medical SR an interpolation skip is added: ``output = interp(lr) + net(lr)``, so the network learns only
the residual beyond (e.g. sinc) interpolation; the tail is zero-initialised, so training starts from the
interpolation. Depth, width, normalisation and the skip are configurable; 2D or 3D (`spatial_dims`);
anisotropic factors (e.g. 3D with in-plane-only degradation, factors (4, 4, 1)) use a sub-pixel shuffle of
their own, since MONAI's is isotropic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.blocks import SubpixelUpsample
from monai.networks.layers.factories import Conv, Norm
from torch import nn

from pipeline.nets.fastconv import SingleOutputConv2d
from pipeline.nets.interp import interpolate

NORMS = ("batch", "instance", "none")
UPSAMPLERS = ("stages", "final")


def _norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind == "none":
        return nn.Identity()
    if kind not in NORMS:
        raise ValueError(f"unknown norm {kind!r}; choose one of {', '.join(NORMS)}")
    return Norm[kind, spatial_dims](channels, affine=True) if kind == "instance" else Norm[kind, spatial_dims](channels)


def _conv(spatial_dims: int, cin: int, cout: int, k: int, bias: bool = True) -> nn.Module:
    if spatial_dims == 2 and cout == 1:  # the output convolution: a faster formulation on CPU (pipeline.nets.fastconv)
        return SingleOutputConv2d(cin, cout, kernel_size=k, padding=k // 2, bias=bias)
    return Conv[Conv.CONV, spatial_dims](cin, cout, kernel_size=k, padding=k // 2, bias=bias)


class ResidualBlock(nn.Module):
    """conv-norm-PReLU-conv-norm with an identity skip."""

    def __init__(self, spatial_dims: int, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(spatial_dims, channels, channels, 3),
            _norm(norm, spatial_dims, channels),
            nn.PReLU(channels),
            _conv(spatial_dims, channels, channels, 3),
            _norm(norm, spatial_dims, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def pixel_shuffle_nd(x: torch.Tensor, factors: Sequence[int]) -> torch.Tensor:
    """Sub-pixel shuffle with a factor per spatial axis: (N, C*prod(f), *S) -> (N, C, *(S*f))."""
    n, c, *spatial = x.shape
    d = len(spatial)
    prod = math.prod(factors)
    if c % prod:
        raise ValueError(f"{c} channels cannot be shuffled by factors {tuple(factors)}")
    c_out = c // prod
    x = x.reshape(n, c_out, *factors, *spatial)
    # (n, c, f1..fd, s1..sd) -> (n, c, s1, f1, s2, f2, ...)
    perm = [0, 1] + [p for i in range(d) for p in (2 + d + i, 2 + i)]
    x = x.permute(*perm)
    return x.reshape(n, c_out, *(s * f for s, f in zip(spatial, factors, strict=True)))


class AnisotropicSubpixelUpsample(nn.Module):
    """conv3 to C_out*prod(f) channels, then `pixel_shuffle_nd` (for factors that differ between axes)."""

    def __init__(self, spatial_dims: int, channels: int, factors: Sequence[int], out_channels: int | None = None) -> None:
        super().__init__()
        self.factors = tuple(int(f) for f in factors)
        self.conv = _conv(spatial_dims, channels, (out_channels or channels) * math.prod(self.factors), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_nd(self.conv(x), self.factors)


def upsample_stages(factors: Sequence[int]) -> list[tuple[int, ...]]:
    """Split per-axis factors (powers of two) into x2 stages: (4, 4, 1) -> [(2, 2, 1), (2, 2, 1)]."""
    for f in factors:
        if f < 1 or f & (f - 1):
            raise ValueError(f"upsampling factors must be powers of two, got {tuple(factors)}")
    n = int(math.log2(max(factors)))
    return [tuple(2 if f >= 2 ** (s + 1) else 1 for f in factors) for s in range(n)]


class SRResNet(nn.Module):
    """The SRResNet generator for single- (or multi-) channel 2D/3D images.

    Args:
        spatial_dims: 2 or 3.
        factors: upsampling factor per spatial axis (powers of two), e.g. (4, 4) or (2, 2, 2).
        channels: feature width; n_blocks: number of residual blocks.
        norm: ``batch`` (as in the paper), ``instance`` or ``none``.
        interp_skip: ``zerofill``/``bicubic``/``trilinear``/``nearest`` adds ``interp(lr)`` to the output;
            ``none`` is the paper's network. With an odd number of input channels and one output channel
            (neighbouring slices as context, 2.5D), the skip interpolates the centre channel.
        outer_kernel: kernel size of the first and last convolution (9 in the paper).
        pad_pool: MONAI's pad + average-pool after each sub-pixel shuffle (against checkerboard artefacts);
            off by default: that fixed blur slows learning of the high frequencies SR is about.
        upsampler: ``stages`` (the paper: x2 sub-pixel stages with C channels, then the outer-kernel conv at
            HR) or ``final`` (ESPCN-style: one sub-pixel convolution from the LR features to the output, no
            convolution at HR resolution; several times cheaper).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        factors: Sequence[int] = (4, 4),
        in_channels: int = 1,
        out_channels: int = 1,
        channels: int = 64,
        n_blocks: int = 16,
        norm: str = "batch",
        interp_skip: str = "zerofill",
        outer_kernel: int = 9,
        pad_pool: bool = False,
        upsampler: str = "stages",
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        factors = tuple(int(f) for f in factors)
        if len(factors) != spatial_dims:
            raise ValueError(f"{len(factors)} factors for spatial_dims={spatial_dims}")
        self.spatial_dims, self.factors, self.interp_skip = spatial_dims, factors, interp_skip
        if interp_skip != "none" and in_channels != out_channels and (out_channels != 1 or in_channels % 2 == 0):
            raise ValueError("an interpolation skip needs in_channels == out_channels, or one output channel "
                             "and an odd number of input channels (context around a centre channel)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.head = nn.Sequential(_conv(spatial_dims, in_channels, channels, outer_kernel), nn.PReLU(channels))
        self.body = nn.Sequential(
            *(ResidualBlock(spatial_dims, channels, norm) for _ in range(n_blocks)),
            _conv(spatial_dims, channels, channels, 3),
            _norm(norm, spatial_dims, channels),
        )
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"unknown upsampler {upsampler!r}; choose one of {', '.join(UPSAMPLERS)}")
        ups: list[nn.Module] = []
        if upsampler == "stages":  # the paper: conv C -> 4C, shuffle x2, PReLU per stage; then a conv at HR
            for stage in upsample_stages(factors):
                if len(set(stage)) == 1:
                    ups.append(SubpixelUpsample(spatial_dims, channels, channels, scale_factor=stage[0],
                                                apply_pad_pool=pad_pool))
                else:
                    ups.append(AnisotropicSubpixelUpsample(spatial_dims, channels, stage))
                ups.append(nn.PReLU(channels))
            tail: nn.Module = _conv(spatial_dims, channels, out_channels, outer_kernel)
        else:  # "final" (ESPCN-style): one sub-pixel convolution from LR features straight to the output
            if len(set(factors)) == 1:
                tail = SubpixelUpsample(spatial_dims, channels, out_channels, scale_factor=factors[0],
                                        apply_pad_pool=pad_pool)
            else:
                tail = AnisotropicSubpixelUpsample(spatial_dims, channels, factors, out_channels)
        self.upsample = nn.Sequential(*ups)
        self.tail = tail
        if interp_skip != "none":  # start from the interpolation: the last convolution outputs zero
            last = [m for m in tail.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))][-1]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)

    def residual(self, lr: torch.Tensor) -> torch.Tensor:
        """The learnt part of the output (the whole output when there is no interpolation skip)."""
        h = self.head(lr)
        h = h + self.body(h)
        return self.tail(self.upsample(h))

    def skip(self, lr: torch.Tensor) -> torch.Tensor | None:
        """The interpolation skip ``interp(lr)`` (None without one)."""
        if self.interp_skip == "none":
            return None
        if self.in_channels != self.out_channels:  # context channels around the centre one (2.5D input)
            c = self.in_channels // 2
            lr = lr[:, c:c + 1]
        return interpolate(lr, self.factors, self.interp_skip)

    def forward(self, lr: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """Super-resolve `lr`; `skip` may be given precomputed (e.g. interpolated on the whole volume)."""
        out = self.residual(lr)
        if self.interp_skip != "none":
            out = out + (self.skip(lr) if skip is None else skip).to(out.dtype)
        return out
