"""All benchmarks in one command: a markdown report and CSV tables in benchmarks/results/ (run by hand, not in CI).

    python benchmarks/run_all.py --run-dir /path/to/finished/workflow     # the full table (on a quiet machine)
    python benchmarks/run_all.py --quick                                   # sanity run: few repeats, small sizes
    python benchmarks/run_all.py --only peak,train --threads 2 --repeats 9 --reference-dir /tmp/refcode
    python benchmarks/run_all.py --only train --device cuda               # CUDA only (default: CPU, + CUDA if present)
    python benchmarks/run_all.py --only peak,train,infer --device cuda --precisions fp32,bf16   # fast path vs fp32

Sections (`--only`, comma-separated; default all):

``peak``   Conv peak: 3x3 ``conv2d`` forward + backward (input and weight gradients) on several large shapes;
           per shape FLOPs (``FlopCounterMode``) / median wall time; the peak is the best shape's GFLOP/s.
           Measured per device and precision at ``--threads`` threads; the yardstick for "fraction of peak".
``train``  Training step time (median wall, interquartile range, process CPU time) of SRGAN and CycleGAN at
           fixed configurations (`TRAIN_CASES`; a plain run: `DEFAULT_CASES`; ``--cases`` for others: ``all``,
           ``default`` and substrings of the names): our SRGAN default architecture's adversarial step at the must-show size
           (16 residual blocks, 64 channels, batch 16, 24 -> 96 crops, 1 channel) and at BasicSR's crop size
           (32 -> 128, about BasicSR's FLOPs per step), CycleGAN at the reference's setting (resnet_6blocks,
           64 filters, 128 x 128, batch 1, 1 channel, identity 0.5 = the reference's default; identity 0 = ours
           with ``--cases``), the SRGAN paper's network and the pretraining steps (``--cases``), and beside
           them the reference implementations' own training steps (junyanz's CycleGAN, BasicSR's SRGAN; CPU,
           fp32), loaded from ``--reference-dir`` by `reference_steps.py` (skipped, with a note, without it)
           and timed in the same rounds: the "reference / ours" column. `reference_cyclegan.py` (our
           re-implementation of the CycleGAN reference) is no longer timed. On CUDA also CycleGAN at 2D
           256 x 256 (resnet_9blocks, 64 filters: the paper's setting) and 3D 96^3 (resnet_6blocks, 32
           filters), with the case's own peak CUDA memory (its resident weights, gradients, optimiser moments
           and batch, plus the transient peak of its step over ``memory_allocated`` before it).
           ``--precisions`` picks the precisions (``fp32``: plain fp32, on CUDA PyTorch's default TF32
           convolutions; ``bf16``: bf16 autocast, channels-last in 2D; ``auto``: on CUDA the fast path, on a
           CPU fp32 and bf16 side by side where the CPU has native bf16, e.g. AVX-512 BF16 or AMX), and
           ``--cudnn-benchmark`` lets cuDNN autotune (what ``deterministic: false`` does in training). Model
           FLOPs per step: ``FlopCounterMode`` over one full step (forwards and backwards of every network;
           textbook convolutions, i.e. `pipeline.nets.fastconv.reference_kernels`). Achieved GFLOP/s = FLOPs /
           median step time; fraction of peak = that / the conv peak of the same device and precision.
``infer``  Whole-volume inference: SR (`super_resolve`) and translation (`translate`) of a synthetic volume,
           each in its own process; output voxels per second and peak memory (CPU: the process's peak RSS
           and its growth during inference; CUDA: ``max_memory_allocated``). Model files of a finished run
           (``--run-dir``/results/models/{srgan,cyclegan}/model.pt) when given, else the default config's
           networks (untrained: speed does not depend on the weights).
``ingest`` Our DICOM ingest vs dcm2niix per series (`ingest_vs_dcm2niix.measure`).
``demo``   Wall time and peak memory per workflow stage of a finished run (``--run-dir``:
           results/benchmarks/*.tsv, Snakemake's ``benchmark:`` records).

Writes ``benchmarks/results/benchmarks.md``, ``<section>.csv`` and ``machine.json`` (``--out`` to change).
Timings on a shared machine are inflated and noisy; the report says what the load average was.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

log = logging.getLogger("benchmarks")

SECTIONS = ("peak", "train", "infer", "ingest", "demo")

#: 3x3 convolutions (N, C_in = C_out, H, W) of the conv-peak microbenchmark
PEAK_SHAPES = [(1, 256, 64, 64), (8, 256, 32, 32), (4, 128, 64, 64), (16, 64, 48, 48), (16, 64, 96, 96),
               (2, 512, 32, 32)]
PEAK_SHAPES_CUDA = [(64, 256, 64, 64), (32, 512, 32, 32), (128, 128, 64, 64)]

SRGAN_SIZE = {"channels": 64, "n_blocks": 16, "patch_size": 96, "batch_size": 16, "context_slices": 0}  # 1 channel
#: the SRGAN paper's networks (SRResNet with batch norm, 9x9 outer kernels, x2 sub-pixel stages; VGG-style D)
SRGAN_PAPER = {**SRGAN_SIZE, "norm": "batch", "outer_kernel": 9, "interp_skip": "none", "upsampler": "stages",
               "discriminator": "vgg", "d_channels": 64, "d_layers": 4}
CYCLEGAN_REF = {"generator": "resnet", "n_blocks": 6, "ngf": 64, "ndf": 64, "d_layers": 3, "batch_size": 1,
                "patch_size": 128, "gan_loss": "lsgan", "pool_size": 50, "spatial_dims": 2, "lambda_identity": 0.0}

CYCLEGAN_256 = {**CYCLEGAN_REF, "n_blocks": 9, "patch_size": 256}
CYCLEGAN_3D = {**CYCLEGAN_REF, "spatial_dims": 3, "ngf": 32, "ndf": 32, "patch_size": 96}

#: BasicSR's SRGAN crop (gt_size 128, batch 16, x4): our default architecture at that size does about the
#: same FLOPs per step as BasicSR's step (see the GFLOP/step column)
SRGAN_BASICSR_SIZE = {**SRGAN_SIZE, "patch_size": 128}

#: name -> (model, config overrides, phase, the reference case it is compared with, or "")
#: model "ref:cyclegan" / "ref:basicsr_srgan": the reference implementations' own code (`reference_steps.py`,
#: from --reference-dir), always fp32, timed in the same rounds as our cases
TRAIN_CASES: dict[str, tuple[str, dict[str, Any], str, str]] = {
    "srgan paper, pretrain": ("srgan", SRGAN_PAPER, "pretrain", ""),
    "srgan paper, adversarial": ("srgan", SRGAN_PAPER, "gan", ""),
    "srgan default arch, pretrain": ("srgan", SRGAN_SIZE, "pretrain", ""),
    "srgan default arch, adversarial": ("srgan", SRGAN_SIZE, "gan", "BasicSR SRGAN (reference code)"),
    "srgan default arch at BasicSR's size, adversarial": ("srgan", SRGAN_BASICSR_SIZE, "gan",
                                                          "BasicSR SRGAN (reference code)"),
    "BasicSR SRGAN (reference code)": ("ref:basicsr_srgan", {"gt_size": 128, "batch": 16}, "step", ""),
    "cyclegan ref setting, identity 0": ("cyclegan", CYCLEGAN_REF, "step", "CycleGAN reference code, identity 0"),
    "cyclegan ref setting, identity 0.5": ("cyclegan", {**CYCLEGAN_REF, "lambda_identity": 0.5}, "step",
                                           "CycleGAN reference code, identity 0.5"),
    "CycleGAN reference code, identity 0": ("ref:cyclegan", {"lambda_identity": 0.0, "track_running_stats": False},
                                            "step", ""),
    "CycleGAN reference code, identity 0.5": ("ref:cyclegan", {"lambda_identity": 0.5, "track_running_stats": False},
                                              "step", ""),
    #: the stored (2018) networks.py as is: its instance norm also updates running statistics (unused in training)
    "CycleGAN reference code as stored, identity 0.5": ("ref:cyclegan", {"lambda_identity": 0.5}, "step", ""),
    "cyclegan 2D 256x256": ("cyclegan", CYCLEGAN_256, "step", ""),
    "cyclegan 2D 256x256, batch 8": ("cyclegan", {**CYCLEGAN_256, "batch_size": 8}, "step", ""),
    "cyclegan 3D 96^3": ("cyclegan", CYCLEGAN_3D, "step", ""),
}
#: cases too slow for a CPU benchmark run (minutes per step there)
CUDA_ONLY_CASES = {"cyclegan 2D 256x256", "cyclegan 2D 256x256, batch 8", "cyclegan 3D 96^3"}
#: the cases of a plain run (`--cases` to pick others: comma-separated substrings of the names)
DEFAULT_CASES = ["srgan default arch, adversarial", "srgan default arch at BasicSR's size, adversarial",
                 "BasicSR SRGAN (reference code)", "cyclegan ref setting, identity 0.5",
                 "CycleGAN reference code, identity 0.5", *sorted(CUDA_ONLY_CASES)]
REFERENCE_NOTE = (
    "**reference / ours**: the reference implementations' own code, run in this process and timed in the same "
    "rounds as ours (one step of every case per round, so load drifts hit all alike): junyanz/"
    "pytorch-CycleGAN-and-pix2pix's `CycleGANModel.optimize_parameters` with its `networks.py` "
    "(resnet_6blocks, ngf/ndf 64, instance norm, init normal 0.02, lsgan, pool 50; its instance norm without "
    "running statistics, as in the repository's current networks.py: the stored 2018 copy also updates them, "
    "unused, the \"as stored\" case) and BasicSR's `MSRResNet` + "
    "`VGGStyleDiscriminator` with `SRGANModel.optimize_parameters`'s losses (pixel L1, vanilla GAN; no VGG "
    "perceptual loss), all at 1 channel (`benchmarks/reference_steps.py`; their source from `--reference-dir`, "
    "not in this repository). The reference code runs in fp32 (it has no mixed-precision option); the ratio is "
    "the median over rounds of (reference step / our step) in the same round, with its interquartile range. "
    "CycleGAN: the same work (same networks, losses and sizes). SRGAN: not the same work: BasicSR's "
    "discriminator takes 128 or 256 crops only, so it runs at its own size (32 -> 128, batch 16), and its "
    "networks (a full-resolution VGG-style discriminator applied three times per step, 64-channel convolutions "
    "at the output resolution) do several times our FLOPs per step (GFLOP/step column); its time ratio says how "
    "much sooner our step ends, **per FLOP** = (reference s / reference GFLOP) / (our s / our GFLOP) = our "
    "GFLOP/s / the reference's: the speed at the same FLOPs."
)


# ------------------------------------------------------------------------------------------ helpers
def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stats(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "min": min(values)}


def _devices(arg: str) -> list[str]:
    import torch

    if arg == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [d.strip() for d in arg.split(",") if d.strip()]


def _precisions(device: str, requested: str = "auto") -> list[str]:
    """The precisions to run on `device`, from `requested` (comma-separated): ``auto`` is fp32 + bf16 on a CPU
    with native bf16 (`pipeline.gan.base.cpu_has_bf16`; fp32 alone on other CPUs) and the fast path on CUDA
    (bf16, or fp16 where bf16 is missing). A precision the device cannot run falls back as `Precision` does
    (e.g. fp16 or emulated bf16 on a CPU -> fp32); duplicates are dropped."""
    import torch

    from pipeline.gan.base import Precision

    dev = torch.device(device)
    names = [p.strip() for p in requested.split(",") if p.strip()] or ["auto"]
    modes: list[str] = []
    for name in names:
        if name == "auto" and dev.type != "cuda":
            modes += ["fp32"] + (["bf16"] if _cpu_has_bf16() else [])
        else:
            modes.append(Precision(dev, name).mode)
    return list(dict.fromkeys(modes))


def _cpu_has_bf16() -> bool:
    try:
        from pipeline.gan.base import cpu_has_bf16
    except ImportError:  # a pipeline without CPU bf16 support
        return False
    return cpu_has_bf16()


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def machine_info(threads: int) -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "python": platform.python_version(),
            "load_average_start": load_average(), "date": time.strftime("%Y-%m-%d %H:%M")}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                            capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--",
                                "pipeline", "benchmarks/run_all.py", "benchmarks/reference_steps.py"],
                               capture_output=True, text=True, timeout=10).stdout.split("\n")
        changed = sorted({line[3:].strip() for line in dirty if line.strip()})
        if changed:
            info["git_commit"] += f" + uncommitted changes to {', '.join(changed)}"
    return info


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v == "":
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1e4 else f"{v:.3g}"
    return str(v)


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]], digits: int = 3) -> str:
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(k), digits) for k, _ in columns) + " |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ conv peak
def conv_peak(device: str, precision: str, repeats: int, quick: bool) -> list[dict[str, Any]]:
    """GFLOP/s of 3x3 conv2d forward + backward per shape (see PEAK_SHAPES); FLOPs from FlopCounterMode."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.gan.base import Precision

    dev = torch.device(device)
    amp = Precision(dev, precision)
    shapes = PEAK_SHAPES_CUDA if dev.type == "cuda" else PEAK_SHAPES
    if quick:
        shapes = shapes[:2]
    rows = []
    for n, c, h, w in shapes:
        x = torch.randn(n, c, h, w, device=dev, requires_grad=True)
        weight = (torch.randn(c, c, 3, 3, device=dev) * 0.02).requires_grad_()

        def run(x: torch.Tensor = x, weight: torch.Tensor = weight) -> None:
            with amp.autocast():
                y = F.conv2d(x, weight, padding=1)
            y.backward(torch.ones_like(y))

        with FlopCounterMode(display=False) as counter:
            run()
        flops = counter.get_total_flops()
        times = []
        for i in range(repeats + 1):
            _sync(dev)
            t0 = time.perf_counter()
            run()
            _sync(dev)
            if i:
                times.append(time.perf_counter() - t0)
        s = _stats(times)
        rows.append({"device": device, "precision": amp.mode, "shape": f"{n}x{c}x{h}x{w}", "gflop": flops / 1e9,
                     "median_s": s["median"], "gflops_per_s": flops / s["median"] / 1e9})
    best = max(r["gflops_per_s"] for r in rows)
    for r in rows:
        r["is_peak"] = r["gflops_per_s"] == best
    return rows


# ------------------------------------------------------------------------------------------ training steps
def _build_step(model: str, overrides: dict[str, Any], phase: str, device: str, precision: str,
                reference_dir: Path | None = None) -> tuple[Callable[[], None], dict[str, Any]]:
    """A closure running one training step of the case, and a description of it."""
    import torch

    dev = torch.device(device)
    torch.manual_seed(0)
    if model.startswith("ref:"):
        import reference_steps

        if dev.type != "cpu":
            raise ValueError("the reference steps run on the CPU only")
        if model == "ref:cyclegan":
            return reference_steps.cyclegan_step(reference_dir, lambda_identity=overrides["lambda_identity"],
                                                 track_running_stats=overrides.get("track_running_stats"))
        return reference_steps.srgan_step(reference_dir, gt_size=overrides["gt_size"], batch=overrides["batch"])

    from pipeline.config import parse, to_dict
    from pipeline.gan.base import Precision
    from pipeline.models import FAMILIES, build_model

    cls = FAMILIES[model]
    cfg = parse(cls.config_class, {**overrides, "precision": precision}, model)
    if model == "srgan":
        cfg = parse(cls.config_class, {**to_dict(cfg), "pretrain_steps": 10**9 if phase == "pretrain" else 0,
                                       "gan_steps": 10**6}, model)
        scale, lr_side = 4, cfg.patch_size // 4
        net = build_model(model, cfg, factors=[scale, scale, 1], slice_axis=2, device=dev,
                          precision=Precision(dev, cfg.precision))
        gen = torch.Generator().manual_seed(0)
        batch = {"lr": torch.rand(cfg.batch_size, 1, lr_side, lr_side, generator=gen),
                 "hr": torch.rand(cfg.batch_size, 1, cfg.patch_size, cfg.patch_size, generator=gen)}
        if cfg.interp_skip != "none":
            from pipeline.nets.interp import interpolate

            batch["skip"] = interpolate(batch["lr"], (scale, scale), cfg.interp_skip)
        config = (f"{cfg.n_blocks} blocks, {cfg.channels} ch, norm {cfg.norm}, {cfg.upsampler} upsampler, "
                  f"D {cfg.discriminator}; batch {cfg.batch_size}, {lr_side}->{cfg.patch_size}")
    else:
        net = build_model(model, cfg, device=dev, precision=Precision(dev, cfg.precision), seed=0,
                          roi_size=[cfg.patch_size] * cfg.spatial_dims)
        gen = torch.Generator().manual_seed(0)
        shape = (cfg.batch_size, 1, *([cfg.patch_size] * cfg.spatial_dims))
        batch = {"A": torch.rand(shape, generator=gen), "B": torch.rand(shape, generator=gen)}
        config = (f"resnet_{cfg.n_blocks}blocks, ngf {cfg.ngf}, ndf {cfg.ndf}, {cfg.patch_size}^{cfg.spatial_dims}, "
                  f"batch {cfg.batch_size}, identity {cfg.lambda_identity}")
    batch = {k: v.to(dev) for k, v in batch.items()}
    net.train_mode(True)
    counter = {"step": 1}

    def step() -> None:
        net.set_input(batch)
        net.optimize_step(counter["step"])
        net.precision.update()
        counter["step"] += 1

    desc = {"params": sum(p.numel() for n in net.networks.values() for p in n.parameters()),
            "precision": net.precision.mode, "config": config}
    return step, desc


def step_flops(step: Callable[[], None]) -> int:
    """FLOPs of one call of `step` (FlopCounterMode; textbook convolutions, not our CPU fast paths)."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.nets.fastconv import reference_kernels

    with reference_kernels(), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def train_steps(devices: list[str], repeats: int, warmup: int, cases: list[str],
                peaks: dict[tuple[str, str], float], precisions: str = "auto",
                reference_dir: Path | None = None, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Time every case on every device, interleaved (one step of each case per round), so load drifts hit all.

    Reference cases (``ref:`` models) run once per device, in fp32, in the same rounds as every precision of
    ours; each of our rows compared with one gets the reference's median and the median (and interquartile
    range) over rounds of reference step / our step. `notes` collects what was skipped and why.
    """
    import torch

    notes = notes if notes is not None else []
    rows = []
    for device in devices:
        dev = torch.device(device)
        built, resident = {}, {}
        for precision in _precisions(device, precisions):
            for name in cases:
                model, overrides, phase, _ = TRAIN_CASES[name]
                reference = model.startswith("ref:")
                if reference and (dev.type != "cpu" or (name, "fp32") in built):
                    continue  # the reference code: CPU, fp32 (its own arithmetic), once per device
                if name in CUDA_ONLY_CASES and dev.type != "cuda":
                    continue
                if reference and reference_dir is None:
                    note = f"{name}: not run (no --reference-dir with the reference source)"
                    notes += [note] if note not in notes else []
                    continue
                before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
                try:
                    step, desc = _build_step(model, overrides, phase, device, "fp32" if reference else precision,
                                             reference_dir)
                    for _ in range(warmup):
                        step()
                    _sync(dev)
                    flops = step_flops(step)
                except torch.OutOfMemoryError as exc:
                    log.error("%s on %s (%s): out of memory: %s", name, device, precision, exc)
                    continue
                except FileNotFoundError as exc:  # reference_steps.ReferenceMissing
                    notes.append(f"{name}: not run ({exc})")
                    log.warning("%s: %s", name, exc)
                    continue
                # the case's resident state: weights, gradients, optimiser moments, its batch
                key = (name, desc["precision"] if reference else precision)
                resident[key] = torch.cuda.memory_allocated(dev) - before if dev.type == "cuda" else 0
                built[key] = (step, desc, flops)
                log.info("%s on %s (%s): %.1f GFLOP per step", name, device, precision, flops / 1e9)
        wall: dict[tuple[str, str], list[float]] = {k: [] for k in built}
        cpu: dict[tuple[str, str], list[float]] = {k: [] for k in built}
        peak_mem: dict[tuple[str, str], float] = {}
        for rnd in range(repeats):
            for name, (step, *_rest) in built.items():
                if dev.type == "cuda":
                    base = torch.cuda.memory_allocated(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                _sync(dev)
                t0, c0 = time.perf_counter(), time.process_time()
                step()
                _sync(dev)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
                if dev.type == "cuda":
                    # this case alone: its resident state + its step's transient peak (not the other cases')
                    peak_mem[name] = (resident[name] + torch.cuda.max_memory_allocated(dev) - base) / 2**20
            log.info("round %d/%d on %s done (load average %s)", rnd + 1, repeats, device, load_average())
        for (name, precision), (_, desc, flops) in built.items():
            s = _stats(wall[name, precision])
            achieved = flops / s["median"] / 1e9
            peak = peaks.get((device, desc["precision"]))
            ref_name = TRAIN_CASES[name][3]
            row = {"case": name, "device": device, "precision": desc["precision"], "config": desc["config"],
                   "parameters": desc["params"], "median_s": s["median"], "q1_s": s["q1"], "q3_s": s["q3"],
                   "steps_per_s": 1 / s["median"],
                   "cpu_s": statistics.median(cpu[name, precision]), "gflop_per_step": flops / 1e9, "gflops_per_s": achieved,
                   "fraction_of_peak": achieved / peak if peak else None, "repeats": repeats}
            if ref_name and (ref_name, "fp32") in built:
                ref_wall = wall[ref_name, "fp32"]
                ratios = _stats([r / o for r, o in zip(ref_wall, wall[name, precision], strict=True)])
                ref_flops = built[ref_name, "fp32"][2]
                row |= {"reference": ref_name, "reference_s": statistics.median(ref_wall),
                        "reference_over_ours": ratios["median"], "ratio_q1": ratios["q1"], "ratio_q3": ratios["q3"],
                        "ratio_iqr": f"{ratios['q1']:.2f}-{ratios['q3']:.2f}",
                        "reference_over_ours_per_flop": ratios["median"] * flops / ref_flops}
            if dev.type == "cuda":
                row["peak_mem_mib"] = peak_mem.get((name, precision))
                row["cudnn_benchmark"] = torch.backends.cudnn.benchmark
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ inference
def _infer_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run in a child process: one whole-volume inference, its speed and memory (printed as JSON)."""
    import resource

    import numpy as np
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    blob = model_blob(spec["task"], spec.get("model_file"))
    rng = np.random.default_rng(0)
    if spec["task"] == "sr":
        from pipeline.models.srgan import SRGAN

        net = SRGAN.load_generator(blob, None, dev)
        factors = blob["sr"]["factors"]
        lr = rng.random([n // f for n, f in zip(spec["shape"], factors, strict=True)], dtype=np.float32)

        def run() -> np.ndarray:
            return SRGAN.apply(net, lr, blob, dev, tta=False)
        what = f"LR {'x'.join(map(str, lr.shape))} -> x{'/'.join(map(str, factors))}"
    else:
        from pipeline.models.cyclegan import CycleGAN

        net = CycleGAN.load_generator(blob, "A2B", dev)
        vol = rng.random(spec["shape"], dtype=np.float32)

        def run() -> np.ndarray:
            return CycleGAN.apply(net, vol, blob, dev)
        what = f"{'x'.join(map(str, vol.shape))}, roi {blob.get('inference', {}).get('roi_size')}"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    for _ in range(spec["repeats"]):
        _sync(dev)
        t0 = time.perf_counter()
        out = run()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med = statistics.median(times)
    result = {"task": spec["task"], "device": spec["device"], "model": spec.get("model_file") or "default config",
              "input": what, "output_voxels": int(out.size), "median_s": med, "voxels_per_s": out.size / med,
              "peak_rss_mib": rss1, "rss_growth_mib": rss1 - rss0}
    if dev.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return result


def model_blob(task: str, model_file: str | None) -> dict[str, Any]:
    """A model file's content: the given one, or one built from the default config (untrained)."""
    if model_file:
        from pipeline.gan.checkpoint import load_checkpoint

        return load_checkpoint(Path(model_file))
    from pipeline.models.cyclegan import CycleGANConfig
    from pipeline.models.srgan import SRGANConfig

    if task == "sr":
        from pipeline.models.srgan import SRGAN

        cfg = SRGANConfig()
        model = SRGAN(cfg, factors=[4, 4, 1], slice_axis=2)
        return model.model_file("srgan", model.networks["G"].state_dict(), 0)
    from pipeline.models.cyclegan import CycleGAN

    cfg = CycleGANConfig()
    return CycleGAN(cfg, roi_size=[cfg.patch_size] * cfg.spatial_dims).model_file(0)


def inference(devices: list[str], run_dir: Path | None, threads: int, repeats: int,
              quick: bool) -> list[dict[str, Any]]:
    shapes = {"sr": [128, 128, 16] if quick else [256, 256, 64], "translation": [96, 96, 16] if quick else [192, 192, 96]}
    files = {"sr": "srgan", "translation": "cyclegan"}
    rows = []
    for device in devices:
        for task, shape in shapes.items():
            model_file = None
            if run_dir is not None:
                candidate = _results(run_dir) / "models" / files[task] / "model.pt"
                model_file = str(candidate) if candidate.is_file() else None
            spec = {"task": task, "device": device, "shape": shape, "threads": threads, "repeats": repeats,
                    "model_file": model_file}
            proc = subprocess.run([sys.executable, __file__, "--infer-worker", json.dumps(spec)], capture_output=True,
                                  text=True)
            if proc.returncode:
                log.error("inference %s on %s failed:\n%s", task, device, proc.stderr[-3000:])
                continue
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# ------------------------------------------------------------------------------------------ ingest, demo
def ingest_rows(repeats: int, quick: bool) -> list[dict[str, Any]]:
    import ingest_vs_dcm2niix

    return ingest_vs_dcm2niix.measure(repeats=repeats, small_only=quick)


def _results(run_dir: Path) -> Path:
    """`run_dir`'s results folder (run_dir may be the workflow folder or its results/)."""
    return run_dir / "results" if (run_dir / "results").is_dir() else run_dir


def demo_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per rule of a finished run: jobs, summed wall seconds, peak RSS (Snakemake benchmark records)."""
    from pipeline.report.inputs import read_benchmarks

    folder = _results(run_dir) / "benchmarks"
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no Snakemake benchmark records (is {run_dir} a finished run?)")
    rows = [{"stage": r["rule"], "jobs": r["jobs"], "wall_s": r["seconds"], "max_rss_mib": r["max_rss_mb"]}
            for r in read_benchmarks(folder)]
    rows.append({"stage": "total (sum of jobs)", "jobs": sum(r["jobs"] for r in rows),
                 "wall_s": sum(r["wall_s"] for r in rows),
                 "max_rss_mib": max((r["max_rss_mib"] or 0.0 for r in rows), default=None)})
    return rows


# ------------------------------------------------------------------------------------------ report
def report(info: dict[str, Any], results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    out = [f"# Benchmarks ({info['date']})", "",
           f"{info['cpu']}, {info['cores']} cores{', ' + info['cuda_device'] if 'cuda_device' in info else ''}; "
           f"torch {info['torch']} ({info['cpu_capability']}); {info['threads']} torch CPU threads; commit "
           f"{info.get('git_commit', '?')}. Load average at start {info['load_average_start']}, at end "
           f"{info.get('load_average_end', '?')}{' (quick sanity run: few repeats, small sizes)' if args.quick else ''}.",
           f"Command: `python benchmarks/run_all.py {' '.join(args.argv)}`"
           + (f" (cuDNN autotuning {'on' if args.cudnn_benchmark else 'off'}, TF32 {'off' if args.no_tf32 else 'on'})"
              if "cuda_device" in info else ""), ""]
    if "peak" in results:
        out += ["## Conv peak", "",
                "3x3 `conv2d`, stride 1, C_in = C_out, forward + backward (input and weight gradients), FLOPs from "
                "`FlopCounterMode` (2 per multiply-add), median wall time; the **peak** is the best shape.", "",
                _table(results["peak"], [("device", "device"), ("precision", "precision"), ("shape", "N x C x H x W"),
                                         ("gflop", "GFLOP"), ("median_s", "median s"),
                                         ("gflops_per_s", "GFLOP/s"), ("is_peak", "peak")], 3), ""]
    if "train" in results:
        out += ["## Training step", "",
                "Median wall seconds per step (interquartile range), process CPU seconds per step, model FLOPs per "
                "step (`FlopCounterMode` over one full step: forwards and backwards of all networks), achieved "
                "GFLOP/s and its fraction of the conv peak above. Cases run interleaved.", "",
                _table(results["train"], [("case", "case"), ("device", "device"), ("precision", "precision"),
                                          ("config", "configuration"), ("median_s", "s/step"), ("q1_s", "q1"), ("q3_s", "q3"), ("cpu_s", "CPU s"),
                                          ("gflop_per_step", "GFLOP/step"), ("gflops_per_s", "GFLOP/s"),
                                          ("fraction_of_peak", "of peak"), ("reference_s", "reference s/step"),
                                          ("reference_over_ours", "reference / ours"), ("ratio_iqr", "IQR"),
                                          ("reference_over_ours_per_flop", "per FLOP"),
                                          ("peak_mem_mib", "CUDA MiB")], 3), "",
                REFERENCE_NOTE, ""] + [f"- {n}" for n in getattr(args, "notes", [])] + \
               ([""] if getattr(args, "notes", []) else [])
    if "infer" in results:
        out += ["## Whole-volume inference", "",
                "Median wall seconds per volume (including the sliding-window blending), output voxels per second, "
                "peak memory (CPU: peak RSS of the process and its growth during inference).", "",
                _table(results["infer"], [("task", "task"), ("device", "device"), ("model", "model"), ("input", "input"),
                                          ("output_voxels", "output voxels"), ("median_s", "s"),
                                          ("voxels_per_s", "voxels/s"), ("peak_rss_mib", "peak RSS MiB"),
                                          ("rss_growth_mib", "RSS growth MiB"), ("peak_cuda_mib", "CUDA MiB")], 2), ""]
    if "ingest" in results:
        import ingest_vs_dcm2niix

        out += ["## Ingest vs dcm2niix", "",
                f"dcm2niix {ingest_vs_dcm2niix.dcm2niix_version()}; median of {args.ingest_repeats} runs; wall "
                "seconds per series (ours: discovery, headers, pixels, geometry, gzip'ed NIfTI + sidecar + manifest).",
                "", ingest_vs_dcm2niix.markdown(results["ingest"]), ""]
    if "demo" in results:
        out += ["## End-to-end demo run", "", f"Stages of `{args.run_dir}` (Snakemake `benchmark:` records; "
                "rules with several jobs: summed wall time, largest peak RSS).", "",
                _table(results["demo"], [("stage", "stage"), ("jobs", "jobs"), ("wall_s", "wall s"),
                                         ("max_rss_mib", "max RSS MiB")], 1), ""]
    return "\n".join(out)


SECTION_TITLES = {"peak": "## Conv peak", "train": "## Training step", "infer": "## Whole-volume inference",
                  "ingest": "## Ingest vs dcm2niix", "demo": "## End-to-end demo run"}


def carried_over(previous: str, ran: set[str]) -> str:
    """The sections of an earlier benchmarks.md that this run did not redo, marked with that run's header line."""
    lines = previous.splitlines()
    header = lines[0].lstrip("# ").strip() if lines else "an earlier run"
    machine = next((ln for ln in lines[1:6] if ln.strip() and not ln.startswith(("Command", "*From"))), "")
    chunks, current = {}, None
    for line in lines:
        if line.startswith("## "):
            current = next((k for k, t in SECTION_TITLES.items() if line.strip() == t), None)
            if current is not None:
                chunks[current] = []
        if current is not None:
            chunks[current].append(line)
    out = []
    for key in SECTION_TITLES:
        if key in chunks and key not in ran:
            body = chunks[key]
            note = [ln for ln in body[1:3] if ln.startswith("*From")]
            stamp = note[0] if note else f"*From the earlier run ({header}; {machine.rstrip('.')}), not re-run here.*"
            rest = [ln for ln in body[1:] if not ln.startswith("*From")]
            while rest and not rest[0].strip():
                rest.pop(0)
            out += [body[0], "", stamp, "", *rest]
    return "\n".join(out)


def _read_csv(path: Path) -> list[dict[str, Any]]:
    def value(v: str) -> Any:
        if v in ("", "None"):
            return None
        if v in ("True", "False"):
            return v == "True"
        for kind in (int, float):
            with contextlib.suppress(ValueError):
                return kind(v)
        return v

    with path.open(newline="") as fh:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(fh)]


def rewrite_report(args: argparse.Namespace) -> int:
    """benchmarks.md again from the CSVs and machine.json of an earlier run (its command line as recorded)."""
    info = json.loads((args.out / "machine.json").read_text())
    sections = info.get("sections") or [s for s in SECTIONS if (args.out / f"{s}.csv").is_file()]
    results = {s: _read_csv(args.out / f"{s}.csv") for s in sections if (args.out / f"{s}.csv").is_file()}
    args.argv, args.notes, args.quick = info.get("argv", args.argv), info.get("notes", []), info.get("quick", False)
    text = report(info, results, args)
    previous = args.out / "benchmarks.md"
    if previous.is_file():
        kept = carried_over(previous.read_text(), set(results))
        text = text.rstrip("\n") + ("\n\n" + kept if kept else "")
    previous.write_text(text + "\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({', '.join(SECTIONS)})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or cpu,cuda (auto: CPU, and CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the references used 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed training steps per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ingest-repeats", type=int, default=3)
    parser.add_argument("--cases", default="", help="training cases, comma-separated: substrings of the names, `default` (DEFAULT_CASES, "
                             "the default) or `all`")
    parser.add_argument("--run-dir", type=Path, default=None, help="a finished workflow run (for demo and infer)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="sanity run: 1 warm-up, 2 repeats, small sizes")
    parser.add_argument("--precisions", default="auto",
                        help="precisions, comma-separated: auto, fp32, bf16, fp16 (auto: CUDA's fast path; on a CPU "
                             "fp32 + bf16 where the CPU has native bf16)")
    parser.add_argument("--reference-dir", type=Path, default=None,
                        help="a folder with the reference implementations' source (pytorch-CycleGAN-and-pix2pix/, "
                             "BasicSR/; see reference_steps.py): their training steps are timed beside ours")
    parser.add_argument("--no-tf32", action="store_true",
                        help="CUDA fp32 without TF32 (PyTorch's default runs fp32 convolutions in TF32)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its kernels (training's `deterministic: false`); default: off")
    parser.add_argument("--from-csv", action="store_true",
                        help="no measuring: re-write benchmarks.md from the CSVs and machine.json in --out")
    parser.add_argument("--infer-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.infer_worker:
        print(json.dumps(_infer_worker(json.loads(args.infer_worker))))
        return 0
    args.argv = argv
    if args.from_csv:
        return rewrite_report(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    if args.no_tf32:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    if args.quick:
        args.repeats, args.warmup, args.ingest_repeats = min(args.repeats, 2), 1, 1
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        parser.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    if "demo" in sections and args.run_dir is None:
        log.warning("no --run-dir: skipping the demo section")
        sections.remove("demo")
    devices = _devices(args.device)
    info = machine_info(args.threads)
    results: dict[str, list[dict[str, Any]]] = {}
    peaks: dict[tuple[str, str], float] = {}
    if "peak" in sections or "train" in sections:
        rows = []
        for device in devices:
            for precision in _precisions(device, args.precisions):
                log.info("conv peak on %s (%s)", device, precision)
                rows += conv_peak(device, precision, max(args.repeats, 3), args.quick)
        peaks = {(r["device"], r["precision"]): r["gflops_per_s"] for r in rows if r["is_peak"]}
        results["peak"] = rows
    if "train" in sections:
        tokens = [t.strip() for t in (args.cases or "default").split(",") if t.strip()]
        cases = [c for c in TRAIN_CASES if "all" in tokens or ("default" in tokens and c in DEFAULT_CASES)
                 or any(t in c for t in tokens if t not in ("all", "default"))]
        args.notes = []
        results["train"] = train_steps(devices, args.repeats, args.warmup, cases, peaks, args.precisions,
                                       args.reference_dir, args.notes)
    if "infer" in sections:
        log.info("whole-volume inference")
        results["infer"] = inference(devices, args.run_dir, args.threads, 1 if args.quick else 3, args.quick)
    if "ingest" in sections:
        log.info("ingest vs dcm2niix")
        results["ingest"] = ingest_rows(args.ingest_repeats, args.quick)
    if "demo" in sections:
        results["demo"] = demo_rows(args.run_dir)
    info["load_average_end"] = load_average()
    info |= {"sections": list(results), "argv": argv, "notes": getattr(args, "notes", []), "quick": args.quick}
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in results.items():
        _write_csv(args.out / f"{name}.csv", rows)
    (args.out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    text = report(info, results, args)
    previous = args.out / "benchmarks.md"
    if previous.is_file():  # keep the sections this run did not redo (e.g. --only peak,train)
        kept = carried_over(previous.read_text(), set(results))
        text = text.rstrip("\n") + ("\n\n" + kept if kept else "")
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        fh.write(text + "\n")
    os.replace(fh.name, args.out / "benchmarks.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
