"""Model selection on the validation subjects: the best checkpoint of each phase is exported (not the last),
a phase ends early when validation stops improving, phase 2 starts from the selected SRResNet, a resumed run
selects as an uninterrupted one, and the end-of-training check names a generator that loses to interpolation."""

from __future__ import annotations

import csv

import pytest
import torch

from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.models import build_model
from pipeline.models.srgan import SRGAN
from tests.unit.sr_helpers import make_sr_dataset, tiny_cfg


@pytest.fixture
def data(tmp_path):
    return make_sr_dataset(tmp_path / "d", shape=(32, 32, 8), scale=4, axes=(0, 1))


def _scripted(monkeypatch, scores):
    """Make validation return `scores` in turn; record (step, generator weights) at each validation."""
    seen: list[tuple[int, dict[str, torch.Tensor]]] = []
    it = iter(scores)
    real_step = SRGAN.validation_step

    def fake_psnr(self, generator, pairs):
        return next(it)

    def spy(self, step):
        seen.append((step, {k: v.detach().clone() for k, v in self.networks["G"].state_dict().items()}))
        return real_step(self, step)

    monkeypatch.setattr(SRGAN, "validation_psnr", fake_psnr)
    monkeypatch.setattr(SRGAN, "validation_step", spy)
    return seen


def _train(data, out, cfg, stop_after=None):
    seed_everything(0)
    sampler, kwargs = SRGAN.prepare_data(cfg, data, 0)
    model = build_model("srgan", cfg, **kwargs)
    result = train(model, sampler, out, LoopSettings(0, 1, cfg.checkpoint_every), {"x": 1}, stop_after=stop_after)
    return model, result


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_of_each_phase_is_exported_not_the_last(data, tmp_path, monkeypatch):
    # phase 1 validated at steps 2, 4, 6 (best at 4), phase 2 at 8, 10 (best at 8)
    seen = _scripted(monkeypatch, [20.0, 23.0, 22.0, 21.5, 21.0])
    cfg = tiny_cfg(pretrain_steps=6, gan_steps=4, checkpoint_every=2, patience=0, lr=1e-2, lr_gan=1e-2)
    _train(data, tmp_path / "m", cfg)
    assert [s for s, _ in seen] == [2, 4, 6, 8, 10]
    weights = dict(seen)
    pre = load_checkpoint(tmp_path / "m" / "srresnet.pt")
    fin = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(pre["state_dict"], weights[4]) and not _same(pre["state_dict"], weights[6])
    assert _same(fin["state_dict"], weights[8]) and not _same(fin["state_dict"], weights[10])
    assert pre["training"]["steps"] == 4 and fin["training"]["steps"] == 8


def test_phase_two_starts_from_the_selected_srresnet(data, tmp_path, monkeypatch):
    seen = _scripted(monkeypatch, [25.0, 20.0, 20.0, 20.0])
    cfg = tiny_cfg(pretrain_steps=6, gan_steps=2, checkpoint_every=2, patience=0, lr=1e-2, adv_weight=0.0,
                   lr_gan=0.0)  # phase 2 with a zero learning rate leaves the weights where it starts
    _train(data, tmp_path / "m", cfg)
    weights = dict(seen)
    assert _same(weights[8], weights[2]) and not _same(weights[8], weights[6])


def test_a_phase_ends_early_when_validation_stops_improving(data, tmp_path, monkeypatch):
    # best at step 2, then two worse validations: with patience 2 phase 1 ends at step 6 of 12
    seen = _scripted(monkeypatch, [24.0, 23.0, 22.0, 21.0, 20.0])
    cfg = tiny_cfg(pretrain_steps=12, gan_steps=4, checkpoint_every=2, patience=2)
    model, result = _train(data, tmp_path / "m", cfg)
    assert [s for s, _ in seen][:3] == [2, 4, 6]
    assert seen[3][0] == 14  # phase 2 from step 12: validated at 14, then 16
    rows = list(csv.DictReader(open(tmp_path / "m" / "history.csv")))
    assert "8" not in [r["step"] for r in rows]  # steps 7-12 never ran
    assert result.steps == 16
    pre = load_checkpoint(tmp_path / "m" / "srresnet.pt")
    assert _same(pre["state_dict"], dict(seen)[2])
    # the schedule went on as if the skipped steps had run: after phase 2's first step the rate is the phase-2
    # cosine at 1 of 4 steps (the row of step k holds the rate of the next step)
    from pipeline.gan.schedules import cosine_factor

    lr_rows = {int(r["step"]): float(r["lr_G"]) for r in rows}
    assert lr_rows[13] == pytest.approx(cfg.lr_gan * cosine_factor(1, 4, cfg.lr_min_ratio), rel=1e-4)


def test_a_resumed_run_selects_as_an_uninterrupted_one(data, tmp_path, monkeypatch):
    cfg = tiny_cfg(pretrain_steps=6, gan_steps=4, checkpoint_every=2, patience=0)
    scores = [20.0, 23.0, 22.0, 21.5, 21.0]
    _scripted(monkeypatch, scores)
    _train(data, tmp_path / "full", cfg)
    _scripted(monkeypatch, scores[:2])
    _train(data, tmp_path / "resumed", cfg, stop_after=4)
    _scripted(monkeypatch, scores[2:])
    _train(data, tmp_path / "resumed", cfg)
    for name in ("srresnet.pt", "model.pt"):
        a = load_checkpoint(tmp_path / "full" / name)["state_dict"]
        b = load_checkpoint(tmp_path / "resumed" / name)["state_dict"]
        assert _same(a, b), name


def test_real_validation_scores_the_generator_and_without_val_subjects_the_last_weights_go_out(tmp_path):
    data = make_sr_dataset(tmp_path / "d", shape=(32, 32, 8), scale=4, axes=(0, 1), splits=("train", "train"))
    cfg = tiny_cfg(pretrain_steps=4, gan_steps=0, checkpoint_every=2)
    model, _ = _train(data, tmp_path / "m", cfg)
    assert model.selection == {}
    fin = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(fin["state_dict"], model.networks["G"].state_dict())


def test_validate_names_a_generator_that_loses_to_interpolation(data, tmp_path, caplog):
    # a generator whose residual is large noise loses to zero-filling on the validation subject
    cfg = tiny_cfg(pretrain_steps=2, gan_steps=2, checkpoint_every=2, select_best=False)
    model, _ = _train(data, tmp_path / "m", cfg)
    for name in ("srresnet.pt", "model.pt"):
        blob = load_checkpoint(tmp_path / "m" / name)
        blob["state_dict"] = {k: v + 0.5 * torch.randn_like(v) if v.is_floating_point() else v
                              for k, v in blob["state_dict"].items()}
        torch.save(blob, tmp_path / "m" / name)
    summary = model.validate(data, tmp_path / "m")
    assert summary["baseline"] in ("zerofill", "bicubic")
    assert set(summary["losing"]) == {"srresnet", "srgan"}
    assert summary["psnr_db"]["srgan"] < summary["psnr_db"][summary["baseline"]]
    assert "does not beat interpolation" in caplog.text
