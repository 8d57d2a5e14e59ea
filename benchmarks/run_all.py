"""All benchmarks in one command: a markdown report and CSV tables in benchmarks/results/ (run by hand, not in CI).

    python benchmarks/run_all.py --run-dir /path/to/finished/workflow     # the full table (on a quiet machine)
    python benchmarks/run_all.py --quick                                   # sanity run: few repeats, small sizes
    python benchmarks/run_all.py --only peak,train --threads 2 --repeats 9
    python benchmarks/run_all.py --only train --device cuda               # CUDA only (default: CPU, + CUDA if present)
    python benchmarks/run_all.py --only peak,train,infer --device cuda --precisions fp32,bf16   # fast path vs fp32

Sections (`--only`, comma-separated; default all):

``peak``   Conv peak: 3x3 ``conv2d`` forward + backward (input and weight gradients) on several large shapes;
           per shape FLOPs (``FlopCounterMode``) / median wall time; the peak is the best shape's GFLOP/s.
           Measured per device and precision at ``--threads`` threads; the yardstick for "fraction of peak".
``train``  Training step time (median wall, interquartile range, process CPU time) of SRGAN and CycleGAN at
           fixed configurations (`TRAIN_CASES`): the SRGAN paper's network and our default architecture at
           the must-show size (16 residual blocks, 64 channels, batch 16, 24 -> 96 crops, 1 channel; the
           generator-only pretraining step and the adversarial step), CycleGAN at the reference's setting
           (resnet_6blocks, 64 filters, 128 x 128, batch 1, 1 channel; identity loss off = our default, and 0.5 =
           the reference's default), and the reference CycleGAN step re-implemented
           (`reference_cyclegan.py`) timed interleaved with ours; on CUDA also CycleGAN at 2D 256 x 256
           (resnet_9blocks, 64 filters: the paper's setting) and 3D 96^3 (resnet_6blocks, 32 filters), with
           the case's own peak CUDA memory (its resident weights, gradients, optimiser moments and batch, plus
           the transient peak of its step over ``memory_allocated`` before it). ``--precisions`` picks the CUDA precisions (``fp32``:
           plain fp32, PyTorch's default TF32 convolutions; ``bf16``: the fast path, bf16 autocast), and
           ``--cudnn-benchmark`` lets cuDNN autotune (what ``deterministic: false`` does in training). Model FLOPs per step: ``FlopCounterMode``
           over one full step (forwards and backwards of every network; textbook convolutions, i.e.
           `pipeline.nets.fastconv.reference_kernels`). Achieved GFLOP/s = FLOPs / median step time;
           fraction of peak = that / the conv peak of the same device and precision.
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

#: name -> (model, config overrides, phase, reference seconds per step on a 2-core machine at 2 threads, its label)
TRAIN_CASES: dict[str, tuple[str, dict[str, Any], str, float | None, str]] = {
    "srgan paper, pretrain": ("srgan", SRGAN_PAPER, "pretrain", None, ""),
    "srgan paper, adversarial": ("srgan", SRGAN_PAPER, "gan", 1.62, "SRGAN paper's generator"),
    "srgan default arch, pretrain": ("srgan", SRGAN_SIZE, "pretrain", None, ""),
    "srgan default arch, adversarial": ("srgan", SRGAN_SIZE, "gan", 1.40, "BasicSR MSRResNet-based SRGAN"),
    "cyclegan ref setting, identity 0": ("cyclegan", CYCLEGAN_REF, "step", 1.27, "CycleGAN reference"),
    "cyclegan ref setting, identity 0.5": ("cyclegan", {**CYCLEGAN_REF, "lambda_identity": 0.5}, "step", 1.27,
                                           "CycleGAN reference"),
    "reference cyclegan re-implemented, identity 0.5": ("reference_cyclegan", {"lambda_identity": 0.5}, "step", 1.27,
                                                        "CycleGAN reference"),
    "cyclegan 2D 256x256": ("cyclegan", CYCLEGAN_256, "step", None, ""),
    "cyclegan 2D 256x256, batch 8": ("cyclegan", {**CYCLEGAN_256, "batch_size": 8}, "step", None, ""),
    "cyclegan 3D 96^3": ("cyclegan", CYCLEGAN_3D, "step", None, ""),
}
#: cases too slow for a CPU benchmark run (minutes per step there)
CUDA_ONLY_CASES = {"cyclegan 2D 256x256", "cyclegan 2D 256x256, batch 8", "cyclegan 3D 96^3"}
REFERENCE_NOTE = (
    "Reference seconds per step: measured on a 2-core machine like this one (medians, 2 threads): BasicSR's "
    "MSRResNet-based SRGAN 1.40 s, the SRGAN paper's generator 1.62 s, the CycleGAN reference (junyanz) 1.27 s, "
    "at about 69% of that machine's conv peak. Their configurations match ours in size (blocks, widths, batch, "
    "crops, 1 channel), not in every detail (BasicSR's network has no batch norm and 3x3 output convs; whether the "
    "CycleGAN reference ran with its default identity loss 0.5 was not recorded, so both of our settings are "
    "listed). The re-implemented reference row runs on this machine interleaved with ours: the fair comparison "
    "on a loaded machine."
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
    """The precisions to run on `device`: fp32 on CPU; on CUDA `requested` (comma-separated; auto: bf16/fp16)."""
    import torch

    from pipeline.gan.base import Precision

    dev = torch.device(device)
    if dev.type != "cuda":
        return ["fp32"]
    return list(dict.fromkeys(Precision(dev, p.strip()).mode for p in requested.split(",") if p.strip()))


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
def _build_step(model: str, overrides: dict[str, Any], phase: str, device: str,
                precision: str) -> tuple[Callable[[], None], dict[str, Any]]:
    """A closure running one training step of the case, and a description of it."""
    import torch

    dev = torch.device(device)
    torch.manual_seed(0)
    if model == "reference_cyclegan":
        from reference_cyclegan import ReferenceCycleGAN

        ref = ReferenceCycleGAN(lambda_identity=overrides.get("lambda_identity", 0.5))
        for net in ref.networks.values():
            net.to(dev)
        a = torch.rand(1, 1, 128, 128, device=dev) * 2 - 1
        b = torch.rand(1, 1, 128, 128, device=dev) * 2 - 1
        desc = {"params": sum(p.numel() for n in ref.networks.values() for p in n.parameters()), "precision": "fp32",
                "config": "ngf 64, ndf 64, resnet_6blocks, 128x128, batch 1"}
        return (lambda: ref.step(a, b)), desc

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
                peaks: dict[tuple[str, str], float], precisions: str = "auto") -> list[dict[str, Any]]:
    """Time every case on every device, interleaved (one step of each case per round), so load drifts hit all."""
    import torch

    rows = []
    for device in devices:
        dev = torch.device(device)
        built, resident = {}, {}
        for precision in _precisions(device, precisions):
            for name in cases:
                model, overrides, phase, ref_s, ref_label = TRAIN_CASES[name]
                if (model == "reference_cyclegan" and dev.type != "cpu") or (
                        name in CUDA_ONLY_CASES and dev.type != "cuda"):
                    continue
                before = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
                try:
                    step, desc = _build_step(model, overrides, phase, device, precision)
                    for _ in range(warmup):
                        step()
                    _sync(dev)
                    flops = step_flops(step)
                except torch.OutOfMemoryError as exc:
                    log.error("%s on %s (%s): out of memory: %s", name, device, precision, exc)
                    continue
                # the case's resident state: weights, gradients, optimiser moments, its batch
                resident[(name, precision)] = torch.cuda.memory_allocated(dev) - before if dev.type == "cuda" else 0
                built[(name, precision)] = (step, desc, flops, ref_s, ref_label)
                log.info("%s on %s (%s): %.1f GFLOP per step", name, device, precision, flops / 1e9)
        wall: dict[tuple[str, str], list[float]] = {k: [] for k in built}
        cpu: dict[tuple[str, str], list[float]] = {k: [] for k in built}
        peak_mem: dict[tuple[str, str], float] = {}
        for _ in range(repeats):
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
        for (name, precision), (_, desc, flops, ref_s, ref_label) in built.items():
            s = _stats(wall[name, precision])
            achieved = flops / s["median"] / 1e9
            peak = peaks.get((device, desc["precision"]))
            row = {"case": name, "device": device, "precision": desc["precision"], "config": desc["config"],
                   "parameters": desc["params"], "median_s": s["median"], "q1_s": s["q1"], "q3_s": s["q3"],
                   "steps_per_s": 1 / s["median"],
                   "cpu_s": statistics.median(cpu[name, precision]), "gflop_per_step": flops / 1e9, "gflops_per_s": achieved,
                   "fraction_of_peak": achieved / peak if peak else None, "repeats": repeats}
            if dev.type == "cpu" and ref_s:
                row |= {"reference_s": ref_s, "reference": ref_label, "speedup_vs_reference": ref_s / s["median"]}
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
                                          ("fraction_of_peak", "of peak"), ("reference_s", "reference s"),
                                          ("speedup_vs_reference", "reference / ours"),
                                          ("peak_mem_mib", "CUDA MiB")], 3), "",
                REFERENCE_NOTE, ""]
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({', '.join(SECTIONS)})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, or cpu,cuda (auto: CPU, and CUDA when present)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the references used 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed training steps per case")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ingest-repeats", type=int, default=3)
    parser.add_argument("--cases", default="", help="training cases, comma-separated substrings of the names")
    parser.add_argument("--run-dir", type=Path, default=None, help="a finished workflow run (for demo and infer)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="sanity run: 1 warm-up, 2 repeats, small sizes")
    parser.add_argument("--precisions", default="auto", help="CUDA precisions, comma-separated: auto, fp32, bf16, fp16")
    parser.add_argument("--no-tf32", action="store_true",
                        help="CUDA fp32 without TF32 (PyTorch's default runs fp32 convolutions in TF32)")
    parser.add_argument("--cudnn-benchmark", action="store_true",
                        help="let cuDNN autotune its kernels (training's `deterministic: false`); default: off")
    parser.add_argument("--infer-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.infer_worker:
        print(json.dumps(_infer_worker(json.loads(args.infer_worker))))
        return 0
    args.argv = argv
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
        cases = [c for c in TRAIN_CASES if not args.cases or any(s in c for s in args.cases.split(","))]
        results["train"] = train_steps(devices, args.repeats, args.warmup, cases, peaks, args.precisions)
    if "infer" in sections:
        log.info("whole-volume inference")
        results["infer"] = inference(devices, args.run_dir, args.threads, 1 if args.quick else 3, args.quick)
    if "ingest" in sections:
        log.info("ingest vs dcm2niix")
        results["ingest"] = ingest_rows(args.ingest_repeats, args.quick)
    if "demo" in sections:
        results["demo"] = demo_rows(args.run_dir)
    info["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in results.items():
        _write_csv(args.out / f"{name}.csv", rows)
    (args.out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    text = report(info, results, args)
    with tempfile.NamedTemporaryFile("w", dir=args.out, delete=False, suffix=".tmp") as fh:
        fh.write(text + "\n")
    os.replace(fh.name, args.out / "benchmarks.md")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
