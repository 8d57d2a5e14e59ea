"""Adversarial objectives on discriminator logits, plus the helpers that freeze a network.

All losses take raw logits (the discriminator has no final sigmoid) and use `softplus`, which is the
numerically stable form of the log-sigmoid terms:

* ``-log D(x) = -log sigmoid(l) = softplus(-l)`` and ``-log(1 - D(x)) = softplus(l)``.

Kinds (`kind` argument):

``nonsaturating`` (Goodfellow et al. 2014, the default)
    D minimises ``J_D = -mean log D(x) - mean log(1 - D(G(z)))``;
    G minimises the non-saturating ``J_G = -mean log D(G(z))``.
``minimax``
    the same J_D; G minimises the saturating ``mean log(1 - D(G(z)))`` (the original minimax game).
``lsgan`` (Mao et al. 2017, a=0, b=c=1)
    ``J_D = 1/2 mean (l_real - 1)^2 + 1/2 mean l_fake^2``; ``J_G = 1/2 mean (l_fake - 1)^2``.
``hinge`` (Lim & Ye 2017; Miyato et al. 2018)
    ``J_D = mean relu(1 - l_real) + mean relu(1 + l_fake)``; ``J_G = -mean l_fake``.

Patch discriminators return a map of logits; every mean is over all its elements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

GAN_LOSSES = ("nonsaturating", "minimax", "lsgan", "hinge")


def _check(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ValueError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSSES)}")


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The discriminator's objective J_D for logits of real and of generated samples."""
    _check(kind)
    real, fake = real_logits.float(), fake_logits.float()
    if kind in ("nonsaturating", "minimax"):
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "lsgan":
        return 0.5 * (real - 1.0).pow(2).mean() + 0.5 * fake.pow(2).mean()
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()  # hinge


def g_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's objective J_G for the discriminator's logits of generated samples."""
    _check(kind)
    fake = fake_logits.float()
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind == "minimax":
        return -F.softplus(fake).mean()  # mean log(1 - sigmoid(l)) = -mean softplus(l)
    if kind == "lsgan":
        return 0.5 * (fake - 1.0).pow(2).mean()
    return -fake.mean()  # hinge


def feature_matching_loss(real_features: Sequence[torch.Tensor], fake_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean L1 distance between the discriminator's intermediate features of real and generated samples.

    The real features are detached (they are targets). The last element of each list (the logits) is not
    used; pass the lists as returned by the discriminators in `pipeline.nets`.
    """
    pairs = list(zip(real_features[:-1], fake_features[:-1], strict=True))
    if not pairs:
        raise ValueError("feature matching needs a discriminator with intermediate features")
    return sum(F.l1_loss(f.float(), r.detach().float()) for r, f in pairs) / len(pairs)


def pixel_loss(output: torch.Tensor, target: torch.Tensor, kind: str = "l1",
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel-wise content loss: ``l1`` (mean absolute error) or ``mse``; with a 0/1 `mask` the mean over its voxels
    only (0 when it is empty)."""
    if kind not in ("l1", "mse"):
        raise ValueError(f"unknown pixel loss {kind!r}; choose one of l1, mse")
    if mask is None:
        return (F.l1_loss if kind == "l1" else F.mse_loss)(output.float(), target.float())
    diff = output.float() - target.float()
    err = diff.abs() if kind == "l1" else diff**2
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def set_requires_grad(nets: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze (`flag=False`) or unfreeze every parameter of one or several networks."""
    if isinstance(nets, nn.Module):
        nets = [nets]
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def gradient_penalty(critic: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): ``mean (|grad_x critic(x_hat)|_2 - 1)^2`` on random interpolates ``x_hat``
    of real and fake samples (`critic` maps a batch to its logits)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (alpha * real.detach().float() + (1 - alpha) * fake.detach().float()).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x_hat).float().sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).pow(2).mean()
