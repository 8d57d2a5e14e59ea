"""Seeding: the global RNGs at the start of a run, deterministic kernels, and the per-step stream of a sampler.

A sampler draws the batch of step ``k`` from `step_seed(seed, k)`, so a resumed run sees exactly the batches an
uninterrupted one would (the loop's exact-resume contract).
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from pipeline.gan import distributed


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before building the model, so initial weights are seeded)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(device: torch.device, deterministic: bool = True) -> None:
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def step_seed(seed: int, step: int, rank: int | None = None) -> np.random.Generator:
    """The generator a sampler uses for step `step`: independent streams, a pure function of (seed, step).

    Under DDP (world size > 1) each rank draws its own shard of the step's batch from child `rank` of the
    step's seed sequence (`numpy.random.SeedSequence` spawn key), a pure function of (seed, step, rank);
    `rank` defaults to this process's rank. With one process the stream is that of (seed, step) alone, as
    it always was.
    """
    if rank is None:
        where = distributed.info()
        rank = where.rank if where.enabled else None
    if rank is None:
        return np.random.default_rng([seed % 2**63, step])
    return np.random.default_rng(np.random.SeedSequence([seed % 2**63, step], spawn_key=(int(rank),)))
