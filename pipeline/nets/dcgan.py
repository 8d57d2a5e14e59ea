"""The conditional DCGAN's networks (`pipeline.models.dcgan`): the condition code, the generator and discriminator
(DCGAN guidelines), their initialisation, batch-norm re-estimation of averaged weights, and sampling."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def condition_vector(contrast: torch.Tensor, position: torch.Tensor, n_contrasts: int) -> torch.Tensor:
    """The condition code: one-hot contrast and the position mapped to [-1, 1], (N, n_contrasts + 1)."""
    onehot = torch.nn.functional.one_hot(contrast.long(), n_contrasts).float()
    return torch.cat([onehot, position.float()[:, None] * 2.0 - 1.0], dim=1)


def _levels(size: int) -> int:
    """Stride-2 levels between 4 x 4 and `size` x `size`."""
    return int(round(math.log2(size))) - 2


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift are functions of the condition code (conditional batch norm, as in the
    projection-discriminator cGAN of Miyato & Koyama 2018): ``(1 + gamma(c)) * BN(x) + beta(c)``, gamma and beta
    linear in the code (`init_dcgan` draws their weights N(0, 0.02), as it draws plain batch norm's scale N(1, 0.02))."""

    def __init__(self, channels: int, cdim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.affine = nn.Linear(cdim, 2 * channels)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.affine(code).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return self.norm(x) * (1.0 + gamma) + beta


class Generator(nn.Module):
    """DCGAN generator: [z, condition] (a 1x1 map) -> 4x4 -> ... -> size x size, transposed conv + BN + ReLU,
    tanh output in [-1, 1]. With `conditional_norm` every batch norm takes its scale and shift from the condition
    (`ConditionalBatchNorm2d`), so the condition acts at every resolution and not only through the input."""

    def __init__(self, nz: int, n_contrasts: int, ngf: int, size: int, conditional_norm: bool = False) -> None:
        super().__init__()
        self.nz, self.n_contrasts, self.conditional_norm = nz, n_contrasts, conditional_norm
        cdim = n_contrasts + 1
        n = _levels(size)
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]  # 4x4 ... size/2

        def norm(c: int) -> nn.Module:
            return ConditionalBatchNorm2d(c, cdim) if conditional_norm else nn.BatchNorm2d(c)

        layers: list[nn.Module] = [nn.ConvTranspose2d(nz + cdim, widths[0], 4, 1, 0, bias=False), norm(widths[0]),
                                   nn.ReLU(True)]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), norm(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], 1, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, contrast: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        cond = condition_vector(contrast, position, self.n_contrasts).to(z.dtype)
        x = torch.cat([z, cond], dim=1)[:, :, None, None]
        for layer in self.net:
            x = layer(x, cond) if isinstance(layer, ConditionalBatchNorm2d) else layer(x)
        return x


class Discriminator(nn.Module):
    """DCGAN discriminator: strided conv + BN + LeakyReLU(0.2) from size x size to 4x4, then a 4x4 conv to one logit;
    the condition as constant input maps (``concat``) or a projection term (``projection``). With `classifier`
    (projection only: its features see the image alone) a second 4x4 head gives contrast logits (AC-GAN's auxiliary
    classifier, Odena et al. 2017). `forward` returns (real/fake logits, contrast logits or None)."""

    def __init__(self, n_contrasts: int, ndf: int, size: int, condition: str = "concat", classifier: bool = False) -> None:
        super().__init__()
        if classifier and condition != "projection":
            raise ValueError("the auxiliary contrast classifier needs condition 'projection' (with 'concat' the "
                             "discriminator's features already see the contrast)")
        self.n_contrasts, self.condition = n_contrasts, condition
        cdim = n_contrasts + 1
        n = _levels(size)
        widths = [ndf * 2 ** i for i in range(n)]
        layers: list[nn.Module] = [nn.Conv2d(1 + (cdim if condition == "concat" else 0), widths[0], 4, 2, 1),
                                   nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(widths[-1], 1, 4, 1, 0)
        self.embed = nn.Linear(cdim, widths[-1], bias=False) if condition == "projection" else None
        self.classify = nn.Conv2d(widths[-1], n_contrasts, 4, 1, 0) if classifier else None

    def forward(self, image: torch.Tensor, contrast: torch.Tensor,
                position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        code = condition_vector(contrast, position, self.n_contrasts).to(image.dtype)
        x = image
        if self.condition == "concat":
            maps = code[:, :, None, None].expand(-1, -1, *image.shape[2:])
            x = torch.cat([image, maps], dim=1)
        h = self.features(x)
        logit = self.head(h).flatten(1).sum(1)
        if self.embed is not None:
            logit = logit + (self.embed(code) * h.sum(dim=(2, 3))).sum(1)
        return logit, self.classify(h).flatten(1) if self.classify is not None else None


def init_dcgan(net: nn.Module) -> nn.Module:
    """The DCGAN paper's initialisation: conv weights N(0, 0.02), BN weights N(1, 0.02), biases 0."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


@torch.no_grad()
def recalibrate_batchnorm(generator: Generator, batches: int = 100, batch_size: int = 64, seed: int = 0) -> Generator:
    """Re-estimate the batch-norm statistics of `generator` from its own forward passes (cumulative averages over
    `batches` batches of noise, uniform contrasts and positions; seeded); returned in eval mode. Averaged weights
    (`DCGAN.ema`) have no statistics of their own: with averaged statistics instead, the demo's samples were washed
    out (T2w samples 0% classified as T2w; 81% after recalibration)."""
    bns = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in bns]
    device = next(generator.parameters()).device
    generator.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    g = torch.Generator().manual_seed(seed)
    for _ in range(batches):
        z = torch.randn(batch_size, generator.nz, generator=g)
        c = torch.randint(0, generator.n_contrasts, (batch_size,), generator=g)
        p = torch.rand(batch_size, generator=g)
        generator(z.to(device), c.to(device), p.to(device))
    for m, momentum in zip(bns, momenta, strict=True):
        m.momentum = momentum
    return generator.eval()


@torch.no_grad()
def sample(generator: Generator, contrast: int, positions: np.ndarray | torch.Tensor, seed: int,
           batch: int = 256) -> np.ndarray:
    """Samples of contrast index `contrast` at `positions` (one each), noise from `seed`: (n, s, s) in [0, 1]."""
    pos = torch.as_tensor(np.asarray(positions, np.float32))
    device = next(generator.parameters()).device
    g = torch.Generator().manual_seed(int(seed))
    z = torch.randn(len(pos), generator.nz, generator=g)
    out = []
    for i in range(0, len(pos), batch):
        zz, pp = z[i:i + batch].to(device), pos[i:i + batch].to(device)
        cc = torch.full((len(pp),), int(contrast), dtype=torch.long, device=device)
        out.append(generator(zz, cc, pp).float().cpu())
    if not out:
        return np.zeros((0, 0, 0), np.float32)
    return ((torch.cat(out)[:, 0] + 1.0) / 2.0).clamp(0, 1).numpy()
