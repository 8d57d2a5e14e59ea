"""Self-supervised through-plane SR (`python -m pipeline selfsr`) on the real corpus, against cubic interpolation.

    python benchmarks/selfsr_corpus.py --work /tmp/selfsr_bench [--corpus ../shared/corpus/real_brain_ms]
        [--profiles rect4 gauss4 rect5gap6] [--subjects sub-ms07 ...] [--threads 2] [--steps N]

For each T1w scan of the corpus (1 mm, skull-stripped; RAS, cropped to 180 axial slices so every profile's slice
count is whole) the truth is normalised like preprocessing does (0.5-99.5th percentiles inside the brain -> [0, 1],
clipped), then made into thick axial slices by `pipeline.selfsr.profile.reslice`:
- `rect4`: 4 mm slices every 4 mm, rect profile (the mean of 4 adjacent 1 mm slices);
- `gauss4`: Gaussian profile of FWHM 4 mm, every 4 mm;
- `rect5gap6`: 5 mm rect slices every 6 mm (a 1 mm gap).
The thick-slice scan is written as NIfTI with its own affine (each slice centred on the 1 mm slices it covers) and
super-resolved by the CLI exactly as a user runs it (`--slice-profile`, `--slice-thickness`); the output is scored
against the 1 mm truth with the workflow's metrics (`pipeline.evaluation.metrics.masked_metrics`, data range 1,
clipped to [0, 1]) inside the brain (mask = raw truth > 0), beside cubic-spline interpolation of the same slices
(`pipeline.imaging.degrade.upsample(..., "bicubic")`) and, for reference, cubic plus the same data consistency.
CPU time is the selfsr process's user + system time (getrusage of the child), wall time its elapsed time.
The table goes to `<work>/selfsr.md` (and stdout); nothing here is used by the workflow.

With `--eclare VENV/bin/run-eclare` (ECLARE, PyPI `eclare`, installed in a scratch venv: never a dependency of this
project, its code not copied) the same thick-slice inputs also go through ECLARE with the known slice profile
(`--relative-slice-thickness` in in-plane voxels, `boxcar` for rect, `gaussian`; so its ESPRESO profile estimation
is skipped) and `--n-patches` from `--eclare-patches` (its default, 1,000,000 patches in batches of 128, is ~7,800
steps); its output is scored the same way and its CPU time recorded (`--only-eclare` reuses our earlier results).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import EvaluateConfig  # noqa: E402
from pipeline.evaluation.metrics import masked_metrics  # noqa: E402
from pipeline.imaging.degrade import lr_affine, upsample  # noqa: E402
from pipeline.io.nifti import load_nifti, save_nifti  # noqa: E402
from pipeline.selfsr.profile import SliceProfile, consistency, reslice  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "real_brain_ms"
#: name -> (CLI profile, thickness mm, spacing mm)
PROFILES = {"rect4": ("rect", 4.0, 4.0), "gauss4": ("gaussian", 4.0, 4.0), "rect5gap6": ("rect", 5.0, 6.0)}
N_SLICES = 180


def truth(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(normalised 1 mm truth, its affine, brain mask) of one corpus T1w scan, RAS, 180 axial slices."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    raw = np.asarray(img.dataobj, dtype=np.float64)[:, :, :N_SLICES]
    mask = raw > 0
    lo, hi = np.percentile(raw[mask], [0.5, 99.5])
    return np.clip((raw - lo) / (hi - lo), 0.0, 1.0) * mask, img.affine.copy(), mask


def run_timed(cmd: list[str], log: Path, what: str, cwd: Path | None = None) -> tuple[float, float]:
    """Run `cmd` (stdout and stderr to `log`); returns (wall s, CPU s of the child: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(f"{what} failed ({proc.returncode}); see {log}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_selfsr(src: Path, out: Path, kind: str, thickness: float, threads: int, steps: int | None,
               log: Path) -> tuple[float, float]:
    """The CLI on one scan; returns (wall s, CPU s)."""
    cmd = [sys.executable, "-m", "pipeline", "selfsr", "--input", str(src), "--output", str(out),
           "--slice-profile", kind, "--slice-thickness", str(thickness), "--threads", str(threads)]
    if steps:
        cmd += ["--steps", str(steps)]
    return run_timed(cmd, log, f"selfsr on {src.name}", cwd=ROOT)


def run_eclare(exe: Path, src: Path, out_dir: Path, kind: str, thickness: float, patches: int | None,
               log: Path) -> tuple[Path, float, float]:
    """ECLARE on one scan; returns (its output, wall s, CPU s)."""
    cmd = [str(exe), "--in-fpath", str(src), "--out-dir", str(out_dir), "--relative-slice-thickness", str(thickness),
           "--relative-slice-profile-type", {"rect": "boxcar", "gaussian": "gaussian"}[kind]]
    if patches:
        cmd += ["--n-patches", str(patches)]
    wall, cpu = run_timed(cmd, log, f"ECLARE on {src.name}")
    return out_dir / src.name.replace(".nii", "_eclare.nii"), wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    ap.add_argument("--subjects", nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="training steps (default: the CLI's)")
    ap.add_argument("--eclare", type=Path, default=None, help="run-eclare of a scratch venv: also run ECLARE")
    ap.add_argument("--eclare-patches", type=int, default=None, help="ECLARE's --n-patches (default: its own)")
    ap.add_argument("--only-eclare", action="store_true", help="keep our earlier results, run ECLARE only")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cfg = EvaluateConfig()
    scans = sorted(args.corpus.glob("sub-*/anat/sub-*_T1w.nii.gz"))
    if args.subjects:
        scans = [s for s in scans if s.name.split("_")[0] in args.subjects]
    if not scans:
        raise SystemExit(f"no T1w scans under {args.corpus}")
    results_file = args.work / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for scan in scans:
        subject = scan.name.split("_")[0]
        hr, affine, mask = truth(scan)
        for name in args.profiles:
            kind, thickness, spacing = PROFILES[name]
            scale = int(round(spacing))
            profile = SliceProfile(kind, thickness)
            lr = reslice(hr, scale, profile, spacing, axis=2).astype(np.float32)
            src = save_nifti(lr, lr_affine(affine, scale, (2,)), args.work / f"{subject}_{name}_lr.nii.gz")
            key = f"{subject}/{name}"
            if args.eclare:
                e_out, e_wall, e_cpu = run_eclare(args.eclare, src, args.work / "eclare", kind, thickness,
                                                  args.eclare_patches, args.work / f"{subject}_{name}_eclare.log")
                e_pred, e_affine = load_nifti(e_out)
                if not np.allclose(e_affine, affine, atol=1e-3) or e_pred.shape != hr.shape:
                    raise SystemExit(f"{e_out.name}: not on the truth's grid ({e_pred.shape} vs {hr.shape}; affine "
                                     f"{e_affine.round(3).tolist()} vs {affine.round(3).tolist()})")
                results.setdefault(key, {})["eclare"] = {
                    "scores": masked_metrics(e_pred, hr, mask, cfg), "wall_s": e_wall, "cpu_s": e_cpu,
                    "n_patches": args.eclare_patches or 1_000_000}
                results_file.write_text(json.dumps(results, indent=1))
                print(f"{subject} {name}: ECLARE {results[key]['eclare']['scores']['psnr']:.2f} dB, {e_cpu:.0f} CPU s, "
                      f"{e_wall:.0f} s", flush=True)
            if args.only_eclare and "scores" in results.get(key, {}):
                continue
            out = args.work / f"{subject}_{name}_selfsr.nii.gz"
            wall, cpu = run_selfsr(src, out, kind, thickness, args.threads, args.steps,
                                   args.work / f"{subject}_{name}.log")
            pred, pred_affine = load_nifti(out)
            if not np.allclose(pred_affine, affine, atol=1e-4) or pred.shape != hr.shape:
                raise SystemExit(f"{out.name}: not on the truth's grid ({pred.shape} vs {hr.shape})")
            cubic = upsample(lr, scale, "bicubic", (2,))
            scores = {
                "cubic": masked_metrics(cubic, hr, mask, cfg),
                "cubic_dc": masked_metrics(consistency(cubic, lr, scale, profile, spacing, 2), hr, mask, cfg),
                "selfsr": masked_metrics(pred, hr, mask, cfg),
            }
            dc_error = float(np.abs(reslice(pred.astype(np.float64), scale, profile, spacing, 2) - lr).max())
            results[key] = {**results.get(key, {}), "scores": scores, "wall_s": wall, "cpu_s": cpu,
                            "dc_max_error": dc_error}
            results_file.write_text(json.dumps(results, indent=1))
            print(f"{subject} {name}: cubic {scores['cubic']['psnr']:.2f} dB, selfsr {scores['selfsr']['psnr']:.2f} "
                  f"dB ({scores['selfsr']['psnr'] - scores['cubic']['psnr']:+.2f}), {cpu:.0f} CPU s, {wall:.0f} s",
                  flush=True)
    table(results, args.work / "selfsr.md")


def table(results: dict, path: Path) -> None:
    lines = ["| profile | subject | cubic PSNR | cubic + DC PSNR | selfsr PSNR | gain over cubic | cubic SSIM | selfsr SSIM "
             "| CPU s | wall s | max re-slice error |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for key in sorted(results, key=lambda k: (list(PROFILES).index(k.split("/")[1]), k)):
        subject, name = key.split("/")
        r = results[key]
        s = r["scores"]
        lines.append(f"| {name} | {subject} | {s['cubic']['psnr']:.2f} | {s['cubic_dc']['psnr']:.2f} | "
                     f"{s['selfsr']['psnr']:.2f} | {s['selfsr']['psnr'] - s['cubic']['psnr']:+.2f} | "
                     f"{s['cubic']['ssim']:.3f} | {s['selfsr']['ssim']:.3f} | {r['cpu_s']:.0f} | {r['wall_s']:.0f} | "
                     f"{r['dc_max_error']:.1e} |")
    eclare = [(k, r) for k, r in results.items() if "eclare" in r and "scores" in r]
    if eclare:
        lines += ["", "| profile | subject | ECLARE patches | cubic PSNR | selfsr PSNR | ECLARE PSNR | selfsr SSIM | "
                  "ECLARE SSIM | selfsr CPU s | ECLARE CPU s |", "|---|---|---|---|---|---|---|---|---|---|"]
        for key, r in sorted(eclare):
            subject, name = key.split("/")
            s, e = r["scores"], r["eclare"]
            lines.append(f"| {name} | {subject} | {e['n_patches']:,} | {s['cubic']['psnr']:.2f} | "
                         f"{s['selfsr']['psnr']:.2f} | {e['scores']['psnr']:.2f} | {s['selfsr']['ssim']:.3f} | "
                         f"{e['scores']['ssim']:.3f} | {r['cpu_s']:.0f} | {e['cpu_s']:.0f} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
