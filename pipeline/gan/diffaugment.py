"""Differentiable augmentation of the discriminator's inputs (DiffAugment, Zhao et al. 2020).

With little data the discriminator memorises the real images and its verdicts stop guiding the generator. DiffAugment
applies the same kind of random transform to real *and* generated images every time the discriminator sees them (in
its own step and in the generator's), with gradients flowing through the transform to the generator, so the
discriminator cannot rely on details an augmentation changes and the generator still learns the un-augmented
distribution (the transforms are applied to both sides, never leaked into the samples).

Written for MR slices: what falls outside the image or is cut out becomes *background* (-1 in the [-1, 1] range the
GAN families use), not mid-grey. The randomness comes from torch's global RNG, which the training loop saves and
restores, so a resumed run draws the same transforms. Intensity transforms are left out: brightness and contrast
carry the MR contrast itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def translate(x: torch.Tensor, ratio: float = 0.125, background: float = -1.0) -> torch.Tensor:
    """Shift each image by a random whole number of pixels, up to `ratio` of its size / 2 along each axis; what
    enters from outside is `background`."""
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio / 2 + 0.5)), max(1, int(w * ratio / 2 + 0.5))
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1) - dy + sy  # row read from the padded image
    xs = torch.arange(w, device=x.device).view(1, 1, w) - dx + sx
    padded = F.pad(x, (sx, sx, sy, sy), value=background)
    b = torch.arange(n, device=x.device).view(n, 1, 1)
    # index the padded image at (row, column) per sample; channels ride along
    return padded.permute(0, 2, 3, 1)[b, ys.expand(n, h, w), xs.expand(n, h, w)].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5, background: float = -1.0) -> torch.Tensor:
    """Set a random square of `ratio` of the image's size to `background` in each image (its centre anywhere in the
    image, so it may be clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch) & (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, background), x)


#: the transforms by name (a config's `augment` list names them)
TRANSFORMS = {"translation": translate, "cutout": cutout}
POLICIES = tuple(TRANSFORMS)


def diff_augment(x: torch.Tensor, policy: Sequence[str], background: float = -1.0) -> torch.Tensor:
    """Apply the listed transforms (of `POLICIES`, in order) to a batch (N, C, H, W); an empty policy returns `x`."""
    for name in policy:
        if name not in TRANSFORMS:
            raise ValueError(f"unknown DiffAugment transform {name!r}; choose from {', '.join(POLICIES)}")
        x = TRANSFORMS[name](x, background=background)
    return x
