"""The one training loop: exact resume after a stop or a SIGKILL, NaN stop, history and checkpoints."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import sys
import time

import pytest
import torch

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, NonFiniteLossError, train
from pipeline.gan.seeding import seed_everything
from pipeline.models import build_model
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import make_sr_dataset, tiny_cfg

CONFIG = {"test": 1}


def _run(data, out, cfg, seed=7, stop_after=None):
    """Build the model as `python -m pipeline train` does and train (or stop early)."""
    seed_everything(seed)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, seed)
    model = build_model("srgan", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, CONFIG, stop_after=stop_after)
    return model, result


def _weights(model):
    return {f"{n}.{k}": v for n, net in model.networks.items() for k, v in net.state_dict().items()}


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_sr_dataset(tmp_path_factory.mktemp("sr"))


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_stop_and_resume_gives_bit_identical_weights(data, tmp_path, ema):
    cfg = tiny_cfg(pretrain_steps=4, gan_steps=4, checkpoint_every=2, fm_weight=0.5, ema=ema)
    straight, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 8 and res.resumed_from == 0
    # "killed" after step 5: the last checkpoint is step 4 (the end of pretraining), step 5 is lost
    _run(data, tmp_path / "resumed", cfg, stop_after=5)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 4
    resumed, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 4
    _assert_identical(_weights(straight), _weights(resumed))
    for opt in ("G", "D"):
        s1 = straight.optimizers[opt].state_dict()["state"]
        s2 = resumed.optimizers[opt].state_dict()["state"]
        assert all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)
    # both exported generators are identical too, and history has the same rows (but for timings)
    for name in ("model.pt", "srresnet.pt"):
        a = load_checkpoint(tmp_path / "straight" / name)["state_dict"]
        b = load_checkpoint(tmp_path / "resumed" / name)["state_dict"]
        _assert_identical(a, b)

    def rows(path):
        with open(path, newline="") as fh:
            return [{k: v for k, v in r.items() if k not in ("it_per_s", "elapsed_s")} for r in csv.DictReader(fh)]

    assert rows(tmp_path / "straight" / "history.csv") == rows(tmp_path / "resumed" / "history.csv")
    assert len(rows(tmp_path / "straight" / "history.csv")) == 8


def test_a_different_seed_gives_different_weights(data, tmp_path):
    cfg = tiny_cfg(pretrain_steps=2, gan_steps=0)
    a, _ = _run(data, tmp_path / "a", cfg, seed=1)
    b, _ = _run(data, tmp_path / "b", cfg, seed=2)
    assert not torch.equal(_weights(a)["G.head.0.weight"], _weights(b)["G.head.0.weight"])


def test_checkpoint_holds_everything_resuming_needs(data, tmp_path):
    cfg = tiny_cfg(pretrain_steps=2, gan_steps=2, checkpoint_every=2)
    _run(data, tmp_path / "m", cfg)
    state = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=True)  # safe unpickler
    assert state["step"] == 4 and state["config"] == CONFIG
    assert set(state["model"]) >= {"networks", "optimizers", "schedulers"}
    assert set(state["model"]["networks"]) == {"G", "D"}
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    assert "precision" in state and "sampler" in state
    assert "pretrained" in state["model"]["extra"]  # the SRResNet snapshot survives a resume


def test_checkpoint_of_another_config_is_not_resumed(data, tmp_path, caplog):
    cfg = tiny_cfg(pretrain_steps=2, gan_steps=0)
    _run(data, tmp_path / "m", cfg)
    seed_everything(7)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, 7)
    model = build_model("srgan", cfg, **kwargs)
    res = train(model, sampler, tmp_path / "m", LoopSettings(7, 1, 2), {"test": 2})
    assert res.resumed_from == 0
    assert "another configuration" in caplog.text


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(data, tmp_path):
    cfg = tiny_cfg(pretrain_steps=6, gan_steps=0, checkpoint_every=2)
    seed_everything(0)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, 0)
    model = build_model("srgan", cfg, **kwargs)

    def poisoned(step):
        batch = sampler(step)
        if step == 4:  # the 5th step
            batch["hr"][0, 0, 0, 0] = float("nan")
        return batch

    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at step 5: pixel=nan.*step 4"):
        train(model, poisoned, tmp_path / "m", LoopSettings(0, 1, 2), CONFIG)
    state = load_checkpoint(tmp_path / "m" / "checkpoints" / "last.pt")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"]["networks"]["G"].values())
    assert not (tmp_path / "m" / "model.pt").exists()


def test_sampler_is_a_pure_function_of_seed_and_step(data):
    cfg = tiny_cfg()
    s1, _ = SRGAN.prepare_data(cfg, data, 3)
    s2, _ = SRGAN.prepare_data(cfg, data, 3)
    b5 = s1(5)
    s1(6)
    assert all(torch.equal(b5[k], s2(5)[k]) for k in b5)
    assert not torch.equal(b5["hr"], s1(6)["hr"])


def _train_args(data, out, params):
    return ["train", "srgan", "--data", str(data), "--out", str(out), "--params", json.dumps(params), "--seed", "3",
            "--threads", "1", "--device", "cpu"]


def _train_process(args, pause_at=None, paused=None):
    """In a forked child: `python -m pipeline <args>` (its `main`), the sampler waiting when asked for the batch
    of step `pause_at` (after setting `paused`), so that the child is killed mid-training at a known step."""
    if pause_at is not None:
        from pipeline.data.sr_sampler import SRPatchSampler

        draw = SRPatchSampler.__call__

        def pausing(self, step):
            if step == pause_at:
                paused.set()
                time.sleep(120)
            return draw(self, step)

        SRPatchSampler.__call__ = pausing
    from pipeline.cli import main

    sys.exit(main(args))


def test_sigkill_mid_run_then_restart_matches_an_uninterrupted_run(data, tmp_path):
    """A real `kill -9` of a process training with `python -m pipeline train`'s main, in the GAN phase, 2 steps
    after its last checkpoint; then the same command in a new process: it resumes from that checkpoint and ends
    with the weights, exported models and history of a run that was never interrupted.

    The processes are forked from this one (not fresh interpreters), so they start without importing torch and
    MONAI again: the test takes seconds."""
    ctx = multiprocessing.get_context("fork")
    params = {**{k: v for k, v in tiny_cfg().__dict__.items() if k != "betas"},
              "pretrain_steps": 4, "gan_steps": 6, "checkpoint_every": 3, "log_every": 1}
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    reference = ctx.Process(target=_train_process, args=(_train_args(data, straight, params),))
    reference.start()  # the uninterrupted run, meanwhile
    paused = ctx.Event()
    victim = ctx.Process(target=_train_process, args=(_train_args(data, killed, params), 8, paused))
    victim.start()
    try:
        assert paused.wait(timeout=120), "the training process never reached step 8"
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
        assert victim.exitcode == -signal.SIGKILL
    finally:
        victim.kill()
    state = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert state["step"] == 6  # steps 7 and 8 were done and lost; no model file was exported
    assert not (killed / "model.pt").exists() and not (killed / "train_summary.json").exists()

    restart = ctx.Process(target=_train_process, args=(_train_args(data, killed, params),))
    restart.start()
    for proc in (restart, reference):
        proc.join(timeout=120)
        assert proc.exitcode == 0
    for name in ("model.pt", "srresnet.pt"):
        _assert_identical(load_checkpoint(straight / name)["state_dict"], load_checkpoint(killed / name)["state_dict"])
    _assert_identical(load_checkpoint(straight / "checkpoints" / "last.pt")["model"]["networks"]["D"],
                      load_checkpoint(killed / "checkpoints" / "last.pt")["model"]["networks"]["D"])
    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["resumed_from"] == 6 and summary["steps"] == 10

    def rows(path):
        with open(path, newline="") as fh:
            return [{k: v for k, v in r.items() if k not in ("it_per_s", "elapsed_s")} for r in csv.DictReader(fh)]

    assert rows(killed / "history.csv") == rows(straight / "history.csv")
    assert len(rows(straight / "history.csv")) == 10
