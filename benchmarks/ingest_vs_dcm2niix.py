"""Time our DICOM ingest per series against dcm2niix on the same series, and check they agree.

Run by hand (not a test):  python benchmarks/ingest_vs_dcm2niix.py [--repeats 3] [--corpus ../shared/corpus]
(`benchmarks/run_all.py` runs it as its `ingest` section.)

Series: the four real series of dcm_qa_decubitus (when the corpus is present) and synthetic ones written with
`pipeline.io.dicom_write` (MR 256x256x128 oblique, CT 512x512x64 with rescale, a small 64x64x32). For each,
the median wall time of `pipeline.ingest.run.ingest` on a folder holding only that series (discovery, header
reads, pixels, geometry, gzip'ed NIfTI + sidecar + manifest) and of `dcm2niix -z y` (and `-z n`) as a
subprocess. Prints a markdown table, with the largest affine difference (mm, both in closest-RAS orientation)
and whether the voxels are identical.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.ingest.run import ingest  # noqa: E402
from pipeline.io.dicom_write import write_dicom_series  # noqa: E402


def _synthetic(root: Path, small_only: bool = False) -> dict[str, Path]:
    """Write the synthetic series (`small_only`: the smallest one); name -> folder."""
    rng = np.random.default_rng(0)
    series = {}
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rot *= np.sign(np.linalg.det(rot))
    cases = {
        "synthetic MR 256x256x128 oblique": ((256, 256, 128), np.diag([0.9, 0.9, 1.2]), rot, "MR", None),
        "synthetic CT 512x512x64 rescaled": ((512, 512, 64), np.diag([0.7, 0.7, 2.0]), np.eye(3), "CT", (1.0, -1024.0)),
        "synthetic MR 64x64x32 axial": ((64, 64, 32), np.diag([3.0, 3.0, 4.0]), np.eye(3), "MR", None),
    }
    if small_only:
        cases = {k: v for k, v in cases.items() if "64x64x32" in k}
    for i, (name, (shape, zoom, rotation, modality, rescale)) in enumerate(cases.items()):
        affine = np.eye(4)
        affine[:3, :3] = rotation @ zoom
        affine[:3, 3] = -np.asarray(shape) / 2
        volume = rng.integers(0, 3000, shape).astype(np.int16)
        folder = root / f"s{i}"
        write_dicom_series(volume, affine, folder, series_description="t1_bench", modality=modality,
                           rescale=rescale, uid_seed=name)
        series[name] = folder
    return series


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _ours(series_dir: Path, out: Path) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    rows = ingest(series_dir, out).rows
    (row,) = [r for r in rows if r.status == "ingested"]
    return Path(row.output)


def _dcm2niix(series_dir: Path, out: Path, gz: bool) -> Path:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    subprocess.run(["dcm2niix", "-b", "n", "-z", "y" if gz else "n", "-f", "ref", "-o", str(out), str(series_dir)],
                   check=True, capture_output=True)
    (image,) = sorted(out.glob("ref*.nii*"))
    return image


def dcm2niix_version() -> str:
    """The installed dcm2niix's version line."""
    out = subprocess.run(["dcm2niix", "-v"], capture_output=True, text=True).stdout.strip().splitlines()
    return out[-1] if out else "unknown"


def measure(repeats: int = 3, corpus: Path | None = None, small_only: bool = False) -> list[dict]:
    """One row per series: files, matrix, median wall seconds of ours / dcm2niix -z y / -z n, agreement.

    `small_only`: the smallest synthetic series (and the corpus series) only, for a quick sanity run.
    """
    corpus = corpus if corpus is not None else REPO.parent / "shared" / "corpus"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = {}
        decubitus = corpus / "dcm_qa_decubitus" / "In"
        if decubitus.is_dir():
            for folder in sorted(p for p in decubitus.glob("*/*") if p.is_dir()):
                series[f"dcm_qa_decubitus {folder.parent.name}"] = folder
        synthetic = _synthetic(tmp / "synthetic", small_only)
        series.update(synthetic)
        for name, folder in series.items():
            n_files = sum(1 for p in folder.iterdir() if p.is_file() and p.suffix != ".txt")
            out = tmp / "ours"
            t_ours = _time(lambda f=folder, o=out: _ours(f, o), repeats)
            t_gz = _time(lambda f=folder: _dcm2niix(f, tmp / "d2n", True), repeats)
            t_raw = _time(lambda f=folder: _dcm2niix(f, tmp / "d2n_raw", False), repeats)
            a = nib.as_closest_canonical(nib.load(str(_ours(folder, out))))
            b = nib.as_closest_canonical(nib.load(str(_dcm2niix(folder, tmp / "d2n", True))))
            same = a.shape == b.shape and np.array_equal(a.get_fdata(), b.get_fdata())
            rows.append({"series": name, "files": n_files, "matrix": "x".join(map(str, a.shape)),
                         "ours_s": t_ours, "dcm2niix_gz_s": t_gz, "dcm2niix_raw_s": t_raw,
                         "ours_over_dcm2niix_gz": t_ours / t_gz,
                         "max_abs_affine_diff_mm": float(np.abs(a.affine - b.affine).max()),
                         "voxels_identical": bool(same)})
    return rows


def markdown(rows: list[dict]) -> str:
    """The rows of `measure` as a markdown table."""
    lines = ["| series | files | matrix | ours (s) | dcm2niix -z y (s) | dcm2niix -z n (s) | ours / dcm2niix -z y "
             "| max abs affine diff (mm) | voxels identical |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['series']} | {r['files']} | {r['matrix']} | {r['ours_s']:.3f} | {r['dcm2niix_gz_s']:.3f} "
                     f"| {r['dcm2niix_raw_s']:.3f} | {r['ours_over_dcm2niix_gz']:.2f} "
                     f"| {r['max_abs_affine_diff_mm']:.2e} | {'yes' if r['voxels_identical'] else 'NO'} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows = measure(args.repeats, args.corpus)
    print(f"dcm2niix {dcm2niix_version()}; median of {args.repeats} runs; wall seconds per series\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
