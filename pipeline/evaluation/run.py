"""The evaluation of a run: score every task's outputs and baselines, summarise, write CSVs, summary.json and
the figures (per-subject panels, group strip plots, one training curve per model family), the slice viewer's
sprite sheets (`pipeline.evaluation.slices`; summary.json's `figures.viewer`) and the blinded reader study's
pairs (`pipeline.evaluation.reader`; `figures.reader`, the key in `<viewer>/reader/key.json`), both only when
something was evaluated.

Outputs that are not evaluated (`--skipped`, or no subject of the evaluated splits has their input and truth)
get a header-only CSV and an entry of summary.json's `skipped` (the output's keys, `reason`, and the
`task_name` and `description` of the task it belongs to); a task whose outputs are all skipped is not under
`tasks`. Evaluated outputs are scored exactly as when nothing is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import EvaluateConfig, to_dict
from pipeline.evaluation.cases import (
    BASELINE_LABELS,
    load_case,
    load_prediction,
    make_baseline,
    prediction_notes,
)
from pipeline.evaluation.metrics import METRIC_LABELS, METRICS, masked_metrics, protocol
from pipeline.evaluation.reader import ReaderStudy
from pipeline.evaluation.statistics import compare, describe
from pipeline.evaluation.tasks import Output, Skipped, Task, build_tasks, check_outputs
from pipeline.io.atomic import write_text
from pipeline.io.tables import read_subjects

log = logging.getLogger(__name__)


def _clip(x: np.ndarray, cfg: EvaluateConfig) -> np.ndarray:
    return np.clip(x, 0.0, cfg.data_range) if cfg.clip else x


def evaluate_task(
    task: Task,
    rows: list[dict[str, Any]],
    table: Path,
    infer_dir: Path,
    figures_dir: Path,
    cfg: EvaluateConfig,
    viewer: dict[str, dict[str, Any]] | None = None,
    study: ReaderStudy | None = None,
    viewer_dir: Path | None = None,
    writer: Any = None,
    workers: int = 1,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, dict[str, str]]]:
    """Score a task's outputs and baselines on the selected subjects; returns (rows, summary, figure paths).

    The slice viewer's sprite sheets go to `<viewer_dir>/<subject>/slices/<task>/` (through `writer`, a
    `slices.PngWriter`; None: written at once), their entries into `viewer` ({subject: {output: entry}});
    `study` collects the reader study's pairs. `workers` threads score the subjects.
    """
    from pipeline.evaluation import figures, slices

    viewer = {} if viewer is None else viewer

    in_splits = [r for r in rows if r["split"] in cfg.splits]
    selected = [r for r in in_splits if _scorable(r, task.source, task.target)]
    for r in in_splits:
        if r not in selected:
            log.warning("%s: %s has no %s and %s images; not part of the %s evaluation",
                        table, r["subject"], task.source, task.target, task.name)
    if not selected:
        raise ValueError(f"{table}: no subject of split(s) {list(cfg.splits)} has {task.source} and {task.target}")
    def score_subject(row: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One subject's records and (inpainting) its records per run length of the deleted slices."""
        case = load_case(row, task, table)
        log.info("%s %s: scoring %d baseline(s) and %d model(s)", task.name, case.subject, len(task.baselines), len(task.models))
        rec: list[dict[str, Any]] = []
        lengths: list[dict[str, Any]] = []
        for method in task.baselines:
            values = _score(task, case, make_baseline(task, case, method), cfg, method, lengths)
            rec.append({"subject": case.subject, "split": case.split, "method": method, "kind": "baseline", **values})
        for out in task.outputs:
            pred = load_prediction(infer_dir, out.name, case, out.desc)
            values = _score(task, case, pred, cfg, out.name, lengths)
            rec.append({"subject": case.subject, "split": case.split, "method": out.name, "kind": "model", **values})
        return rec, lengths

    records: list[dict[str, Any]] = []
    by_length: list[dict[str, Any]] = []
    # subjects on `workers` threads (the filters and array arithmetic release the GIL); results in subject order
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for rec, lengths in pool.map(score_subject, selected):
            records += rec
            by_length += lengths

    summary = summarise_task(task, records, cfg)
    if task.kind == "inpainting":
        from pipeline.evaluation.inpainting import PROTOCOL, gap_length_figure, summarise_lengths

        summary["region"] = PROTOCOL
        summary["by_gap_length"] = summarise_lengths([*task.baselines, *task.models], task.baselines, by_length, cfg)
        if summary["by_gap_length"]:
            summary["gap_length_figure"] = gap_length_figure(
                figures_dir / "group" / f"{task.name}_gap_length.png", summary["by_gap_length"],
                [*task.baselines, *task.models], BASELINE_LABELS, cfg.figure_dpi)
    strongest = summary["strongest_baseline"]

    # Second pass for the figures: the strongest baseline is known only now.
    paths: dict[str, dict[str, str]] = {}
    for row in selected:
        case = load_case(row, task, table)
        base = _clip(make_baseline(task, case, strongest), cfg)
        preds = {o.name: _clip(load_prediction(infer_dir, o.name, case, o.desc), cfg) for o in task.outputs}
        error_max = slices.error_scale([np.abs(v - case.truth) for v in (base, *preds.values())], case.mask, cfg.data_range)
        labels = (_source_label(task), BASELINE_LABELS.get(strongest, strongest), f"ground truth ({task.target})")
        viewer.setdefault(case.subject, {}).update(slices.write_subject_slices(
            (viewer_dir or figures_dir) / case.subject / "slices" / task.name, source=case.source, baseline=base, truth=case.truth,
            outputs=preds, mask=case.mask, affine=case.affine, data_range=cfg.data_range, error_max=error_max,
            labels={"input": labels[0], "baseline": labels[1], "truth": labels[2], **{m: m for m in preds}},
            centre=figures.centre_of_mask(case.mask), writer=writer))
        for out in task.outputs:
            model = out.name
            pred = preds[model]
            if study is not None:
                study.add(subject=case.subject, output=model, task=task.name, baseline=strongest, prediction=pred,
                          baseline_image=base, mask=case.mask, affine=case.affine, data_range=cfg.data_range,
                          n_subjects=len(selected))
            values = {r["method"]: r for r in records if r["subject"] == case.subject and r["method"] in (model, strongest)}
            png = figures_dir / case.subject / f"{model}.png"
            figures.subject_panels(
                png,
                source=case.source,
                baseline=base,
                output=pred,
                truth=case.truth,
                mask=case.mask,
                affine=case.affine,
                labels=(labels[0], labels[1], model, labels[2]),
                title=_panel_title(case.subject, model, strongest, values),
                data_range=cfg.data_range,
                dpi=cfg.figure_dpi,
                error_max=error_max,
            )
            paths.setdefault(case.subject, {})[model] = png.as_posix()
    return records, summary, paths


def _score(task: Task, case: Any, pred: np.ndarray, cfg: EvaluateConfig, method: str,
           by_length: list[dict[str, Any]]) -> dict[str, float]:
    """The metrics of one method on one case: over the mask, or for inpainting over the deleted voxels inside it
    (then also per run length, appended to `by_length`)."""
    if task.kind != "inpainting":
        return masked_metrics(pred, case.truth, case.mask, cfg)
    from pipeline.evaluation.inpainting import gap_metrics, length_regions

    for length, region in length_regions(case.unknown, case.mask).items():
        by_length.append({"subject": case.subject, "method": method, "gap_length": length,
                          **gap_metrics(pred, case.truth, region, cfg)})
    return gap_metrics(pred, case.truth, case.mask & case.unknown, cfg)


def _scorable(row: dict[str, Any], source: str, target: str) -> bool:
    """Whether a subjects.tsv row has the input and the ground truth of an output."""
    return bool(row.get(target) and row.get(source))


#: the reason an output whose truth column is its input column (a self-supervised output of scans that have no
#: higher-resolution twin) is not scored
NO_GROUND_TRUTH = ("no ground truth: the scans have no higher-resolution image of their own to score against (the "
                   "outputs are in results/infer and re-slice exactly to their inputs)")


def unscorable(outputs: Sequence[Output], rows: list[dict[str, Any]], cfg: EvaluateConfig) -> list[Skipped]:
    """The outputs that no subject of the evaluated splits can be scored on (no input or no truth; or the output's
    truth is its input: no ground truth at all), as skipped."""
    in_splits = [r for r in rows if r["split"] in cfg.splits]
    where = "/".join(cfg.splits)

    def needs(o: Output) -> str:  # as the workflow says it: an SR input T1w_lr is made from T1w, named once
        return " and ".join(dict.fromkeys(c.removesuffix("_lr") for c in (o.input, o.truth)))

    return [Skipped(o, NO_GROUND_TRUTH) if o.truth == o.input else Skipped(o, f"no {where} subject has {needs(o)}")
            for o in outputs if o.truth == o.input or not any(_scorable(r, o.input, o.truth) for r in in_splits)]


#: subjects shown for an SR output with no ground truth (all of them are in results/infer)
UNSCORED_SHOWN = 12


def unscored_figures(out: Output, rows: list[dict[str, Any]], infer_dir: Path, figures_dir: Path,
                     cfg: EvaluateConfig) -> dict[str, str]:
    """Input / cubic / output panels of an SR output with no ground truth (a cohort's own thick-slice scans), for
    its first UNSCORED_SHOWN subjects: {subject: PNG path}."""
    from pipeline.evaluation import figures
    from pipeline.evaluation.cases import prediction_path, sr_geometry
    from pipeline.imaging.degrade import upsample
    from pipeline.io.nifti import load_nifti

    paths: dict[str, str] = {}
    for row in rows:
        if len(paths) == UNSCORED_SHOWN:
            break
        pred_path = prediction_path(infer_dir, out.name, row["subject"], out.desc)
        if not (row.get(out.input) and pred_path.is_file()):
            continue
        src, _ = load_nifti(row[out.input])
        pred, affine = load_nifti(pred_path)
        scale, axes = sr_geometry(src.shape, pred.shape, {}, str(pred_path))
        mask = upsample(load_nifti(row["mask"])[0], scale, "nearest", axes) > 0 if row.get("mask") else pred > 0
        png = figures_dir / row["subject"] / f"{out.name}.png"
        figures.subject_panels(
            png, source=upsample(src, scale, "nearest", axes), baseline=_clip(upsample(src, scale, "bicubic", axes), cfg),
            output=_clip(pred, cfg), truth=None, mask=mask, affine=affine,
            labels=(f"input ({out.input}, LR)", BASELINE_LABELS.get("bicubic", "bicubic"), out.name),
            title=f"{row['subject']} - {out.name} (no ground truth: not scored)", data_range=cfg.data_range,
            dpi=cfg.figure_dpi)
        paths[row["subject"]] = png.as_posix()
    return paths


def _source_label(task: Task) -> str:
    return f"input ({task.source}, LR)" if task.kind == "sr" else f"input ({task.source})"


def _panel_title(subject: str, model: str, baseline: str, values: dict[str, dict[str, Any]]) -> str:
    def fmt(method: str) -> str:
        v = values.get(method)
        if not v:
            return ""
        return f"PSNR {v['psnr']:.2f} dB, SSIM {v['ssim']:.3f}"

    return f"{subject} - {model}: {fmt(model)}   |   {BASELINE_LABELS.get(baseline, baseline)}: {fmt(baseline)}"


def summarise_task(task: Task, records: list[dict[str, Any]], cfg: EvaluateConfig) -> dict[str, Any]:
    """Descriptive statistics per method and paired comparisons of each model with each baseline."""
    subjects = sorted({r["subject"] for r in records})

    def series(method: str, metric: str) -> list[float]:
        by_subject = {r["subject"]: r[metric] for r in records if r["method"] == method}
        return [float(by_subject[s]) for s in subjects]

    methods: dict[str, Any] = {}
    for method in [*task.baselines, *task.models]:
        methods[method] = {
            "kind": "baseline" if method in task.baselines else "model",
            "label": BASELINE_LABELS.get(method, method),
            "metrics": {m: describe(series(method, m), cfg) for m in METRICS},
        }
    psnr_means = {b: methods[b]["metrics"]["psnr"]["mean"] for b in task.baselines}
    strongest = max(task.baselines, key=lambda b: -math.inf if psnr_means[b] is None else psnr_means[b])
    comparisons: dict[str, Any] = {}
    for model in task.models:
        comparisons[model] = {
            baseline: {m: compare(series(model, m), series(baseline, m), m, cfg) for m in METRICS}
            for baseline in task.baselines
        }
    return {
        "description": task.description,
        "target": task.target,
        "input": task.source,
        "degradation": task.degradation,
        "models": list(task.models),
        "baselines": list(task.baselines),
        "strongest_baseline": strongest,
        "subjects": subjects,
        "n_subjects": len(subjects),
        "methods": methods,
        "comparisons": comparisons,
    }


def write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    """Per-subject metrics, one row per subject and method (atomically)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["subject", "split", "method", "kind", *METRICS], lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({**r, **{m: _fmt(r[m]) for m in METRICS}})
    write_text(path, buf.getvalue())


def _fmt(x: float) -> str:
    return repr(float(x)) if math.isfinite(x) else str(x)


def training_figures(outputs: Sequence[Output], histories: Path, figures_dir: Path, cfg: EvaluateConfig) -> dict[str, str]:
    """One training-curve figure per model family of `outputs`, from `<histories>/<family>/history.csv`.

    A family's history holds the training of all its outputs (SRGAN's: the SRResNet pretraining, then the
    adversarial phase); returns {family: figure path}.
    """
    from pipeline.evaluation import figures

    paths: dict[str, str] = {}
    for family in dict.fromkeys(o.family for o in outputs):
        names = ", ".join(o.name for o in outputs if o.family == family)
        history = histories / family / "history.csv"
        if history.is_file() and len(history.read_text().splitlines()) < 2:
            log.info("%s: no training rows (a self-supervised family trains on each scan); no curve", history)
        elif history.is_file():
            out = figures_dir / "training" / f"{family}.png"
            figures.training_curves(history, out, title=family, dpi=cfg.figure_dpi)
            paths[family] = out.as_posix()
        else:
            log.warning("%s: no training history; no training curve for %s (%s)", history, family, names)
    return paths


def evaluate(
    subjects_tsv: Path,
    outputs: Sequence[Output],
    cfg: EvaluateConfig,
    *,
    skipped: Sequence[Skipped] = (),
    degradations: dict[str, Any] | None = None,
    infer_dir: Path = Path("results/infer"),
    histories: Path = Path("results/models"),
    metrics_dir: Path = Path("results/metrics"),
    figures_dir: Path = Path("results/figures"),
    viewer_dir: Path = Path("results/viewer"),
    workers: int = 1,
) -> dict[str, Any]:
    """Evaluate `outputs` on the subjects of `subjects_tsv`; writes `<metrics_dir>/<output>.csv` (header only
    for the `skipped` outputs and those no subject can be scored on), `<metrics_dir>/summary.json` and the
    figures, and returns the summary. `workers` threads score subjects and encode the slice viewer's PNGs."""
    from pipeline.evaluation import figures, slices

    check_outputs(outputs, skipped)
    rows = read_subjects(subjects_tsv)
    columns = list(rows[0]) if rows else []
    if rows and "mask" not in columns:
        raise ValueError(f"{subjects_tsv}: missing column(s) ['mask']")
    unscored = unscorable(outputs, rows, cfg)
    outputs = [o for o in outputs if o not in {s.output for s in unscored}]
    skipped = [*unscored, *skipped]
    tasks = build_tasks(outputs, degradations or {}, cfg, columns, subjects_tsv, skipped)

    summary: dict[str, Any] = {
        "protocol": protocol(cfg),
        "config": to_dict(cfg),
        "tasks": {},
        "models": {},
        "figures": {"subjects": {}, "group": {}, "training": {}},
        "outputs": [dataclasses.asdict(o) for o in outputs],
        "skipped": [],
    }
    figures_dir.mkdir(parents=True, exist_ok=True)  # a declared output, even when nothing is evaluated
    viewer: dict[str, dict[str, Any]] = {}  # the slice viewer's sprite sheets: {subject: {output: entry}}
    viewer_dir.mkdir(parents=True, exist_ok=True)  # a declared output too
    study = ReaderStudy(viewer_dir / "reader", cfg.seed)
    with slices.PngWriter(workers) as writer:  # every sprite sheet is on disk before summary.json names it
        for task in tasks:
            for s in task.skipped:
                log.warning("%s (%s): not evaluated: %s", s.output.name, task.description, s.reason)
                csv_path = metrics_dir / f"{s.output.name}.csv"
                write_csv(csv_path, [])
                entry = {**dataclasses.asdict(s.output), "reason": s.reason, "task_name": task.name,
                         "description": task.description}
                if s.reason == NO_GROUND_TRUTH and task.kind == "sr":
                    entry["figures"] = unscored_figures(s.output, rows, infer_dir, figures_dir, cfg)
                summary["skipped"].append(entry)
                log.info("wrote %s (header only)", csv_path)
            if not task.outputs:
                continue
            records, task_summary, subject_figs = evaluate_task(task, rows, subjects_tsv, infer_dir, figures_dir, cfg,
                                                                viewer, study, viewer_dir, writer, workers)
            summary["tasks"][task.name] = task_summary
            scored = sorted({r["subject"] for r in records})
            for out in task.outputs:
                model = out.name
                csv_path = metrics_dir / f"{model}.csv"
                keep = set(task.baselines) | {model}
                write_csv(csv_path, [r for r in records if r["method"] in keep])
                summary["models"][model] = {"task": task.name, "csv": csv_path.as_posix()}
                notes = prediction_notes(infer_dir, model, scored, out.desc)
                if notes:  # subjects whose output the model did not make: the report says what did
                    summary["models"][model]["notes"] = notes
                    log.warning("%s: %d of %d subject(s) not made by the model as usual: %s", model, len(notes),
                                len(scored), "; ".join(f"{k}: {v}" for k, v in notes.items()))
                log.info("wrote %s", csv_path)
            for sub, figs in subject_figs.items():
                summary["figures"]["subjects"].setdefault(sub, {}).update(figs)
            summary["figures"]["group"][task.name] = figures.strip_plots(
                figures_dir / "group", task.name, records, task_summary, METRICS, METRIC_LABELS, dpi=cfg.figure_dpi
            )
            if "gap_length_figure" in task_summary:  # inpainting: PSNR per gap length, after the strip plots
                summary["figures"]["group"][task.name]["gap_length"] = task_summary["gap_length_figure"]
        summary["figures"]["training"] = training_figures(outputs, histories, figures_dir, cfg)
        if viewer:
            summary["figures"]["viewer"] = viewer
        reader = study.finish()
        if reader:
            summary["figures"]["reader"] = reader
    out = metrics_dir / "summary.json"
    write_text(out, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    log.info("wrote %s", out)
    return summary
