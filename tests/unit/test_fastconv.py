"""The CPU fast path for single-output-channel convolutions equals the plain convolution (values and gradients)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.nets.fastconv import (
    MIN_REDUCTION,
    SingleOutputConv2d,
    conv2d_single_output,
    reference_kernels,
    use_single_output_convs,
)


def _grads(fn, x, w, b):
    y = fn(x, w, b)
    gx, gw, gb = torch.autograd.grad((y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum(), [x, w, b])
    return y, gx, gw, gb


@pytest.mark.parametrize(("n", "c", "h", "w", "kh", "kw", "pad"), [
    (1, 8, 20, 20, 7, 7, (0, 0)),
    (3, 5, 17, 23, 9, 9, (4, 4)),
    (2, 16, 15, 15, 4, 4, (1, 1)),
    (2, 4, 12, 10, 3, 5, (1, 2)),
])
def test_matches_conv2d_values_and_gradients(n, c, h, w, kh, kw, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, c, kh, kw, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, generator=gen, dtype=torch.float64, requires_grad=True)
    ref = _grads(lambda a, b_, c_: F.conv2d(a, b_, c_, padding=pad), x, weight, bias)
    fast = _grads(lambda a, b_, c_: conv2d_single_output(a, b_, c_, pad), x, weight, bias)
    assert ref[0].shape == fast[0].shape
    for r, f in zip(ref, fast, strict=True):
        torch.testing.assert_close(f, r, rtol=1e-10, atol=1e-10)


def test_module_is_a_drop_in_conv2d():
    torch.manual_seed(0)
    plain = nn.Conv2d(128, 1, 5, padding=2)  # a reduction of 128 x 5 x 5 >= MIN_REDUCTION
    fast = SingleOutputConv2d(128, 1, 5, padding=2)
    fast.load_state_dict(plain.state_dict())  # same keys and shapes
    assert fast._fast(torch.zeros(1, 128, 8, 8))
    x = torch.randn(2, 128, 11, 9)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    with reference_kernels():
        assert not fast._fast(x)
        torch.testing.assert_close(fast(x), plain(x), rtol=0, atol=0)
    assert fast._fast(x)  # restored after the block


def test_falls_back_where_it_does_not_apply():
    x = torch.randn(1, 400, 10, 10)
    for conv in (SingleOutputConv2d(400, 2, 3), SingleOutputConv2d(400, 1, 3, stride=2), SingleOutputConv2d(400, 1, 1),
                 SingleOutputConv2d(400, 1, 3, padding=1, padding_mode="reflect"),
                 SingleOutputConv2d(400, 1, 3, padding="same")):
        assert not conv._fast(x)
        torch.testing.assert_close(conv(x), nn.Conv2d.forward(conv, x))


def test_short_reductions_take_the_direct_kernel():
    # the demo CycleGAN's 7x7 16 -> 1 output layer and a 4x4 128 -> 1 PatchGAN head: direct is faster there
    for conv in (SingleOutputConv2d(16, 1, 7), SingleOutputConv2d(128, 1, 4, padding=1)):
        assert conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] < MIN_REDUCTION
        assert not conv._fast(torch.zeros(1, conv.in_channels, 16, 16))
    assert SingleOutputConv2d(64, 1, 7)._fast(torch.zeros(1, 64, 16, 16))  # the reference CycleGAN's (ngf 64)


def test_use_single_output_convs_swaps_in_place():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 1, 3), nn.Conv3d(4, 1, 3))
    before = {k: v.data_ptr() for k, v in net.state_dict().items()}
    use_single_output_convs(net)
    assert type(net[0]) is nn.Conv2d and type(net[1]) is SingleOutputConv2d and type(net[2]) is nn.Conv3d
    assert {k: v.data_ptr() for k, v in net.state_dict().items()} == before


def test_generators_use_it_for_their_output_layer():
    from pipeline.nets.resnet_generator import ResnetGenerator
    from pipeline.nets.srresnet import SRResNet

    g = ResnetGenerator(2, 1, 1, ngf=4, n_blocks=1)
    assert isinstance(g.model[-2], SingleOutputConv2d)
    sr = SRResNet(2, (2, 2), channels=8, n_blocks=1, upsampler="stages", interp_skip="none")
    assert isinstance(sr.tail, SingleOutputConv2d)
    x = torch.rand(1, 1, 8, 8)
    y_fast = sr(x)
    with reference_kernels():
        torch.testing.assert_close(sr(x), y_fast, rtol=1e-5, atol=1e-5)
    assert not isinstance(ResnetGenerator(3, 1, 1, ngf=4, n_blocks=1).model[-2], SingleOutputConv2d)
