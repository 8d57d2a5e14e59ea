"""The blinded reader study: a seeded sample of slices, each a pair of model output and strongest baseline in a
seeded random left/right order, and the un-blinding of readers' ratings files.

Evaluation writes the pairs' images as `<figures>/reader/<id>-1.png` (left) and `<id>-2.png` (right), and the key
(`<figures>/reader/key.json`: per pair its output, baseline, subject, plane, slice and the model's side) that the
report never reads; summary.json's `figures.reader` holds only what the page may show (study id, pair ids, image
paths and sizes). Pair ids are random tokens, so neither an id, a file name nor the order on the page says which
side is which. The sample and the sides follow `evaluate.seed`: whoever has the seed (it is in the report's
provenance), this code and the images can recompute them, so a reader gets `reader.html` and `assets/reader/` only.

`summarise` reads the ratings files the page downloads (`{"format", "study", "reader", "ratings": [{"pair",
"left", "right", "preference"}]}`) with the key: per output, the mean rating of model and baseline with the paired
difference's t interval, and the share of pairs where the model was preferred with its Wilson score interval and a
two-sided binomial test against 1/2.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.slices import PLANE_AXES, PLANES, plane_stack, to_uint8, write_png
from pipeline.io.atomic import write_text

FORMAT = "medgan-reader-study/1"
#: pairs per output, spread over the evaluated subjects (at least one per subject)
PAIRS_PER_OUTPUT = 10
#: a slice is sampled only where the mask covers at least this share of its plane's largest mask cross-section
MIN_MASK_SHARE = 0.5
SIDES = ("left", "right")


class ReaderStudy:
    """Collects the pairs while evaluation goes through the cases; `finish` writes the key."""

    def __init__(self, folder: Path, seed: int, pairs_per_output: int = PAIRS_PER_OUTPUT):
        self.folder, self.seed, self.pairs_per_output = Path(folder), int(seed), pairs_per_output
        self.key: dict[str, dict[str, Any]] = {}
        self.public: list[dict[str, Any]] = []

    def _rng(self, *names: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, *(zlib.crc32(n.encode()) for n in ("reader", *names))])

    def add(self, *, subject: str, output: str, task: str, baseline: str, prediction: np.ndarray,
            baseline_image: np.ndarray, mask: np.ndarray, affine: np.ndarray, data_range: float,
            n_subjects: int) -> None:
        """Sample this subject's share of `output`'s pairs and write their images."""
        rng = self._rng(subject, output)
        per_subject = max(1, math.ceil(self.pairs_per_output / max(1, n_subjects)))
        spacing = [float(np.linalg.norm(affine[:3, a])) for a in range(3)]
        for plane, index in sample_slices(mask, per_subject, rng):
            model_left = bool(rng.random() < 0.5)
            pair = self._new_id(rng)
            model_img = to_uint8(plane_stack(prediction, plane)[index], data_range)
            base_img = to_uint8(plane_stack(baseline_image, plane)[index], data_range)
            left, right = (model_img, base_img) if model_left else (base_img, model_img)
            paths = []
            for n, img in enumerate((left, right), start=1):
                path = self.folder / f"{pair}-{n}.png"
                write_png(path, img)
                paths.append(path.as_posix())
            _, (row, col) = PLANE_AXES[plane]
            self.key[pair] = {"output": output, "task": task, "baseline": baseline, "subject": subject,
                              "plane": plane, "slice": int(index), "model_side": "left" if model_left else "right"}
            self.public.append({"id": pair, "left": paths[0], "right": paths[1], "width": int(left.shape[1]),
                                "height": int(left.shape[0]), "aspect": spacing[row] / spacing[col]})

    def _new_id(self, rng: np.random.Generator) -> str:
        while True:
            pair = f"{int(rng.integers(16**6)):06x}"
            if pair not in self.key:
                return pair

    def finish(self) -> dict[str, Any] | None:
        """Write `key.json`; returns summary.json's `figures.reader` (None when there are no pairs)."""
        if not self.public:
            return None
        pairs = sorted(self.public, key=lambda p: p["id"])  # random ids: a random order, outputs interleaved
        study = hashlib.sha256(json.dumps([self.seed, [p["id"] for p in pairs]]).encode()).hexdigest()[:12]
        key = {"format": FORMAT, "study": study, "seed": self.seed, "pairs": dict(sorted(self.key.items()))}
        write_text(self.folder / "key.json", json.dumps(key, indent=2) + "\n")
        return {"format": FORMAT, "study": study, "pairs": pairs}


def sample_slices(mask: np.ndarray, k: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """`k` distinct (plane, slice) picks, planes drawn at random, slices among those whose mask cross-section is
    at least MIN_MASK_SHARE of the plane's largest (any slice when the mask is empty)."""
    eligible = {}
    for plane in PLANES:
        area = plane_stack(mask.astype(np.uint8), plane).reshape(mask.shape[PLANE_AXES[plane][0]], -1).sum(1)
        ok = np.flatnonzero(area >= MIN_MASK_SHARE * area.max()) if area.max() > 0 else np.arange(area.size)
        eligible[plane] = [int(i) for i in ok]
    picks: list[tuple[str, int]] = []
    while len(picks) < k and any(eligible.values()):
        plane = PLANES[int(rng.integers(3))]
        if not eligible[plane]:
            continue
        picks.append((plane, eligible[plane].pop(int(rng.integers(len(eligible[plane]))))))
    return picks


# ------------------------------------------------------------------------------------------ un-blinding
def _load(path: Path, what: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not a JSON {what} ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {what} of this pipeline (format {FORMAT!r})")
    return data


def _rating(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
        raise ValueError(f"{where}: a rating is 1 to 5 (or null), not {value!r}")
    return value


def unblind(files: Sequence[Path], key_path: Path) -> list[dict[str, Any]]:
    """One row per rated pair and reader: output, baseline, model and baseline ratings, which one was preferred."""
    key = _load(key_path, "reader study key")
    rows = []
    for path in files:
        data = _load(path, "ratings file")
        if data.get("study") != key["study"]:
            raise ValueError(f"{path}: ratings of study {data.get('study')!r}, the key is of study {key['study']!r}")
        for i, r in enumerate(data.get("ratings", [])):
            where = f"{path}: rating {i + 1}"
            entry = key["pairs"].get(r.get("pair"))
            if entry is None:
                raise ValueError(f"{where}: pair {r.get('pair')!r} is not in the key")
            model_side = entry["model_side"]
            base_side = SIDES[1 - SIDES.index(model_side)]
            pref = r.get("preference")
            if pref not in (None, *SIDES):
                raise ValueError(f"{where}: preference is 'left', 'right' or null, not {pref!r}")
            rows.append({"reader": str(data.get("reader") or path.name), "pair": r["pair"], "output": entry["output"],
                         "baseline": entry["baseline"], "model": _rating(r.get(model_side), where),
                         "base": _rating(r.get(base_side), where),
                         "preferred": None if pref is None else ("model" if pref == model_side else "baseline")})
    return rows


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float | None, float | None]:
    """Wilson score interval of a proportion k / n."""
    from scipy.stats import norm

    if n == 0:
        return None, None
    z = float(norm.ppf(0.5 + confidence / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _t_interval(diffs: list[float], confidence: float) -> tuple[float | None, float | None]:
    from scipy.stats import t

    n = len(diffs)
    if n < 2:
        return None, None
    mean, sd = float(np.mean(diffs)), float(np.std(diffs, ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return mean - half, mean + half


def summarise(files: Sequence[Path], key_path: Path, confidence: float = 0.95) -> dict[str, Any]:
    """Per output: ratings (mean model, mean baseline, paired difference with its t interval) and preferences
    (model preferred k of n, rate, Wilson interval, two-sided binomial p against 1/2)."""
    from scipy.stats import binomtest

    rows = unblind(files, key_path)
    out: dict[str, Any] = {}
    for output in dict.fromkeys(r["output"] for r in rows):
        mine = [r for r in rows if r["output"] == output]
        rated = [r for r in mine if r["model"] is not None and r["base"] is not None]
        diffs = [float(r["model"] - r["base"]) for r in rated]
        prefs = [r for r in mine if r["preferred"] is not None]
        k = sum(r["preferred"] == "model" for r in prefs)
        lo, hi = _t_interval(diffs, confidence)
        plo, phi = wilson(k, len(prefs), confidence)
        out[output] = {
            "baseline": mine[0]["baseline"],
            "readers": sorted({r["reader"] for r in mine}),
            "ratings": {"n": len(rated),
                        "model_mean": float(np.mean([r["model"] for r in rated])) if rated else None,
                        "baseline_mean": float(np.mean([r["base"] for r in rated])) if rated else None,
                        "mean_diff": float(np.mean(diffs)) if diffs else None, "ci_low": lo, "ci_high": hi},
            "preference": {"n": len(prefs), "model_preferred": k, "rate": k / len(prefs) if prefs else None,
                           "ci_low": plo, "ci_high": phi,
                           "binomial_p": float(binomtest(k, len(prefs)).pvalue) if prefs else None},
            "unanswered": len(mine) - len(rated),
        }
    return {"confidence": confidence, "outputs": out}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a plain-text table."""
    def num(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    level = round(summary["confidence"] * 100)
    lines = [f"{'output':<14}{'baseline':<18}{'n':>4}  {'rating model':>12}  {'baseline':>8}  "
             f"{'diff [' + str(level) + '% CI]':<24}{'preferred':>10}  {'rate [' + str(level) + '% CI]':<22}{'p':>7}"]
    for name, s in summary["outputs"].items():
        r, p = s["ratings"], s["preference"]
        diff = f"{num(r['mean_diff'], '+.2f')} [{num(r['ci_low'], '+.2f')}, {num(r['ci_high'], '+.2f')}]"
        rate = f"{num(p['rate'], '.2f')} [{num(p['ci_low'], '.2f')}, {num(p['ci_high'], '.2f')}]"
        lines.append(f"{name:<14}{s['baseline']:<18}{r['n']:>4}  {num(r['model_mean'], '.2f'):>12}  "
                     f"{num(r['baseline_mean'], '.2f'):>8}  {diff:<24}{str(p['model_preferred']) + '/' + str(p['n']):>10}  "
                     f"{rate:<22}{num(p['binomial_p'], '.3g'):>7}")
    return "\n".join(lines) + "\n"
