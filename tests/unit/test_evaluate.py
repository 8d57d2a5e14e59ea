"""Evaluation: the masked metric protocol (checked against MONAI), statistics, baselines, the outputs and skipped
lists, and the stage's outputs (with outputs skipped: the others' values unchanged)."""

from __future__ import annotations

import argparse
import csv
import json
import math

import numpy as np
import pytest

from pipeline.config import ConfigError, EvaluateConfig, load_params
from pipeline.evaluation import metrics as ev
from pipeline.evaluation import statistics as st
from pipeline.evaluation.cases import Case, make_baseline, sr_geometry
from pipeline.evaluation.tasks import (
    Output,
    Skipped,
    build_tasks,
    check_outputs,
    parse_json,
    parse_outputs,
    parse_skipped,
)
from pipeline.stages import evaluate as stage
from tests.unit.eval_helpers import (
    NO_T2W,
    OUTPUTS,
    SKIPPED_CYCLEGAN,
    SUBJECTS,
    evaluate_args,
    make_cohort,
    working_dir,
)

CFG = EvaluateConfig(bootstrap_resamples=2000)


def _pair(shape=(28, 30, 24), seed=0, noise=0.05):
    """A smooth 'truth' in [0, 1], a noisy 'prediction' and an ellipsoid mask."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    truth = gaussian_filter(rng.random(shape), 2.0)
    truth = ((truth - truth.min()) / np.ptp(truth)).astype(np.float32)
    pred = np.clip(truth + noise * rng.standard_normal(shape), 0, 1).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    mask = (grid**2).sum(0) < 0.8
    return pred, truth, mask


# ------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize(("kernel", "window"), [("gaussian", 11), ("uniform", 7)])
def test_psnr_and_ssim_agree_with_monai(kernel, window):
    """Our scikit-image protocol and MONAI's independent implementation agree within 1e-3."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric
    from monai.metrics.regression import compute_ssim_and_cs

    cfg = EvaluateConfig(ssim_kernel=kernel, ssim_window=window)
    pred, truth, mask = _pair()
    ours = ev.masked_metrics(pred, truth, mask, cfg)

    def t(x):
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]

    # PSNR over the mask voxels.
    monai_psnr = PSNRMetric(max_val=cfg.data_range)(t(pred[mask][None, None]), t(truth[mask][None, None])).item()
    assert ours["psnr"] == pytest.approx(monai_psnr, abs=1e-3)

    # SSIM over the whole volume: MONAI convolves without padding, so compare on the interior it covers.
    half = window // 2
    inner = (slice(half, -half),) * 3
    monai_ssim = SSIMMetric(spatial_dims=3, data_range=cfg.data_range, kernel_type=kernel, win_size=window,
                            kernel_sigma=cfg.ssim_sigma)(t(pred), t(truth)).item()
    assert float(ev.ssim_map(pred, truth, cfg)[inner].mean()) == pytest.approx(monai_ssim, abs=1e-3)

    # The masked mean of the SSIM map, on the interior where both maps exist.
    monai_map, _ = compute_ssim_and_cs(t(pred), t(truth), 3, [window] * 3, [cfg.ssim_sigma] * 3,
                                       cfg.data_range, kernel)
    inner_mask = mask[inner]
    assert float(ev.ssim_map(pred, truth, cfg)[inner][inner_mask].mean()) == pytest.approx(
        float(monai_map[0, 0].numpy()[inner_mask].mean()), abs=1e-3)


def test_known_values_and_mask():
    """A constant error d inside the mask: MAE = d, PSNR = 20 log10(1/d); voxels outside the mask do not count."""
    _, truth, mask = _pair()
    truth = np.clip(truth, 0.1, 0.9)
    d = 0.05
    pred = truth + d
    pred[~mask] = 0.0  # garbage outside the mask
    m = ev.masked_metrics(pred, truth, mask, CFG)
    assert m["mae"] == pytest.approx(d, rel=1e-4)
    assert m["psnr"] == pytest.approx(20 * math.log10(1 / d), abs=1e-3)
    assert m["nrmse"] == pytest.approx(d / np.sqrt(np.mean(truth[mask].astype(np.float64) ** 2)), rel=1e-4)
    perfect = ev.masked_metrics(truth, truth, mask, CFG)
    assert perfect["psnr"] == math.inf and perfect["mae"] == 0.0 and perfect["ssim"] == pytest.approx(1.0)


def test_outputs_are_clipped_to_the_data_range():
    _, truth, mask = _pair()
    over = truth.copy()
    over[mask] = 5.0  # far above the data range
    clipped = ev.masked_metrics(over, truth, mask, CFG)
    assert clipped["mae"] == pytest.approx(float(np.mean(1.0 - truth[mask])), rel=1e-4)
    raw = ev.masked_metrics(over, truth, mask, EvaluateConfig(clip=False))
    assert raw["mae"] > clipped["mae"]


def test_gaussian_window_must_match_sigma():
    pred, truth, mask = _pair()
    with pytest.raises(ValueError, match="ssim_window: 11"):
        ev.masked_metrics(pred, truth, mask, EvaluateConfig(ssim_window=7))


def test_shape_mismatch_and_empty_mask_are_errors():
    pred, truth, mask = _pair()
    with pytest.raises(ValueError, match="shapes differ"):
        ev.masked_metrics(pred[:-1], truth, mask, CFG)
    with pytest.raises(ValueError, match="mask is empty"):
        ev.masked_metrics(pred, truth, np.zeros_like(mask), CFG)


def test_config_rejects_bad_values():
    for bad, key in (({"splits": ["holdout"]}, "splits"), ({"sr_baselines": ["lanczos"]}, "sr_baselines"),
                     ({"ssim_window": 8}, "ssim_window")):
        with pytest.raises(ConfigError, match=key):
            load_params(json.dumps(bad), EvaluateConfig, "evaluate")


# ------------------------------------------------------------------------------------------ statistics
def test_bootstrap_is_seeded_and_handles_small_n():
    values = [30.1, 31.5, 29.8, 32.2, 30.9]
    assert st.bootstrap_ci(values, CFG) == st.bootstrap_ci(values, CFG)
    lo, hi = st.bootstrap_ci(values, CFG)
    assert lo < np.mean(values) < hi
    assert st.bootstrap_ci([30.0], CFG) == (None, None)
    d = st.describe([30.0], CFG)
    assert d["n"] == 1 and d["mean"] == 30.0 and d["sd"] is None and d["ci_low"] is None
    assert st.describe([1.0, math.inf, 3.0], CFG)["n_nonfinite"] == 1


def test_paired_comparison_directions():
    rng = np.random.default_rng(1)
    base = rng.normal(30, 1, size=10)
    better = st.compare(list(base + 2 + 0.1 * rng.standard_normal(10)), list(base), "psnr", CFG)
    assert better["verdict"] == "better" and better["mean_diff"] == pytest.approx(2, abs=0.2)
    assert better["wilcoxon_p"] < 0.01 and better["ci_low"] > 0
    # Lower is better for MAE: a larger error is worse.
    worse = st.compare(list(base + 1), list(base), "mae", CFG)
    assert worse["verdict"] == "worse"
    # Too few subjects for the test: an interval above 0 does not make "better" (it stays open, with the reason)...
    few = st.compare([31.0, 32.0, 33.0], [30.0, 30.5, 31.0], "psnr", CFG)
    assert few["ci_low"] > 0 and few["wilcoxon_p"] > 0.05
    assert few["verdict"] == "inconclusive" and "n = 3 is too few" in few["note"]
    one = st.compare([31.0], [30.0], "psnr", CFG)
    assert one["verdict"] == "n/a" and one["wilcoxon_p"] is None and "too few subjects" in one["note"]
    same = st.compare([30.0, 31.0], [30.0, 31.0], "psnr", CFG)
    assert same["wilcoxon_p"] == 1.0 and same["verdict"] == "inconclusive"


def test_worse_needs_no_significance_better_does():
    """A CI entirely on the bad side of 0 is "worse" whatever p (n = 3: the Wilcoxon test cannot reach
    p < 0.05), with a note saying so; the same CI on the good side stays "inconclusive". MAE/NRMSE: lower is
    better, so the bad side is above 0."""
    base = [30.0, 30.5, 31.0]
    worse = st.compare([28.0, 29.0, 29.2], base, "psnr", CFG)
    assert worse["ci_high"] < 0 and worse["wilcoxon_p"] > 0.05
    assert worse["verdict"] == "worse"
    assert "CI lies below 0" in worse["note"] and "n = 3 is too few" in worse["note"]
    assert st.compare([31.0, 32.0, 33.0], base, "psnr", CFG)["verdict"] == "inconclusive"  # mirror image: not better
    assert st.compare([0.6, 0.7, 0.75], [0.8, 0.82, 0.9], "ssim", CFG)["verdict"] == "worse"
    # Lower is better: a larger MAE (CI above 0) is worse, a smaller one (CI below 0) only inconclusive.
    mae_worse = st.compare([0.05, 0.06, 0.065], [0.03, 0.035, 0.04], "mae", CFG)
    assert mae_worse["ci_low"] > 0 and mae_worse["verdict"] == "worse" and "CI lies above 0" in mae_worse["note"]
    mae_less = st.compare([0.03, 0.035, 0.04], [0.05, 0.06, 0.065], "mae", CFG)
    assert mae_less["ci_high"] < 0 and mae_less["verdict"] == "inconclusive"
    assert st.compare([0.3, 0.32, 0.35], [0.2, 0.21, 0.22], "nrmse", CFG)["verdict"] == "worse"
    # An interval straddling 0 is inconclusive, even when the mean is on the bad side.
    assert st.compare([29.0, 31.2, 30.4], base, "psnr", CFG)["verdict"] == "inconclusive"
    # Enough subjects and significant: worse, with no note; many subjects and a clear gain: better.
    rng = np.random.default_rng(2)
    b10 = rng.normal(30, 1, size=10)
    sig = st.compare(list(b10 - 1 + 0.05 * rng.standard_normal(10)), list(b10), "psnr", CFG)
    assert sig["verdict"] == "worse" and sig["wilcoxon_p"] < 0.05 and sig["note"] == ""
    assert st.compare(list(b10 + 1 + 0.05 * rng.standard_normal(10)), list(b10), "psnr", CFG)["verdict"] == "better"
    # Two subjects, both lost: still worse (a CI without a significant test).
    assert st.compare([29.0, 29.5], [30.0, 31.0], "psnr", CFG)["verdict"] == "worse"


# ------------------------------------------------------------------------------------------ baselines
def test_sr_geometry_from_shapes():
    assert sr_geometry((16, 16, 24), (32, 32, 24), {"scale": 2, "axes": "inplane"}, "x") == (2, (0, 1))
    assert sr_geometry((8, 8, 6), (32, 32, 24), {}, "x") == (4, (0, 1, 2))
    with pytest.raises(ValueError, match="scale 2"):
        sr_geometry((16, 16, 24), (32, 32, 24), {"scale": 4}, "lr.nii.gz")
    with pytest.raises(ValueError, match="integer multiple"):
        sr_geometry((15, 16, 24), (32, 32, 24), {}, "lr.nii.gz")


COLUMNS = ["subject", "split", "T1w", "T2w", "PDw", "mask", "T1w_lr"]
SR, SRRESNET, CYCLEGAN = (Output(**o) for o in (OUTPUTS[1], OUTPUTS[0], OUTPUTS[2]))


def _tasks(outputs, degradation=None, skipped=(), columns=COLUMNS):
    return build_tasks(outputs, {} if degradation is None else degradation, CFG, columns, "s.tsv", skipped)


TRANSLATION_BASELINES = ["identity", "histogram_match", "histogram_match_inverted"]


def test_inverted_histogram_matching_recovers_a_decreasing_contrast():
    """Where the target inverts the source's contrast (T1w -> T2w: dark CSF becomes bright), the inverted
    baseline maps the source onto the target exactly and the increasing one scores far below it."""
    rng = np.random.default_rng(0)
    source = rng.uniform(0.1, 0.9, (12, 12, 6)).astype(np.float32)
    truth = np.sqrt(1.0 - source).astype(np.float32)  # a strictly decreasing contrast map
    mask = np.zeros(source.shape, bool)
    mask[2:10, 2:10] = True
    case = Case("sub-01", "test", truth, mask, np.eye(4), source, source)
    task = _tasks([CYCLEGAN])[0]
    inverted = make_baseline(task, case, "histogram_match_inverted")
    np.testing.assert_allclose(inverted[mask], truth[mask], atol=1e-6)
    increasing = make_baseline(task, case, "histogram_match")
    assert np.corrcoef(increasing[mask], truth[mask])[0, 1] < -0.9  # the same values in the reverse order
    np.testing.assert_array_equal(inverted[~mask], increasing[~mask])  # background stays background


def test_zerofill_baseline_only_for_kspace_degradation():
    kspace = _tasks([SR], {"T1w_lr": {"method": "kspace", "scale": 2}})
    assert kspace[0].baselines == ["bicubic", "trilinear", "zerofill"] and kspace[0].source == "T1w_lr"
    assert kspace[0].description == "super-resolution x2 of T1w (kspace, ?)"
    bicubic = _tasks([SR], {"T1w_lr": {"method": "bicubic"}, "T2w_lr": {"method": "kspace"}})
    assert "zerofill" not in bicubic[0].baselines
    trans = _tasks([CYCLEGAN])
    assert trans[0].outputs[0].desc == "T2w" and trans[0].baselines == TRANSLATION_BASELINES
    assert trans[0].description == "translation T1w → T2w" and trans[0].degradation == {}
    with pytest.raises(ValueError, match="no column 'FLAIR'"):
        _tasks([Output("cyclegan", "cyclegan", "translation", "T1w", "FLAIR", "FLAIR")])
    with pytest.raises(ValueError, match="--degradation: expected a JSON object"):
        _tasks([SR], ["kspace"])
    with pytest.raises(ValueError, match="--degradation: expected a JSON object"):
        _tasks([SR], {"method": "kspace"})  # one degradation, not keyed by its input column


def test_each_sr_task_gets_the_degradation_of_its_input():
    thick = Output("selfsr", "selfsr", "sr", "T1w_thick", "T1w", "selfsr")
    tasks = _tasks([SR, thick], {"T1w_lr": {"method": "kspace", "scale": 2, "axes": "inplane"},
                                 "T1w_thick": {"method": "thick_slice", "scale": 4, "axes": "through",
                                               "profile": "rect"}},
                   columns=[*COLUMNS, "T1w_thick"])
    assert [(t.name, t.source) for t in tasks] == [("sr-T1w_lr-T1w", "T1w_lr"), ("sr-T1w_thick-T1w", "T1w_thick")]
    assert "zerofill" in tasks[0].baselines and "zerofill" not in tasks[1].baselines
    assert tasks[1].description == "super-resolution x4 of T1w (thick slices, rect profile, through)"


def test_an_output_without_ground_truth_is_named_so_and_not_scored():
    from pipeline.config import EvaluateConfig
    from pipeline.evaluation.run import NO_GROUND_TRUTH, unscorable

    own = Output("selfsr", "selfsr", "sr", "T2w", "T2w", "selfsr")
    rows = [{"subject": "sub-001", "split": "test", "T2w": "a", "T1w_lr": "b", "T1w": "c", "mask": "m"}]
    skipped = unscorable([own, SR], rows, EvaluateConfig())
    assert [(s.output.name, s.reason) for s in skipped] == [("selfsr", NO_GROUND_TRUTH)]
    [task] = _tasks([], skipped=skipped)
    assert task.description == "super-resolution of the T2w scans themselves (no ground truth)"


def test_outputs_of_one_task_share_a_block_and_a_new_family_needs_no_code():
    """Outputs with the same kind, input and truth are one task, whatever their family; other pairs are tasks
    of their own, named apart."""
    toy = Output("toysr", "toy", "sr", "T1w_lr", "T1w", "toy")
    tasks = _tasks([SRRESNET, SR, CYCLEGAN, toy])
    assert [t.name for t in tasks] == ["sr", "translation"]
    assert tasks[0].models == ["srresnet", "srgan", "toysr"] and tasks[0].kind == "sr"
    pd = Output("pd2t2", "cyclegan", "translation", "PDw", "T2w", "T2w")
    tasks = _tasks([CYCLEGAN, pd])
    assert [t.name for t in tasks] == ["translation-T1w-T2w", "translation-PDw-T2w"]
    assert [t.source for t in tasks] == ["T1w", "PDw"] and all(t.kind == "translation" for t in tasks)


def test_outputs_list_is_checked():
    assert parse_outputs(parse_json(json.dumps(OUTPUTS), "--outputs"))[0] == SRRESNET
    # The model contract's outputs as they are (with their inference-only keys) are accepted.
    contract = [{**OUTPUTS[2], "model_file": "model.pt", "infer_args": ["--direction", "A2B"]}]
    assert parse_outputs(contract) == [CYCLEGAN]
    assert parse_outputs([]) == []  # every output skipped
    bad = [
        ({"name": "srgan"}, "expected a JSON list"),
        ([{**OUTPUTS[0], "task": "segmentation"}], r"task: 'segmentation' is not one of sr, translation"),
        ([{k: v for k, v in OUTPUTS[0].items() if k != "family"}], r"missing key\(s\) family;"),
        ([{**OUTPUTS[0], "name": "../etc"}], "not a plain name"),
        ([{**OUTPUTS[0], "desc": 2}], "expected a non-empty string"),
        ([OUTPUTS[0], OUTPUTS[0]], "a model is named twice"),
    ]
    for data, match in bad:
        with pytest.raises(ValueError, match=match):
            parse_outputs(data)
    with pytest.raises(ValueError, match="neither inline JSON nor an existing file"):
        parse_json("outputs.json", "--outputs")


def test_skipped_list_is_checked():
    assert parse_skipped(parse_json(json.dumps([SKIPPED_CYCLEGAN]), "--skipped")) == [Skipped(CYCLEGAN, NO_T2W)]
    assert parse_skipped(parse_json("[]", "--skipped")) == []
    bad = [
        ([OUTPUTS[2]], r"--skipped\[0\]: missing key\(s\) reason;"),
        ([{**SKIPPED_CYCLEGAN, "reason": ""}], r"--skipped\[0\]\.reason: expected a non-empty string"),
        ([{**SKIPPED_CYCLEGAN, "task": "segmentation"}], "is not one of sr, translation"),
        ([SKIPPED_CYCLEGAN, SKIPPED_CYCLEGAN], "--skipped: an output is named twice"),
    ]
    for data, match in bad:
        with pytest.raises(ValueError, match=match):
            parse_skipped(data)
    check_outputs([SR], [Skipped(CYCLEGAN, NO_T2W)])
    check_outputs([], [Skipped(CYCLEGAN, NO_T2W)])
    with pytest.raises(ValueError, match="cyclegan in both --outputs and --skipped"):
        check_outputs([SR, CYCLEGAN], [Skipped(CYCLEGAN, NO_T2W)])
    check_outputs([], [])  # only families without per-subject outputs (dcgan): an empty summary


def test_a_skipped_output_keeps_its_task():
    """A skipped output belongs to its task as if evaluated (same name and description), needs no column of
    subjects.tsv, and a task whose outputs are all skipped has none to score."""
    no_t2w = [c for c in COLUMNS if c != "T2w"]
    tasks = _tasks([SR], {"T1w_lr": {"method": "kspace", "scale": 2}}, [Skipped(CYCLEGAN, NO_T2W)], no_t2w)
    assert [t.name for t in tasks] == ["sr", "translation"]
    assert tasks[0].models == ["srgan"] and tasks[0].skipped == []
    assert tasks[1].outputs == [] and tasks[1].skipped == [Skipped(CYCLEGAN, NO_T2W)]
    assert tasks[1].description == "translation T1w → T2w" and tasks[1].baselines == TRANSLATION_BASELINES
    # One output of a task skipped, another evaluated: one task.
    partly = _tasks([SR], skipped=[Skipped(SRRESNET, "no training subject has T1w")])
    assert len(partly) == 1 and partly[0].models == ["srgan"] and partly[0].skipped[0].output == SRRESNET
    # Task names follow every output declared, evaluated or not.
    pd = Output("pd2t2", "cyclegan", "translation", "PDw", "T2w", "T2w")
    assert [t.name for t in _tasks([CYCLEGAN], skipped=[Skipped(pd, "no test subject has PDw and T2w")])] == [
        "translation-T1w-T2w", "translation-PDw-T2w"]
    with pytest.raises(ValueError, match="no column 'T2w'"):  # an evaluated output still needs its columns
        _tasks([CYCLEGAN], columns=no_t2w)


def test_the_families_default_outputs_are_the_demo_tasks():
    """What the default families export (`Family.outputs`), passed as JSON, is what evaluation reads; every
    registered family's outputs parse, and a translation family joins CycleGAN's task block (StarGAN's T1w -> PDw
    output makes a task of its own)."""
    from pipeline.models import FAMILIES
    from pipeline.workflow_config import load_workflow_config

    def exported(names):
        return parse_outputs(json.loads(json.dumps(
            [o.as_dict() for n in names for o in FAMILIES[n].outputs(FAMILIES[n].config_class())])))

    outputs = exported(load_workflow_config({}).models)
    assert sorted(outputs, key=lambda o: o.name) == sorted((Output(**o) for o in OUTPUTS), key=lambda o: o.name)
    assert [t.name for t in _tasks(outputs, {"T1w_lr": {"method": "kspace", "scale": 2}})] == ["sr", "translation"]
    every = exported(FAMILIES)
    derived = [*COLUMNS, "T1w_motion", "T1w_gaps", "T1w_thick"]  # the derived inputs of preprocess
    assert [t.name for t in _tasks(every, {"T1w_lr": {"method": "kspace", "scale": 2}}, columns=derived)] == [
        "sr-T1w_lr-T1w", "translation-T1w-T2w", "translation-T1w-PDw", "restoration", "inpainting",
        "sr-T1w_thick-T1w"]
    tasks = _tasks(every, {"T1w_lr": {"method": "kspace", "scale": 2}}, columns=derived)
    assert {o.name for o in tasks[1].outputs} == {"cyclegan", "pix2pix", "stargan_T2w"}


def test_outputs_from_a_file(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps(OUTPUTS))
    assert [o.name for o in parse_outputs(parse_json(str(path), "--outputs"))] == ["srresnet", "srgan", "cyclegan"]


# ------------------------------------------------------------------------------------------ the stage
def _read_csv(path):
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_stage_writes_metrics_summary_and_figures(evaluated_cohort):
    root = evaluated_cohort
    test_subjects = sorted(s for s, split in SUBJECTS if split == "test")
    srgan = _read_csv(root / "results/metrics/srgan.csv")
    assert sorted({r["subject"] for r in srgan}) == test_subjects  # the train subject is not scored
    assert {r["method"] for r in srgan} == {"bicubic", "trilinear", "zerofill", "srgan"}
    assert {r["method"] for r in _read_csv(root / "results/metrics/cyclegan.csv")} == {*TRANSLATION_BASELINES, "cyclegan"}

    summary = json.loads((root / "results/metrics/summary.json").read_text())  # strict JSON: no NaN
    assert summary["protocol"]["data_range"] == 1.0 and "mask" in summary["protocol"]["region"]
    sr = summary["tasks"]["sr"]
    means = {b: sr["methods"][b]["metrics"]["psnr"]["mean"] for b in sr["baselines"]}
    assert sr["strongest_baseline"] == max(means, key=means.get)
    for model in ("srgan", "srresnet"):
        cmp = sr["comparisons"][model][sr["strongest_baseline"]]["psnr"]
        assert cmp["n"] == len(test_subjects) and cmp["mean_diff"] > 0 and cmp["ci_low"] is not None
        assert cmp["wilcoxon_p"] is not None
    # The summary's mean is the mean of the CSV's per-subject values.
    assert sr["methods"]["srgan"]["metrics"]["psnr"]["mean"] == pytest.approx(
        np.mean([float(r["psnr"]) for r in srgan if r["method"] == "srgan"]))
    assert summary["tasks"]["translation"]["methods"]["cyclegan"]["metrics"]["ssim"]["n"] == len(test_subjects)

    figs = summary["figures"]
    for sub in test_subjects:
        assert set(figs["subjects"][sub]) == {"srgan", "srresnet", "cyclegan"}
        assert (root / figs["subjects"][sub]["srgan"]).stat().st_size > 5000
    assert set(figs["group"]["sr"]) == {"psnr", "ssim", "mae", "nrmse"}
    svg = (root / figs["group"]["sr"]["psnr"]["svg"]).read_text()
    for sub in test_subjects:  # each point links to its subject page
        assert f'xlink:href="subjects/{sub}.html#srgan"' in svg
    assert "<script" not in svg
    # One training curve per family: SRGAN's history holds the SRResNet pretraining too.
    assert set(figs["training"]) == {"srgan", "cyclegan"}
    assert [o["name"] for o in summary["outputs"]] == ["srresnet", "srgan", "cyclegan"]
    assert {o["name"]: o["family"] for o in summary["outputs"]}["srresnet"] == "srgan"


HEADER = "subject,split,method,kind,psnr,ssim,mae,nrmse\n"


def test_one_output_skipped_the_others_unchanged(evaluated_cohort, tmp_path, caplog):
    """The workflow skips CycleGAN (`--skipped`): its CSV has the header only, summary.json says why, there is no
    translation task, and SR's numbers are those of the run that evaluated everything, to the last digit."""
    from pipeline import cli

    make_cohort(tmp_path)
    with working_dir(tmp_path):
        assert cli.main(evaluate_args(OUTPUTS[:2], [SKIPPED_CYCLEGAN])) == 0
    metrics, reference = tmp_path / "results/metrics", evaluated_cohort / "results/metrics"
    for model in ("srgan", "srresnet"):
        assert (metrics / f"{model}.csv").read_text() == (reference / f"{model}.csv").read_text()
    assert (metrics / "cyclegan.csv").read_text() == HEADER
    summary = json.loads((metrics / "summary.json").read_text())
    full = json.loads((reference / "summary.json").read_text())
    assert summary["tasks"] == {"sr": full["tasks"]["sr"]}
    assert summary["models"] == {m: full["models"][m] for m in ("srresnet", "srgan")}
    assert summary["skipped"] == [{**SKIPPED_CYCLEGAN, "task_name": "translation", "description": "translation T1w → T2w"}]
    assert [o["name"] for o in summary["outputs"]] == ["srresnet", "srgan"]
    figs = summary["figures"]
    assert list(figs["group"]) == ["sr"] and set(figs["training"]) == {"srgan"}
    assert all(set(f) == {"srgan", "srresnet"} for f in figs["subjects"].values())
    assert f"cyclegan (translation T1w → T2w): not evaluated: {NO_T2W}" in caplog.text


def test_workers_change_nothing_but_the_time(evaluated_cohort, tmp_path):
    """`--workers 2` (subjects scored and sprite sheets encoded on two threads) writes the same CSVs, summary and
    slice viewer images as the one-thread run, byte for byte."""
    from pipeline import cli

    make_cohort(tmp_path)
    with working_dir(tmp_path):
        assert cli.main([*evaluate_args(), "--workers", "2"]) == 0
    for rel in ("results/metrics/srgan.csv", "results/metrics/cyclegan.csv", "results/metrics/summary.json"):
        assert (tmp_path / rel).read_bytes() == (evaluated_cohort / rel).read_bytes(), rel
    sprites = sorted(p.relative_to(tmp_path) for p in (tmp_path / "results/viewer").rglob("*.png"))
    assert len(sprites) > 20 and sprites == sorted(p.relative_to(evaluated_cohort)
                                                   for p in (evaluated_cohort / "results/viewer").rglob("*.png"))
    assert all((tmp_path / p).read_bytes() == (evaluated_cohort / p).read_bytes() for p in sprites)


def test_every_output_skipped_still_succeeds(tmp_path):
    from pipeline import cli

    make_cohort(tmp_path)
    skipped = [{**o, "reason": "no training subject has T1w"} for o in OUTPUTS[:2]] + [SKIPPED_CYCLEGAN]
    with working_dir(tmp_path):
        assert cli.main(evaluate_args([], skipped)) == 0
    metrics = tmp_path / "results/metrics"
    assert sorted(p.name for p in metrics.iterdir()) == ["cyclegan.csv", "srgan.csv", "srresnet.csv", "summary.json"]
    assert all((metrics / f"{o['name']}.csv").read_text() == HEADER for o in OUTPUTS)
    summary = json.loads((metrics / "summary.json").read_text())
    assert summary["tasks"] == {} and summary["models"] == {} and summary["outputs"] == []
    assert [(s["name"], s["task_name"], s["reason"]) for s in summary["skipped"]] == [
        ("srresnet", "sr", "no training subject has T1w"), ("srgan", "sr", "no training subject has T1w"),
        ("cyclegan", "translation", NO_T2W)]
    assert summary["figures"] == {"subjects": {}, "group": {}, "training": {}}
    assert (tmp_path / "results/figures").is_dir()  # a declared output of the rule


def test_an_output_no_subject_can_be_scored_on_is_skipped(tmp_path):
    """A hand run lists CycleGAN, but the cohort has no T2w at all: skipped with the reason, not an error."""
    from pipeline import cli

    table = make_cohort(tmp_path)
    rows = _read_tsv(table)
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, [k for k in rows[0] if k != "T2w"], delimiter="\t", lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    with working_dir(tmp_path):
        assert cli.main(evaluate_args(splits=["train"])) == 0
    summary = json.loads((tmp_path / "results/metrics/summary.json").read_text())
    assert list(summary["tasks"]) == ["sr"] and summary["tasks"]["sr"]["n_subjects"] == 1
    assert [(s["name"], s["reason"]) for s in summary["skipped"]] == [("cyclegan", "no train subject has T1w and T2w")]
    assert (tmp_path / "results/metrics/cyclegan.csv").read_text() == HEADER


def _read_tsv(path):
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_missing_or_misplaced_output_is_a_clear_error(tmp_path):
    from pipeline import cli
    from pipeline.io.nifti import load_nifti, save_nifti

    make_cohort(tmp_path)
    out = tmp_path / "results/infer/srgan/sub-003_sr.nii.gz"
    data, affine = load_nifti(out)
    save_nifti(data[:-2], affine, out)  # wrong grid
    args = evaluate_args()
    with working_dir(tmp_path), pytest.raises(ValueError, match=r"sub-003_sr\.nii\.gz: shape"):
        stage.main(cli_parse(args))
    with working_dir(tmp_path):  # through the CLI: a one-line error and exit status 1, no traceback
        assert cli.main(args) == 1
    out.unlink()
    with working_dir(tmp_path), pytest.raises(FileNotFoundError, match=r"sub-003_sr\.nii\.gz: no output of model srgan"):
        stage.main(cli_parse(args))


def cli_parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    stage.add_arguments(parser)
    return parser.parse_args(argv[1:])  # drop the stage name


def test_png_writer_raises_the_first_failed_write(tmp_path):
    from pipeline.evaluation.slices import PngWriter

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    image = np.zeros((4, 4), np.uint8)
    with pytest.raises(OSError):
        with PngWriter(2) as writer:
            writer.write(tmp_path / "ok.png", image)
            writer.write(blocker / "bad.png", image)  # its folder cannot be made
    assert (tmp_path / "ok.png").stat().st_size > 0
