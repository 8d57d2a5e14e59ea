"""Test-time augmentation: average a network's output over flipped (and transposed) views of its input.

Used by whole-volume inference of both models (`pipeline.models.srgan.super_resolve`,
`pipeline.models.translation.translate`): the texture a GAN invents differs between the views, the anatomy does not,
so the average is closer to the truth.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch

#: (flipped axes, first two spatial axes transposed) of an (N, C, *spatial) tensor
View = tuple[tuple[int, ...], bool]


def views(spatial_dims: int, transpose: bool, count: int | None = None) -> list[View]:
    """Every subset of the spatial axes flipped; with `transpose`, each also with the first two spatial axes swapped
    (2D: the 8 symmetries of the square; 3D without: the 8 flips). The rotations come first (an even number of
    flips and transposes; the 180-degree rotation, all 2D axes flipped, right after the identity), then the
    mirrorings, so the first `count` (None: all) are a set of views that suits a cheaper self-ensemble: 1 the
    identity, 2 the identity and a 180-degree rotation, 4 the four rotations of a square (2D with transposes; 3D:
    the four 180-degree rotations; 2D without transposes: every flip)."""
    axes = range(2, 2 + spatial_dims)
    flips = [c for k in range(spatial_dims + 1) for c in itertools.combinations(axes, k)]
    every = [(f, t) for t in ((False, True) if transpose else (False,)) for f in flips]
    every.sort(key=lambda v: ((len(v[0]) + v[1]) % 2, v[1]))  # stable: fewer flips first within each group
    if count is not None and not 1 <= count:
        raise ValueError(f"TTA view count must be >= 1, got {count}")
    return every[:count]


def average(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, views: list[View]) -> torch.Tensor:
    """The mean over `views` of ``fn`` applied to each view of `x`, its output mapped back to `x`'s orientation."""
    total = None
    for flips, transpose in views:
        v = x.transpose(2, 3) if transpose else x
        y = fn(v.flip(flips) if flips else v)
        y = y.flip(flips) if flips else y
        y = y.transpose(2, 3) if transpose else y
        total = y if total is None else total + y
    return total / len(views)
