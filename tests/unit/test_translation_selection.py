"""Checkpoint selection of the translation families: the checkpoint with the best validation PSNR is exported
(not the last) with its step recorded, the score is the real masked PSNR of a sample of validation slices that
a 2D generator translates as it would the whole volume, StarGAN on every target (test_stargan), and without
validation subjects the last weights go out."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pipeline.data.volumes import domain_volumes
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.models import translation
from pipeline.models.cyclegan import CycleGAN
from pipeline.models.pix2pix import Pix2Pix
from pipeline.models.translation import SELECTION_SLICES, CheckpointSelection, masked_psnr, masked_ssim
from tests.unit.test_cyclegan import make_translation_dataset
from tests.unit.test_pix2pix import _run as run_pix2pix
from tests.unit.test_pix2pix import tiny_cfg as pix2pix_cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_translation_dataset(tmp_path_factory.mktemp("selection"))


def _scripted(monkeypatch, scores: dict[int, float]):
    """Make the validation PSNR of step k `scores[k]`; record (step, generator weights) at each validation."""
    seen: list[tuple[int, dict[str, torch.Tensor]]] = []
    real_update = CheckpointSelection.update

    def spy(self, model, step):
        seen.append((step, {k: v.detach().clone() for k, v in model.networks["G"].state_dict().items()}))
        return real_update(self, model, step)

    monkeypatch.setattr(CheckpointSelection, "update", spy)
    monkeypatch.setattr(translation, "masked_psnr", lambda out, truth, mask: scores[seen[-1][0]])
    return seen


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_the_best_validation_checkpoint_is_exported_not_the_last(data, tmp_path, monkeypatch):
    seen = _scripted(monkeypatch, {2: 15.0, 4: 18.0, 6: 16.0})
    run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=3, n_steps_decay=3, checkpoint_every=2, lr=1e-2))
    assert [s for s, _ in seen] == [2, 4, 6]
    weights = dict(seen)
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(blob["state_dict"], weights[4]) and not _same(blob["state_dict"], weights[6])
    assert blob["training"]["steps"] == 4
    selected = blob["training"]["selected"]
    assert (selected["step"], selected["of_steps"], selected["by"], selected["validation_psnr_db"]) == (4, 6, "psnr", 18.0)


def test_a_resumed_run_selects_as_an_uninterrupted_one(data, tmp_path, monkeypatch):
    scores = {2: 15.0, 4: 18.0, 6: 16.0}
    cfg = pix2pix_cfg(n_steps=3, n_steps_decay=3, checkpoint_every=2, lr=1e-2)
    _scripted(monkeypatch, scores)
    run_pix2pix(data, tmp_path / "full", cfg)
    _scripted(monkeypatch, scores)
    run_pix2pix(data, tmp_path / "resumed", cfg, stop_after=5)  # checkpoints at 2 and 4, then killed
    _scripted(monkeypatch, scores)
    run_pix2pix(data, tmp_path / "resumed", cfg)  # only step 6 is validated in this run
    a = load_checkpoint(tmp_path / "full" / "model.pt")
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")
    assert _same(a["state_dict"], b["state_dict"]) and b["training"]["selected"]["step"] == 4


def test_the_score_is_the_masked_psnr_of_validation_slices_translated_as_in_the_whole_volume(data, tmp_path):
    model, _ = run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=2, n_steps_decay=0, checkpoint_every=2))
    sel = model.selection
    assert sel is not None and sel.best["step"] == 2
    [(direction, src, truth, mask)] = sel.data()  # one validation subject
    vols = {m: domain_volumes(data, m, "val") for m in ("T1w", "T2w")}
    whole_src, whole = vols["T1w"][0].image, vols["T2w"][0]
    inside = np.flatnonzero(whole.mask.any(axis=(0, 1)))
    # the slab's slices are slices of the volume, evenly spread through the mask
    ks = [int(np.flatnonzero([np.array_equal(src[..., j], whole_src[..., k]) for k in range(whole_src.shape[2])])[0])
          for j in range(src.shape[2])]
    assert direction is None and len(ks) == min(SELECTION_SLICES, inside.size)
    assert set(ks) <= set(inside) and ks == sorted(set(ks)) and ks[0] == inside[0] and ks[-1] == inside[-1]
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    gen = Pix2Pix.load_generator(blob, None, "cpu")
    full = Pix2Pix.apply(gen, whole_src, blob, tta=False)
    slab = Pix2Pix.apply(gen, src, blob, tta=False)
    np.testing.assert_allclose(slab[mask], full[..., ks][mask], atol=1e-5)
    expected = masked_psnr(slab, truth, mask)
    assert sel.best["psnr"] == pytest.approx(expected, abs=1e-4)
    assert sel.best["ssim"] == pytest.approx(masked_ssim(slab, truth, mask, 2), abs=1e-6)
    assert model.validate(data, tmp_path / "m")["selected_steps"] == {"pix2pix": 2}
    assert 0 < expected < 60


def test_cyclegan_is_scored_on_its_source_to_target_generator(data):
    from tests.unit.test_cyclegan import tiny_cfg as cyclegan_cfg

    sampler, kwargs = CycleGAN.prepare_data(cyclegan_cfg(), data, 0)
    sampler.close()
    assert {d for d, *_ in CycleGAN(cyclegan_cfg(), **kwargs).selection.data()} == {"A2B"}


def test_without_validation_subjects_the_last_weights_go_out(tmp_path, caplog):
    data = make_translation_dataset(tmp_path / "d", splits=("train",) * 4 + ("test",) * 2)
    with caplog.at_level(logging.WARNING):
        model, _ = run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=2, n_steps_decay=2, checkpoint_every=2))
    assert model.selection.best is None and "no checkpoint selection" in caplog.text
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(blob["state_dict"], model.networks["G"].state_dict()) and "selected" not in blob["training"]
    assert blob["training"]["steps"] == 4


def test_select_best_off_exports_the_last_weights(data, tmp_path):
    model, _ = run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=2, n_steps_decay=2, select_best=False))
    assert model.selection is None
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(blob["state_dict"], model.networks["G"].state_dict()) and blob["training"]["steps"] == 4


def test_validation_checks_the_exported_translation_against_the_baselines(data, tmp_path, caplog):
    from pipeline.imaging.degrade import histogram_match, histogram_match_inverted

    model, _ = run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=1, n_steps_decay=0, select_best=False))
    with caplog.at_level(logging.WARNING):
        got = model.validate(data, tmp_path / "m")
    src, dst = domain_volumes(data, "T1w", "val")[0], domain_volumes(data, "T2w", "val")[0]
    x, y, m = src.image, dst.image, dst.mask
    expected = {"identity": masked_psnr(x, y, m), "histogram_match": masked_psnr(histogram_match(x, y, mask=m), y, m),
                "histogram_match_inverted": masked_psnr(histogram_match_inverted(x, y, m), y, m)}
    best = max(expected, key=expected.get)
    assert got["baselines"]["pix2pix"]["name"] == best
    assert got["baselines"]["pix2pix"]["psnr_db"] == pytest.approx(expected[best], abs=1e-6)
    assert got["subjects"] == 1
    # one step of training does not beat the best baseline: named as losing, and said in the log
    assert got["psnr_db"]["pix2pix"] < expected[best] and got["losing"] == ["pix2pix"]
    assert "pix2pix scores" in caplog.text and "do not use it in place of it" in caplog.text


def test_masked_ssim_is_the_slice_ssim_inside_the_mask():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    truth = rng.random((16, 18, 3)).astype(np.float32)
    out = np.clip(truth + 0.3 * rng.standard_normal(truth.shape), 0, 1).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[4:12, 5:14] = True
    assert masked_ssim(truth, truth, mask, 2) == pytest.approx(1.0)
    kw = {"data_range": 1.0, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "full": True}
    maps = [structural_similarity(truth[..., k].astype(float), out[..., k].astype(float), **kw)[1] for k in range(3)]
    expected = np.mean(np.stack(maps, axis=2)[mask])
    assert masked_ssim(out, truth, mask, 2) == pytest.approx(expected, abs=1e-9) and expected < 0.9
    # (1 - x) anticorrelates: SSIM far below 0, which PSNR alone would not tell from a poor intensity map
    assert masked_ssim(1 - truth, truth, mask, 2) < 0


def test_masked_ssim_in_3d_is_the_evaluations_ssim():
    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.metrics import ssim_map

    rng = np.random.default_rng(1)
    truth = rng.random((14, 15, 13)).astype(np.float32)
    out = truth + 0.2 * rng.standard_normal(truth.shape).astype(np.float32)
    mask = np.zeros(truth.shape, bool)
    mask[3:11, 2:12, 4:10] = True
    expected = float(ssim_map(np.clip(out, 0, 1), truth, EvaluateConfig())[mask].mean())
    assert masked_ssim(out, truth, mask, None) == pytest.approx(expected, abs=1e-12) and expected < 0.9


def test_selection_by_ssim_keeps_the_best_ssim_checkpoint(data, tmp_path, monkeypatch):
    seen = _scripted(monkeypatch, {2: 18.0, 4: 15.0, 6: 16.0})  # PSNR would pick step 2
    ssim = {2: 0.3, 4: 0.6, 6: 0.5}
    monkeypatch.setattr(translation, "masked_ssim", lambda out, truth, mask, axis: ssim[seen[-1][0]])
    run_pix2pix(data, tmp_path / "m", pix2pix_cfg(n_steps=3, n_steps_decay=3, checkpoint_every=2, lr=1e-2,
                                                  select_metric="ssim"))
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    assert _same(blob["state_dict"], dict(seen)[4])
    assert blob["training"]["selected"]["by"] == "ssim" and blob["training"]["selected"]["validation_ssim"] == 0.6
