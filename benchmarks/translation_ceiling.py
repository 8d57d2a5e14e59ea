"""What an ideal T1w -> T2w translator could score on the demo's test subjects (run by hand, not in CI).

    python benchmarks/translation_ceiling.py [--run-dir /path/to/finished/demo/run] [--models cyclegan ...]

The demo's target images carry Rician noise that no translator can predict from the source, so SSIM and PSNR
against them have a ceiling below 1 and infinity. This script measures it: in a temporary folder it simulates the
demo cohort twice, with noise and without (``demo.noise: false``: same anatomy, contrast and bias field), runs
the workflow's ingest and preprocess on each with `config/config.yaml`, and scores, on each test subject inside
the noisy run's mask, with the workflow's own metrics (`pipeline.evaluation.metrics.masked_metrics`):

- ``noise-free target``: the noise-free T2w, normalised by preprocessing on its own;
- ``noise-free target, fitted``: the same after the least-squares affine intensity map onto the noisy T2w in the
  mask. The map is fitted on the truth, so this oracle is slightly optimistic: it is the most a model that got
  the physics exactly right could score;
- ``noisy target, Gaussian sigma s``: the truth itself smoothed (what denoising alone costs; it keeps part of the
  truth's own noise, so it is not reachable by a translator);
- with ``--run-dir``: the run's model outputs (``results/infer/<model>/<subject>_T2w.nii.gz``);
- with ``--paired-seconds N``: the same generator as the run's CycleGAN (``--run-dir``; else the default config's),
  trained for N seconds with an L1 loss on *paired* T1w/T2w crops of the training subjects and applied with the
  model file's inference settings: what supervision with the registered target would reach with this network,
  the bound an unpaired model is measured against.

Prints a markdown table and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def prepare(root: Path, config: dict, noise: bool) -> Path:
    """Simulate, ingest and preprocess the demo cohort under `root` as the workflow would for `config` (its
    `models:` decide which derived inputs preprocessing makes, and these can change the grid); returns its
    subjects.tsv."""
    from pipeline.workflow import preprocess_params

    demo = {**config.get("demo", {}), "noise": noise}
    steps = [
        ["demo", "--params", json.dumps(demo), "--out", "results/demo"],
        ["ingest", "--input", "results/demo", "--out", "results/ingest", "--params", json.dumps(config["ingest"])],
        ["preprocess", "--manifest", "results/ingest/manifest.tsv", "--out", "results/preprocess",
         "--params", preprocess_params(config), "--seed", str(config["seed"])],
    ]
    root.mkdir(parents=True, exist_ok=True)
    for step in steps:
        subprocess.run([sys.executable, "-m", "pipeline", *step], cwd=root, check=True, capture_output=True)
    return root / "results" / "preprocess" / "subjects.tsv"


def fitted(image: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`image` mapped onto `truth` by the least-squares affine intensity map inside `mask`."""
    design = np.stack([image[mask], np.ones(int(mask.sum()), np.float32)], axis=1)
    gain, offset = np.linalg.lstsq(design, truth[mask], rcond=None)[0]
    return (gain * image + offset).astype(np.float32)


def write_table(lines: list[str], out: Path) -> None:
    """Write the markdown `lines` to `out` and print them."""
    text = "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


def paired_generator(subjects_tsv: Path, blob: dict, source: str, target: str, seconds: float, seed: int = 0):
    """The blob's generator architecture, trained for `seconds` with L1 on paired (source, target) 2D crops, on
    the blob's training grid (its `train_downsample`: slices block-averaged in-plane, as CycleGAN's inference does)."""
    import nibabel as nib
    import torch

    from pipeline.data.unpaired_sampler import coarsen
    from pipeline.io.tables import read_tsv
    from pipeline.nets.resnet_generator import generator_from_kwargs

    torch.manual_seed(seed)
    net = generator_from_kwargs(blob["generator"]["kwargs"])
    info = blob["translation"]
    axis, crop, batch_size = info["slice_axis"], int(blob["inference"]["roi_size"][0]), 8
    factor = int(info.get("train_downsample", 1))
    # The table's paths are relative to the cohort's folder, not to the current directory (where
    # `resolve_path` would look first, and may find a run of the same demo): join them to the folder.
    root = subjects_tsv.parents[2]
    rows = [r for r in read_tsv(subjects_tsv, ("subject", "split", source, target, "mask")) if r["split"] == "train"]
    pairs = []
    for r in rows:
        a, b, m = (np.moveaxis(coarsen(np.asarray(nib.load(root / r[k]).dataobj, np.float32), factor, axis), axis, 0)
                   for k in (source, target, "mask"))
        keep = (m > 0).any(axis=(1, 2))
        pairs.append((a[keep], b[keep]))
    rng = np.random.default_rng(seed)

    def draw() -> tuple:
        xs, ys = [], []
        for _ in range(batch_size):
            a, b = pairs[rng.integers(len(pairs))]
            z, i, j = rng.integers(len(a)), rng.integers(a.shape[1] - crop + 1), rng.integers(a.shape[2] - crop + 1)
            xa, xb = a[z, i:i + crop, j:j + crop], b[z, i:i + crop, j:j + crop]
            if rng.random() < 0.5:
                xa, xb = xa[::-1], xb[::-1]
            xs.append(np.ascontiguousarray(xa))
            ys.append(np.ascontiguousarray(xb))
        return (torch.from_numpy(np.stack(xs))[:, None] * 2 - 1, torch.from_numpy(np.stack(ys))[:, None] * 2 - 1)

    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    start, steps = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in optimiser.param_groups:  # constant, then linear decay over the second half
            group["lr"] = 1e-3 * min(1.0, 2.0 * (1.0 - elapsed / seconds))
        x, y = draw()
        loss = (net(x) - y).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        steps += 1
    return net.eval(), steps


def main(argv: list[str] | None = None) -> int:
    from run_all import model_blob
    from scipy.ndimage import gaussian_filter

    from pipeline.config import EvaluateConfig, load_params
    from pipeline.evaluation.metrics import masked_metrics
    from pipeline.imaging.degrade import histogram_match, histogram_match_inverted
    from pipeline.io.nifti import load_nifti
    from pipeline.io.tables import read_subjects

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--target", default="T2w")
    parser.add_argument("--run-dir", type=Path, default=None, help="a finished run, to score its model outputs too")
    parser.add_argument("--models", nargs="*", default=["cyclegan"], help="model folders under results/infer")
    parser.add_argument("--source", default="T1w")
    parser.add_argument("--paired-seconds", type=float, default=0.0,
                        help="also train the generator with L1 on paired crops for this long (0: skip)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/translation_ceiling.md (T2w), translation_ceiling_<target>.md")
    args = parser.parse_args(argv)
    if args.out is None:
        suffix = "" if args.target == "T2w" else f"_{args.target}"
        args.out = REPO / "benchmarks" / "results" / f"translation_ceiling{suffix}.md"

    config = yaml.safe_load(args.config.read_text())
    cfg = load_params(json.dumps(config.get("evaluate") or {}), EvaluateConfig, "evaluate")
    splits = set(cfg.splits)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
        noisy_tsv = prepare(Path(tmp) / "noisy", config, noise=True)
        clean_tsv = prepare(Path(tmp) / "clean", config, noise=False)
        subjects = [r["subject"] for r in read_subjects(noisy_tsv, splits=splits)]
        paired = None
        if args.paired_seconds > 0:
            from pipeline.models.cyclegan import CycleGAN

            model_file = args.run_dir / "results" / "models" / "cyclegan" / "model.pt" if args.run_dir else None
            blob = model_blob("translation", str(model_file) if model_file and model_file.is_file() else None)
            paired, paired_steps = paired_generator(noisy_tsv, blob, args.source, args.target, args.paired_seconds)

        def load(path: Path) -> np.ndarray:
            return load_nifti(path)[0]

        for subject in subjects:
            sub = f"results/preprocess/{subject}"
            truth = load(noisy_tsv.parents[2] / sub / f"{args.target}.nii.gz")
            mask = load(noisy_tsv.parents[2] / sub / "mask.nii.gz") > 0
            clean = load(clean_tsv.parents[2] / sub / f"{args.target}.nii.gz")
            source = load(noisy_tsv.parents[2] / sub / f"{args.source}.nii.gz")
            candidates = {"histogram matching (the evaluation's baseline)": histogram_match(source, truth, mask=mask),
                          "histogram-matched inverted source (the evaluation's baseline)":
                              histogram_match_inverted(source, truth, mask),
                          "noise-free target": clean, "noise-free target, fitted": fitted(clean, truth, mask)}
            for sigma in (0.5, 0.8, 1.0):
                candidates[f"noisy target, Gaussian sigma {sigma}"] = gaussian_filter(truth, sigma)
            if paired is not None:
                candidates[f"paired L1 generator ({paired_steps} steps)"] = CycleGAN.apply(paired, source, blob)
            if args.run_dir is not None:
                for model in args.models:
                    path = args.run_dir / "results" / "infer" / model / f"{subject}_{args.target}.nii.gz"
                    if path.is_file():
                        candidates[f"model: {model}"] = load(path)
            for name, image in candidates.items():
                scores.setdefault(name, {})[subject] = masked_metrics(image, truth, mask, cfg)

    lines = [f"# Translation ceiling: {args.target} of the demo's {'/'.join(sorted(splits))} subjects", "",
             f"Command: `python benchmarks/translation_ceiling.py {' '.join(argv or sys.argv[1:])}`", "",
             "| image scored against the noisy target | " + " | ".join(f"SSIM {s}" for s in subjects)
             + " | SSIM mean | PSNR mean (dB) |", "|---" * (len(subjects) + 3) + "|"]
    for name, per in scores.items():
        ssim = [per[s]["ssim"] for s in subjects]
        psnr = statistics.mean(per[s]["psnr"] for s in subjects)
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in ssim)
                     + f" | {statistics.mean(ssim):.3f} | {psnr:.2f} |")
    write_table(lines, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
