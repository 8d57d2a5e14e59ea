"""The one training loop, for every model that fulfils `pipeline.gan.base.GANModel`.

Exact resume by construction: the batch of step ``k`` is a pure function of ``(seed, k)`` (the sampler's
contract), and a checkpoint holds everything else a step depends on (networks, optimizers, schedulers,
grad scaler, the step counter and the global RNG states). A run killed at any moment and started again
continues from its last checkpoint and, on CPU, ends with the same weights as an uninterrupted run.

Data-parallel under `torchrun` (`pipeline.gan.distributed`): every rank trains the same networks, wrapped in
DistributedDataParallel, on its own shard of each step's batch (the sampler's stream of ``(seed, step, rank)``,
see `pipeline.gan.seeding.step_seed`), so one step sees ``world_size x batch_size`` samples. Rank 0 alone writes checkpoints,
history.csv, the log lines and the model files; every rank resumes from the same checkpoint, which also holds
each rank's RNG states and model-specific state (e.g. CycleGAN's pools of past fakes).

The loop does not wait for the device inside a step: the loss terms are summed on the device and read (averaged
over the ranks) only at log and checkpoint steps, where the non-finite check runs too - before any checkpoint
is written, so the last checkpoint is never one of NaN weights.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.gan import distributed
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


class _History:
    """history.csv: one row per log line. The rows also travel in the checkpoint, so a resumed run rewrites
    the file as it was at the checkpoint (even if a workflow manager deleted the incomplete file).
    With `path` None (ranks other than 0) the rows are kept but no file is written."""

    def __init__(self, path: Path | None, columns: list[str], rows: list[dict[str, str]]) -> None:
        self.path, self.columns, self.rows = path, columns, list(rows)
        if path is None:
            return
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, path)

    def append(self, row: dict[str, str]) -> None:
        self.rows.append(row)
        if self.path is None:
            return
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore").writerow(row)


class _LossAccumulator:
    """Sums of the loss terms since the last log line, kept on the device (no host synchronisation per step),
    and the first step whose losses were not finite. `read()` is the one synchronisation (and, under DDP, the
    one reduction across the ranks) per log or checkpoint step."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        # one float64 vector per set of active loss names (the set changes only between training phases)
        self.sums: dict[tuple[str, ...], torch.Tensor] = {}
        self.first_bad = torch.full((1,), math.inf, dtype=torch.float64, device=self.device)
        self.steps = 0

    def add(self, step: int, losses: dict[str, torch.Tensor]) -> None:
        """Record the loss tensors of step `step` (0-based) - device operations only."""
        self.steps += 1
        if not losses:
            return
        names = tuple(losses)
        values = torch.stack([v.detach().reshape(()).float() for v in losses.values()]).double()
        if names in self.sums:
            self.sums[names].add_(values)
        else:
            self.sums[names] = values
        bad_at = torch.where(torch.isfinite(values).all(), self.first_bad, float(step + 1))  # float64, exact
        self.first_bad = torch.minimum(self.first_bad, bad_at)

    def read(self) -> tuple[dict[str, float], int | None]:
        """``(means, first_bad_step)``: each term's mean per step (over every rank) since the last reset, and
        the first (1-based) step with a non-finite term on any rank, or None."""
        where = distributed.info()
        parts = list(self.sums.values())
        sums = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=self.device)
        first_bad = self.first_bad.clone()
        if where.enabled:
            distributed.all_reduce(sums, "sum")
            distributed.all_reduce(first_bad, "min")
        values = torch.cat([sums, first_bad]).tolist()  # the host synchronisation
        totals: dict[str, float] = {}
        i = 0
        for names in self.sums:
            for name in names:
                totals[name] = totals.get(name, 0.0) + values[i]
                i += 1
        n = max(self.steps, 1) * where.world_size
        bad = values[-1]
        return {k: v / n for k, v in totals.items()}, (None if math.isinf(bad) else int(bad))


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

    Under DDP (a process group of more than one rank is initialised, see `pipeline.gan.distributed`) every
    rank calls this with its own model and sampler; the networks are wrapped in DistributedDataParallel for
    the duration of the call, and only rank 0 writes files.

    Args:
        model: a `GANModel`.
        sampler: ``sampler(step) -> batch``, a pure function of the step (and the seed it was built with;
            under DDP of the rank too, through `step_seed`).
        out_dir: receives `history.csv`, `checkpoints/` and, at the end, the files of `model.export`.
        settings: seed, log and checkpoint intervals.
        config: the resolved configuration (stored in checkpoints; a checkpoint of another configuration is
            not resumed from).
        stop_after: stop (as if killed, without exporting) once this many steps are done - for tests.
    """
    where = distributed.info()
    main = where.is_main
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = ckpt_dir / CHECKPOINT_NAME
    total = model.total_steps
    start, elapsed_before = 0, 0.0
    history_rows: list[dict[str, str]] = []

    if ckpt_path.is_file():  # every rank resumes from the same file
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
            ranks = state.get("ranks")
            if where.enabled and ranks is not None and len(ranks) == where.world_size:
                set_rng_state(ranks[where.rank]["rng"])
                model.load_extra_state(ranks[where.rank]["extra"])
            elif where.enabled:
                log.warning("%s holds the state of %s rank(s), this run has %d: every rank starts from rank 0's "
                            "RNG and model state (not an exact continuation)", ckpt_path,
                            len(ranks) if ranks is not None else 1, where.world_size)
            if hasattr(sampler, "load_state_dict") and "sampler" in state:
                sampler.load_state_dict(state["sampler"])
            start, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
            history_rows = list(state.get("history", []))
            log.info("resumed from %s at step %d of %d", ckpt_path, start, total)

    lr_cols = [f"lr_{k}" for k in model.optimizers]
    history = _History(out_dir / "history.csv" if main else None,
                       ["step", *lr_cols, *model.loss_names, "it_per_s", "elapsed_s"], history_rows)

    def checkpoint(step: int, elapsed: float) -> None:
        per_rank = None
        if where.enabled:
            distributed.check_in_sync(model.networks)
            # each rank's RNG and model-specific state (e.g. CycleGAN's image pools) go to rank 0, which writes
            per_rank = distributed.gather_to_main({"rng": rng_state(), "extra": model.extra_state()})
        if main:
            state = {
                "step": step,
                "elapsed_s": elapsed,
                "model": model.state_dict(),
                "precision": model.precision.state_dict(),
                "rng": rng_state(),
                "config": config,
                "history": history.rows,
            }
            if per_rank is not None:
                state["ranks"] = per_rank
            if hasattr(sampler, "state_dict"):
                state["sampler"] = sampler.state_dict()
            save_checkpoint(state, ckpt_path)
        distributed.barrier()  # no rank runs ahead of a checkpoint being written

    bar = None
    if main and sys.stderr.isatty() and start < total:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=f"train {model.name}", unit="it", dynamic_ncols=True)

    model.train_mode(True)
    t0 = time.perf_counter()
    t_interval = t0
    acc = _LossAccumulator(model.device)
    last_good = start if ckpt_path.is_file() and start > 0 else None
    step = start
    pin = model.device.type == "cuda"
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    try:
        with distributed.wrap_networks(model.networks, model.device):
            while step < total:
                if stop_after is not None and step >= stop_after:
                    log.info("stopping at step %d as asked (stop_after)", step)
                    return TrainResult(step, start, elapsed_before + time.perf_counter() - t0, [])
                batch = {k: (v.pin_memory() if pin else v).to(model.device, non_blocking=True)
                         for k, v in sampler(step).items()}
                model.set_input(batch)
                model.optimize_step(step)
                model.precision.update()
                for sched in model.schedulers.values():
                    sched.step()
                acc.add(step, model.loss_tensors())
                step += 1
                if bar is not None:
                    bar.update(1)
                log_now = step % settings.log_every == 0 or step == total
                ckpt_now = (step % settings.checkpoint_every == 0 or step == total
                            or step in model.milestones)
                if not (log_now or ckpt_now):
                    continue
                # the only host synchronisation: read (and check) the losses before logging or checkpointing
                means, bad_step = acc.read()
                if bad_step is not None:
                    bad = {k: v for k, v in means.items() if not math.isfinite(v)}
                    since = f" (mean of steps {step - acc.steps + 1}-{step})" if acc.steps > 1 else ""
                    kept = (f"the last good checkpoint (step {last_good}) is kept at {ckpt_path}" if last_good
                            else "no checkpoint had been written yet")
                    raise NonFiniteLossError(
                        f"non-finite loss at step {bad_step}: {', '.join(f'{k}={v}' for k, v in bad.items())}"
                        f"{since}; training stopped and {kept}. Try a lower learning rate or fp32 precision."
                    )
                if log_now:
                    now = time.perf_counter()
                    rate = acc.steps / max(now - t_interval, 1e-9)
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
                    elif main:
                        log.info(msg)
                    acc.reset()
                    t_interval = now
                if ckpt_now:
                    # model selection on the validation subjects (before the checkpoint, which holds its state);
                    # the model may end a phase early (no improvement): the loop continues from the step it says
                    jump = model.validation_step(step)
                    if jump is not None and jump > step:
                        for sched in model.schedulers.values():  # the schedules continue as if steps had run
                            sched.last_epoch = jump - 1
                            sched.step()
                        if bar is not None:
                            bar.update(jump - step)
                        step = jump
                    checkpoint(step, elapsed_before + time.perf_counter() - t0)
                    last_good = step
    finally:
        if bar is not None:
            bar.close()
    model.train_mode(False)
    exported = model.export(out_dir) if main else []
    distributed.barrier()  # the model files exist when any rank returns
    elapsed = elapsed_before + time.perf_counter() - t0
    if main:
        log.info("trained %d steps (%d this run) in %.1f s; wrote %s", total, total - start, elapsed,
                 ", ".join(str(p) for p in exported))
    return TrainResult(total, start, elapsed, exported)
