"""The subject-level train/val/test split: seeded, independent of input order, optionally pinned by a TSV."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pipeline.io.tables import SPLITS, read_tsv

log = logging.getLogger(__name__)


def read_overrides(path: str | Path) -> dict[str, str]:
    """Subject -> split from an optional TSV with columns `subject` and `split` (rows with empty split ignored)."""
    path = Path(path)
    overrides = {}
    for line, row in enumerate(read_tsv(path, ("subject", "split"), "split overrides"), start=2):
        subject, split = row["subject"].strip(), row["split"].strip()
        if not subject or not split:
            continue
        if split not in SPLITS:
            raise ValueError(f"{path}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
        overrides[subject] = split
    return overrides


def _allocate(n: int, weights: Sequence[float], min_one: Sequence[bool]) -> list[int]:
    """Split `n` items into len(weights) counts by largest remainder; every `min_one` bin gets >= 1 if possible."""
    total = float(sum(weights))
    if n == 0:
        return [0] * len(weights)
    quotas = [n * w / total for w in weights] if total > 0 else [0.0] * len(weights)
    counts = [int(np.floor(q + 1e-9)) for q in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i, need in enumerate(min_one):
        if need and counts[i] == 0:
            donor = max(range(len(counts)), key=lambda j: (counts[j], -j))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[i] += 1
    return counts


def assign_splits(
    subjects: Sequence[str],
    ratios: Mapping[str, float],
    seed: int,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> train/val/test, deterministic for `seed` and independent of the order of `subjects`.

    Target counts follow `ratios` (largest remainder); with 3 or more subjects every split with a ratio > 0
    gets at least one. Subjects in `overrides` keep their split; the others are shuffled (seeded) and fill
    what the targets still need.
    """
    subjects = sorted(set(subjects))
    overrides = dict(overrides or {})
    weights = [float(ratios.get(s, 0.0)) for s in SPLITS]
    enough = len(subjects) >= 3
    targets = _allocate(len(subjects), weights, [enough and w > 0 for w in weights])
    pinned = {s: overrides[s] for s in subjects if s in overrides}
    unknown = sorted(set(overrides) - set(subjects))
    if unknown:
        log.warning("split overrides name subjects not in the data: %s", ", ".join(unknown))
    free = [s for s in subjects if s not in pinned]
    have = [sum(1 for v in pinned.values() if v == split) for split in SPLITS]
    still = [max(t - h, 0) for t, h in zip(targets, have, strict=True)]
    counts = _allocate(
        len(free),
        still if sum(still) > 0 else weights,
        [enough and w > 0 and h == 0 for w, h in zip(weights, have, strict=True)],
    )
    order = np.random.default_rng(seed).permutation(len(free))
    result = dict(pinned)
    start = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for i in order[start : start + count]:
            result[free[i]] = split
        start += count
    return {s: result[s] for s in subjects}
