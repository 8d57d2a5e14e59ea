"""Checkpoint selection of a trained translation model: the exported (selected) checkpoint against the last one.

    python benchmarks/translation_selection.py --data results/preprocess --model-dir results/models/stargan

Scores, on the test subjects inside the mask (the model file's inference settings, test-time augmentation
included), the model file `model.pt` (the checkpoint with the best validation PSNR, `select_best`) and the same
file with the weights of the run's last checkpoint (`checkpoints/last.pt`: what the family exported before
selection). The training trajectory does not depend on selection (validation draws no random numbers), so the
second row is what `select_best: false` gives. Prints one row per target and variant (mean PSNR / SSIM).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from real_data import score_translation  # noqa: E402

from pipeline.config import EvaluateConfig  # noqa: E402
from pipeline.gan.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from pipeline.io.tables import read_subjects  # noqa: E402

#: where each family's model file keeps the weights of its networks (model file key -> checkpoint network)
WEIGHTS = {"cyclegan": ("state_dicts", {"A2B": "G_AB", "B2A": "G_BA"}), "pix2pix": ("state_dict", "G"),
           "stargan": ("state_dict", "G")}


def last_model_file(model_dir: Path, out: Path) -> Path:
    """`model.pt` with the weights of `checkpoints/last.pt`, written to `out`."""
    blob = copy.deepcopy(load_checkpoint(model_dir / "model.pt"))
    nets = load_checkpoint(model_dir / "checkpoints" / "last.pt")["model"]["networks"]
    key, names = WEIGHTS[blob["family"]]
    blob[key] = {d: nets[n] for d, n in names.items()} if isinstance(names, dict) else nets[names]
    blob["training"].pop("selected", None)
    return save_checkpoint(blob, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the preprocess folder (subjects.tsv)")
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    selected = args.model_dir / "model.pt"
    blob = load_checkpoint(selected)
    info = blob["translation"]
    sel = blob["training"].get("selected")
    print(f"{blob['family']}: " + (f"selected step {sel['step']} of {sel['of_steps']}" if sel else "no selection"))
    last = last_model_file(args.model_dir, args.model_dir / "last_weights.pt")
    rows = read_subjects(args.data / "subjects.tsv", [args.split])
    cfg = EvaluateConfig()
    family = blob["family"]
    targets = info.get("targets", [info["target"]])
    for target in targets:
        direction = target if family == "stargan" else ("A2B" if family == "cyclegan" else None)
        for name, model in (("selected", selected), ("last", last)):
            scores = [score_translation(model, r, cfg, info["source"], target, direction) for r in rows if r.get(target)]
            psnr = np.mean([s["model"]["psnr"] for s in scores])
            ssim = np.mean([s["model"]["ssim"] for s in scores])
            print(f"{target:5s} {name:9s} n={len(scores)} PSNR {psnr:.2f} SSIM {ssim:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
