"""Statistics of per-subject metrics: descriptive (n, mean, SD, bootstrap CI) and paired (model - baseline)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.config import EvaluateConfig
from pipeline.evaluation.metrics import HIGHER_IS_BETTER


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def bootstrap_ci(values: Sequence[float], cfg: EvaluateConfig) -> tuple[float | None, float | None]:
    """Percentile-bootstrap CI of the mean (seeded); (None, None) with fewer than 2 finite values."""
    from scipy.stats import bootstrap

    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if arr.size < 2:
        return None, None
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    res = bootstrap(
        (arr,),
        np.mean,
        n_resamples=cfg.bootstrap_resamples,
        confidence_level=cfg.confidence,
        method="percentile",
        rng=np.random.default_rng(cfg.seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def describe(values: Sequence[float], cfg: EvaluateConfig) -> dict[str, Any]:
    """n, mean, SD and bootstrap CI of one metric of one method."""
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    lo, hi = bootstrap_ci(arr, cfg)
    return {
        "n": int(arr.size),
        "n_nonfinite": int(len(values) - arr.size),
        "mean": _finite(float(arr.mean())) if arr.size else None,
        "sd": _finite(float(arr.std(ddof=1))) if arr.size >= 2 else None,
        "ci_low": lo,
        "ci_high": hi,
    }


def wilcoxon_p(diffs: Sequence[float]) -> tuple[float | None, str]:
    """Two-sided Wilcoxon signed-rank p-value of paired differences, or None with the reason."""
    from scipy.stats import wilcoxon

    arr = np.asarray(diffs, dtype=np.float64)
    if arr.size < 2:
        return None, "too few subjects for a confidence interval or a test"
    if np.all(arr == 0):
        return 1.0, "all differences are 0"
    try:
        p = float(wilcoxon(arr).pvalue)
    except ValueError as exc:
        return None, f"no test: {exc}"
    return _finite(p), ""


def compare(model: Sequence[float], baseline: Sequence[float], metric: str, cfg: EvaluateConfig) -> dict[str, Any]:
    """Paired comparison model - baseline of one metric over the same subjects (in the same order).

    Verdict: `worse` as soon as the bootstrap CI of the mean difference lies entirely on the bad side of 0,
    whatever the Wilcoxon p-value (a model that loses on every subject must be called worse even with too few
    subjects for the test; `note` says when p is not below alpha); `better` only when the CI lies entirely on
    the good side of 0 and p < alpha; `n/a` without a CI (fewer than 2 pairs) or, short of `worse`, without a
    p-value; otherwise `inconclusive`.
    """
    pairs = [(m, b) for m, b in zip(model, baseline, strict=True) if math.isfinite(m) and math.isfinite(b)]
    diffs = [m - b for m, b in pairs]
    lo, hi = bootstrap_ci(diffs, cfg)
    p, note = wilcoxon_p(diffs)
    mean = float(np.mean(diffs)) if diffs else None
    alpha = 1.0 - cfg.confidence
    higher = HIGHER_IS_BETTER[metric]
    # The smallest two-sided exact Wilcoxon p-value with n pairs is 2 / 2^n.
    cannot_reach = f"n = {len(diffs)} is too few for the Wilcoxon test to reach p < {alpha:g}"
    too_few = 2.0 ** (1 - len(diffs)) >= alpha
    if lo is None or hi is None:
        verdict = "n/a"
    elif (hi < 0) if higher else (lo > 0):
        verdict = "worse"
        if p is None or p >= alpha:
            side = "below" if higher else "above"
            why = cannot_reach if too_few else (note or f"Wilcoxon p = {p:.2g}, not significant")
            note = f"the CI lies {side} 0; {why}"
    elif p is None:
        verdict = "n/a"
    elif ((lo > 0) if higher else (hi < 0)) and p < alpha:
        verdict = "better"
    else:
        verdict = "inconclusive"
        if too_few and not note:
            note = cannot_reach
    return {
        "n": len(diffs),
        "mean_diff": mean,
        "ci_low": lo,
        "ci_high": hi,
        "wilcoxon_p": p,
        "note": note,
        "higher_is_better": higher,
        "verdict": verdict,
    }
