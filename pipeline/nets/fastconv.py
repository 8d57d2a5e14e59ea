"""A faster CPU formulation of 2D convolutions with a single output channel (the generators' output layers).

oneDNN's direct convolution is poorly tuned for one output channel: on a 2-core AVX-512 machine the 7x7
64 -> 1 output convolution of the CycleGAN ResNet generator runs at about 5 GFLOP/s (fwd + bwd) where the
3x3 convolutions of the same network reach about 90, and the 9x9 64 -> 1 output convolution of the SRGAN
paper's generator (at HR resolution) is a tenth of its whole training step. The same result is computed as
a 1x1 convolution to ``kh * kw`` channels (one per kernel tap; a well-tuned GEMM) followed by the sum of
those channels, each shifted by its tap's offset:

    y[n, 0, i, j] = sum_{a, b} z[n, a * kw + b, i + a, j + b],   z = conv1x1(x, w[0, :, a, b] per tap)

The shifted sum has its own backward (a scatter of the output gradient into the tap channels), so autograd
keeps no per-tap slices. The modules here are drop-in subclasses of `nn.Conv2d`: same parameters, same
state-dict keys, the plain convolution on CUDA (cuDNN has no such weakness), for other shapes, and inside
`reference_kernels()` (used to count model FLOPs of the textbook formulation, and by tests).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_STATE = {"enabled": True}
#: the shortest reduction (in_channels x kh x kw) that takes the fast path. Measured fwd + bwd on the 2-core
#: AVX-512 machine, bf16 autocast and fp32, channels-last, at the families' shapes: the formulation wins for long
#: reductions (7x7 64 -> 1 output layers 1.7-3.1x, 9x9 64 -> 1 1.4-1.5x, 4x4 256 -> 1 PatchGAN heads 1.0-1.7x)
#: and loses for short ones, where oneDNN's direct kernel is faster (the demo CycleGAN's 7x7 16 -> 1 output layer
#: 1.2-1.8x faster direct at batch 4-16, a 4x4 128 -> 1 head 0.8-1.2x)
MIN_REDUCTION = 3000


@contextlib.contextmanager
def reference_kernels() -> Iterator[None]:
    """Within this block every module of this file computes the plain `nn.Conv2d` convolution."""
    before = _STATE["enabled"]
    _STATE["enabled"] = False
    try:
        yield
    finally:
        _STATE["enabled"] = before


class _ShiftSum(torch.autograd.Function):
    """``(N, kh*kw, H + kh - 1, W + kw - 1) -> (N, 1, H, W)``: sum of the tap channels, each shifted by its tap."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, kh: int, kw: int) -> torch.Tensor:  # type: ignore[override]
        n, _, hp, wp = z.shape
        h, w = hp - kh + 1, wp - kw + 1
        y = z.new_zeros(n, 1, h, w)
        for a in range(kh):
            for b in range(kw):
                t = a * kw + b
                y += z[:, t : t + 1, a : a + h, b : b + w]
        ctx.kh, ctx.kw, ctx.z_shape = kh, kw, z.shape
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        kh, kw = ctx.kh, ctx.kw
        _, _, hp, wp = ctx.z_shape
        h, w = hp - kh + 1, wp - kw + 1
        gz = grad.new_zeros(ctx.z_shape)
        for a in range(kh):
            for b in range(kw):
                gz[:, a * kw + b, a : a + h, b : b + w] = grad[:, 0]
        return gz, None, None


def conv2d_single_output(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                         padding: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, padding=padding)`` for ``weight`` of shape (1, C, kh, kw), stride 1, zero padding,
    as a 1x1 convolution to one channel per kernel tap followed by a shifted sum (see the module docstring)."""
    if weight.dim() != 4 or weight.shape[0] != 1:
        raise ValueError(f"expected a (1, C, kh, kw) weight, got {tuple(weight.shape)}")
    ph, pw = padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    c, kh, kw = weight.shape[1:]
    taps = weight.reshape(c, kh * kw).t().reshape(kh * kw, c, 1, 1)
    y = _ShiftSum.apply(F.conv2d(x, taps), kh, kw)
    return y if bias is None else y + bias.view(1, 1, 1, 1)


class SingleOutputConv2d(nn.Conv2d):
    """`nn.Conv2d` that uses `conv2d_single_output` on CPU when it applies (one output channel, stride and
    dilation 1, one group, zero padding given as numbers, a kernel larger than 1x1) and pays (`MIN_REDUCTION`)."""

    def _fast(self, x: torch.Tensor) -> bool:
        return (
            _STATE["enabled"]
            and x.device.type == "cpu"
            and x.dim() == 4
            and self.out_channels == 1
            and self.groups == 1
            and self.stride == (1, 1)
            and self.dilation == (1, 1)
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.kernel_size != (1, 1)
            and self.in_channels * self.kernel_size[0] * self.kernel_size[1] >= MIN_REDUCTION
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return conv2d_single_output(x, self.weight, self.bias, tuple(self.padding))  # type: ignore[arg-type]
        return super().forward(x)


def use_single_output_convs(net: nn.Module) -> nn.Module:
    """Turn every `nn.Conv2d` of `net` with one output channel into a `SingleOutputConv2d` in place (the same
    parameter tensors, so state dicts and optimizers are unaffected); returns `net`."""
    for module in net.modules():
        if type(module) is nn.Conv2d and module.out_channels == 1:
            module.__class__ = SingleOutputConv2d
    return net
