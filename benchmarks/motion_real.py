"""Motion correction on real scans: the corpus's T1w corrupted by simulated head motion, corrected by a trained
`motion` model through `python -m pipeline infer`, scored inside the brain against the clean scan (run by hand).

    python benchmarks/motion_real.py --model results/models/motion/model.pt [--corpus ../shared/corpus/real_brain_ms]
        [--voxel-mm 2] [--png motion_real.png]

Per subject of the BIDS corpus (T1w, skull-stripped): the scan is reoriented to RAS (the simulator's phase-encode
axis 1 is anterior-posterior, as in preprocessing), optionally resampled to `--voxel-mm` isotropic voxels
(anti-aliased; the demo-trained model saw 2 mm voxels), corrupted by `pipeline.imaging.motion` with the severity the
model file records (the preprocess stage's `preprocess.motion`, unless given here) and a seed per subject, and
corrected by `infer --normalise` (the corrupted scan's own percentile normalisation as the model file records it,
the output mapped back to the scan's units). Clean, corrupted and corrected scans are then put on that one scale
(the (low, high) that `infer --normalise` used -> [0, 1], clipped, as preprocessing does for the workflow's scores)
and scored with the workflow's metrics (`pipeline.evaluation.metrics.masked_metrics`: PSNR and 3D SSIM over the
mask) inside the brain (clean > 0). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_ras(path: Path, voxel_mm: float | None) -> tuple[np.ndarray, np.ndarray]:
    """The scan as a RAS float32 array and its affine, resampled to `voxel_mm` isotropic voxels when given."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    data, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
    if voxel_mm:
        from pipeline.inference.resolution import grid_with_spacing, resample

        shape, new_affine = grid_with_spacing(data.shape, affine, [voxel_mm] * 3)
        data, affine = resample(data, affine, shape, new_affine).astype(np.float32), new_affine
    return data, affine


def scale(x: np.ndarray, low: float, high: float) -> np.ndarray:
    return (x - low) / (high - low)


def main(argv: list[str] | None = None) -> int:
    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.metrics import masked_metrics
    from pipeline.gan.checkpoint import load_checkpoint
    from pipeline.imaging.motion import motion_rng, simulate_motion
    from pipeline.inference.run import normalise_scan
    from pipeline.io.nifti import load_nifti, save_nifti

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "results/models/motion/model.pt")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared/corpus/real_brain_ms")
    parser.add_argument("--modality", default="T1w")
    parser.add_argument("--voxel-mm", type=float, default=None,
                        help="resample the scans to this isotropic voxel size first (default: native)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--fraction", type=float, default=None, help="default: the model file's recorded severity")
    parser.add_argument("--max-translation-mm", type=float, default=None)
    parser.add_argument("--max-rotation-deg", type=float, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="keep the scans here (default: a temporary folder)")
    parser.add_argument("--png", type=Path, default=None, help="a mid-axial slice of the first subject: "
                        "corrupted / corrected / clean")
    args = parser.parse_args(argv)

    blob = load_checkpoint(args.model)
    sim = dict(blob["restoration"]["simulation"])
    for key in ("fraction", "max_translation_mm", "max_rotation_deg"):
        if getattr(args, key) is not None:
            sim[key] = getattr(args, key)
    scans = sorted(args.corpus.glob(f"sub-*/anat/sub-*_{args.modality}.nii.gz"))
    if not scans:
        raise SystemExit(f"{args.corpus}: no sub-*/anat/sub-*_{args.modality}.nii.gz")
    cfg = EvaluateConfig()
    rows = []
    with tempfile.TemporaryDirectory(prefix="motion-real-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n, scan in enumerate(scans):
            subject = scan.name.split("_")[0]
            clean, affine = load_ras(scan, args.voxel_mm)
            spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
            bad, shots = simulate_motion(clean, motion_rng(args.seed, subject, args.modality), spacing=spacing,
                                         **{k: sim[k] for k in ("fraction", "max_translation_mm", "max_rotation_deg",
                                                                "n_shots", "pe_axis", "centre_fraction", "ordering") if k in sim})
            bad_path = save_nifti(bad, affine, work / f"{subject}_motion.nii.gz")
            out_path = work / f"{subject}_corrected.nii.gz"
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pipeline", "infer", "--model", str(args.model), "--input",
                            str(bad_path), "--output", str(out_path), "--normalise", "--device", "cpu",
                            "--threads", str(args.threads)], cwd=REPO, check=True, capture_output=True)
            seconds = time.perf_counter() - started
            fixed, _ = load_nifti(out_path)
            brain = clean > 0
            _, low, high = normalise_scan(bad, blob["normalisation"][args.modality], args.modality)  # as infer did
            truth = np.clip(scale(clean, low, high), 0, 1)
            before = masked_metrics(scale(bad, low, high), truth, brain, cfg)
            after = masked_metrics(scale(fixed, low, high), truth, brain, cfg)
            rows.append((subject, clean.shape, len(shots), before, after, seconds))
            if args.png and n == 0:
                import matplotlib

                matplotlib.use("Agg")
                import matplotlib.pyplot as plt

                z = clean.shape[2] // 2
                fig, axes = plt.subplots(1, 4, figsize=(16, 4.6))
                views = [(scale(bad, low, high), f"corrupted ({before['psnr']:.2f} dB)"),
                         (scale(fixed, low, high), f"corrected ({after['psnr']:.2f} dB)"), (truth, "clean"),
                         (scale(fixed, low, high) - truth, "corrected - clean")]
                for ax, (img, title) in zip(axes, views, strict=True):
                    diff = title.startswith("corrected -")
                    ax.imshow(np.rot90(img[:, :, z]), cmap="gray", vmin=-0.3 if diff else 0, vmax=0.3 if diff else 1)
                    ax.set_title(f"{subject} {title}")
                    ax.axis("off")
                fig.savefig(args.png, dpi=80, bbox_inches="tight")
                plt.close(fig)

    where = f"{args.voxel_mm:g} mm" if args.voxel_mm else "native voxels"
    print(f"Motion correction on {args.corpus.name} ({args.modality}, {where}; severity fraction {sim['fraction']}, "
          f"<= {sim['max_translation_mm']} mm, <= {sim['max_rotation_deg']} deg; scored in the brain)\n")
    print("| subject | shape | moved shots | corrupted PSNR | corrupted SSIM | corrected PSNR | corrected SSIM | "
          "gain PSNR | gain SSIM | infer s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for subject, shape, n_shots, b, a, s in rows:
        print(f"| {subject} | {'x'.join(map(str, shape))} | {n_shots} | {b['psnr']:.2f} | {b['ssim']:.3f} | "
              f"{a['psnr']:.2f} | {a['ssim']:.3f} | {a['psnr'] - b['psnr']:+.2f} | {a['ssim'] - b['ssim']:+.3f} | "
              f"{s:.0f} |")
    mean = lambda key, i: float(np.mean([r[i][key] for r in rows]))  # noqa: E731
    print(f"| mean | | | {mean('psnr', 3):.2f} | {mean('ssim', 3):.3f} | {mean('psnr', 4):.2f} | "
          f"{mean('ssim', 4):.3f} | {mean('psnr', 4) - mean('psnr', 3):+.2f} | "
          f"{mean('ssim', 4) - mean('ssim', 3):+.3f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
