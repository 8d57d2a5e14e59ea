"""The weight average (`pipeline.gan.ema`) and its use by SRGAN: validation and export see the average."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.ema import WeightAverage
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.models import build_model
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import make_sr_dataset, tiny_cfg


def _net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(value)
    return net


def test_update_is_the_exponential_average_and_counters_are_copied():
    net = _net(1.0)
    avg = WeightAverage(net, decay=0.9)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    net[1].num_batches_tracked.fill_(5)
    avg.update(net)
    assert torch.allclose(avg.weights["0.weight"], torch.full_like(avg.weights["0.weight"], 0.9 * 1 + 0.1 * 3))
    assert int(avg.weights["1.num_batches_tracked"]) == 5
    avg.update(net)  # 0.9 * 1.2 + 0.1 * 3
    assert torch.allclose(avg.weights["1.weight"], torch.full((2,), 1.38))


def test_decay_zero_follows_the_weights_and_warmup_starts_small():
    net = _net(1.0)
    follow = WeightAverage(net, decay=0.0)
    slow = WeightAverage(net, decay=0.999, warmup=True)
    assert slow.current_decay() == pytest.approx(2 / 11)  # (1 + n) / (10 + n) for the first update
    with torch.no_grad():
        net[0].weight.fill_(2.0)
    follow.update(net)
    slow.update(net)
    assert torch.equal(follow.weights["0.weight"], net[0].weight)
    assert torch.allclose(slow.weights["0.weight"], torch.full_like(net[0].weight, 2 / 11 + 2 * 9 / 11))
    slow.updates = 20000
    assert slow.current_decay() == 0.999


def test_state_round_trip():
    net = _net(1.0)
    avg = WeightAverage(net, decay=0.5, warmup=True)
    avg.update(_net(3.0))
    other = WeightAverage(_net(0.0), decay=0.5, warmup=True)
    other.load_state_dict(avg.state_dict(), "cpu")
    assert other.updates == 1
    assert all(torch.equal(other.weights[k], avg.weights[k]) for k in avg.weights)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(net, decay=1.0)


def test_srgan_validates_and_exports_the_average(tmp_path):
    data = make_sr_dataset(tmp_path / "data")
    cfg = tiny_cfg(pretrain_steps=6, gan_steps=0, checkpoint_every=3, ema=0.9, select_best=False)
    seed_everything(3)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, 3)
    model = build_model("srgan", cfg, **kwargs)
    train(model, sampler, tmp_path / "out", LoopSettings(seed=3, log_every=3, checkpoint_every=3), {"t": 1})
    exported = load_checkpoint(tmp_path / "out" / "model.pt")["state_dict"]
    trained = model.networks["G"].state_dict()
    assert model.average.updates == 6
    assert all(torch.equal(exported[k], model.average.weights[k].cpu()) for k in exported)
    assert any(not torch.equal(exported[k], trained[k]) for k in exported if trained[k].dtype.is_floating_point)
    net, weights = model.current_generator()
    assert not net.training and weights is model.average.weights
