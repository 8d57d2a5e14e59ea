"""The one training loop, for every model that fulfils `pipeline.gan.base.GANModel`.

Exact resume by construction: the batch of step ``k`` is a pure function of ``(seed, k)`` (the sampler's
contract), and a checkpoint holds everything else a step depends on (networks, optimizers, schedulers,
grad scaler, the step counter and the global RNG states). A run killed at any moment and started again
continues from its last checkpoint and, on CPU, ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.gan.base import GANModel
from pipeline.gan.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state

log = logging.getLogger(__name__)

Sampler = Callable[[int], dict[str, torch.Tensor]]
CHECKPOINT_NAME = "last.pt"


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


@dataclass(frozen=True)
class LoopSettings:
    """What the loop itself needs (taken from the model's config section)."""

    seed: int
    log_every: int = 50
    checkpoint_every: int = 200


@dataclass
class TrainResult:
    steps: int
    resumed_from: int
    elapsed_s: float
    exported: list[Path]


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before building the model, so initial weights are seeded)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(device: torch.device, deterministic: bool = True) -> None:
    """Deterministic kernels where PyTorch has them (warn, not fail, where it has none)."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def step_seed(seed: int, step: int) -> np.random.Generator:
    """The generator a sampler uses for step `step`: independent streams, a pure function of (seed, step)."""
    return np.random.default_rng([seed % 2**63, step])


class _History:
    """history.csv: one row per log line. The rows also travel in the checkpoint, so a resumed run rewrites
    the file as it was at the checkpoint (even if a workflow manager deleted the incomplete file)."""

    def __init__(self, path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
        self.path, self.columns, self.rows = path, columns, list(rows)
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)

    def append(self, row: dict[str, str]) -> None:
        self.rows.append(row)
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(row)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def train(
    model: GANModel,
    sampler: Sampler,
    out_dir: str | Path,
    settings: LoopSettings,
    config: dict[str, Any],
    stop_after: int | None = None,
) -> TrainResult:
    """Train `model` to `model.total_steps`, resuming from `out_dir/checkpoints/last.pt` if present.

    Args:
        model: a `GANModel`.
        sampler: ``sampler(step) -> batch``, a pure function of the step (and the seed it was built with).
        out_dir: receives `history.csv`, `checkpoints/` and, at the end, the files of `model.export`.
        settings: seed, log and checkpoint intervals.
        config: the resolved configuration (stored in checkpoints; a checkpoint of another configuration is
            not resumed from).
        stop_after: stop (as if killed, without exporting) once this many steps are done - for tests.
    """
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    total = model.total_steps
    start, elapsed_before = 0, 0.0
    history_rows: list[dict[str, str]] = []

    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, map_location=model.device)
        if state.get("config") != config:
            old, new = state.get("config") or {}, config
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            log.warning("%s was written with another configuration (differs in %s); starting from scratch",
                        ckpt_path, ", ".join(diff) or "?")
        else:
            model.load_state_dict(state["model"])
            model.precision.load_state_dict(state.get("precision", {}))
            set_rng_state(state["rng"])
            if hasattr(sampler, "load_state_dict") and "sampler" in state:
                sampler.load_state_dict(state["sampler"])
            start, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
            history_rows = list(state.get("history", []))
            log.info("resumed from %s at step %d of %d", ckpt_path, start, total)

    lr_cols = [f"lr_{k}" for k in model.optimizers]
    history = _History(out_dir / "history.csv", ["step", *lr_cols, *model.loss_names, "it_per_s", "elapsed_s"],
                       history_rows)

    def checkpoint(step: int, elapsed: float) -> None:
        state = {
            "step": step,
            "elapsed_s": elapsed,
            "model": model.state_dict(),
            "precision": model.precision.state_dict(),
            "rng": rng_state(),
            "config": config,
            "history": history.rows,
        }
        if hasattr(sampler, "state_dict"):
            state["sampler"] = sampler.state_dict()
        save_checkpoint(state, ckpt_path)

    bar = None
    if sys.stderr.isatty() and start < total:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {model.name}", unit="it", dynamic_ncols=True)

    model.train_mode(True)
    t0 = time.perf_counter()
    t_interval, n_interval = t0, 0
    sums: dict[str, float] = {}
    last_good = start if ckpt_path.is_file() and start > 0 else None
    step = start
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    try:
        while step < total:
            if stop_after is not None and step >= stop_after:
                log.info("stopping at step %d as asked (stop_after)", step)
                return TrainResult(step, start, elapsed_before + time.perf_counter() - t0, [])
            batch = {k: v.to(model.device, non_blocking=True) for k, v in sampler(step).items()}
            model.set_input(batch)
            model.optimize_step(step)
            model.precision.update()
            for sched in model.schedulers.values():
                sched.step()
            losses = model.losses()
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                kept = f"the last good checkpoint (step {last_good}) is kept at {ckpt_path}" if last_good else (
                    "no checkpoint had been written yet")
                raise NonFiniteLossError(
                    f"non-finite loss at step {step + 1}: {', '.join(f'{k}={v}' for k, v in bad.items())}; "
                    f"training stopped and {kept}. Try a lower learning rate or fp32 precision."
                )
            step += 1
            n_interval += 1
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
            if step % settings.log_every == 0 or step == total:
                now = time.perf_counter()
                rate = n_interval / max(now - t_interval, 1e-9)
                means = {k: v / n_interval for k, v in sums.items()}
                lrs = model.lrs()
                elapsed = elapsed_before + now - t0
                row = {"step": str(step), **{f"lr_{k}": f"{v:.6g}" for k, v in lrs.items()},
                       **{k: f"{v:.6g}" for k, v in means.items()}, "it_per_s": f"{rate:.4g}",
                       "elapsed_s": f"{elapsed:.1f}"}
                history.append(row)
                msg = (f"step {step}/{total}  lr " + " ".join(f"{k}={_fmt(v)}" for k, v in lrs.items())
                       + "  " + " ".join(f"{k}={_fmt(v)}" for k, v in means.items()) + f"  {rate:.2f} it/s")
                if bar is not None:
                    bar.write(msg)
                else:
                    log.info(msg)
                sums, n_interval, t_interval = {}, 0, now
            if step % settings.checkpoint_every == 0 or step == total:
                checkpoint(step, elapsed_before + time.perf_counter() - t0)
                last_good = step
    finally:
        if bar is not None:
            bar.close()
    model.train_mode(False)
    exported = model.export(out_dir)
    elapsed = elapsed_before + time.perf_counter() - t0
    log.info("trained %d steps (%d this run) in %.1f s; wrote %s", total, total - start, elapsed,
             ", ".join(str(p) for p in exported))
    return TrainResult(total, start, elapsed, exported)
