"""Assemble `reports/index.html` and `reports/subjects/<subject>.html` from what evaluation wrote (stage 7).

It computes nothing: every number comes from `results/metrics/summary.json` and the per-output CSVs, every
figure from `results/figures/` (copied into `reports/assets/` so the folder is self-contained; the strip plots
are inlined as SVG so each point links to its subject page). The outputs shown, their tasks and model
families come from the summary (which carries evaluation's `outputs` list), so a new family needs no change
here. Outputs evaluation did not score (summary.json's `skipped`) are shown where their task would be, as
"not evaluated: <reason>"; with nothing evaluated at all the index still renders, saying so. Each subject page
has a slice viewer per output, and `reports/reader.html` is the blinded reader study (`pipeline.report.viewer`):
their one inline script each is allowed by its hash, the index runs none. The pages load no
script, style, font or image from anywhere else (a Content-Security-Policy forbids it), and everything that
came from data is HTML-escaped by Jinja2's autoescaping. Only pseudonyms (`sub-NNN`) are shown; input paths
never are (the workflow config shows `input_dir` as a placeholder). What is read from disk is in
`pipeline.report.inputs`.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import shutil
from pathlib import Path

from pipeline.config import ReportConfig
from pipeline.io.atomic import atomic_path, write_text
from pipeline.io.tables import SUBJECT_RE
from pipeline.report import viewer as scripted
from pipeline.report.inputs import (
    SIDECAR_FIELDS,
    device_info,
    git_commit,
    ingest_summary,
    read_benchmarks,
    read_metrics,
    read_workflow_config,
    subject_splits,
    synthesis_results,
    training_summaries,
    versions,
    workflow_config_text,
)

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("protocol", "tasks", "models", "figures", "outputs")
METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE", "nrmse": "NRMSE"}
METRIC_UNITS = {"psnr": " dB", "ssim": "", "mae": "", "nrmse": ""}
VERDICT_WORDS = {
    "better": "beats",
    "worse": "is worse than",
    "inconclusive": "compared with",
    "n/a": "compared with",
}


# ------------------------------------------------------------------------------------------ formatting
def fmt_metric(value: float | None, metric: str, decimals: int = 3, signed: bool = False) -> str:
    """A metric value for display (PSNR with 2 decimals, the others with `decimals`)."""
    if value is None or value == "":
        return "–"
    value = float(value)
    if value != value:  # NaN
        return "–"
    if value in (float("inf"), float("-inf")):
        return "∞" if value > 0 else "−∞"
    places = 2 if metric == "psnr" else decimals
    text = f"{value:+.{places}f}" if signed else f"{value:.{places}f}"
    return text.replace("-", "−")


def fmt_p(p: float | None) -> str:
    if p is None:
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "–"
    s = float(s)
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


# ------------------------------------------------------------------------------------------ assembly
def _inline_svg(path: Path) -> str:
    """A matplotlib SVG ready to inline in HTML: no XML prolog, no script, scalable."""
    text = path.read_text()
    if re.search(r"<\s*script|\son\w+\s*=|javascript:", text, re.IGNORECASE):
        raise ValueError(f"{path}: refusing to inline an SVG with scripts or event handlers")
    text = re.sub(r"^<\?xml[^>]*>\s*", "", text)
    text = re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    return text.replace("<svg ", '<svg class="plot" role="img" ', 1)


def _copy(src: str | Path, assets: Path, rel: str) -> str:
    """Copy a figure into reports/assets/<rel>; return its path relative to reports/."""
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: figure listed in summary.json not found")
    dest = assets / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return (Path("assets") / rel).as_posix()


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("pipeline.report", "templates"),
        autoescape=True,  # everything from data is escaped, whatever the file extension
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["metric"] = fmt_metric
    env.filters["pvalue"] = fmt_p
    env.filters["seconds"] = fmt_seconds
    env.filters["upfirst"] = lambda text: str(text)[:1].upper() + str(text)[1:]
    return env


def _read_summary(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: evaluation summary not found (run the evaluate stage first)")
    summary = json.loads(path.read_text())
    for key in SUMMARY_KEYS:
        if key not in summary:
            raise ValueError(f"{path}: not an evaluation summary of this version (no {key!r}); rerun the evaluate stage")
    return summary


def _families(summary: dict) -> dict[str, list[str]]:
    """Model family -> the names of its evaluated outputs, in the order of the summary's `outputs`."""
    families: dict[str, list[str]] = {}
    for out in summary["outputs"]:
        families.setdefault(out["family"], []).append(out["name"])
    return families


def _not_evaluated(summary: dict) -> tuple[dict[str, list[dict]], dict[str, dict]]:
    """The skipped outputs of evaluated tasks ({task: [entry]}), and the tasks with nothing evaluated
    ({task: {"description", "skipped": [entry]}}), in the summary's order."""
    within: dict[str, list[dict]] = {}
    alone: dict[str, dict] = {}
    for entry in summary.get("skipped", []):  # summaries written before skipping existed have none
        task = entry["task_name"]
        if task in summary["tasks"]:
            within.setdefault(task, []).append(entry)
        else:
            alone.setdefault(task, {"description": entry["description"], "skipped": []})["skipped"].append(entry)
    return within, alone


def _validation_warnings(trained: dict[str, dict]) -> dict[str, dict]:
    """Output -> what the report warns about it: the outputs training's validation check listed as `losing`
    (validation PSNR below the strongest baseline's: the family's one `baseline`, or each output's own in
    `baselines`), with both PSNRs and the number of validation subjects. Training summaries without `losing`
    (older files) give no warning."""
    warnings: dict[str, dict] = {}
    for family, meta in trained.items():
        val = meta.get("validation") or {}
        psnr = val.get("psnr_db", {})
        for name in val.get("losing", []):
            own = val.get("baselines", {}).get(name, {})
            warnings[name] = {
                "family": family,
                "psnr": psnr.get(name),
                "baseline": own.get("name") or val.get("baseline") or "the strongest baseline",
                "baseline_psnr": own["psnr_db"] if "name" in own else psnr.get(val.get("baseline", "")),
                "subjects": val.get("subjects"),
            }
    return warnings


def build_report(
    summary_path: Path,
    out_dir: Path,
    cfg: ReportConfig,
    *,
    benchmarks: Path | None = None,
    subjects_tsv: Path | None = None,
    manifest: Path | None = None,
    models_dir: Path | None = None,
    workflow_config: str | None = None,
) -> list[Path]:
    """Write the report; returns the pages written (the reader study's page when evaluation sampled one, the
    subject pages, index last)."""
    from markupsafe import Markup

    summary = _read_summary(summary_path)
    per_subject = read_metrics(summary)
    for sub in per_subject:
        if not SUBJECT_RE.match(sub):
            raise ValueError(f"subject label {sub!r} is not a pseudonym; refusing to build the report")
    splits = subject_splits(subjects_tsv)
    subjects = sorted(per_subject)

    # Fresh output folders (they hold nothing but what this stage writes).
    assets = out_dir / "assets"
    for folder in (assets, out_dir / "subjects"):
        if folder.exists():
            shutil.rmtree(folder)
    (out_dir / "subjects").mkdir(parents=True, exist_ok=True)

    figs = summary["figures"]
    subject_figs = {
        sub: {m: _copy(p, assets, f"subjects/{sub}/{m}.png") for m, p in figs.get("subjects", {}).get(sub, {}).items()}
        for sub in subjects
    }
    strip = {
        task: {metric: {"svg": Markup(_inline_svg(Path(p["svg"]))), "png": _copy(p["png"], assets, f"group/{task}_{metric}.png")}
               for metric, p in by_metric.items()}
        for task, by_metric in figs.get("group", {}).items()
    }
    families = _families(summary)
    # One training curve per family (its history holds the training of every output it exports).
    training = {f: _copy(p, assets, f"training/{f}.png") for f, p in figs.get("training", {}).items()}
    data_files = []
    for model, info in summary["models"].items():
        data_files.append((f"{model}.csv", _copy(info["csv"], assets, f"data/{model}.csv")))
    data_files.append(("summary.json", _copy(summary_path, assets, "data/summary.json")))

    models = list(summary["models"])
    split_counts: dict[str, int] = {}
    for split in splits.values():
        split_counts[split] = split_counts.get(split, 0) + 1
    bench = read_benchmarks(benchmarks)
    skipped_in, skipped_tasks = _not_evaluated(summary)
    for entry in summary.get("skipped", []):  # an output with no ground truth: its input / cubic / output panels
        entry["figure_links"] = {sub: _copy(p, assets, f"unscored/{entry['name']}/{sub}.png")
                                 for sub, p in (entry.get("figures") or {}).items()}
    wf_config = read_workflow_config(workflow_config)
    # families judged by their own training job (no per-subject output): those of the run's `models`, or (no
    # workflow config) every family folder with a synthesis.json
    run_families = [str(f) for f in wf_config.get("models") or []] or sorted(
        p.parent.name for p in (models_dir or Path("results/models")).glob("*/synthesis.json"))
    synthesis = synthesis_results(models_dir, [f for f in run_families if f not in families])
    for family, result in synthesis.items():
        result["figures"] = {label: _copy(src, assets, f"synthesis/{family}/{Path(src).name}")
                             for label, src in result["figures"].items()}
    trained = training_summaries(models_dir, list(families) + list(synthesis))
    common = {
        "title": cfg.title,
        "decimals": cfg.decimals,
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "git": git_commit(),
        "metric_labels": {**METRIC_LABELS, "gap_length": "PSNR inside the filled slices by gap length (mean, CI)"},
        "metric_units": METRIC_UNITS,
        "verdict_words": VERDICT_WORDS,
    }
    ctx = {
        **common,
        "summary": summary,
        "tasks": summary["tasks"],
        "protocol": summary["protocol"],
        "models": models,
        "skipped": summary.get("skipped", []),
        "skipped_in": skipped_in,
        "skipped_tasks": skipped_tasks,
        "subjects": subjects,
        "splits": splits,
        "split_counts": split_counts,
        "per_subject": per_subject,
        "strip": strip,
        "training": training,
        "families": families,
        "data_files": data_files,
        "benchmarks": bench,
        "total_seconds": sum(b["seconds"] for b in bench) if bench else None,
        "ingest": ingest_summary(manifest, str(wf_config.get("input_dir") or "")),
        "device": device_info(),
        "trained": trained,
        "synthesis": synthesis,
        "losing": _validation_warnings(trained),
        "versions": versions(),
        "workflow_config": workflow_config_text(wf_config),
        "evaluate_config": json.dumps(summary.get("config", {}), indent=2),
    }
    env = _environment()
    written = []
    ingest = ctx["ingest"]
    reader = scripted.reader_context(summary, assets)
    (out_dir / "reader.html").unlink(missing_ok=True)
    if reader is not None:
        path = out_dir / "reader.html"
        write_text(path, env.get_template("reader.html").render(**common, **reader, root="",
                                                               script=scripted.script("reader.js")))
        written.append(path)
    ctx["reader"] = reader is not None
    for i, sub in enumerate(subjects):
        sidecars = ingest.get("sidecars", {}).get(sub, {})
        viewers = scripted.viewers(summary, sub, assets, root="../")
        page = env.get_template("subject.html").render(
            **common,
            root="../",
            subject=sub,
            split=splits.get(sub) or next(
                (r.get("split", "") for t in per_subject[sub].values() for r in t.values()), ""),
            prev=subjects[i - 1] if i > 0 else None,
            next=subjects[i + 1] if i + 1 < len(subjects) else None,
            tasks=summary["tasks"],
            values=per_subject[sub],
            figures={m: f"../{p}" for m, p in subject_figs.get(sub, {}).items()},
            model_task={m: info["task"] for m, info in summary["models"].items()},
            model_notes={m: info.get("notes", {}) for m, info in summary["models"].items()},
            sidecars=sidecars,
            sidecar_fields=[(k, label) for k, label in SIDECAR_FIELDS if any(k in m for m in sidecars.values())],
            protocol=summary["protocol"],
            viewers=viewers,
            script=scripted.script("viewer.js") if viewers else None,
        )
        path = out_dir / "subjects" / f"{sub}.html"
        write_text(path, page)
        written.append(path)
    index = out_dir / "index.html"
    write_text(index, env.get_template("index.html").render(**ctx, root=""))
    written.append(index)
    log.info("wrote %s and %d subject page(s)", index, len(subjects))
    return written
