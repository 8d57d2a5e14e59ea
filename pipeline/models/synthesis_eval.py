"""Judging a conditional slice generator without a downloaded network (the DCGAN family's `validate`).

A small CNN is trained here, on the real training slices only, to tell the contrast of a slice (cross-entropy)
and its position along the axis (squared error); its global-average-pooled last features are the feature space.
Then, per contrast, with one sample for every held-out real slice (the `eval_splits` subjects, never seen by the
generator or the classifier), at that slice's position:

* ``classified_rate``: the fraction of the samples the classifier assigns to the requested contrast (beside its
  accuracy on the held-out real slices);
* ``fd_synthetic`` and ``fd_real``: the held-out subjects are split into two halves A and B (`fd_halvings` random
  halvings, seeded); for each, the Frechet distance (MONAI `FIDMetric`) between A's real features and the samples
  drawn at B's slices, and between A and B's real slices: the same reference, sample size and positions. Both are
  averaged over the halvings and ``fd_ratio`` is their quotient, the samples' excess over the subject-to-subject
  variation of real slices. One halving is not enough: on the demo's 11 held-out subjects the real-vs-real distance
  of one halving ranged 0.050-1.39 (T1w, 50 halvings), so a ratio to one of them says more about which subjects
  fell together than about the samples; ``fd_ratio_median`` and ``fd_ratio_below_criterion`` give the median of
  the single halvings' ratios and the share of them below the criterion;
* ``position_mae``: the classifier's slice-position error on the samples against the requested positions, beside
  its error on real held-out slices (whether the position condition is obeyed).

Results: `<out>/synthesis.json` (numbers, protocol, verdicts of the two criteria) and the sample grids
`synthesis_grid.png` (rows: contrasts, samples above the real held-out slice nearest in position; columns: slice
positions) and `synthesis_<contrast>.png` (rows: noise draws; columns: positions).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline.io.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

#: the must-show criteria of the synthesis evaluation
MIN_CLASSIFIED_RATE = 0.95
MAX_FD_RATIO = 3.0


# ------------------------------------------------------------------------------------------ metrics
def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """The Frechet distance between Gaussians fitted to two feature sets (n, d) (MONAI `FIDMetric`)."""
    from monai.metrics import FIDMetric

    a, b = torch.as_tensor(np.asarray(a, np.float64)), torch.as_tensor(np.asarray(b, np.float64))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"Frechet distance needs two (n >= 2, d) feature sets of one d, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy's sqrtm(disp=...) inside MONAI
        warnings.simplefilter("ignore", RuntimeWarning)  # a singular covariance product: MONAI adds epsilon
        value = float(FIDMetric()(a, b))
    return max(value, 0.0)  # rounding gives -1e-15 for identical sets


def classified_rate(logits: np.ndarray | torch.Tensor, requested: int | np.ndarray) -> float:
    """The fraction of rows of `logits` (n, classes) whose arg-max is the `requested` class (one, or one per row)."""
    pred = np.asarray(torch.as_tensor(logits).argmax(dim=1))
    if pred.size == 0:
        raise ValueError("no samples to classify")
    return float(np.mean(pred == np.asarray(requested)))


# ------------------------------------------------------------------------------------------ classifier
class ContrastNet(nn.Module):
    """A small CNN: contrast logits and slice position from a (N, 1, s, s) slice in [0, 1]; `features` is its
    global-average-pooled last convolutional layer (the Frechet distance's feature space)."""

    def __init__(self, n_contrasts: int, width: int = 16) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 4, 2, 1), nn.BatchNorm2d(w), nn.ReLU(True),
            nn.Conv2d(w, 2 * w, 4, 2, 1), nn.BatchNorm2d(2 * w), nn.ReLU(True),
            nn.Conv2d(2 * w, 4 * w, 4, 2, 1), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.Conv2d(4 * w, 4 * w, 3, 1, 1), nn.BatchNorm2d(4 * w), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.contrast = nn.Linear(4 * w, n_contrasts)
        self.position = nn.Linear(4 * w, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.contrast(h), self.position(h)[:, 0]


def train_classifier(bank: Any, steps: int, seed: int, batch_size: int = 64, lr: float = 1e-3) -> ContrastNet:
    """A `ContrastNet` trained on a `SliceBank`'s slices (contrasts drawn uniformly), deterministically from `seed`."""
    torch.manual_seed(seed)
    net = ContrastNet(len(bank.contrasts))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng = np.random.default_rng([seed % 2**63, 7])
    net.train()
    for _ in range(steps):
        which = rng.integers(len(bank.contrasts), size=batch_size)
        idx = [int(rng.integers(bank.count(bank.contrasts[k]))) for k in which]
        x = torch.from_numpy(np.stack([bank.images[bank.contrasts[k]][i] for k, i in zip(which, idx, strict=True)])[:, None])
        pos = torch.tensor([float(bank.positions[bank.contrasts[k]][i]) for k, i in zip(which, idx, strict=True)])
        logits, p = net(x)
        loss = nn.functional.cross_entropy(logits, torch.from_numpy(which.astype(np.int64))) + \
            nn.functional.mse_loss(p, pos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def run_classifier(net: ContrastNet, images: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features (n, d), contrast logits (n, classes), predicted positions (n,)) of slices (n, s, s)."""
    feats, logits, pos = [], [], []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[i:i + batch], np.float32)[:, None])
        h = net.features(x)
        feats.append(h)
        logits.append(net.contrast(h))
        pos.append(net.position(h)[:, 0])
    return torch.cat(feats).numpy(), torch.cat(logits).numpy(), torch.cat(pos).numpy()


# ------------------------------------------------------------------------------------------ evaluation
def halvings(bank: Any, contrast: str, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`n` random splits of `contrast`'s held-out subjects into halves A and B (A one larger when odd), as slice
    indices (A, B); seeded, the same for every generator judged with the same seed."""
    n_subjects = len(bank.subjects[contrast])
    if n_subjects < 2:
        raise ValueError(f"{contrast}: the held-out splits have {n_subjects} subject(s) with it; the real-vs-real "
                         f"distance needs at least 2")
    rng = np.random.default_rng([seed % 2**63, 11])
    owner, cut = bank.owner[contrast], (n_subjects + 1) // 2
    out = []
    for _ in range(n):
        in_a = np.isin(owner, rng.permutation(n_subjects)[:cut])
        out.append((np.flatnonzero(in_a), np.flatnonzero(~in_a)))
    return out


def split_distances(features: np.ndarray, real: np.ndarray, splits: list[tuple[np.ndarray, np.ndarray]]
                    ) -> np.ndarray:
    """Per split (A, B), FD(features at B, real A): `features` row for row with `real` (one sample per real
    slice, or the real slices themselves for the real-vs-real distance)."""
    return np.array([frechet_distance(features[b], real[a]) for a, b in splits])


def evaluate_synthesis(generator: nn.Module, cfg: Any, data_dir: str | Path, out_dir: str | Path,
                       seed: int) -> dict[str, Any]:
    """Train the judge, score the generator per contrast, write synthesis.json and the grids; return the numbers."""
    from pipeline.data.slice_bank import SliceBank
    from pipeline.nets.dcgan import sample

    contrasts = list(cfg.contrasts)
    train = SliceBank.read(data_dir, contrasts, ["train"], cfg.slice_axis, cfg.image_size, cfg.min_area)
    held = SliceBank.read(data_dir, contrasts, list(cfg.eval_splits), cfg.slice_axis, cfg.image_size, cfg.min_area)
    net = train_classifier(train, cfg.classifier_steps, seed)
    per: dict[str, Any] = {}
    for ci, c in enumerate(contrasts):
        splits = halvings(held, c, cfg.fd_halvings, seed)
        f_real, l_real, p_real = run_classifier(net, held.images[c])
        synth = sample(generator, ci, held.positions[c], seed=seed + 1000 + ci)
        f_syn, l_syn, p_syn = run_classifier(net, synth)
        d_syn, d_real = split_distances(f_syn, f_real, splits), split_distances(f_real, f_real, splits)
        fd_syn, fd_real = float(d_syn.mean()), float(d_real.mean())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = d_syn / d_real
        per[c] = {
            "classified_rate": round(classified_rate(l_syn, ci), 4),
            "real_classified_rate": round(classified_rate(l_real, ci), 4),
            "fd_synthetic": round(fd_syn, 4),
            "fd_real": round(fd_real, 4),
            "fd_ratio": round(fd_syn / fd_real, 3) if fd_real > 0 else None,
            "fd_real_min": round(float(d_real.min()), 4),
            "fd_real_max": round(float(d_real.max()), 4),
            "fd_ratio_median": round(float(np.median(ratios)), 3),
            "fd_ratio_below_criterion": round(float(np.mean(ratios < MAX_FD_RATIO)), 3),
            "position_mae": round(float(np.mean(np.abs(p_syn - held.positions[c]))), 4),
            "real_position_mae": round(float(np.mean(np.abs(p_real - held.positions[c]))), 4),
            "n_samples": int(len(synth)),
            "n_subjects": len(held.subjects[c]),
            "n_halvings": len(splits),
        }
        per[c]["passes"] = bool(per[c]["classified_rate"] >= MIN_CLASSIFIED_RATE and per[c]["fd_ratio"] is not None
                                and per[c]["fd_ratio"] < MAX_FD_RATIO)
        log.info("dcgan %s: %.1f%% of %d samples classified as %s (real held-out %.1f%%); Frechet distance "
                 "synthetic-vs-real %.3f, real-vs-real %.3f (%.3f-%.3f) over %d halvings (ratio %s; below %g in "
                 "%.0f%% of single halvings); position MAE %.3f (real %.3f)",
                 c, 100 * per[c]["classified_rate"], len(synth), c, 100 * per[c]["real_classified_rate"], fd_syn,
                 fd_real, d_real.min(), d_real.max(), len(splits), per[c]["fd_ratio"], MAX_FD_RATIO,
                 100 * per[c]["fd_ratio_below_criterion"], per[c]["position_mae"],
                 per[c]["real_position_mae"])
    out = Path(out_dir)
    figures = write_grids(generator, held, contrasts, cfg.grid_positions, seed, out)
    result = {
        "kind": "conditional-synthesis",
        "family": "dcgan",
        "criteria": {"min_classified_rate": MIN_CLASSIFIED_RATE, "max_fd_ratio": MAX_FD_RATIO},
        "passes": all(v["passes"] for v in per.values()),
        "contrasts": per,
        "protocol": {
            "slices": (f"{cfg.image_size}x{cfg.image_size} slices across volume axis {cfg.slice_axis}, zero-padded "
                       "to a square and area-resized; positions 0-1 along the foreground mask's extent, from the "
                       f"first to the last slice with at least {cfg.min_area:g} of the largest slice's area"),
            "judge": (f"a CNN trained here for {cfg.classifier_steps} steps on the real training slices (contrast "
                      "cross-entropy + position squared error); features: its pooled last layer "
                      f"({net.contrast.in_features} values); no downloaded network"),
            "held_out": (f"real slices of the {'/'.join(cfg.eval_splits)} subjects, split into halves A and B by "
                         f"subject {cfg.fd_halvings} times at random (seeded)"),
            "samples": "one sample per held-out slice, at its position (noise seeded)",
            "frechet": ("MONAI FIDMetric on the judge's features: the samples drawn at B's slices vs A, next to "
                        "real B vs A (same reference, sample size and positions); each averaged over the halvings, "
                        "the ratio is of the averages"),
            "classified_rate": "fraction of samples whose arg-max contrast is the requested one",
            "n_train_slices": {c: train.count(c) for c in contrasts},
            "n_train_subjects": len({s for c in contrasts for s in train.subjects[c]}),
        },
        "figures": figures,
    }
    write_text(out / "synthesis.json", json.dumps(result, indent=2) + "\n")
    return {k: result[k] for k in ("passes", "contrasts")}


# ------------------------------------------------------------------------------------------ figures
def _display(im: np.ndarray) -> np.ndarray:
    """A slice as shown: (a, b) -> rows b reversed (anterior/superior up for RAS volumes)."""
    return np.rot90(im)


def write_grids(generator: nn.Module, held: Any, contrasts: list[str], n_positions: int, seed: int,
                out: Path) -> dict[str, Any]:
    """`synthesis_grid.png` (per contrast a row of samples over a row of the real held-out slices nearest in
    position) and `synthesis_<contrast>.png` (4 noise draws per position); returns their file names."""
    import matplotlib

    from pipeline.nets.dcgan import sample

    matplotlib.use("Agg", force=True)  # files only (a model module may not import the evaluation's figure setup)
    import matplotlib.pyplot as plt

    positions = np.linspace(0.1, 0.9, n_positions).astype(np.float32)
    rows = []
    for ci, c in enumerate(contrasts):
        rows.append((f"{c} synthetic", sample(generator, ci, positions, seed=seed + 2000 + ci)))
        nearest = [int(np.argmin(np.abs(held.positions[c] - p) + 10.0 * (held.owner[c] != 0))) for p in positions]
        rows.append((f"{c} real (held-out)", held.images[c][nearest]))
    figures = {"grid": "synthesis_grid.png", "per_contrast": {}}
    _grid(plt, rows, positions, out / figures["grid"], "Samples (above) and held-out real slices (below)")
    for ci, c in enumerate(contrasts):
        draws = [(f"{c} draw {k + 1}", sample(generator, ci, positions, seed=seed + 3000 + 10 * ci + k))
                 for k in range(4)]
        name = f"synthesis_{c}.png"
        _grid(plt, draws, positions, out / name, f"{c}: four noise draws per slice position")
        figures["per_contrast"][c] = name
    return figures


def _grid(plt: Any, rows: list[tuple[str, np.ndarray]], positions: np.ndarray, path: Path, title: str) -> None:
    n_rows, n_cols = len(rows), len(positions)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.3 * n_cols + 1.2, 1.3 * n_rows + 0.5), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for k in range(n_cols):
            ax = axes[r][k]
            ax.imshow(_display(images[k]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"pos {positions[k]:.2f}")
            if k == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
