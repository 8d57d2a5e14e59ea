"""Data-parallel training (DDP): 2 CPU ranks over Gloo train identical weights on different shards, resume
exactly, average their logged losses and stop together on a NaN; world size 1 is the single-process run."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.seeding import step_seed
from tests.conftest import REPO
from tests.unit.sr_helpers import make_sr_dataset, smooth_volume, tiny_cfg

WORLD = 2
SEED = 5
CONFIG = {"test": "ddp", "world_size": WORLD}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_translation_dataset(root: Path, n: int = 5) -> Path:
    """`root/subjects.tsv` with T1w, T2w (its inverse) and mask for `n` subjects (all but one in train)."""
    from pipeline.io.nifti import save_nifti

    root = Path(root)
    lines = ["subject\tsplit\tT1w\tT2w\tmask"]
    for i in range(n):
        sub, split = f"sub-{i + 1:03d}", "train" if i < n - 1 else "val"
        a, mask = smooth_volume((20, 24, 12), seed=i)
        paths = [save_nifti(a, np.eye(4), root / sub / "T1w.nii.gz"),
                 save_nifti(((1 - a) * mask).astype(np.float32), np.eye(4), root / sub / "T2w.nii.gz"),
                 save_nifti(mask, np.eye(4), root / sub / "mask.nii.gz", dtype=np.uint8)]
        (root / sub / "normalisation.json").write_text(json.dumps(
            {m: {"method": "percentile", "percentiles": [0.5, 99.5], "range": [0, 1]} for m in ("T1w", "T2w")}))
        lines.append("\t".join([sub, split, *map(str, paths)]))
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


def _cfg(name: str, **overrides):

    from pipeline.models.cyclegan import CycleGANConfig

    if name == "srgan":  # batch norm in the discriminator, feature matching (D called while frozen)
        return tiny_cfg(**{"pretrain_steps": 2, "gan_steps": 4, "checkpoint_every": 2, "fm_weight": 0.5,
                           **overrides})
    base = dict(ngf=4, n_blocks=1, ndf=4, d_layers=2, patch_size=16, batch_size=2, pool_size=2, n_steps=3,
                warmup_steps=0, n_steps_decay=3, log_every=1, checkpoint_every=2)
    return CycleGANConfig(**{**base, **overrides})


def _build(name: str, data: Path, cfg):
    from pipeline.gan.seeding import seed_everything
    from pipeline.models import FAMILIES, build_model

    seed_everything(SEED)
    sampler, kwargs = FAMILIES[name].prepare_data(cfg, data, SEED, cache_dir=Path(data).parent / "cache")
    _SAMPLERS.append(sampler)
    return build_model(name, cfg, **kwargs), sampler


_SAMPLERS: list = []  # closed (their on-disk caches deleted) at the end of a worker


def _state(model) -> dict:
    return {"params": {f"{n}.{k}": p.detach().clone() for n, net in model.networks.items()
                       for k, p in net.named_parameters()},
            "state": {f"{n}.{k}": v.detach().clone() for n, net in model.networks.items()
                      for k, v in net.state_dict().items()},
            "adam": {n: [s["exp_avg"].clone() for s in opt.state_dict()["state"].values()]
                     for n, opt in model.optimizers.items()}}


def _worker(rank: int, port: int, root: str) -> None:
    """One rank: for each model an uninterrupted run, a run stopped after 3 steps and its resumption; then a
    NaN on rank 1 only, a network that drifts apart, and the loss averaging. Results go to `root/rank<r>.pt`."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD))
    torch.set_num_threads(1)
    from pipeline.gan import distributed
    from pipeline.gan.loop import LoopSettings, NonFiniteLossError, _LossAccumulator, train

    where, device = distributed.setup("cpu")
    assert where.enabled and device.type == "cpu"
    root_p = Path(root)
    out: dict = {}
    try:
        for name in ("srgan", "cyclegan"):
            cfg = _cfg(name)
            data = root_p / f"data_{name}"
            settings = LoopSettings(SEED, cfg.log_every, cfg.checkpoint_every)
            model, sampler = _build(name, data, cfg)
            out[f"{name}_batch0"] = sampler(0)
            out[f"{name}_init"] = _state(model)
            train(model, sampler, root_p / f"{name}_straight", settings, CONFIG)
            out[f"{name}_straight"] = _state(model)
            model, sampler = _build(name, data, cfg)
            train(model, sampler, root_p / f"{name}_resumed", settings, CONFIG, stop_after=3)
            model, sampler = _build(name, data, cfg)  # a fresh process would start like this
            res = train(model, sampler, root_p / f"{name}_resumed", settings, CONFIG)
            out[f"{name}_resumed_from"] = res.resumed_from
            out[f"{name}_resumed"] = _state(model)

        cfg = _cfg("srgan", pretrain_steps=6, gan_steps=0)
        model, sampler = _build("srgan", root_p / "data_srgan", cfg)

        def poisoned(step: int) -> dict:
            batch = sampler(step)
            if step == 4 and rank == 1:  # the 5th step, on one rank only
                batch["hr"][0, 0, 0, 0] = float("nan")
            return batch

        try:
            train(model, poisoned, root_p / "nan", LoopSettings(SEED, 1, 2), CONFIG)
            out["nan_error"] = None
        except NonFiniteLossError as exc:
            out["nan_error"] = str(exc)

        stray = torch.nn.Linear(2, 1)  # a network updated differently on each rank
        with torch.no_grad():
            stray.weight.fill_(rank)
        try:
            distributed.check_in_sync({"stray": stray, "G": model.networks["G"]})
            out["sync_error"] = None
        except RuntimeError as exc:
            out["sync_error"] = str(exc)

        acc = _LossAccumulator(device)
        for step in range(3):
            acc.add(step, {"a": torch.tensor(float(rank + step)), "b": torch.tensor(10.0 * rank)})
        out["means"] = acc.read()
    finally:
        distributed.teardown()
        for sampler in _SAMPLERS:
            if hasattr(sampler, "close"):
                sampler.close()
    torch.save(out, root_p / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Run `_worker` in 2 CPU processes (Gloo); return each rank's results and the run folder."""
    import torch.multiprocessing as mp

    root = tmp_path_factory.mktemp("ddp")
    make_sr_dataset(root / "data_srgan")
    make_translation_dataset(root / "data_cyclegan")
    # fork (where there is one) after building each model once here: the ranks start with every module
    # imported (MONAI, torch.optim's dynamo), which takes far longer than the training itself
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    if method == "fork":
        for name in ("srgan", "cyclegan"):
            _build(name, root / f"data_{name}", _cfg(name))
        for sampler in _SAMPLERS:
            if hasattr(sampler, "close"):
                sampler.close()
        _SAMPLERS.clear()
    started = time.perf_counter()
    ctx = mp.start_processes(_worker, args=(_free_port(), str(root)), nprocs=WORLD, join=False, start_method=method)
    deadline = time.time() + 240
    while not ctx.join(timeout=1):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-rank DDP run did not finish in 240 s (a rank waits in a collective?)")
    print(f"2-rank DDP workers ({method}): {time.perf_counter() - started:.1f} s")
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)], root


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["srgan", "cyclegan"])
def test_ranks_train_identical_weights_on_different_shards(ranks, name):
    (r0, r1), root = ranks
    assert not _equal(r0[f"{name}_batch0"], r1[f"{name}_batch0"]), "both ranks drew the same batch"
    assert _equal(r0[f"{name}_init"]["params"], r1[f"{name}_init"]["params"])
    assert _equal(r0[f"{name}_straight"]["params"], r1[f"{name}_straight"]["params"])
    assert not _equal(r0[f"{name}_init"]["params"], r0[f"{name}_straight"]["params"])
    for opt in r0[f"{name}_straight"]["adam"]:  # the averaged gradients: equal optimizer moments
        assert all(torch.equal(a, b) for a, b in zip(r0[f"{name}_straight"]["adam"][opt],
                                                      r1[f"{name}_straight"]["adam"][opt], strict=True))
    # rank 0 alone wrote the files: plain keys (no "module." prefix), the same weights as in memory
    ckpt = load_checkpoint(root / f"{name}_straight" / "checkpoints" / "last.pt")
    assert len(ckpt["ranks"]) == WORLD
    saved = {f"{n}.{k}": v for n, sd in ckpt["model"]["networks"].items() for k, v in sd.items()}
    assert _equal(saved, r0[f"{name}_straight"]["state"])
    assert (root / f"{name}_straight" / "model.pt").is_file()


@pytest.mark.parametrize("name", ["srgan", "cyclegan"])
def test_resume_under_ddp_matches_an_uninterrupted_run(ranks, name):
    (r0, r1), root = ranks
    assert r0[f"{name}_resumed_from"] == r1[f"{name}_resumed_from"] == 2
    for r in (r0, r1):
        assert _equal(r[f"{name}_straight"]["params"], r[f"{name}_resumed"]["params"])
        for opt, moments in r[f"{name}_straight"]["adam"].items():
            assert all(torch.equal(a, b) for a, b in zip(moments, r[f"{name}_resumed"]["adam"][opt], strict=True))
    assert _equal(r0[f"{name}_straight"]["state"], r0[f"{name}_resumed"]["state"])  # buffers too

    def rows(folder):
        with open(root / folder / "history.csv", newline="") as fh:
            return [{k: v for k, v in r.items() if k not in ("it_per_s", "elapsed_s")} for r in csv.DictReader(fh)]

    assert rows(f"{name}_straight") == rows(f"{name}_resumed")
    assert len(rows(f"{name}_straight")) == 6


def test_logged_losses_are_averaged_over_ranks(ranks):
    (r0, r1), _ = ranks
    # rank r logs a = r + step (steps 0..2), b = 10 r: means over 3 steps and 2 ranks
    assert r0["means"] == r1["means"] == ({"a": 1.5, "b": 5.0}, None)


def test_nan_on_one_rank_stops_every_rank_before_a_checkpoint(ranks):
    (r0, r1), root = ranks
    for r in (r0, r1):
        assert r["nan_error"] is not None and "non-finite loss at step 5: pixel=nan" in r["nan_error"]
        assert "last good checkpoint (step 4)" in r["nan_error"]
    state = load_checkpoint(root / "nan" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"]["networks"]["G"].values())


def test_ranks_that_drift_apart_are_caught(ranks):
    (r0, r1), _ = ranks
    for r in (r0, r1):
        assert r["sync_error"] is not None and "stray differ between the DDP ranks" in r["sync_error"]
        assert "G," not in r["sync_error"]


def test_world_size_1_keeps_the_single_process_batches():
    """Without a process group the stream of step k is that of (seed, k), as before DDP existed; ranks differ."""
    a = step_seed(SEED, 3).random(4)
    assert np.array_equal(a, np.random.default_rng([SEED, 3]).random(4))
    r0, r1 = step_seed(SEED, 3, rank=0).random(4), step_seed(SEED, 3, rank=1).random(4)
    assert not np.array_equal(r0, r1) and not np.array_equal(a, r0)
    assert np.array_equal(r1, step_seed(SEED, 3, rank=1).random(4))


@pytest.mark.slow
def test_torchrun_cli_trains_and_writes_once(tmp_path):
    """The real entry point: `torchrun --nproc_per_node=2 -m pipeline train srgan ...` on the CPU."""
    data = make_sr_dataset(tmp_path / "data")
    params = {**{k: v for k, v in _cfg("srgan").__dict__.items() if k != "betas"}}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "pipeline", "train", "srgan", "--data", str(data), "--out", str(tmp_path / "m"),
           "--params", json.dumps(params), "--seed", "3", "--threads", "1", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "m" / "train_summary.json").read_text())
    assert summary["world_size"] == WORLD and summary["steps"] == 6
    assert load_checkpoint(tmp_path / "m" / "checkpoints" / "last.pt")["config"]["world_size"] == WORLD
    assert proc.stderr.count("step 6/6") == 1  # one log, rank 0's
