"""Figures of the evaluation stage (matplotlib, Agg): per-subject panels, group strip plots, training curves.

The evaluation stage calls these; the report stage only copies or inlines the files they write.
"""

from __future__ import annotations

import csv
import html
import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.slices import error_scale
from pipeline.io.atomic import atomic_path

# Colours: a calm clinical palette (baselines in slate, models in teal), shared with the report's CSS.
BASELINE_COLOUR = "#7b8794"
STRONGEST_COLOUR = "#3e4c59"
MODEL_COLOURS = ("#0f7c8c", "#c2410c", "#6d28d9", "#15803d")
PLANES = ("axial", "coronal", "sagittal")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.family": "DejaVu Sans",
            "font.size": 9,
            "axes.titlesize": 9,
            "svg.fonttype": "path",  # text as paths: the SVG needs no font
            "svg.hashsalt": "medgan",  # stable ids, so reruns give identical files
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _save(fig, path: Path, dpi: int, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if (fmt or path.suffix[1:]) == "svg" else {"Software": None}
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt or path.suffix[1:], metadata=metadata)


# ------------------------------------------------------------------------------------------ subject panels
def centre_of_mask(mask: np.ndarray) -> tuple[int, int, int]:
    """Centre of the mask's bounding box (the volume's centre when the mask is empty)."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return tuple(s // 2 for s in mask.shape)  # type: ignore[return-value]
    return tuple(int(v) for v in (idx.min(0) + idx.max(0)) // 2)  # type: ignore[return-value]


def mid_slices(vol: np.ndarray, centre: Sequence[int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices of an (x, y, z) RAS volume through `centre`, ready for imshow
    with origin="lower" (axial: x right, y up; coronal: x right, z up; sagittal: y right, z up)."""
    i, j, k = centre
    return [vol[:, :, k].T, vol[:, j, :].T, vol[i, :, :].T]


def _aspects(affine: np.ndarray) -> list[float]:
    sx, sy, sz = (float(np.linalg.norm(affine[:3, a])) for a in range(3))
    return [sy / sx, sz / sx, sz / sy]


def _pad_width(sl: np.ndarray, width: int) -> np.ndarray:
    """Pad a slice with zeros (left and right) to `width` columns."""
    extra = width - sl.shape[1]
    return np.pad(sl, ((0, 0), (extra // 2, extra - extra // 2))) if extra > 0 else sl


def subject_panels(
    out: Path,
    *,
    source: np.ndarray,
    baseline: np.ndarray,
    output: np.ndarray,
    truth: np.ndarray | None,
    mask: np.ndarray,
    affine: np.ndarray,
    labels: tuple[str, ...],
    title: str,
    data_range: float = 1.0,
    dpi: int = 110,
    error_max: float | None = None,
) -> Path:
    """Mid-slices in three planes of input, baseline, model output and ground truth, and the absolute-error
    maps of baseline and output on one shared colour scale (with colour bars), up to `error_max` when given (else
    the 99.5th percentile of both errors inside the mask). Writes a PNG. With no ground truth (`truth` None, an
    output of a cohort's own scans), input, baseline and output only (`labels` their three).

    Each plane is one mosaic image (the panels side by side, colour-mapped here), which keeps the figure
    to a few axes and fast to draw.
    """
    plt = _pyplot()
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.gridspec import GridSpec

    centre = centre_of_mask(mask)
    norm_img = Normalize(0.0, data_range, clip=True)
    gray, hot = colormaps["gray"], colormaps["inferno"]
    columns = [(labels[0], source, gray, norm_img), (labels[1], baseline, gray, norm_img),
               (labels[2], output, gray, norm_img)]
    norm_err = None
    if truth is not None:
        err_base = np.abs(baseline - truth)
        err_out = np.abs(output - truth)
        vmax_err = error_max if error_max is not None else error_scale([err_base, err_out], mask, data_range)
        norm_err = Normalize(0.0, vmax_err, clip=True)
        columns += [
            (labels[3], truth, gray, norm_img),
            (f"|{labels[1]} − truth|", err_base, hot, norm_err),
            (f"|{labels[2]} − truth|", err_out, hot, norm_err),
        ]
    aspects = _aspects(affine)
    width = max(output.shape[0], output.shape[1])
    gap = max(2, width // 30)
    planes = []
    for r in range(3):
        tiles, masks = [], []
        for c, (_, vol, cmap, norm) in enumerate(columns):
            sl = _pad_width(np.asarray(mid_slices(vol, centre)[r], dtype=np.float32), width)
            tiles.append(cmap(norm(sl))[..., :3])
            m = _pad_width(mid_slices(mask.astype(np.float32), centre)[r], width)
            masks.append(m if c == 3 else np.zeros_like(m))  # (the truth's column)
            if c < len(columns) - 1:
                tiles.append(np.ones((sl.shape[0], gap, 3)))
                masks.append(np.zeros((sl.shape[0], gap)))
        planes.append((np.concatenate(tiles, axis=1), np.concatenate(masks, axis=1)))
    heights = [p[0].shape[0] * a for p, a in zip(planes, aspects, strict=True)]
    total_w = planes[0][0].shape[1]
    fig_w = 12.5 if truth is not None else 7.5
    img_w = fig_w * 0.86
    fig_h = img_w * sum(heights) / total_w + 0.95
    fig = plt.figure(figsize=(fig_w, fig_h), facecolor="white")
    top = 1 - 0.62 / fig_h
    grid = GridSpec(3, 4, figure=fig, width_ratios=[1, 0.011, 0.075, 0.011], height_ratios=heights, left=0.035,
                    right=0.935, top=top, bottom=0.02, wspace=0.02, hspace=0.03)
    centres = [(c * (width + gap) + width / 2) for c in range(len(columns))]
    for r, ((mosaic, mmask), aspect) in enumerate(zip(planes, aspects, strict=True)):
        ax = fig.add_subplot(grid[r, 0])
        ax.imshow(mosaic, origin="lower", aspect=aspect, interpolation="nearest")
        if mmask.any():
            ax.contour(mmask, levels=[0.5], colors="#22d3ee", linewidths=0.6)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(PLANES[r], fontsize=9)
        if r == 0:
            for (label, *_), x in zip(columns, centres, strict=True):
                ax.text(x, 1.03, textwrap.fill(label, 26), transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=8.5)
        # Orientation: axial and coronal show the patient's right on the right (neurological view), sagittal
        # shows anterior on the right.
        for x in centres:
            ax.text(x + width / 2 - 1.5, 1.5, "R" if r < 2 else "A", ha="right", va="bottom", color="#fbbf24", fontsize=7)
    cax_img = fig.add_subplot(grid[:, 1])
    fig.colorbar(ScalarMappable(norm_img, gray), cax=cax_img).set_label("intensity (normalised)", fontsize=8)
    cax_img.tick_params(labelsize=7)
    if norm_err is not None:
        cax_err = fig.add_subplot(grid[:, 3])
        fig.colorbar(ScalarMappable(norm_err, hot), cax=cax_err).set_label("absolute error (shared scale)", fontsize=8)
        cax_err.tick_params(labelsize=7)
    fig.text(0.035, 1 - 0.12 / fig_h, title, fontsize=10, ha="left", va="top", fontweight="bold")
    _save(fig, Path(out), dpi)
    plt.close(fig)
    return Path(out)


# ------------------------------------------------------------------------------------------ group strip plots
def _fmt_value(v: float) -> str:
    return f"{v:.4g}" if math.isfinite(v) else str(v)


def strip_plot(
    records: list[dict[str, Any]],
    methods: Sequence[str],
    metric: str,
    ylabel: str,
    *,
    labels: dict[str, str],
    kinds: dict[str, str],
    strongest: str,
    stats: dict[str, dict[str, Any]],
    dpi: int,
    out_svg: Path,
    out_png: Path,
    link: str = "subjects/{subject}.html#{method}",
) -> None:
    """One metric: each subject a point per method (linked to its subject page in the SVG), the same
    subject joined across methods, the mean and its CI as a bar."""
    plt = _pyplot()
    subjects = sorted({r["subject"] for r in records})
    value = {(r["subject"], r["method"]): float(r[metric]) for r in records}
    rng_offsets = {s: ((i * 0.61803398875) % 1.0 - 0.5) * 0.22 for i, s in enumerate(subjects)}
    fig, ax = plt.subplots(figsize=(5.2, 3.3), facecolor="white")
    model_i = 0
    colours = {}
    for m in methods:
        if kinds[m] == "model":
            colours[m] = MODEL_COLOURS[model_i % len(MODEL_COLOURS)]
            model_i += 1
        else:
            colours[m] = STRONGEST_COLOUR if m == strongest else BASELINE_COLOUR
    for s in subjects:
        xs = [i + rng_offsets[s] for i, m in enumerate(methods) if (s, m) in value]
        ys = [value[(s, m)] for m in methods if (s, m) in value]
        ax.plot(xs, ys, color="#cbd2d9", linewidth=0.7, zorder=1)
    titles: dict[str, str] = {}
    for i, m in enumerate(methods):
        pts = [(s, value[(s, m)]) for s in subjects if (s, m) in value and math.isfinite(value[(s, m)])]
        if not pts:
            continue
        coll = ax.scatter([i + rng_offsets[s] for s, _ in pts], [v for _, v in pts], s=26, color=colours[m],
                          edgecolor="white", linewidth=0.6, zorder=3)
        urls = [link.format(subject=s, method=m) for s, _ in pts]
        coll.set_urls(urls)
        for (s, v), url in zip(pts, urls, strict=True):
            titles[url] = f"{s} - {labels.get(m, m)}: {ylabel} {_fmt_value(v)} (open subject page)"
        st = stats.get(m, {})
        if st.get("mean") is not None:
            ax.hlines(st["mean"], i - 0.3, i + 0.3, color="#1f2933", linewidth=1.6, zorder=4)
        if st.get("ci_low") is not None:
            ax.vlines(i + 0.34, st["ci_low"], st["ci_high"], color="#1f2933", linewidth=1.0, zorder=4)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([labels.get(m, m).replace(" ", "\n", 1) if len(labels.get(m, m)) > 12 else labels.get(m, m)
                        for m in methods], fontsize=8)
    for tick, m in zip(ax.get_xticklabels(), methods, strict=True):
        tick.set_color(colours[m])
        if kinds[m] == "model":
            tick.set_fontweight("bold")
    ax.set_xlim(-0.6, len(methods) - 0.4)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="#e4e7eb", linewidth=0.6)
    ax.set_axisbelow(True)
    fig.tight_layout()
    _save(fig, out_png, dpi)
    out_svg.parent.mkdir(parents=True, exist_ok=True)
    buf = _svg_text(fig)
    plt.close(fig)
    # Tooltips: matplotlib writes <a xlink:href="...">; add an SVG <title> child (escaped) to each.
    def add_title(match: re.Match[str]) -> str:
        url = html.unescape(match.group(1))
        return f"{match.group(0)}<title>{html.escape(titles.get(url, url))}</title>"

    buf = re.sub(r'<a xlink:href="([^"]*)">', add_title, buf)
    with atomic_path(out_svg) as tmp:
        tmp.write_text(buf)


def _svg_text(fig) -> str:
    import io

    sio = io.StringIO()
    fig.savefig(sio, format="svg", metadata={"Date": None})
    return sio.getvalue()


def strip_plots(
    out_dir: Path,
    task: str,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    metrics: Sequence[str],
    metric_labels: dict[str, str],
    dpi: int = 110,
) -> dict[str, dict[str, str]]:
    """One strip plot per metric for one task; returns {metric: {"svg": path, "png": path}}."""
    methods = [*summary["baselines"], *summary["models"]]
    labels = {m: summary["methods"][m]["label"] for m in methods}
    kinds = {m: summary["methods"][m]["kind"] for m in methods}
    out: dict[str, dict[str, str]] = {}
    for metric in metrics:
        svg = Path(out_dir) / f"{task}_{metric}.svg"
        png = Path(out_dir) / f"{task}_{metric}.png"
        strip_plot(records, methods, metric, metric_labels.get(metric, metric), labels=labels, kinds=kinds,
                   strongest=summary["strongest_baseline"],
                   stats={m: summary["methods"][m]["metrics"][metric] for m in methods},
                   dpi=dpi, out_svg=svg, out_png=png)
        out[metric] = {"svg": svg.as_posix(), "png": png.as_posix()}
    return out


# ------------------------------------------------------------------------------------------ training curves
def read_history(path: Path) -> dict[str, np.ndarray]:
    """Numeric columns of a training `history.csv` (empty cells -> NaN)."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: training history is empty")
    if "step" not in rows[0]:
        raise ValueError(f"{path}: no 'step' column (columns: {list(rows[0])})")
    cols: dict[str, np.ndarray] = {}
    for name in rows[0]:
        try:
            cols[name] = np.array([float(r[name]) if r[name] not in ("", None) else np.nan for r in rows])
        except ValueError:
            continue  # a text column (e.g. phase): not plotted
    return cols


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    if n <= 1 or y.size < 2 * n:
        return y
    kernel = np.ones(n) / n
    padded = np.concatenate([np.full(n // 2, y[0]), y, np.full(n - 1 - n // 2, y[-1])])
    return np.convolve(padded, kernel, mode="valid")


def training_curves(history: Path, out: Path, title: str = "", dpi: int = 110) -> Path:
    """Loss terms (raw and smoothed), validation columns, learning rate and speed against step. Writes a PNG."""
    plt = _pyplot()
    cols = read_history(history)
    step = cols.pop("step")
    lrs = {k: cols.pop(k) for k in list(cols) if k == "lr" or k.startswith("lr_")}
    speed = next((cols.pop(k) for k in ("it_s", "it_per_s") if k in cols), None)
    for skip in ("epoch", "time", "wall_s", "elapsed_s"):
        cols.pop(skip, None)
    val = {k: v for k, v in cols.items() if k.startswith("val")}
    # the discriminators' losses and logits (D, D_A, d_real, ...) apart: the generator panel then holds positive
    # losses only, and a log scale shows a small pixel loss beside the adversarial terms
    disc = {k: v for k, v in cols.items() if k not in val and re.search(r"(^|_)[Dd](_|$)", k)}
    losses = {k: v for k, v in cols.items() if k not in val and k not in disc}
    panels = [(("generator losses" if disc else "losses"), losses)]
    panels += [("discriminator losses", disc)] if disc else []
    panels += [("validation", val)] if val else []
    extra = [("learning rate", lrs)] if lrs else []
    extra += [("iterations / s", {"it/s": speed})] if speed is not None else []
    n = len(panels) + len(extra)
    fig, axes = plt.subplots(1, n, figsize=(3.3 * n, 2.7), facecolor="white", squeeze=False)
    axes = axes[0]
    for ax, (name, series) in zip(axes, panels, strict=False):
        for i, (key, y) in enumerate(sorted(series.items())):
            ok = np.isfinite(y)
            if not ok.any():
                continue
            colour = f"C{i % 10}"
            if name.endswith("losses"):
                ax.plot(step[ok], y[ok], color=colour, alpha=0.25, linewidth=0.6)
                ax.plot(step[ok], _smooth(y[ok], max(1, ok.sum() // 50)), color=colour, linewidth=1.3, label=key)
            else:
                ax.plot(step[ok], y[ok], color=colour, marker="o", markersize=2.5, linewidth=1.2, label=key)
        finite = np.concatenate([v[np.isfinite(v)] for v in series.values()]) if series else np.array([])
        if name.endswith("losses") and finite.size and np.all(finite > 0) and finite.max() / finite.min() > 50:
            ax.set_yscale("log")
        ax.set_title(name)
        if series:
            ax.legend(fontsize=7, frameon=False)
    for ax, (name, series) in zip(axes[len(panels):], extra, strict=True):
        for i, (key, y) in enumerate(sorted(series.items())):
            ok = np.isfinite(y)
            ax.plot(step[ok], y[ok], color=("#3e4c59", "#0f7c8c", "#c2410c")[i % 3], linewidth=1.2, label=key)
            if name == "learning rate" and ok.any() and np.all(y[ok] > 0) and y[ok].max() / y[ok].min() > 50:
                ax.set_yscale("log")
        ax.set_title(name)
        if len(series) > 1:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(color="#e4e7eb", linewidth=0.6)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10, fontweight="bold")
    fig.tight_layout()
    _save(fig, Path(out), dpi)
    plt.close(fig)
    return Path(out)
