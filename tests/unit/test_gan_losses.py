"""The adversarial objectives against their formulas, by hand; freezing keeps gradients out of a network."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.gan.losses import (
    GAN_LOSSES,
    d_loss,
    feature_matching_loss,
    g_loss,
    gradient_penalty,
    pixel_loss,
    set_requires_grad,
)

REAL = torch.tensor([0.0, 2.0])
FAKE = torch.tensor([-1.0, 1.0])


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mean(xs) -> float:
    return sum(xs) / len(xs)


def test_classic_d_loss_is_the_cross_entropy_formula():
    # J_D = -mean log D(x) - mean log(1 - D(G(z))), D = sigmoid(logit)
    expected = -mean([math.log(sigmoid(r)) for r in REAL.tolist()]) - mean(
        [math.log(1 - sigmoid(f)) for f in FAKE.tolist()]
    )
    # by hand: (0.693147 + 0.126928)/2 + (0.313262 + 1.313262)/2
    assert expected == pytest.approx(1.223300, abs=1e-6)
    for kind in ("nonsaturating", "minimax"):
        assert d_loss(REAL, FAKE, kind).item() == pytest.approx(expected, abs=1e-6)


def test_nonsaturating_g_loss():
    expected = -mean([math.log(sigmoid(f)) for f in FAKE.tolist()])  # (1.313262 + 0.313262)/2
    assert expected == pytest.approx(0.813262, abs=1e-6)
    assert g_loss(FAKE, "nonsaturating").item() == pytest.approx(expected, abs=1e-6)


def test_minimax_g_loss_is_the_saturating_form():
    expected = mean([math.log(1 - sigmoid(f)) for f in FAKE.tolist()])  # (-0.313262 - 1.313262)/2
    assert expected == pytest.approx(-0.813262, abs=1e-6)
    assert g_loss(FAKE, "minimax").item() == pytest.approx(expected, abs=1e-6)


def test_least_squares_and_hinge():
    # LSGAN: 1/2 mean (r-1)^2 + 1/2 mean f^2 = 0.5*(1+1)/2 + 0.5*(1+1)/2 = 1.0 ; G: 1/2 mean (f-1)^2 = 0.5*(4+0)/2
    assert d_loss(REAL, FAKE, "lsgan").item() == pytest.approx(1.0)
    assert g_loss(FAKE, "lsgan").item() == pytest.approx(1.0)
    # hinge: mean relu(1-r) + mean relu(1+f) = (1+0)/2 + (0+2)/2 = 1.5 ; G: -mean f = 0
    assert d_loss(REAL, FAKE, "hinge").item() == pytest.approx(1.5)
    assert g_loss(FAKE, "hinge").item() == pytest.approx(0.0)


def test_losses_are_finite_at_extreme_logits():
    big = torch.tensor([1e4, -1e4, 80.0, -80.0], requires_grad=True)
    for kind in GAN_LOSSES:
        loss = d_loss(big, big, kind) + g_loss(big, kind)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(big.grad).all(), kind
        big.grad = None
    # a confident, correct discriminator has a loss near 0 (softplus(-1e4) underflows cleanly, no log(0))
    assert d_loss(torch.tensor([1e4]), torch.tensor([-1e4])).item() == pytest.approx(0.0, abs=1e-12)


def test_maps_are_averaged_over_all_elements():
    real = torch.zeros(2, 1, 3, 3)
    fake = torch.zeros(2, 1, 3, 3)
    assert d_loss(real, fake).item() == pytest.approx(2 * math.log(2), abs=1e-6)


def test_unknown_kind_lists_the_choices():
    with pytest.raises(ValueError, match="nonsaturating"):
        d_loss(REAL, FAKE, "wasserstein")


def test_pixel_and_feature_matching_losses():
    a, b = torch.tensor([0.0, 1.0, 3.0]), torch.tensor([1.0, 1.0, 1.0])
    assert pixel_loss(a, b, "l1").item() == pytest.approx(1.0)
    assert pixel_loss(a, b, "mse").item() == pytest.approx(5 / 3)
    mask = torch.tensor([0.0, 1.0, 1.0])  # the mean over the masked voxels only
    assert pixel_loss(a, b, "l1", mask=mask).item() == pytest.approx(1.0)
    assert pixel_loss(a, b, "mse", mask=mask).item() == pytest.approx(2.0)
    assert pixel_loss(a, b, "mse", mask=torch.zeros(3)).item() == 0.0
    with pytest.raises(ValueError, match="unknown pixel loss"):
        pixel_loss(a, b, "l3", mask=mask)
    real = [torch.ones(2, 3), torch.zeros(2, 2), torch.tensor([9.0])]
    fake = [torch.zeros(2, 3, requires_grad=True), torch.ones(2, 2), torch.tensor([-9.0])]
    fm = feature_matching_loss(real, fake)
    assert fm.item() == pytest.approx(1.0)  # mean of the two L1s (1 and 1); the logits are not used
    fm.backward()
    assert fake[0].grad is not None


def test_set_requires_grad_keeps_gradients_out_of_a_frozen_network():
    torch.manual_seed(0)
    g, d = torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)
    z = torch.randn(4, 3)
    set_requires_grad(d, False)
    g_loss(d(g(z))).backward()
    assert all(p.grad is None for p in d.parameters())
    assert all(p.grad is not None for p in g.parameters())
    set_requires_grad(d, True)
    assert all(p.requires_grad for p in d.parameters())


def _snapshot(net):
    return [None if p.grad is None else p.grad.clone() for p in net.parameters()]


def test_srgan_step_freezes_d_during_g_step_and_g_during_d_step():
    from pipeline.models.srgan import SRGAN
    from tests.unit.sr_helpers import tiny_cfg

    torch.manual_seed(0)
    cfg = tiny_cfg(pretrain_steps=0, gan_steps=2, fm_weight=1.0)
    model = SRGAN(cfg, factors=(4, 4, 1), slice_axis=2)
    G, D = model.networks["G"], model.networks["D"]
    seen = {}
    opt_g, opt_d = model.optimizers["G"], model.optimizers["D"]
    step_g, step_d = opt_g.step, opt_d.step

    def g_step(*a, **k):
        seen["D_at_G_step"] = _snapshot(D)
        seen["G_at_G_step"] = _snapshot(G)
        seen["D_requires_grad"] = [p.requires_grad for p in D.parameters()]
        return step_g(*a, **k)

    def d_step(*a, **k):
        seen["G_at_D_step"] = _snapshot(G)
        seen["D_at_D_step"] = _snapshot(D)
        seen["G_requires_grad"] = [p.requires_grad for p in G.parameters()]
        return step_d(*a, **k)

    opt_g.step, opt_d.step = g_step, d_step
    for p in [*G.parameters(), *D.parameters()]:
        p.grad = None
    lr = torch.rand(4, 1, 4, 4)
    model.set_input({"lr": lr, "hr": torch.rand(4, 1, 16, 16)})
    model.optimize_step(0)
    # G step: no gradient reached D (adversarial + feature-matching terms both go through D)
    assert all(g is None for g in seen["D_at_G_step"])
    assert not any(seen["D_requires_grad"])
    assert all(g is not None for g in seen["G_at_G_step"])
    # D step: G's gradients are exactly those of its own step (nothing added), D got gradients
    assert all(torch.equal(a, b) for a, b in zip(seen["G_at_G_step"], seen["G_at_D_step"], strict=True))
    assert not any(seen["G_requires_grad"])
    assert all(g is not None for g in seen["D_at_D_step"])
    # both unfrozen afterwards
    assert all(p.requires_grad for p in [*G.parameters(), *D.parameters()])
    assert set(model.losses()) == {"pixel", "adv", "fm", "G", "D", "d_real", "d_fake"}


def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    torch.manual_seed(0)
    w = torch.tensor([3.0, 4.0])  # |w| = 5: a linear critic's gradient is w at every interpolate
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    assert gradient_penalty(lambda x: x @ w, real, fake).item() == pytest.approx(16.0)
    assert gradient_penalty(lambda x: x @ (w / 5), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    # a critic whose gradient differs per sample: x -> |x|^2 / 2 has gradient x_hat, so the penalty is random but
    # differentiable (WGAN-GP backpropagates through it into the critic)
    scale = torch.tensor(2.0, requires_grad=True)
    gradient_penalty(lambda x: scale * (x * x).sum(1) / 2, real, fake).backward()
    assert scale.grad is not None and scale.grad.abs() > 0
