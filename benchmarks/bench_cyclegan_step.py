"""Time one CycleGAN training step (forward, G step, D step with the image pool) for a given configuration.

    python benchmarks/bench_cyclegan_step.py                      # the reference's default-like setting
    python benchmarks/bench_cyclegan_step.py --params '{"ngf": 16, "n_blocks": 6, "batch_size": 4}' --size 64
    python benchmarks/bench_cyclegan_step.py --device cuda --repeats 50

The default is the reference implementation's (junyanz/pytorch-CycleGAN-and-pix2pix) default-like setting:
resnet_6blocks, 64 filters in G and D, 128 x 128 crops, batch 1, 1 channel, least-squares loss, pool of 50.
Reports the median (and quartiles) wall time per step over `--repeats` steps after `--warmup` steps, and the
CPU time per step of the process (useful on a shared machine). `--channels-last` and `--no-mkldnn` toggle the
CPU variants that were tried; `--json` writes the numbers to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REFERENCE = {"generator": "resnet", "n_blocks": 6, "ngf": 64, "ndf": 64, "d_layers": 3, "batch_size": 1,
             "patch_size": 128, "gan_loss": "lsgan", "pool_size": 50, "spatial_dims": 2}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="{}", help="cyclegan config overrides (JSON) on top of the reference")
    parser.add_argument("--size", type=int, default=0, help="crop side (default: patch_size)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--channels-last", action="store_true", help="CPU: channels_last networks and inputs")
    parser.add_argument("--no-mkldnn", action="store_true", help="CPU: disable oneDNN (torch.backends.mkldnn)")
    parser.add_argument("--json", default=None, help="write the result here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from pipeline.config import CycleGANConfig, parse_section
    from pipeline.gan.base import Precision
    from pipeline.models.cyclegan import CycleGAN

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    params = {**REFERENCE, **json.loads(args.params)}
    cfg = parse_section(CycleGANConfig, params, "cyclegan")
    size = args.size or cfg.patch_size
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = CycleGAN(cfg, device=device, precision=Precision(device, cfg.precision), seed=0,
                     roi_size=[size] * cfg.spatial_dims)
    if args.channels_last:
        if cfg.spatial_dims != 2:
            parser.error("--channels-last is for 2D")
        model.channels_last = True
        for net in model.networks.values():
            net.to(memory_format=torch.channels_last)
    shape = (cfg.batch_size, 1, *([size] * cfg.spatial_dims))
    gen = torch.Generator().manual_seed(0)
    batches = [{"A": torch.rand(shape, generator=gen), "B": torch.rand(shape, generator=gen)} for _ in range(4)]
    model.train_mode(True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    wall, cpu = [], []
    for i in range(args.warmup + args.repeats):
        model.set_input(batches[i % len(batches)])
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        model.optimize_step(i)
        sync()
        if i >= args.warmup:
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    q = statistics.quantiles(wall, n=4) if len(wall) > 1 else [wall[0]] * 3
    result = {
        "config": {k: getattr(cfg, k) for k in REFERENCE} | {"size": size},
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
        "mkldnn": torch.backends.mkldnn.enabled,
        "median_s": statistics.median(wall),
        "q1_s": q[0],
        "q3_s": q[2],
        "cpu_s_per_step": statistics.median(cpu),
        "repeats": args.repeats,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "parameters": {k: sum(p.numel() for p in v.parameters()) for k, v in model.networks.items()},
        "step_times_s": [round(t, 4) for t in wall],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "step_times_s"}, indent=None))
    print(f"median {result['median_s']:.3f} s/step (IQR {q[0]:.3f}-{q[2]:.3f}), "
          f"CPU {result['cpu_s_per_step']:.3f} s/step, {result['threads']} threads")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
