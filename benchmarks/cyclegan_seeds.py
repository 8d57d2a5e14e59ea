"""How CycleGAN's result varies with the training seed, on a finished demo run (run by hand, not in CI).

    python benchmarks/cyclegan_seeds.py --run-dir RUN --seeds 1 2 3 [--params JSON] [--every 400] [--test]
        [--tag NAME] [--threads 2]

For each seed, trains CycleGAN with RUN's config (its `config/config.yaml` `cyclegan` section, updated by
`--params`) on RUN's preprocessed cohort, exactly as `python -m pipeline train cyclegan --seed N` would, and
scores the source -> target generator on the validation subjects every `--every` steps (the family's own
`validate`: PSNR inside the mask, no test-time augmentation), which shows *when* a run parts from the others.
With `--test` the final model is also applied to the test subjects with its inference settings (TTA as
configured) and scored with the workflow's metrics against the target (inside the mask). Models and
trajectories go to `<out>/<tag>_s<seed>/` (replaced); the table to `<out>/cyclegan_seeds_<tag>.md` (and stdout).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def train_seed(run_dir: Path, params: dict, seed: int, every: int, out: Path, threads: int) -> list[tuple[int, float]]:
    """Train one seed, validating every `every` steps; returns [(step, validation PSNR)]."""
    import torch

    from pipeline.gan.checkpoint import save_checkpoint
    from pipeline.gan.loop import LoopSettings, train
    from pipeline.gan.seeding import seed_everything
    from pipeline.models.cyclegan import CycleGAN, CycleGANConfig

    data = run_dir / "results" / "preprocess"
    cfg = CycleGANConfig(**params)
    torch.set_num_threads(threads)
    seed_everything(seed)
    sampler, kwargs = CycleGAN.prepare_data(cfg, data, seed)
    trajectory: list[tuple[int, float]] = []

    class Probed(CycleGAN):
        def validation_step(self, step: int) -> None:
            if step % every == 0 or step == self.total_steps:
                save_checkpoint(self.model_file(step), out / "model.pt")
                trajectory.append((step, float(self.validate(data, out)["psnr_db"])))

    shutil.rmtree(out, ignore_errors=True)  # a fresh run, not a resumed one
    out.mkdir(parents=True)
    try:
        # the loop calls validation_step at its checkpoints
        settings = LoopSettings(seed=seed, log_every=200, checkpoint_every=math.gcd(every, cfg.checkpoint_every))
        train(Probed(cfg, **kwargs), sampler, out, settings, {})
    finally:
        sampler.close()
    return trajectory


def score_test_subjects(run_dir: Path, model: Path) -> tuple[float, float]:
    """Mean PSNR and SSIM of the model's translations of the test subjects (the workflow's metrics)."""
    from pipeline.config import EvaluateConfig, load_params
    from pipeline.evaluation.metrics import masked_metrics
    from pipeline.gan.checkpoint import load_checkpoint
    from pipeline.io.nifti import load_nifti
    from pipeline.io.tables import read_subjects
    from pipeline.models.cyclegan import CycleGAN

    config = yaml.safe_load((run_dir / "config" / "config.yaml").read_text())
    cfg = load_params(json.dumps(config.get("evaluate") or {}), EvaluateConfig, "evaluate")
    blob = load_checkpoint(model)
    net = CycleGAN.load_generator(blob, "A2B", "cpu")
    source, target = blob["translation"]["source"], blob["translation"]["target"]
    scores = []
    for row in read_subjects(run_dir / "results" / "preprocess" / "subjects.tsv", splits={"test"}):
        sub = run_dir / "results" / "preprocess" / row["subject"]
        src, affine = load_nifti(sub / f"{source}.nii.gz")
        out = CycleGAN.apply(net, src, blob, affine=affine)  # as the workflow infers it (planes need the voxels)
        truth, mask = load_nifti(sub / f"{target}.nii.gz")[0], load_nifti(sub / "mask.nii.gz")[0] > 0
        scores.append(masked_metrics(out, truth, mask, cfg))
    return statistics.mean(s["psnr"] for s in scores), statistics.mean(s["ssim"] for s in scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, required=True, help="a finished workflow run (its results/preprocess)")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--params", default="{}", help="JSON updates to the run's cyclegan section")
    parser.add_argument("--every", type=int, default=400, help="steps between validations")
    parser.add_argument("--test", action="store_true", help="also score the final models on the test subjects")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cyclegan_seeds"))
    args = parser.parse_args(argv)

    config = yaml.safe_load((args.run_dir / "config" / "config.yaml").read_text())
    params = {**(config.get("cyclegan") or {}), **json.loads(args.params)}
    rows = []
    for seed in args.seeds:
        out = args.out / f"{args.tag}_s{seed}"
        trajectory = train_seed(args.run_dir, params, seed, args.every, out, args.threads)
        test = score_test_subjects(args.run_dir, out / "model.pt") if args.test else None
        rows.append((seed, trajectory, test))
        print(f"seed {seed}: " + " ".join(f"{s}:{v:.2f}" for s, v in trajectory)
              + (f"  test {test[0]:.2f} / {test[1]:.3f}" if test else ""), flush=True)

    steps = [s for s, _ in rows[0][1]]
    lines = [f"# CycleGAN over seeds: {args.tag}", "", f"Command: `python benchmarks/cyclegan_seeds.py "
             f"{' '.join(argv or sys.argv[1:])}`", "", "Validation PSNR (dB, no TTA) at step:", "",
             "| seed | " + " | ".join(str(s) for s in steps) + (" | test PSNR / SSIM |" if args.test else " |"),
             "|---" * (len(steps) + 1 + bool(args.test)) + "|"]
    for seed, trajectory, test in rows:
        lines.append(f"| {seed} | " + " | ".join(f"{v:.2f}" for _, v in trajectory)
                     + (f" | {test[0]:.2f} / {test[1]:.3f} |" if test else " |"))
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"cyclegan_seeds_{args.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
