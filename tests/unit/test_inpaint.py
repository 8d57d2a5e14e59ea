"""Missing-slice inpainting: the gap simulator and the classical fillers, the on-the-fly sampler, exact resume, whole-
volume inference (only the deleted voxels change), the "inpainting" evaluation task (scored inside the deleted
voxels only, per gap length) and ingestion of a DICOM series with a missing slice (`ingest.fill_missing_slices`)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from pipeline.config import EvaluateConfig, IngestConfig, PreprocessConfig
from pipeline.gan.checkpoint import load_checkpoint
from pipeline.gan.loop import LoopSettings, train
from pipeline.gan.seeding import seed_everything
from pipeline.imaging import gaps
from pipeline.io.nifti import load_nifti, save_nifti
from pipeline.models import build_model, family_of
from pipeline.models.inpaint import Inpaint, InpaintConfig

SHAPE = (24, 20, 18)


def tiny_cfg(**overrides) -> InpaintConfig:
    base = dict(context=2, ngf=4, num_res_units=0, ndf=4, d_layers=1, patch_size=16, batch_size=2, n_steps=3,
                n_steps_decay=3, log_every=1, checkpoint_every=2, sw_batch_size=4, tta=False, precision="fp32",
                lambda_adv=1.0)  # the adversarial path too (the default is L1 only)
    base.update(overrides)
    return InpaintConfig(**base)


def _phantom(seed: int, shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """A smooth blob with texture in [0, 1] and its mask."""
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    mask = r < 0.85
    image = np.where(mask, 0.5 + 0.3 * np.sin(6 * x + seed) * np.cos(5 * y) + 0.1 * z, 0.0)
    image = image + 0.02 * rng.standard_normal(shape) * mask
    return np.clip(image, 0, 1).astype(np.float32), mask


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A preprocess folder: subjects.tsv with T1w, mask and T1w_gaps (+ normalisation.json recording the gaps)."""
    return _cohort(tmp_path_factory.mktemp("inpaint"), SHAPE)


def _cohort(root, shape):
    """`data`'s folder for volumes of `shape`."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-20.0, 4.0, 7.0]
    lines = ["subject\tsplit\tT1w\tmask\tT1w_gaps"]
    for i, split in enumerate(["train", "train", "val", "test", "test"]):
        sub = f"sub-{i + 1:03d}"
        image, mask = _phantom(i, shape)
        g = gaps.simulate_gaps(image, gaps.subject_seed(42, sub), n_runs=3, run_lengths=[1, 3], min_separation=3,
                               mask=mask)
        d = root / sub
        paths = [save_nifti(image, affine, d / "T1w.nii.gz"), save_nifti(mask, affine, d / "mask.nii.gz", np.uint8),
                 save_nifti(g.volume, affine, d / "T1w_gaps.nii.gz")]
        norm = {"T1w": {"method": "percentile", "percentiles": [0.5, 99.5], "low": 1.0, "high": 9.0,
                        "gaps": {"deleted_slices": g.deleted}}}
        (d / "normalisation.json").write_text(json.dumps(norm))
        lines.append("\t".join([sub, split, *map(str, paths)]))
    (root / "subjects.tsv").write_text("\n".join(lines) + "\n")
    return root


def _run(data, out, cfg, seed=3, stop_after=None):
    seed_everything(seed)
    sampler, kwargs = Inpaint.prepare_data(cfg, data, seed, cache_dir=out / "cache")
    model = build_model("inpaint", cfg, **kwargs)
    settings = LoopSettings(seed=seed, log_every=cfg.log_every, checkpoint_every=cfg.checkpoint_every)
    result = train(model, sampler, out, settings, {"test": "inpaint"}, stop_after=stop_after)
    sampler.close()
    return model, result


# ------------------------------------------------------------------------------------------ the simulator
def test_simulator_deletes_exactly_the_listed_slices_and_is_seeded():
    image, mask = _phantom(0, (16, 16, 40))
    g = gaps.simulate_gaps(image, 7, n_runs=4, run_lengths=[1, 2, 3], min_separation=2, mask=mask)
    assert gaps.deleted_slices(g.volume) == g.deleted == sorted(z for s, n in g.runs for z in range(s, s + n))
    assert sorted(n for _, n in g.runs) == [1, 1, 2, 3] or {n for _, n in g.runs} <= {1, 2, 3}
    assert {n for _, n in gaps.runs_of(g.deleted)} <= {1, 2, 3}  # runs stay apart (min_separation)
    kept = [z for z in range(40) if z not in g.deleted]
    assert np.array_equal(g.volume[:, :, kept], image[:, :, kept]) and np.isnan(g.volume[:, :, g.deleted]).all()
    again = gaps.simulate_gaps(image, 7, n_runs=4, run_lengths=[1, 2, 3], min_separation=2, mask=mask)
    assert again.deleted == g.deleted
    assert gaps.simulate_gaps(image, 8, n_runs=4, run_lengths=[1, 2, 3], min_separation=2, mask=mask).deleted != g.deleted
    boxed = gaps.simulate_gaps(image, 7, n_runs=1, run_lengths=[1], n_boxes=2, box_size=4, mask=mask)
    assert len(boxed.boxes) == 2 and gaps.unknown_mask(boxed.volume).sum() > 16 * 16


def test_classical_fillers_are_exact_on_polynomials_and_keep_known_slices():
    z = np.arange(30, dtype=np.float32)
    ramp = np.broadcast_to(0.01 * z, (4, 5, 30)).copy()
    cubic = np.broadcast_to(1e-4 * (z - 10) ** 3 + 0.2, (4, 5, 30)).copy()
    gapped = ramp.copy()
    gapped[:, :, [5, 12, 13, 14]] = np.nan
    np.testing.assert_allclose(gaps.linear_fill(gapped), ramp, atol=1e-6)
    gapped_c = cubic.copy()
    gapped_c[:, :, [5, 12, 13, 14]] = np.nan
    np.testing.assert_allclose(gaps.cubic_fill(gapped_c), cubic, atol=1e-5)
    lin = gaps.linear_fill(gapped_c)
    assert np.abs(lin - cubic)[:, :, 13].max() > 1e-3  # linear is not exact on a cubic
    known = [k for k in range(30) if k not in (5, 12, 13, 14)]
    assert np.array_equal(lin[:, :, known], cubic[:, :, known])


# ------------------------------------------------------------------------------------------ sampler + training
def test_sampler_is_a_pure_function_of_seed_and_step(data, tmp_path):
    cfg = tiny_cfg(batch_size=3)
    s1, _ = Inpaint.prepare_data(cfg, data, 5, cache_dir=tmp_path / "a")
    s2, _ = Inpaint.prepare_data(cfg, data, 5, cache_dir=tmp_path / "b")
    a, b, c = s1(4), s2(4), s1(5)
    assert set(a) == {"x", "truth", "unknown"} and a["x"].shape == (3, 2 * 5 + 1, 16, 16)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["x"], c["x"])
    # the centre slice is deleted, its channel zeroed, its "measured" channel 0, the truth is the real slice
    assert (a["unknown"] > 0).all() and (a["x"][:, 2] == 0).all() and (a["x"][:, 5 + 2] == 0).all()
    assert a["truth"].abs().sum() > 0
    s1.close()
    s2.close()


def test_resume_is_exact(data, tmp_path):
    cfg = tiny_cfg()
    straight, res = _run(data, tmp_path / "straight", cfg)
    assert res.steps == 6
    _run(data, tmp_path / "resumed", cfg, stop_after=3)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")["step"] == 2
    resumed, res2 = _run(data, tmp_path / "resumed", cfg)
    assert res2.resumed_from == 2
    for name, net in straight.networks.items():
        for k, v in net.state_dict().items():
            assert torch.equal(v, resumed.networks[name].state_dict()[k]), f"{name}.{k} differs"


@pytest.mark.parametrize("kind", ["l1", "mse"])
def test_pixel_loss_is_the_chosen_error_over_the_deleted_voxels_only(data, tmp_path, kind):
    """The pixel loss is the mean absolute (l1) or squared (mse) error of the generator's fill over the deleted
    voxels of the centre slice; measured voxels do not enter it, and the generator's loss is lambda_l1 x it."""
    cfg = tiny_cfg(pixel_loss=kind, lambda_adv=0.0, lambda_l1=3.0, box_prob=1.0)  # boxes: measured voxels too
    sampler, kwargs = Inpaint.prepare_data(cfg, data, 0, cache_dir=tmp_path / "cache")
    batch = sampler(0)
    sampler.close()
    model = build_model("inpaint", cfg, **kwargs)
    model.set_input(batch)
    with torch.no_grad():
        err = model.networks["G"](batch["x"]) - batch["truth"]
    deleted = batch["unknown"] > 0.5
    assert deleted.any() and (~deleted).any()
    expected = (err.abs() if kind == "l1" else err**2)[deleted].mean().item()
    model.optimize_step(0)
    got = model.losses()
    assert set(got) == {kind.upper(), "G"}
    assert got[kind.upper()] == pytest.approx(expected, rel=1e-5)
    assert got["G"] == pytest.approx(3.0 * expected, rel=1e-5)


def test_checkpoint_selection_exports_the_best_validation_step_and_survives_resume(data, tmp_path, caplog):
    """The exported weights are those of the checkpoint with the best validation PSNR inside the deleted slices (the
    score is reproduced from the file), a resumed run selects the same, and select_best off exports the last."""
    import logging
    import re

    from pipeline.models.inpaint import _mse, _psnr

    cfg = tiny_cfg(checkpoint_every=1, lr=3e-2)
    with caplog.at_level(logging.INFO, logger="pipeline.models.inpaint"):
        _run(data, tmp_path / "straight", cfg)
    scores = {int(a): float(b) for a, b in re.findall(r"step (\d+): validation PSNR ([\d.]+) dB", caplog.text)}
    assert sorted(scores) == [1, 2, 3, 4, 5, 6]
    blob = load_checkpoint(tmp_path / "straight" / "model.pt")
    selected = blob["training"]["selected"]
    assert selected["step"] == max(scores, key=scores.get) and selected["of_steps"] == 6
    cases = Inpaint.validation_cases(data, "T1w")
    gen = Inpaint.load_generator(blob, None, "cpu")
    again = _psnr([_mse(Inpaint.apply(gen, x, blob, "cpu", self_check=False), y, r) for x, y, r in cases])
    assert again == pytest.approx(selected["validation_psnr_db"], abs=1e-3)
    _run(data, tmp_path / "resumed", cfg, stop_after=4)
    _run(data, tmp_path / "resumed", cfg)
    resumed = load_checkpoint(tmp_path / "resumed" / "model.pt")
    assert resumed["training"]["selected"] == selected
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in blob["state_dict"].items())
    _run(data, tmp_path / "last", tiny_cfg(checkpoint_every=1, lr=3e-2, select_best=False))
    assert "selected" not in load_checkpoint(tmp_path / "last" / "model.pt")["training"]


def test_a_worse_later_checkpoint_is_not_exported(data, tmp_path):
    """Weights spoiled after a checkpoint score lower at the next one: the earlier weights are exported."""
    sampler, kwargs = Inpaint.prepare_data(tiny_cfg(), data, 0, cache_dir=tmp_path / "cache")
    sampler.close()
    model = build_model("inpaint", tiny_cfg(), **kwargs)
    good = {k: v.clone() for k, v in model.networks["G"].state_dict().items()}
    model.validation_step(1)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.networks["G"].parameters():
            p.add_(torch.randn_like(p))
    model.validation_step(2)
    assert model.best["step"] == 1
    [path] = model.export(tmp_path)
    blob = load_checkpoint(path)
    assert blob["training"]["selected"]["step"] == 1
    assert all(torch.equal(v, blob["state_dict"][k]) for k, v in good.items())


# ------------------------------------------------------------------------------------------ inference
def test_inference_fills_exactly_the_deleted_voxels_in_the_input_geometry(data, tmp_path):
    from pipeline.stages import infer

    cfg = tiny_cfg(n_steps=1, n_steps_decay=1, tta=True)
    trained, _ = _run(data, tmp_path / "m", cfg)
    model = tmp_path / "m" / "model.pt"
    check = trained.validate(data, tmp_path / "m")  # training's validation check, in the report's format
    assert set(check["psnr_db"]) == {"inpaint", "linear", "cubic"} and check["subjects"] == 1
    assert check["baseline"] in ("linear", "cubic") and check["losing"] in ([], ["inpaint"])
    blob = load_checkpoint(model)
    assert family_of(blob) is Inpaint and blob["inpainting"]["modality"] == "T1w"
    [output] = Inpaint.outputs(cfg)
    assert (output.task, output.input, output.truth) == ("inpainting", "T1w_gaps", "T1w")
    scan = data / "sub-004" / "T1w_gaps.nii.gz"
    gapped, affine = load_nifti(scan)
    out = tmp_path / "out.nii.gz"
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    args = parser.parse_args(["--model", str(model), "--input", str(scan), "--output", str(out), "--device", "cpu"])
    assert infer.main(args) == 0
    got, out_affine = load_nifti(out)
    np.testing.assert_allclose(out_affine, affine)
    unknown = np.isnan(gapped)
    assert got.shape == gapped.shape and np.isfinite(got).all()
    assert np.array_equal(got[~unknown], gapped[~unknown])  # measured voxels pass through bit for bit
    assert sorted(set(np.flatnonzero(unknown.any(axis=(0, 1))))) == gaps.deleted_slices(gapped)
    net = Inpaint.load_generator(blob, None, "cpu")
    filled = Inpaint.apply(net, gapped, blob)
    np.testing.assert_allclose(filled, got, atol=1e-6)
    clean = np.nan_to_num(gapped)
    assert np.array_equal(Inpaint.apply(net, clean, blob), clean)  # nothing missing: unchanged
    box = clean.copy()
    box[3:9, 4:10, 6:8] = np.nan  # a box (not whole slices) is filled too, nothing else changes
    boxed = Inpaint.apply(net, box, blob, tta=False)
    assert np.isfinite(boxed).all() and np.array_equal(boxed[~np.isnan(box)], clean[~np.isnan(box)])


# ------------------------------------------------------------------------------------------ evaluation
def test_inpainting_task_scores_inside_the_deleted_voxels_only(data, tmp_path):
    from pipeline.evaluation.run import evaluate
    from pipeline.evaluation.tasks import Output

    cfg = EvaluateConfig(bootstrap_resamples=200)
    infer_dir = tmp_path / "infer"
    for sub in ("sub-004", "sub-005"):
        truth, affine = load_nifti(data / sub / "T1w.nii.gz")
        gapped, _ = load_nifti(data / sub / "T1w_gaps.nii.gz")
        unknown = np.isnan(gapped)
        perfect = np.where(unknown, truth, 1.0 - truth)  # right inside the gaps, wrong everywhere else
        save_nifti(perfect, affine, infer_dir / "perfect" / f"{sub}_inpaint.nii.gz")
        save_nifti(gaps.linear_fill(gapped), affine, infer_dir / "lin" / f"{sub}_inpaint.nii.gz")
    outs = [Output(n, "inpaint", "inpainting", "T1w_gaps", "T1w", "inpaint") for n in ("perfect", "lin")]
    summary = evaluate(data / "subjects.tsv", outs, cfg, infer_dir=infer_dir, histories=tmp_path / "h",
                       metrics_dir=tmp_path / "metrics", figures_dir=tmp_path / "fig", viewer_dir=tmp_path / "view")
    task = summary["tasks"]["inpainting"]
    assert task["baselines"] == ["linear", "cubic"] and "deleted" in task["region"]
    methods = task["methods"]
    assert methods["perfect"]["metrics"]["psnr"]["n_nonfinite"] == 2  # exact inside the gaps: PSNR infinite
    assert methods["perfect"]["metrics"]["mae"]["mean"] == 0.0 and methods["perfect"]["metrics"]["ssim"]["mean"] == 1.0
    # the model that is linear interpolation scores exactly as the linear baseline
    for metric in ("psnr", "ssim", "mae", "nrmse"):
        assert methods["lin"]["metrics"][metric]["mean"] == pytest.approx(methods["linear"]["metrics"][metric]["mean"])
    by_length = task["by_gap_length"]
    assert set(by_length) == {"1", "3"}
    assert by_length["3"]["methods"]["linear"]["psnr"]["mean"] < by_length["1"]["methods"]["linear"]["psnr"]["mean"]
    assert (tmp_path / "fig" / "group" / "inpainting_gap_length.png").is_file()
    # the report shows the task and its gap-length figure
    from pipeline.config import ReportConfig
    from pipeline.report.build import build_report

    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(summary))
    pages = build_report(tmp_path / "metrics" / "summary.json", tmp_path / "reports", ReportConfig(),
                         subjects_tsv=data / "subjects.tsv")
    index = pages[-1].read_text()
    assert "inpainting of missing slices" in index.lower() and "linear interpolation" in index
    assert "gap length" in index.lower()
    assert "Scored over: inpainting: PSNR, MAE and NRMSE over the deleted (filled) voxels" in index  # not the mask


def test_outputs_the_self_check_filled_by_interpolation_are_named_in_the_listing_evaluation_and_report(data,
                                                                                                        tmp_path):
    """The workflow's chain: infer's listing notes the subjects whose gaps interpolation filled (the model lost its
    self-check there), evaluation carries the notes into summary.json, the report says so on both pages."""
    from pipeline.cli import main as cli
    from pipeline.config import ReportConfig
    from pipeline.evaluation.run import evaluate
    from pipeline.evaluation.tasks import Output
    from pipeline.report.build import build_report

    _bad_model(data, tmp_path / "m")
    data = _cohort(tmp_path / "data", (24, 20, 40))  # (room beside the gaps to hide measured slices)
    infer_dir, subs = tmp_path / "infer", ("sub-004", "sub-005")
    pairs = [a for sub in subs for a in ("--input", str(data / sub / "T1w_gaps.nii.gz"),
                                         "--output", str(infer_dir / "inpaint" / f"{sub}_inpaint.nii.gz"))]
    listing = infer_dir / "inpaint" / "outputs.tsv"
    unchecked = tmp_path / "unchecked.tsv"
    assert cli(["infer", "--model", str(tmp_path / "m" / "bad.pt"), *pairs[:4], "--no-self-check",
                "--listing", str(unchecked), "--device", "cpu"]) == 0
    assert [r.split("\t")[2] for r in unchecked.read_text().splitlines()[1:]] == [""]  # the model filled: no note
    assert cli(["infer", "--model", str(tmp_path / "m" / "bad.pt"), *pairs, "--listing", str(listing),
                "--device", "cpu"]) == 0
    notes = [r.split("\t")[2] for r in listing.read_text().splitlines()[1:]]
    assert len(notes) == 2 and all(n.endswith("interpolation (the inpaint model lost to it on this scan's own "
                                              "measured slices)") for n in notes)
    out = Output("inpaint", "inpaint", "inpainting", "T1w_gaps", "T1w", "inpaint")
    summary = evaluate(data / "subjects.tsv", [out], EvaluateConfig(bootstrap_resamples=100), infer_dir=infer_dir,
                       histories=tmp_path / "h", metrics_dir=tmp_path / "metrics", figures_dir=tmp_path / "fig",
                       viewer_dir=tmp_path / "view")
    assert summary["models"]["inpaint"]["notes"] == dict(zip(subs, notes, strict=True))
    (tmp_path / "metrics" / "summary.json").write_text(json.dumps(summary))
    pages = build_report(tmp_path / "metrics" / "summary.json", tmp_path / "reports", ReportConfig(),
                         subjects_tsv=data / "subjects.tsv")
    index = pages[-1].read_text()
    assert "2 of 2 inpaint outputs not made by the model." in index and "lost to it on this scan&#39;s own" in index
    subject_page = (tmp_path / "reports" / "subjects" / "sub-004.html").read_text()
    assert "filled by " + notes[0].split(" ")[0] + " interpolation" in subject_page
    # the exports for the hospital say it too, and call the image what it is (not "super-resolution")
    import pydicom

    from pipeline.export.bids import Item, export_bids
    from pipeline.export.dicom import export_dicom

    image, model = infer_dir / "inpaint" / "sub-004_inpaint.nii.gz", tmp_path / "m" / "bad.pt"
    [nii] = export_bids([Item("inpaint", "sub-004", image, model, data / "sub-004" / "T1w_gaps.nii.gz")],
                        tmp_path / "bids")
    described = json.loads(nii.with_name(nii.name.replace(".nii.gz", ".json")).read_text())["Description"]
    dicom = pydicom.dcmread(export_dicom(image, model, tmp_path / "dcm")[0])
    for text in (described, dicom.DerivationDescription):
        assert "(the missing slices of a T1w filled; its measured voxels are the input's)" in text
        assert text.endswith(f"Not made by the model: {notes[0]}.") and "super-resolution" not in text
    assert dicom.SeriesDescription == "T1w gaps filled inpaint - not for diagnosis"
    from pipeline.export.bundle import _description  # the MONAI bundle's metadata task

    assert _description(load_checkpoint(model), None)["task"].startswith("T1w missing-slice inpainting")


def test_evaluation_refuses_gaps_that_differ_from_the_record(data, tmp_path):
    from pipeline.evaluation.cases import load_case
    from pipeline.evaluation.tasks import Output, build_tasks
    from pipeline.io.tables import read_subjects

    rows = read_subjects(data / "subjects.tsv", "test")
    out = Output("x", "inpaint", "inpainting", "T1w_gaps", "T1w", "inpaint")
    [task] = build_tasks([out], {}, EvaluateConfig(), list(rows[0]), data / "subjects.tsv")
    case = load_case(rows[0], task, data / "subjects.tsv")
    assert case.unknown.any() and np.isfinite(case.source).all()
    gapped, affine = load_nifti(rows[0]["T1w_gaps"])
    gapped[:, :, 0] = np.nan
    bad = tmp_path / "bad.nii.gz"
    save_nifti(gapped, affine, bad)
    with pytest.raises(ValueError, match="recorded as deleted"):
        load_case({**rows[0], "T1w_gaps": bad}, task, data / "subjects.tsv")


def test_preprocess_writes_gapped_inputs_and_records_them(tmp_path):
    from pipeline.preprocessing.subject import preprocess_subject

    image, _ = _phantom(3, (24, 24, 30))
    scan = save_nifti(100 + 900 * image, np.diag([2.0, 2.0, 2.0, 1.0]), tmp_path / "in" / "t1.nii.gz")
    cfg = PreprocessConfig(gaps={"modalities": ["T1w"], "run_lengths": [1, 3], "n_runs": 2, "min_separation": 3},
                           motion={"modalities": []})
    written = preprocess_subject("sub-001", {"T1w": scan}, cfg, tmp_path / "out", seed=42)
    gapped, _ = load_nifti(written["T1w_gaps"])
    full, _ = load_nifti(written["T1w"])
    record = json.loads((tmp_path / "out" / "sub-001" / "normalisation.json").read_text())["T1w"]["gaps"]
    assert record["deleted_slices"] == gaps.deleted_slices(gapped) and len(record["deleted_slices"]) == 4
    known = ~np.isnan(gapped)
    assert np.array_equal(gapped[known], full[known])


# ------------------------------------------------------------------------------------------ ingestion
def test_series_with_a_missing_slice_is_filled_and_flagged(tmp_path, monkeypatch):
    from pipeline.ingest.run import ingest
    from tests.unit.ingest_helpers import affine_for, write_series

    monkeypatch.chdir(tmp_path)
    z = np.arange(12, dtype=np.float64)
    volume = (np.full((16, 18, 12), 100.0) + 20.0 * z).astype(np.int16)  # linear along the slices
    files = write_series(tmp_path / "in" / "s", volume, affine_for("axial"), series_description="t2_tse")
    files[5].unlink()  # the 6th slice of 12 is missing
    with pytest.raises(RuntimeError, match="missing slice"):  # by default the series is skipped
        ingest(tmp_path / "in", tmp_path / "out_skip")

    result = ingest(tmp_path / "in", tmp_path / "out", IngestConfig(fill_missing_slices=True))
    [row] = [r for r in result.rows if r.status == "ingested"]
    assert "1 missing slice(s) inserted at index" in row.reason and "derived, not measured" in row.reason
    data, affine = load_nifti(tmp_path / row.output)
    assert data.shape == (16, 18, 12)
    np.testing.assert_allclose(affine, affine_for("axial"), atol=1e-4)
    np.testing.assert_allclose(data, volume, atol=1e-3)  # linear interpolation restores a linear profile
    sidecar = json.loads((tmp_path / row.output.replace(".nii.gz", ".json")).read_text())
    missing_index = int(sidecar["filled_slices"][0])
    assert sidecar["filled_slices"] == [missing_index] and "derived" in sidecar["derived_slices"]
    assert any("derived, not measured" in n for n in sidecar["notes"])
    from pipeline.report.inputs import ingest_summary

    shown = ingest_summary(result.manifest)["sidecars"][row.subject][row.modality]  # the subject page's table
    assert "derived, not measured" in shown["derived_slices"]


# ------------------------------------------------------------------------------------------ base interpolation
def test_a_missing_slice_filled_by_a_model_that_lost_its_self_check_is_recorded_as_interpolated(data, tmp_path,
                                                                                                monkeypatch):
    """With ingest.fill_model, the manifest and the sidecar name what really filled the slice: the model, or the
    interpolation its self-check chose instead; a model file of another family is refused, naming the file."""
    from pipeline.gan.checkpoint import save_checkpoint
    from pipeline.ingest.fill import fill_missing
    from pipeline.ingest.run import ingest
    from tests.unit.ingest_helpers import affine_for, write_series

    blob, _ = _bad_model(data, tmp_path / "m")
    monkeypatch.chdir(tmp_path)
    image, _ = _phantom(7, (24, 20, 40))
    files = write_series(tmp_path / "in" / "s", (1000 * image).astype(np.int16), affine_for("axial"),
                         series_description="t1_mprage")
    files[20].unlink()
    result = ingest(tmp_path / "in", tmp_path / "out",
                    IngestConfig(fill_missing_slices=True, fill_model=str(tmp_path / "m" / "bad.pt")))
    [row] = [r for r in result.rows if r.status == "ingested"]
    assert "interpolation (the inpaint model lost to it on this scan's own measured slices)" in row.reason
    assert "derived, not measured" in row.reason
    sidecar = json.loads((tmp_path / row.output.replace(".nii.gz", ".json")).read_text())
    assert "interpolation (the inpaint model lost" in sidecar["derived_slices"]
    full = np.where(np.arange(40) == 20, np.nan, 1000 * image).astype(np.float32)
    blob["inference"]["self_check"] = False
    save_checkpoint(blob, tmp_path / "m" / "unchecked.pt")
    assert fill_missing(full, [20], str(tmp_path / "m" / "unchecked.pt"))[1] == "the inpaint model"
    blob["family"] = "pix2pix"
    save_checkpoint(blob, tmp_path / "m" / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: a pix2pix model file, not an inpainting one"):
        fill_missing(full, [20], str(tmp_path / "m" / "other.pt"))


def test_base_interpolation_is_the_one_that_fills_the_training_volumes_better():
    from types import SimpleNamespace

    from pipeline.data.gap_sampler import choose_base

    z = np.linspace(0, 3 * np.pi, 40)
    smooth = np.broadcast_to(0.5 + 0.4 * np.sin(z), (12, 10, 40)).astype(np.float32)  # curved along z: cubic's
    mask = np.ones(smooth.shape, dtype=bool)
    noisy = smooth + 0.2 * np.random.default_rng(0).standard_normal(smooth.shape).astype(np.float32)

    def vols(image):
        return [SimpleNamespace(subject=f"sub-{k}", image=image, mask=mask) for k in range(2)]

    base, psnr = choose_base(vols(smooth), [1, 2, 3], seed=1)
    assert base == "cubic" and psnr["cubic"] > psnr["linear"] + 3
    base, psnr = choose_base(vols(noisy), [1, 2, 3], seed=1)  # noise dominates: linear averages it, cubic amplifies
    assert base == "linear" and psnr["linear"] > psnr["cubic"]


@pytest.mark.parametrize("base", ["linear", "cubic"])
def test_the_residual_starts_from_the_recorded_base(data, tmp_path, base):
    """The model file records the base; with a zero residual `apply` fills each deleted slice with exactly that
    interpolation of its window (the input's last channel), and the two bases differ (a 1-slice gap: a window of
    5 slices has the 4 measured ones a cubic needs)."""
    from pipeline.data.gap_sampler import volume_windows, window_input

    cfg = tiny_cfg(n_steps=1, n_steps_decay=0, base=base, select_best=False)
    _run(data, tmp_path / "m", cfg)
    blob = load_checkpoint(tmp_path / "m" / "model.pt")
    assert blob["inpainting"]["base"] == base
    net = Inpaint.load_generator(blob, None, "cpu")
    with torch.no_grad():
        for p in net.unet.parameters():
            p.zero_()
    gapped = load_nifti(data / "sub-004" / "T1w_gaps.nii.gz")[0]
    unknown = np.isnan(gapped)
    filled = Inpaint.apply(net, gapped, blob, self_check=False)
    z = next(s for s, n in gaps.runs_of(gaps.deleted_slices(gapped)) if n == 1)  # 4 measured neighbours: cubic
    for b in ("linear", "cubic"):
        channel = window_input(*volume_windows(gapped, unknown, z, cfg.context), b)[-1]
        assert np.allclose(filled[:, :, z], channel, atol=1e-6) == (b == base)


def _bad_model(data, out):
    """A model file (and its generator) whose residual is +0.7 everywhere: worse than any interpolation."""
    from pipeline.gan.checkpoint import save_checkpoint

    _run(data, out, tiny_cfg(n_steps=1, n_steps_decay=0, select_best=False))
    blob = load_checkpoint(out / "model.pt")
    net = Inpaint.load_generator(blob, None, "cpu")
    with torch.no_grad():
        for p in net.unet.parameters():
            p.fill_(0.0)
        list(net.unet.parameters())[-1].fill_(0.7)
        net.gate.fill_(1.0)
    blob["state_dict"] = {k: v.clone() for k, v in net.state_dict().items()}
    save_checkpoint(blob, out / "bad.pt")
    return blob, net


def test_self_check_scores_hidden_measured_slices_and_falls_back_to_the_better_interpolation(data, tmp_path, caplog):
    from pipeline.data.gap_sampler import self_check

    image, mask = _phantom(7, (24, 20, 40))
    gapped = gaps.simulate_gaps(image, 3, n_runs=3, run_lengths=[1, 3], min_separation=3, mask=mask).volume
    unknown = np.isnan(gapped)
    seen = {}

    def oracle(probe, probe_unknown, zs):  # fills hidden slices with what was measured there
        seen["zs"], seen["unknown"] = list(zs), probe_unknown
        assert np.isnan(probe[:, :, zs]).all()
        return np.moveaxis(gapped[:, :, zs], -1, 0)

    check = self_check(oracle, gapped, unknown, run_lengths=[1, 3], n_runs=3)
    assert check["chosen"] == "model" and check["slices"] == len(seen["zs"]) >= 3
    assert set(check["psnr_db"]) == {"model", "linear", "cubic"} and check["psnr_db"]["model"] > 100
    deleted = gaps.deleted_slices(gapped)
    assert all(min(abs(z - d) for d in deleted) > 1 for z in seen["zs"])  # not next to a real gap
    assert np.array_equal(seen["unknown"], unknown | np.isin(np.arange(40), seen["zs"])[None, None, :])
    assert self_check(oracle, gapped, unknown, [1, 3], 3)["psnr_db"] == check["psnr_db"]  # the same slices again

    blob, net = _bad_model(data, tmp_path / "m")
    assert blob["inference"]["self_check"] is True
    outcome = {}
    with caplog.at_level("WARNING"):
        filled = Inpaint.apply(net, gapped, blob, outcome=outcome)
    assert "the model lost on this scan" in caplog.text
    chosen = "linear" if "filling with linear" in caplog.text else "cubic"
    assert outcome["filler"] == chosen == outcome["self_check"]["chosen"]  # what really filled it, for provenance
    np.testing.assert_array_equal(filled, gaps.interpolate(gapped, chosen, unknown))
    raw = Inpaint.apply(net, gapped, blob, self_check=False)
    assert np.abs(raw - filled)[unknown].min() > 0.1  # without the check the bad model fills
    assert np.array_equal(raw[~unknown], gapped[~unknown]) and np.array_equal(filled[~unknown], gapped[~unknown])


def test_a_new_generator_starts_at_its_base_and_older_model_files_load():
    from pipeline.models.inpaint import InpaintGenerator, generator_kwargs

    kwargs = generator_kwargs(tiny_cfg())
    assert kwargs["gated"] is True
    net = InpaintGenerator(**kwargs)
    x = torch.rand(2, 2 * (2 * 2 + 1) + 1, 16, 16)
    assert torch.equal(net(x), x[:, -1:])  # the gate starts at 0: the output is the interpolation channel
    old = InpaintGenerator(**{k: v for k, v in kwargs.items() if k != "gated"})  # a model file before the gate
    assert old.gate is None and "gate" not in old.state_dict()
    assert not torch.equal(old(x), x[:, -1:])
