"""The subject-level train/val/test split: seeded, independent of input order, optionally pinned by a TSV
(`pipeline.preprocessing.overrides`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.io.tables import SPLITS


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


def _shares(ratios: Mapping[str, float]) -> str:
    return ", ".join(f"{split} {float(ratios.get(split, 0.0)):g}" for split in SPLITS)


def _check_enough(n: int, ratios: Mapping[str, float]) -> None:
    """Raise ValueError when `n` subjects cannot give each split with a share > 0 at least one subject."""
    needed = [split for split in SPLITS if float(ratios.get(split, 0.0)) > 0]
    if n < len(needed):
        raise ValueError(
            f"the split needs at least {len(needed)} subjects, one for each split with a share > 0 "
            f"({', '.join(needed)}; shares {_shares(ratios)}), and there are {n}: add subjects, or set the share "
            "of a split you can do without to 0 (e.g. preprocess.split.val: 0; evaluation scores the test split)"
        )


def assign_splits(
    subjects: Sequence[str],
    ratios: Mapping[str, float],
    seed: int,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Subject -> train/val/test, deterministic for `seed` and independent of the order of `subjects`.

    Target counts follow `ratios` (largest remainder), and every split with a ratio > 0 gets at least one
    subject: fewer subjects than such splits is a ValueError that says how many there are and how many are
    needed. Subjects in `overrides` (pseudonyms, all of them in `subjects`) keep their split; the others are
    shuffled (seeded) and fill what the targets still need; pins that leave a split with a ratio > 0 empty are a
    ValueError too.
    """
    subjects = sorted(set(subjects))
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(subjects))
    if unknown:
        raise ValueError(f"split overrides name subjects not in the data: {', '.join(unknown)}")
    _check_enough(len(subjects), ratios)
    weights = [float(ratios.get(s, 0.0)) for s in SPLITS]
    targets = _allocate(len(subjects), weights, [w > 0 for w in weights])
    pinned = {s: overrides[s] for s in subjects if s in overrides}
    free = [s for s in subjects if s not in pinned]
    have = [sum(1 for v in pinned.values() if v == split) for split in SPLITS]
    still = [max(t - h, 0) for t, h in zip(targets, have, strict=True)]
    counts = _allocate(
        len(free),
        still if sum(still) > 0 else weights,
        [w > 0 and h == 0 for w, h in zip(weights, have, strict=True)],
    )
    empty = [split for split, w, h, c in zip(SPLITS, weights, have, counts, strict=True) if w > 0 and h + c == 0]
    if empty:
        held = ", ".join(f"{split} {h}" for split, h in zip(SPLITS, have, strict=True) if h) or "none"
        raise ValueError(
            f"the split leaves {' and '.join(empty)} without a subject: of {len(subjects)} subjects, "
            f"{len(pinned)} are pinned by the override file ({held}) and {len(free)} left for the rest; every "
            f"split with a share > 0 needs one (shares {_shares(ratios)}): pin fewer subjects, or set the share "
            "of a split you can do without to 0"
        )
    order = np.random.default_rng(seed).permutation(len(free))
    result = dict(pinned)
    start = 0
    for split, count in zip(SPLITS, counts, strict=True):
        for i in order[start : start + count]:
            result[free[i]] = split
        start += count
    return {s: result[s] for s in subjects}
