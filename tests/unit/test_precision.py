"""Precision modes on the CPU: bf16 autocast where the CPU computes bf16 natively, channels-last 2D, fp32 elsewhere."""

from __future__ import annotations

import pytest
import torch

from pipeline.gan import base
from pipeline.gan.base import Precision, cpu_has_bf16
from pipeline.models.cyclegan import CycleGAN
from tests.unit.test_cyclegan import tiny_cfg

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no native bf16")


@pytest.mark.parametrize("native", [True, False])
def test_auto_and_bf16_follow_the_cpu(monkeypatch, native):
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: native)
    expected = "bf16" if native else "fp32"
    assert Precision(CPU, "auto").mode == expected
    assert Precision(CPU, "bf16").mode == expected
    assert Precision(CPU, "fp16").mode == "fp32"  # fp16 autocast on a CPU is slower than fp32
    assert Precision(CPU, "fp32").mode == "fp32"
    assert (Precision(CPU, "auto").dtype is torch.bfloat16) == native


def test_channels_last_only_for_2d_bf16_on_the_cpu(monkeypatch):
    monkeypatch.setattr(base, "cpu_has_bf16", lambda: True)
    assert Precision(CPU, "bf16").channels_last(2)
    assert not Precision(CPU, "bf16").channels_last(3)
    assert not Precision(CPU, "fp32").channels_last(2)


@needs_bf16
def test_a_bf16_cyclegan_step_on_the_cpu_is_channels_last_and_finite():
    torch.manual_seed(0)
    model = CycleGAN(tiny_cfg(precision="bf16"), device=CPU)
    assert model.precision.mode == "bf16"
    conv = next(m for m in model.networks["G_AB"].modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    batch = {"A": torch.rand(2, 1, 16, 16), "B": torch.rand(2, 1, 16, 16)}
    before = {k: p.detach().clone() for k, p in model.networks["G_AB"].named_parameters()}
    model.set_input(batch)
    model.optimize_step(0)
    losses = model.losses()
    assert all(torch.isfinite(torch.as_tensor(v)) for v in losses.values())
    assert all(p.dtype == torch.float32 for p in model.networks["G_AB"].parameters())  # master weights stay fp32
    assert any(not torch.equal(before[k], p) for k, p in model.networks["G_AB"].named_parameters())


@needs_bf16
def test_bf16_generator_output_is_close_to_fp32():
    torch.manual_seed(0)
    model = CycleGAN(tiny_cfg(precision="fp32"), device=CPU)
    G = model.networks["G_AB"].eval()
    x = torch.rand(1, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = G(x)
        with Precision(CPU, "bf16").autocast():
            low = G(x.contiguous(memory_format=torch.channels_last)).float()
    assert not torch.equal(ref, low)  # bf16 really ran
    assert torch.allclose(ref, low, atol=3e-2)
