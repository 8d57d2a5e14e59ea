"""Super-resolution, translation and inpainting on real brain MRI, leave-one-out (issues 14, 16, 17).

    python benchmarks/real_data.py --work /tmp/realbench [--corpus ../shared/corpus/real_brain_ms]
        [--families srgan cyclegan pix2pix stargan inpaint] [--spacing 2] [--params-srgan JSON] [--demo-run DIR] [--threads 2]

The corpus (three co-registered real MS patients, T1w/T2w/FLAIR at 1 mm) is ingested and preprocessed once by the
workflow's own stages (`--spacing 2`: the default config's 2 mm grid; `--spacing native`: each subject's own 1 mm
grid). Each fold trains on two subjects and tests on the third (`python -m pipeline train`, the default config
unless `--params-*` says otherwise), applies the trained generator to the held-out subject through the shared
inference code and scores it with the workflow's metrics (inside the mask, on [0, 1]) against the task's baselines.
With `--demo-run DIR` (a finished `snakemake` run of the demo, its `results/` under DIR) the demo-trained SR
model is scored on every corpus subject too, as a user would apply it with `python -m pipeline infer` (and the
demo-trained inpainting model, with `inpaint` among the families). Inpainting fills the preprocess stage's
`T1w_gaps` (the workflow's gap simulator) and is scored inside the deleted slices against linear and cubic
interpolation.
The table goes to `<work>/real_data.md` (and stdout); nothing here is used by the workflow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from pipeline.config import EvaluateConfig  # noqa: E402
from pipeline.evaluation.metrics import masked_metrics  # noqa: E402
from pipeline.io.nifti import load_nifti  # noqa: E402
from pipeline.io.tables import read_subjects  # noqa: E402

DEFAULT_CORPUS = ROOT.parent / "shared" / "corpus" / "real_brain_ms"


def run(cmd: list[str], log: Path) -> float:
    """Run a pipeline command (its output to `log`); return the seconds it took; fail loudly."""
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}); see {log}")
    return time.perf_counter() - t0


def prepare(corpus: Path, work: Path, spacing: str) -> Path:
    """Ingest and preprocess the corpus once (the workflow's stages); return the preprocess folder."""
    pre = work / f"preprocess_{spacing}"
    if (pre / "subjects.tsv").is_file():
        return pre
    ingest = work / "ingest"
    if not (ingest / "manifest.tsv").is_file():
        run([sys.executable, "-m", "pipeline", "ingest", "--input", str(corpus), "--out", str(ingest)],
            work / "ingest.log")
    params = {"spacing": None if spacing == "native" else [float(spacing)] * 3}
    run([sys.executable, "-m", "pipeline", "preprocess", "--manifest", str(ingest / "manifest.tsv"), "--out", str(pre),
         "--pseudonym-key", str(ingest / "pseudonym_key.tsv"), "--params", json.dumps(params)], work / "preprocess.log")
    return pre


def fold_dir(pre: Path, out: Path, splits: dict[str, str], extra: Path | None = None) -> Path:
    """A data folder whose subjects.tsv gives the subjects the splits `splits` (subject -> split); with `extra` (a
    second preprocess folder, e.g. the demo's) its train and val subjects are added as training subjects."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [(pre, r, splits[r["subject"]]) for r in read_subjects(pre / "subjects.tsv") if r["subject"] in splits]
    if extra is not None:
        rows += [(extra, r, "train") for r in read_subjects(extra / "subjects.tsv", ["train", "val"])]
    columns = list(dict.fromkeys(c for _, r, _ in rows for c in r))
    lines = ["\t".join(columns)]
    for k, (root, row, split) in enumerate(rows):
        name = row["subject"] if root == pre else f"sub-demo{k:03d}"
        link = out / name
        if not link.exists():
            link.symlink_to((root / row["subject"]).resolve())
        cells = {**row, "subject": name, "split": split}
        lines.append("\t".join("" if cells.get(c) is None else str(cells[c]) if c in ("subject", "split")
                               else str(Path(cells[c]).resolve()) for c in columns))
    (out / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return out


def sr_baselines(row: dict, cfg: EvaluateConfig, modality: str = "T1w") -> tuple:
    """One subject's HR, LR and mask, and the zero-filled and cubic baselines' metrics inside the mask."""
    from pipeline.imaging.degrade import upsample

    hr, _ = load_nifti(row[modality])
    lr, _ = load_nifti(row[f"{modality}_lr"])
    mask = load_nifti(row["mask"])[0] > 0
    scale = hr.shape[0] // lr.shape[0]
    axes = tuple(a for a in range(3) if hr.shape[a] != lr.shape[a])
    return hr, lr, mask, {b: masked_metrics(upsample(lr, scale, b, axes), hr, mask, cfg) for b in ("zerofill", "bicubic")}


def score_sr(model: Path, row: dict, cfg: EvaluateConfig, modality: str = "T1w") -> dict[str, dict[str, float]]:
    """The SR model and the interpolation baselines on one subject (metrics inside the mask)."""
    import torch

    from pipeline.inference.run import infer_array
    from pipeline.models import family_of
    from pipeline.models.contract import load_model_file

    hr, lr, mask, out = sr_baselines(row, cfg, modality)
    blob = load_model_file(model)
    family = family_of(blob)
    gen = family.load_generator(blob, None, torch.device("cpu"))
    pred, _ = infer_array(family, blob, gen, lr, None, False, "cpu")
    out["model"] = masked_metrics(pred, hr, mask, cfg)
    return out


def score_demo_model(model: Path, row: dict, cfg: EvaluateConfig, out_dir: Path, modality: str = "T1w") -> dict:
    """`python -m pipeline infer` of a model trained elsewhere on one subject's LR scan: the default (refused when
    the voxel sizes differ; the message is kept), then `--resolution-mismatch resample`, scored like `score_sr`."""
    from pipeline.inference.run import infer_scan

    hr, lr, mask, out = sr_baselines(row, cfg, modality)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{row['subject']}_{model.stem}.nii.gz"
    try:
        infer_scan(model, row[f"{modality}_lr"], target, device="cpu")
        out["refused"] = ""
    except ValueError as exc:
        out["refused"] = str(exc)
        infer_scan(model, row[f"{modality}_lr"], target, device="cpu", resolution_mismatch="resample")
    out["model"] = masked_metrics(load_nifti(target)[0], hr, mask, cfg)
    return out


def score_translation(model: Path, row: dict, cfg: EvaluateConfig, source: str, target: str,
                      direction: str | None = "A2B", save: Path | None = None,
                      settings: dict | None = None) -> dict[str, dict]:
    """The translation `direction` of a model file (CycleGAN: A2B; pix2pix: None; StarGAN: the target) on one
    subject, histogram matching (of the source and of the inverted source) and the untranslated source, inside
    the mask; `infer_s`: the inference seconds; `settings` override the model file's inference settings;
    with `save` the prediction is saved there (.npy)."""
    import torch

    from pipeline.imaging.degrade import histogram_match, histogram_match_inverted
    from pipeline.inference.run import infer_array
    from pipeline.models import family_of
    from pipeline.models.contract import load_model_file

    src, affine = load_nifti(row[source])
    truth, _ = load_nifti(row[target])
    mask = load_nifti(row["mask"])[0] > 0
    blob = load_model_file(model)
    family = family_of(blob)
    gen = family.load_generator(blob, direction, torch.device("cpu"))
    t0 = time.perf_counter()
    pred, _ = infer_array(family, blob, gen, src, direction, False, "cpu", "the source", affine, **(settings or {}))
    infer_s = time.perf_counter() - t0
    if save is not None:  # the prediction, for looking at (np.load)
        np.save(save, np.asarray(pred, dtype=np.float32))
    return {"histogram_match": masked_metrics(histogram_match(src, truth, mask=mask), truth, mask, cfg),
            "histogram_match_inverted": masked_metrics(histogram_match_inverted(src, truth, mask), truth, mask, cfg),
            "source": masked_metrics(src, truth, mask, cfg),
            "model": masked_metrics(pred, truth, mask, cfg), "infer_s": infer_s}


def score_inpaint(model: Path, row: dict, cfg: EvaluateConfig, modality: str = "T1w") -> dict[str, dict]:
    """The inpainting model (as `infer` runs it, with its self-check, and without), linear and cubic interpolation
    across the gaps of one subject's preprocess `<modality>_gaps`: metrics inside the deleted slices and the mask,
    for all gaps and per run length; ``chosen``: the filler the self-check picked."""
    import torch

    from pipeline.evaluation.inpainting import gap_metrics, length_regions
    from pipeline.imaging.gaps import interpolate, unknown_mask
    from pipeline.inference.run import infer_array
    from pipeline.models import family_of
    from pipeline.models.contract import load_model_file

    truth = load_nifti(row[modality])[0]
    gapped = load_nifti(row[f"{modality}_gaps"])[0]
    mask = load_nifti(row["mask"])[0] > 0
    unknown = unknown_mask(gapped)
    blob = load_model_file(model)
    family = family_of(blob)
    gen = family.load_generator(blob, None, torch.device("cpu"))
    fills = {m: interpolate(gapped, m, unknown) for m in ("linear", "cubic")}
    fills["model"] = infer_array(family, blob, gen, gapped, self_check=False)[0]
    fills["model, self-check"] = infer_array(family, blob, gen, gapped, self_check=True)[0]
    chosen = next(m for m in ("model", "linear", "cubic") if np.array_equal(fills[m], fills["model, self-check"]))
    regions = {f"{k}-slice": r for k, r in length_regions(unknown, mask).items()} | {"all": unknown & mask}
    return {**{name: {length: gap_metrics(image, truth, region, cfg) for length, region in regions.items()}
               for name, image in fills.items()}, "chosen": chosen}


def score_paired(data: Path, out: Path, cyclegan: Path, row: dict, cfg: EvaluateConfig, seconds: float,
                 threads: int) -> tuple[dict, float]:
    """The fold's CycleGAN generator architecture trained with L1 on the paired T1w/T2w crops of the training
    subjects (`translation_ceiling.paired_generator`) and scored on the test subject like the CycleGAN."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from translation_ceiling import paired_generator

    from pipeline.models.contract import load_model_file

    blob = load_model_file(cyclegan / "model.pt")
    torch.set_num_threads(threads)
    net, steps = paired_generator(data / "subjects.tsv", blob, "T1w", "T2w", seconds)
    out.mkdir(parents=True, exist_ok=True)
    paired_blob = {**blob, "state_dicts": {**blob["state_dicts"], "A2B": net.state_dict()}}
    torch.save(paired_blob, out / "model.pt")
    print(f"paired L1: {steps} steps in {seconds:.0f} s", flush=True)
    return score_translation(out / "model.pt", row, cfg, "T1w", "T2w", "A2B", out / f"pred_{row['subject']}_T2w.npy"), seconds


def train(family: str, data: Path, out: Path, params: dict, threads: int, seed: int = 42) -> float:
    if (out / "model.pt").is_file():
        summary = json.loads((out / "train_summary.json").read_text()) if (out / "train_summary.json").is_file() else {}
        return float(summary.get("train_seconds", float("nan")))
    out.mkdir(parents=True, exist_ok=True)
    return run([sys.executable, "-m", "pipeline", "train", family, "--data", str(data), "--out", str(out),
                "--params", json.dumps(params), "--threads", str(threads), "--seed", str(seed)], out / "train.log")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--families", nargs="+", default=["srgan"], choices=["srgan", "cyclegan", "pix2pix", "stargan", "inpaint", "paired"],
                    help="paired: the generator of the fold's CycleGAN (train that first, same --tag), trained with "
                         "L1 on the registered T1w/T2w pairs for --paired-seconds on its grid: the bound an unpaired "
                         "model of this architecture is measured against")
    ap.add_argument("--paired-seconds", type=float, default=300.0)
    ap.add_argument("--spacing", default="2", help="preprocess spacing in mm, or 'native'")
    ap.add_argument("--params-srgan", default="{}")
    ap.add_argument("--params-cyclegan", default="{}")
    ap.add_argument("--params-pix2pix", default="{}")
    ap.add_argument("--params-inpaint", default="{}")
    ap.add_argument("--params-stargan", default='{"targets": ["T2w", "FLAIR"]}',
                    help="StarGAN's config (default: targets T2w and FLAIR, the corpus's contrasts)")
    ap.add_argument("--folds", nargs="*", type=int, default=None, help="0-based folds to run (default: all)")
    ap.add_argument("--tag", default="default")
    ap.add_argument("--inference", default="{}", help="translation: inference settings overriding the model "
                    "files' (JSON, e.g. '{\"planes\": false}'; a trained fold is scored again with them)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=42, help="training seed (the workflow's default: 42)")
    ap.add_argument("--demo-run", type=Path, default=None)
    ap.add_argument("--with-demo", action="store_true",
                    help="train each fold on its two real subjects plus the demo run's train/val subjects")
    args = ap.parse_args()

    if not args.corpus.is_dir():
        raise SystemExit(f"{args.corpus}: corpus not found")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    pre = prepare(args.corpus.resolve(), work, args.spacing)
    subjects = [r["subject"] for r in read_subjects(pre / "subjects.tsv")]
    rows = {r["subject"]: r for r in read_subjects(pre / "subjects.tsv")}
    cfg = EvaluateConfig()
    results: list[dict] = []
    for k, test in enumerate(subjects):
        if args.folds is not None and k not in args.folds:
            continue
        train_subjects = [s for s in subjects if s != test]
        splits = {s: "train" for s in train_subjects}
        splits[test] = "test"
        demo_pre = args.demo_run / "results" / "preprocess" if args.demo_run is not None and args.with_demo else None
        data = fold_dir(pre, work / f"fold{k}_{args.spacing}" / ("data_demo" if demo_pre else "data"), splits, demo_pre)
        for fam in args.families:
            out = work / f"fold{k}_{args.spacing}" / f"{fam}_{args.tag}"
            if fam == "paired":
                scores, seconds = score_paired(data, out, work / f"fold{k}_{args.spacing}" / f"cyclegan_{args.tag}",
                                               rows[test], cfg, args.paired_seconds, args.threads)
                results.append({"fold": k, "test": test, "family": fam, "output": "paired L1 (CycleGAN's generator)",
                                "train_s": seconds, "scores": scores})
                print(json.dumps(results[-1]), flush=True)
                continue
            params = json.loads(getattr(args, f"params_{fam}"))
            seconds = train(fam, data, out, params, args.threads, args.seed)
            if fam == "inpaint":
                results.append({"fold": k, "test": test, "family": fam, "output": fam, "train_s": seconds,
                                "scores": score_inpaint(out / "model.pt", rows[test], cfg)})
            elif fam == "srgan":
                for name in ("srresnet", "model"):
                    scores = score_sr(out / f"{name}.pt", rows[test], cfg)
                    results.append({"fold": k, "test": test, "family": fam, "output": name, "train_s": seconds,
                                    "scores": scores})
            else:  # translation: one output (CycleGAN A2B, pix2pix), or one per target contrast (StarGAN)
                src = params.get("source", "T1w")
                if fam == "stargan":
                    outputs = [(t, t, f"stargan_{t}") for t in params.get("targets", ["T2w", "PDw"])]
                else:
                    outputs = [(params.get("target", "T2w"), "A2B" if fam == "cyclegan" else None, fam)]
                for tgt, direction, name in outputs:
                    scores = score_translation(out / "model.pt", rows[test], cfg, src, tgt, direction,
                                               out / f"pred_{test}_{tgt}.npy", json.loads(args.inference))
                    results.append({"fold": k, "test": test, "family": fam, "output": name, "train_s": seconds,
                                    "scores": scores})
                    print(json.dumps(results[-1]), flush=True)
                continue
            print(json.dumps(results[-1]), flush=True)
    if args.demo_run is not None and not args.with_demo:
        inpaint = args.demo_run / "results" / "models" / "inpaint" / "model.pt"
        for s in subjects if inpaint.is_file() and "inpaint" in args.families else []:  # the demo's filler
            results.append({"fold": "demo", "test": s, "family": "inpaint", "output": "inpaint", "train_s": None,
                            "scores": score_inpaint(inpaint, rows[s], cfg)})
            print(json.dumps(results[-1]), flush=True)
        # the demo-trained SR models on every corpus subject, through `infer` as a user would run it
        for name in ("srresnet", "model") if "srgan" in args.families else ():
            model = args.demo_run / "results" / "models" / "srgan" / f"{name}.pt"
            for s in subjects:
                results.append({"fold": "demo", "test": s, "family": "srgan", "output": name, "train_s": None,
                                "scores": score_demo_model(model, rows[s], cfg, work / "demo_infer")})
                print(json.dumps(results[-1]), flush=True)
    with (work / f"real_data_{args.tag}_{args.spacing}.json").open("w") as fh:
        json.dump(results, fh, indent=1)
    tables: list[list[str]] = []
    translation = [r for r in results if "histogram_match" in r["scores"]]
    if translation:  # the translation table: model, histogram matching and the source, train and inference seconds
        lines = ["| fold | test | output | PSNR / SSIM model | histogram match | histogram match, inverted source | source | "
                 "train s | infer s |", "|---|---|---|---|---|---|---|---|---|"]
        for r in translation:
            s = r["scores"]
            cell = "{psnr:.2f} / {ssim:.3f}".format
            lines.append(f"| {r['fold']} | {r['test']} | {r['output']} | {cell(**s['model'])} | "
                         f"{cell(**s['histogram_match'])} | {cell(**s['histogram_match_inverted'])} | "
                         f"{cell(**s['source'])} | {r['train_s']:.0f} | "
                         f"{s['infer_s']:.1f} |")
        tables.append(lines)
    sr = [r for r in results if "histogram_match" not in r["scores"] and r["family"] != "inpaint"]
    if sr:  # super-resolution: the model against zero-filling / bicubic
        lines = ["| fold | test | output | PSNR model | PSNR zerofill | PSNR bicubic | gain (dB) | SSIM model | "
                 "SSIM base |", "|---|---|---|---|---|---|---|---|---|"]
        for r in sr:
            s = r["scores"]
            base = "zerofill" if "zerofill" in s else "histogram_match"
            lines.append(f"| {r['fold']} | {r['test']} | {r['output']} | {s['model']['psnr']:.2f} | "
                         f"{s[base]['psnr']:.2f} | {s.get('bicubic', s[base])['psnr']:.2f} | "
                         f"{s['model']['psnr'] - s[base]['psnr']:+.2f} | {s['model']['ssim']:.3f} | "
                         f"{s[base]['ssim']:.3f} |")
        tables.append(lines)
    gaps = [r for r in results if r["family"] == "inpaint"]
    if gaps:  # the inpainting table: PSNR inside the deleted slices per run length, model / linear / cubic
        lengths = list(gaps[0]["scores"]["model"])
        fillers = ("model", "model, self-check", "linear", "cubic")
        lines = ["PSNR (dB) inside the deleted slices: " + " / ".join(fillers), "",
                 "| fold | test | " + " | ".join(lengths) + " | SSIM, all gaps | self-check chose |",
                 "|---" * (len(lengths) + 4) + "|"]
        for r in gaps:
            s = r["scores"]
            lines.append(f"| {r['fold']} | {r['test']} | " + " | ".join(
                " / ".join(f"{s[m][g]['psnr']:.2f}" if g in s[m] else "-" for m in fillers) for g in lengths)
                + " | " + " / ".join(f"{s[m]['all']['ssim']:.3f}" for m in fillers) + f" | {s['chosen']} |")
        tables.append(lines)
    lines = [line for i, t in enumerate(tables) for line in ([""] if i else []) + t]
    table = "\n".join(lines)
    (work / f"real_data_{args.tag}_{args.spacing}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
