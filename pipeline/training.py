"""Training a GAN family on the preprocessed subjects (stage 4: `pipeline.stages.train`).

`python -m pipeline train srgan --data results/preprocess --out results/models/srgan --params JSON`

One subcommand per family of `pipeline.models.FAMILIES`; the family's config section comes as `--params`
(inline JSON or a YAML file; omitted: the defaults). Training resumes from `<out>/checkpoints/last.pt` when it
exists and was written with the same configuration (`--fresh` ignores it). Writes `<out>/history.csv`, the
checkpoints and the model file(s) (for SRGAN `model.pt` and `srresnet.pt`), then logs the validation scores.

Multi-GPU: the same command under `torchrun --nproc_per_node=N -m pipeline train ...` trains data-parallel with
PyTorch DistributedDataParallel (`pipeline.gan.distributed`): one process per GPU (``cuda:LOCAL_RANK``; Gloo
processes on the CPU with ``--device cpu``), each drawing its own ``batch_size`` samples per step, so a step
sees ``N x batch_size`` samples with gradients averaged over them. Rank 0 writes every file and the log; the
world size is part of the configuration a checkpoint must match to be resumed from.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from pipeline.gan.distributed import DistInfo

log = logging.getLogger(__name__)


def run_training(name: str, params: str | None, data: str | Path, out: str | Path, seed: int = 42,
                 device: str = "auto", threads: int = 0, fresh: bool = False) -> int:
    """Train the family `name` with its config section `params` (inline JSON, a YAML file, or None: defaults)."""
    import torch

    from pipeline.config import load_params
    from pipeline.gan import distributed
    from pipeline.models import family

    cls = family(name)
    cfg = load_params(params, cls.config_class, name)
    if cls.self_supervised:  # nothing to learn from the cohort: the model file is the recipe
        files = cls.write_recipe(cfg, Path(out), seed)
        log.info("%s is self-supervised: each scan trains its own network at inference; wrote %s", name,
                 ", ".join(p.name for p in files))
        return 0
    if threads > 0:
        torch.set_num_threads(threads)
    where, dev = distributed.setup(device)  # under torchrun: join the process group; else one process
    try:
        return _train(name, data, out, seed, fresh, cls, cfg, where, dev)
    finally:
        distributed.teardown()


def _train(name: str, data: str | Path, out: str | Path, seed: int, fresh: bool, cls: type, cfg: Any,
           where: DistInfo, device: torch.device) -> int:
    import torch

    from pipeline.config import to_dict
    from pipeline.gan import distributed
    from pipeline.gan.base import Precision
    from pipeline.gan.loop import LoopSettings, train
    from pipeline.gan.seeding import configure_determinism, seed_everything
    from pipeline.models import build_model

    if not where.is_main:  # rank 0 logs for every rank; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    configure_determinism(device, getattr(cfg, "deterministic", True))
    out_dir = Path(out)
    if fresh and where.is_main and (out_dir / "checkpoints").is_dir():
        shutil.rmtree(out_dir / "checkpoints")
    distributed.barrier()  # no rank looks for a checkpoint before --fresh removed it
    seed_everything(seed)
    # the training volumes are cached on disk under <out>/cache and read crop by crop (deleted after training)
    sampler, kwargs = cls.prepare_data(cfg, data, seed, cache_dir=out_dir / "cache")
    precision = Precision(device, getattr(cfg, "precision", "auto"))
    model = build_model(name, cfg, device=device, precision=precision, **kwargs)
    # the resolved configuration, as plain JSON data (stored in checkpoints; resuming needs an equal one)
    resolved = {"model": name, "seed": seed, "data": str(data), "params": to_dict(cfg)}
    if where.enabled:  # each rank draws its own shard: the global batch, and so the run, depends on it
        resolved["world_size"] = where.world_size
    config = json.loads(json.dumps(resolved))
    n_params = {k: sum(p.numel() for p in v.parameters()) for k, v in model.networks.items()}
    log.info("train %s on %s (%s, %s threads): %s; parameters %s", name, device, precision.mode,
             torch.get_num_threads(), json.dumps(config["params"], sort_keys=True), n_params)
    if where.enabled:
        batch = getattr(cfg, "batch_size", None)
        log.info("data-parallel over %d processes (%s): %s samples per step, %s per process", where.world_size,
                 torch.distributed.get_backend(), batch * where.world_size if batch else "?", batch or "?")
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out_dir, settings, config)
    if hasattr(sampler, "close"):
        sampler.close()
    if not where.is_main:
        return 0
    distributed.teardown()  # training is over on every rank (train() ends with a barrier); rank 0 validates alone
    summary = {"steps": result.steps, "resumed_from": result.resumed_from, "train_seconds": round(result.elapsed_s, 1),
               "device": str(device) if not where.enabled else f"{where.world_size} x {device.type} (DDP)",
               "precision": precision.mode, "threads": torch.get_num_threads(),
               "parameters": n_params, "files": [p.name for p in result.exported]}
    if where.enabled:
        summary["world_size"] = where.world_size
    if hasattr(model, "validate"):
        summary["validation"] = model.validate(data, out_dir)
    from pipeline.io.atomic import write_text

    write_text(out_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    return 0
