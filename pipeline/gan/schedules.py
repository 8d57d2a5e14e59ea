"""Learning-rate schedules as per-step factors (for `torch.optim.lr_scheduler.LambdaLR`, stepped once per
iteration by the loop, so the factor is a function of the step and resume is exact)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any


def cosine_factor(t: int, length: int, min_ratio: float) -> float:
    """Cosine decay from 1 to `min_ratio` over `length` steps (t clipped to [0, length])."""
    if length <= 0:
        return 1.0
    t = min(max(t, 0), length)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * t / length))


def linear_decay(n_steps: int, n_steps_decay: int) -> Callable[[int], float]:
    """The reference's 'linear' policy per step: 1 for `n_steps`, then linearly towards 0 over `n_steps_decay`."""

    def factor(step: int) -> float:
        return 1.0 - max(0, step - n_steps) / float(n_steps_decay + 1)

    return factor


def linear_decay_schedulers(optimizers: Mapping[str, Any], n_steps: int, n_steps_decay: int) -> dict[str, Any]:
    """A `LambdaLR` with `linear_decay(n_steps, n_steps_decay)` for each optimizer, under the same names (the
    translation families' schedule)."""
    import torch

    decay = linear_decay(n_steps, n_steps_decay)
    return {k: torch.optim.lr_scheduler.LambdaLR(opt, decay) for k, opt in optimizers.items()}
