"""Time one training step of a model on CPU or CUDA: several repeats, median, printed as a table.

    python benchmarks/bench_train_step.py                      # the SRGAN reference configuration
    python benchmarks/bench_train_step.py --params '{"channels": 32, "n_blocks": 8}' --lr-size 21 25
    python benchmarks/bench_train_step.py --device cuda --repeats 20

Reference configuration (`--reference`, the default when no --params): SRResNet with 16 residual blocks,
64 channels, batch norm, 9x9 outer kernels, batch 16, 24 -> 96 crops (x4), 1 channel, the paper's
VGG-style discriminator. Phases: `pretrain` (generator + pixel loss) and `gan` (generator step with the
discriminator frozen, then the discriminator step). Synthetic data; nothing is read or written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE = {"channels": 64, "n_blocks": 16, "norm": "batch", "outer_kernel": 9, "interp_skip": "none", "upsampler": "stages",
             "discriminator": "vgg", "d_channels": 64, "d_layers": 4, "batch_size": 16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="srgan")
    parser.add_argument("--params", default=None, help="config section overrides (JSON); default: the reference")
    parser.add_argument("--lr-size", type=int, nargs="+", default=[24], help="LR crop side(s) (2D: 1 or 2 values)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--phase", choices=["pretrain", "gan", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)

    import torch

    from pipeline.config import parse_section
    from pipeline.gan.base import Precision
    from pipeline.models import MODELS, build_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cls = MODELS[args.model]
    overrides = json.loads(args.params) if args.params else dict(REFERENCE)
    cfg = parse_section(cls.config_class, overrides, args.model)
    device = torch.device(args.device)
    dims = cfg.spatial_dims
    lr_size = list(args.lr_size) * (dims if len(args.lr_size) == 1 else 1)
    factors = [args.scale] * dims + ([1] if dims == 2 else [])
    torch.manual_seed(0)
    results = []
    phases = ["pretrain", "gan"] if args.phase == "both" else [args.phase]
    for phase in phases:
        pretrain = 10**9 if phase == "pretrain" else 0
        run_cfg = dataclasses.replace(cfg, pretrain_steps=min(pretrain, 10**9), gan_steps=10**6)
        model = build_model(args.model, run_cfg, factors=factors, slice_axis=2 if dims == 2 else None,
                            device=device, precision=Precision(device, cfg.precision))
        model.train_mode(True)
        b = cfg.batch_size
        batch = {"lr": torch.rand(b, 1, *lr_size, device=device),
                 "hr": torch.rand(b, 1, *(n * args.scale for n in lr_size), device=device)}
        if cfg.interp_skip != "none":
            batch["skip"] = torch.rand_like(batch["hr"])
        times = []
        for i in range(args.warmup + args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.set_input(batch)
            model.optimize_step(i + 1)
            model.precision.update()
            model.losses()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
        results.append({"phase": phase, "median_s": statistics.median(times), "min_s": min(times),
                        "max_s": max(times), "repeats": len(times)})
    params = {k: sum(p.numel() for p in v.parameters()) for k, v in model.networks.items()}
    print(f"model {args.model} on {device} ({torch.get_num_threads()} threads, {model.precision.mode}); "
          f"batch {cfg.batch_size}, LR {'x'.join(map(str, lr_size))} -> HR "
          f"{'x'.join(str(n * args.scale) for n in lr_size)}; parameters {params}")
    print(f"{'phase':10s} {'median s/step':>14s} {'min':>8s} {'max':>8s} {'it/s':>8s}")
    for r in results:
        print(f"{r['phase']:10s} {r['median_s']:14.3f} {r['min_s']:8.3f} {r['max_s']:8.3f} {1 / r['median_s']:8.2f}")
    if args.json:
        print(json.dumps({"config": dataclasses.asdict(cfg), "device": str(device), "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
