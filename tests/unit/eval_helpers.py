"""A tiny synthetic cohort laid out like the pipeline's results/ (preprocess, infer, models, benchmarks, ingest),
for the evaluation and report tests. Everything is written by the package's own writers."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SHAPE = (32, 32, 24)
SPACING = (2.0, 2.0, 2.0)
SUBJECTS = [("sub-001", "train"), ("sub-002", "test"), ("sub-003", "test"), ("sub-004", "test")]
XSS = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(2)>"
# The generator outputs the families export: SRGAN's two (phase 1 SRResNet, phase 2 SRGAN) and CycleGAN's one.
OUTPUTS = [
    {"name": "srresnet", "family": "srgan", "task": "sr", "input": "T1w_lr", "truth": "T1w", "desc": "sr"},
    {"name": "srgan", "family": "srgan", "task": "sr", "input": "T1w_lr", "truth": "T1w", "desc": "sr"},
    {"name": "cyclegan", "family": "cyclegan", "task": "translation", "input": "T1w", "truth": "T2w", "desc": "T2w"},
]
FAMILIES = ("srgan", "cyclegan")
# The translation output as the workflow skips it when no test subject has both contrasts (`--skipped`).
NO_T2W = "no test subject has T1w and T2w"
SKIPPED_CYCLEGAN = {**OUTPUTS[2], "reason": NO_T2W}


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def phantom(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1w, T2w, mask): an ellipsoid 'head' with smooth inner structure, intensities in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in SHAPE], indexing="ij"))
    radius = np.sqrt((grid[0] / 0.8) ** 2 + (grid[1] / 0.85) ** 2 + (grid[2] / 0.75) ** 2)
    mask = radius < 1.0
    tissue = gaussian_filter(rng.standard_normal(SHAPE), 2.0)
    tissue = (tissue - tissue.min()) / (np.ptp(tissue) + 1e-9)
    t1 = np.where(mask, 0.35 + 0.55 * tissue, 0.0)
    t2 = np.where(mask, 0.85 - 0.6 * tissue, 0.0) * (radius < 0.95) + 0.9 * mask * (radius >= 0.95)
    return t1.astype(np.float32), np.clip(t2, 0, 1).astype(np.float32), mask.astype(np.uint8)


def make_cohort(root: Path, *, seed: int = 0) -> Path:
    """Write results/{preprocess,infer,models,benchmarks,ingest} under `root`; return the subjects.tsv path."""
    from pipeline.imaging.degrade import degrade, lr_affine
    from pipeline.io.nifti import save_nifti

    rng = np.random.default_rng(seed)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = [-30.0, -30.0, -20.0]
    pre = Path("results/preprocess")
    rows = []
    for i, (sub, split) in enumerate(SUBJECTS):
        t1, t2, mask = phantom(rng)
        d = root / pre / sub
        save_nifti(t1, affine, d / "T1w.nii.gz")
        save_nifti(t2, affine, d / "T2w.nii.gz")
        save_nifti(mask, affine, d / "mask.nii.gz", dtype=np.uint8)
        lr = degrade(t1, 2, "kspace", (0, 1))
        save_nifti(lr, lr_affine(affine, 2, (0, 1)), d / "T1w_lr.nii.gz")
        (d / "normalisation.json").write_text(json.dumps({"T1w": {"method": "percentile"}, "T2w": {"method": "percentile"}}))
        rows.append({"subject": sub, "split": split, "T1w": (pre / sub / "T1w.nii.gz").as_posix(),
                     "T2w": (pre / sub / "T2w.nii.gz").as_posix(), "mask": (pre / sub / "mask.nii.gz").as_posix(),
                     "T1w_lr": (pre / sub / "T1w_lr.nii.gz").as_posix()})
        # Model outputs: srgan a little better than the interpolations, srresnet close, cyclegan noisy T2w.
        noise = rng.standard_normal(SHAPE).astype(np.float32)
        save_nifti(np.clip(t1 + 0.012 * noise, 0, 1), affine, root / "results/infer/srgan" / f"{sub}_sr.nii.gz")
        save_nifti(np.clip(t1 + (0.02 + 0.004 * i) * noise, 0, 1), affine, root / "results/infer/srresnet" / f"{sub}_sr.nii.gz")
        save_nifti(np.clip(t2 + 0.05 * noise, 0, 1), affine, root / "results/infer/cyclegan" / f"{sub}_T2w.nii.gz")
    table = root / pre / "subjects.tsv"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    for family in FAMILIES:  # one history per trained family (SRGAN's holds the SRResNet pretraining too)
        hist = root / "results/models" / family / "history.csv"
        hist.parent.mkdir(parents=True, exist_ok=True)
        (hist.parent / "train_summary.json").write_text(json.dumps(
            {"steps": 400, "resumed_from": 0, "train_seconds": 1834.2, "device": "cuda", "precision": "bf16",
             "threads": 2, "parameters": {"G": 1234567, "D": 76543}, "files": ["model.pt"]}))
        steps = np.arange(10, 410, 10)
        with hist.open("w") as fh:
            fh.write("step,lr_G,lr_D,G_pixel,G_adv,D_real,D_fake,it_per_s,elapsed_s\n")
            for s in steps:
                fh.write(f"{s},{1e-4 * 0.99 ** (s / 10):.6g},{1e-4:.6g},{0.2 * np.exp(-s / 150) + 0.01 * rng.random():.5g},"
                         f"{0.7 + 0.1 * rng.random():.5g},{0.5 + 0.1 * rng.random():.5g},{0.5 + 0.1 * rng.random():.5g},"
                         f"{12 + rng.random():.4g},{s / 12:.1f}\n")
    bench = root / "results/benchmarks"
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for rel, secs in (("generate_demo.tsv", 12.5), ("ingest.tsv", 4.2), ("preprocess.tsv", 8.9),
                      ("train_srgan.tsv", 1834.0), ("infer_srgan/sub-002.tsv", 3.1), ("infer_srgan/sub-003.tsv", 2.9)):
        p = bench / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(header + f"{secs}\t0:00:{int(secs) % 60:02d}\t512.3\t900.1\t400\t410\t1.0\t2.0\t95.0\t{secs}\n")
    # Ingest outputs the report reads: the manifest, and one sidecar carrying a hostile string from DICOM.
    ing = root / "results/ingest"
    ing.mkdir(parents=True, exist_ok=True)
    manifest = ["source\tstatus\treason\tsubject\tmodality\tshape\tspacing\toutput\tprimary"]
    for sub, _ in SUBJECTS:
        for mod in ("T1w", "T2w"):
            out = f"results/ingest/{sub}/{sub}_{mod}.nii.gz"
            manifest.append(f"dicom/DOE^JOHN/{mod}\tingested\t\t{sub}\t{mod}\t32x32x24\t2x2x2\t{out}\tyes")
            side = {"modality": mod, "subject": sub, "source_format": "DICOM", "dicom_modality": "MR",
                    "shape": list(SHAPE), "spacing_mm": list(SPACING), "echo_time_ms": 4.2 if mod == "T1w" else 90.0}
            if sub == "sub-002" and mod == "T1w":
                side["series_description"] = XSS
            (ing / sub).mkdir(parents=True, exist_ok=True)
            (ing / sub / f"{sub}_{mod}.json").write_text(json.dumps(side))
    manifest.append(f"dicom/DOE^JOHN/scout\tskipped\tModality {XSS_IMG} is not ingested (in dicom/DOE^JOHN/scout/1.dcm)\t\t\t\t\t\t")
    (ing / "manifest.tsv").write_text("\n".join(manifest) + "\n")
    return table


def evaluate_args(outputs: list[dict[str, str]] | None = None, skipped: list[dict[str, str]] | None = None,
                  **overrides) -> list[str]:
    """The evaluate command line of the cohort (`OUTPUTS` unless given, `--skipped` when given); `overrides`
    go into --params."""
    return ["evaluate", "--subjects", "results/preprocess/subjects.tsv",
            "--outputs", json.dumps(OUTPUTS if outputs is None else outputs),
            *(["--skipped", json.dumps(skipped)] if skipped is not None else []),
            "--degradation", json.dumps({"T1w_lr": {"method": "kspace", "scale": 2, "axes": "inplane"}}),
            "--params", json.dumps({"bootstrap_resamples": 2000, "figure_dpi": 60, **overrides})]


# An input folder named like a person, as a real run's `input_dir` (absolute); the report must not show it.
PERSON_FOLDER = "Jane_Roe-1234"


def workflow_config(input_dir: str) -> str:
    """A resolved workflow config (JSON, as the report rule passes it) whose paths point into `input_dir`."""
    return json.dumps({"input_dir": input_dir, "seed": 42, "models": list(FAMILIES),
                       "preprocess": {"split": {"subjects_file": f"{input_dir}/splits.tsv"}}})


def make_partly_reported(root: Path) -> Path:
    """The cohort evaluated with CycleGAN skipped (as for a cohort whose test subjects lack T2w), reported as from
    an input folder named like a person (a skipped input's reason quotes that folder); returns the report folder."""
    from pipeline import cli

    make_cohort(root)
    input_dir = (root / PERSON_FOLDER).as_posix()
    manifest = root / "results/ingest/manifest.tsv"
    manifest.write_text(manifest.read_text() + f"notes.txt\tskipped\t{input_dir}/notes.txt: not an image\t\t\t\t\t\t\n")
    with working_dir(root):
        assert cli.main(evaluate_args(OUTPUTS[:2], [SKIPPED_CYCLEGAN])) == 0
        assert cli.main(["report", "--out", "reports", "--workflow-config", workflow_config(input_dir)]) == 0
    return root / "reports"


def make_unevaluated_report(root: Path) -> Path:
    """The cohort with every output skipped (one reason holding markup), reported; returns the report folder."""
    from pipeline import cli

    make_cohort(root)
    skipped = [{**o, "reason": f"no training subject has T1w {XSS_IMG}"} for o in OUTPUTS[:2]] + [SKIPPED_CYCLEGAN]
    with working_dir(root):
        assert cli.main(evaluate_args([], skipped)) == 0
        assert cli.main(["report", "--out", "reports", "--workflow-config", json.dumps({"seed": 42, "input_dir": ""})]) == 0
    return root / "reports"
