"""Can a plain network learn the demo's motion correction at all? A residual 2D U-Net, mean squared error, no critic.

    python benchmarks/motion_learnability.py --run-dir RUN [--steps 1500] [--pool 4] [--context 2]
        [--inplane] [--fresh] [--threads 2]

RUN is a finished (or preprocessed) workflow run with `models: [motion]`, so that `results/preprocess` holds every
subject's `T1w` and `T1w_motion` and the simulation settings in `normalisation.json`. MONAI's `BasicUNet` (2D,
instance norm, features 16-256) sees an axial slice of the corrupted T1w (and `--context` corrupted slices on either
side as channels) and predicts the residual to the clean slice; it trains on the training subjects with Adam and a
one-cycle schedule, bf16 autocast, 8 slices a step, and is scored on the test subjects inside the mask (PSNR dB)
against the corrupted input, as the evaluation scores the `motion` family (and over the whole volume, background
included).

Training corruptions: each subject's preprocess corruption plus `--pool` more drawn from the simulator at the
recorded severity scaled by 0.5-1.5 (as `motion.pool_size`). `--inplane` keeps only the in-plane components of every
shot (x/y translation, rotation about z), for training and test alike: each axial slice's corruption then depends on
that slice alone, so a 2D network has all the information it needs. With `--inplane`, `--fresh` corrupts every
training slice anew at every step (a 2D simulation of that slice, exact for in-plane motion): no corruption is ever
seen twice. Nothing here is used by the workflow.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    from monai.networks.nets import BasicUNet

    from pipeline.imaging.motion import Shot, apply_motion, draw_motion, motion_rng
    from pipeline.imaging.similarity import masked_psnr
    from pipeline.io.nifti import load_nifti
    from pipeline.io.tables import read_subjects

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--pool", type=int, default=4)
    ap.add_argument("--context", type=int, default=2)
    ap.add_argument("--inplane", action="store_true")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if args.fresh and not (args.inplane and args.context == 0):
        raise SystemExit("--fresh simulates single slices: it needs --inplane and --context 0")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    pre = args.run_dir / "results" / "preprocess"
    rows = read_subjects(pre / "subjects.tsv", ["train", "test"])

    def load(subject: str, name: str) -> np.ndarray:
        return load_nifti(pre / subject / f"{name}.nii.gz")[0]

    def load_t1w(subject: str) -> tuple[np.ndarray, tuple[float, ...]]:
        """The clean T1w and its voxel size (mm)."""
        image, affine = load_nifti(pre / subject / "T1w.nii.gz")
        return image, tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))

    def sim(subject: str) -> dict:
        return json.loads((pre / subject / "normalisation.json").read_text())["T1w"]["motion"]

    def inplane(shots: list[dict]) -> list[Shot]:
        return [Shot(tuple(s["lines"]), (s["translation_mm"][0], s["translation_mm"][1], 0.0),
                     (0.0, 0.0, s["rotation_deg"][2])) for s in shots]

    def draw(shape: tuple[int, ...], s: dict, g: np.random.Generator) -> list[dict]:
        f = g.uniform(0.5, 1.5)
        shots = draw_motion(shape, g, fraction=min(1.0, s["fraction"] * f), max_translation_mm=s["max_translation_mm"] * f,
                            max_rotation_deg=s["max_rotation_deg"] * f, n_shots=s["n_shots"], pe_axis=s["pe_axis"],
                            centre_fraction=s["centre_fraction"], ordering=s["ordering"])
        return [shot.as_dict() for shot in shots]

    def corrupt(clean: np.ndarray, shots: list[dict], s: dict, spacing: tuple[float, ...]) -> np.ndarray:
        chosen = inplane(shots) if args.inplane else [Shot(tuple(d["lines"]), tuple(d["translation_mm"]),
                                                             tuple(d["rotation_deg"])) for d in shots]
        return apply_motion(clean, chosen, spacing, s["pe_axis"])

    t0 = time.perf_counter()
    train = []
    for r in (r for r in rows if r["split"] == "train"):
        subject, s = r["subject"], sim(r["subject"])
        clean, spacing = load_t1w(subject)
        versions = [corrupt(clean, s["shots"], s, spacing) if args.inplane else load(subject, "T1w_motion")]
        for j in range(0 if args.fresh else args.pool):
            versions.append(corrupt(clean, draw(clean.shape, s, motion_rng(1000 + j, subject, "T1w")), s, spacing))
        train.append((clean, versions, load(subject, "mask") > 0, s, spacing))
    print(f"{len(train)} training subjects prepared in {time.perf_counter() - t0:.0f} s", flush=True)

    c = args.context
    h, w = (-(-n // 16) * 16 for n in train[0][0].shape[:2])

    def slab(volume: np.ndarray, z: int) -> np.ndarray:
        """Slice z and its `c` neighbours on either side (edge-clamped), zero-padded to (h, w)."""
        idx = np.clip(np.arange(z - c, z + c + 1), 0, volume.shape[2] - 1)
        out = np.zeros((len(idx), h, w), np.float32)
        out[:, : volume.shape[0], : volume.shape[1]] = volume[:, :, idx].transpose(2, 0, 1)
        return out

    net = BasicUNet(spatial_dims=2, in_channels=2 * c + 1, out_channels=1, features=(16, 32, 64, 128, 256, 16),
                    norm=("instance", {"affine": True})).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            residual = net(x * 2 - 1)
        return x[:, c : c + 1] + residual.float() / 2

    t0, running, identity = time.perf_counter(), 0.0, 0.0
    for step in range(args.steps):
        xs, ys = [], []
        for _ in range(8):
            clean, versions, mask, s, spacing = train[rng.integers(len(train))]
            z = int(rng.choice(np.nonzero(mask.any(axis=(0, 1)))[0]))
            if args.fresh:
                one = clean[:, :, z : z + 1]
                x, y = slab(corrupt(one, draw(one.shape, s, rng), s, spacing), 0), slab(one, 0)
            else:
                x, y = slab(versions[rng.integers(len(versions))], z), slab(clean, z)[c : c + 1]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            xs.append(x.copy())
            ys.append(y.copy())
        x = torch.from_numpy(np.stack(xs)).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(np.stack(ys))
        loss = torch.mean((forward(x) - y) ** 2)
        identity += float(torch.mean((x[:, c : c + 1] - y) ** 2))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}: training MSE {running / 250:.6f}, the corrupted input's {identity / 250:.6f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
            running = identity = 0.0

    net.eval()
    gains = []
    print("| test subject | corrupted PSNR | corrected PSNR | gain | whole volume: corrupted / corrected |\n"
          "|---|---|---|---|---|")
    with torch.no_grad():
        for r in (r for r in rows if r["split"] == "test"):
            subject, s = r["subject"], sim(r["subject"])
            (clean, spacing), mask = load_t1w(subject), load(subject, "mask") > 0
            bad = corrupt(clean, s["shots"], s, spacing) if args.inplane else load(subject, "T1w_motion")
            out = np.empty_like(bad)
            for z0 in range(0, bad.shape[2], 16):
                zs = range(z0, min(z0 + 16, bad.shape[2]))
                x = torch.from_numpy(np.stack([slab(bad, z) for z in zs])).contiguous(memory_format=torch.channels_last)
                out[:, :, z0 : z0 + len(zs)] = forward(x).numpy()[:, 0, : bad.shape[0], : bad.shape[1]].transpose(1, 2, 0)

            before, after = masked_psnr(bad, clean, mask), masked_psnr(out, clean, mask)
            everywhere = np.ones_like(mask)
            gains.append(after - before)
            print(f"| {subject} | {before:.2f} | {after:.2f} | {after - before:+.2f} | "
                  f"{masked_psnr(bad, clean, everywhere):.2f} / {masked_psnr(out, clean, everywhere):.2f} |", flush=True)
    print(f"mean gain {np.mean(gains):+.2f} dB over {len(gains)} test subjects")


if __name__ == "__main__":
    main()
