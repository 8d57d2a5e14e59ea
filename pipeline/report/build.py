"""Stage 7: assemble `reports/index.html` and `reports/subjects/<subject>.html` from what evaluation wrote.

It computes nothing: every number comes from `results/metrics/summary.json` and the per-model CSVs, every
figure from `results/figures/` (copied into `reports/assets/` so the folder is self-contained; the strip plots
are inlined as SVG so each point links to its subject page). The pages load no script, style, font or image
from anywhere else (a Content-Security-Policy forbids it), and everything that came from data is
HTML-escaped by Jinja2's autoescaping. Only pseudonyms (`sub-NNN`) are shown; input paths never are.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from pipeline.config import ReportConfig, load_params
from pipeline.io.atomic import atomic_path, write_text

log = logging.getLogger(__name__)

SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STAGE_ORDER = ("generate_demo", "ingest", "preprocess", "train", "infer", "evaluate", "report")
PACKAGES = ("medgan-pipeline", "torch", "monai", "numpy", "scipy", "scikit-image", "nibabel", "pydicom",
            "nilearn", "snakemake", "matplotlib", "jinja2")
METRIC_LABELS = {"psnr": "PSNR", "ssim": "SSIM", "mae": "MAE", "nrmse": "NRMSE"}
METRIC_UNITS = {"psnr": " dB", "ssim": "", "mae": "", "nrmse": ""}
SIDECAR_FIELDS = (
    ("series_description", "series description"),
    ("source_format", "format"),
    ("dicom_modality", "DICOM modality"),
    ("shape", "matrix"),
    ("spacing_mm", "voxel (mm)"),
    ("echo_time_ms", "TE (ms)"),
    ("repetition_time_ms", "TR (ms)"),
    ("inversion_time_ms", "TI (ms)"),
    ("flip_angle_deg", "flip (deg)"),
    ("magnetic_field_strength_t", "field (T)"),
    ("slice_thickness_mm", "slice (mm)"),
)
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


# ------------------------------------------------------------------------------------------ inputs
def _read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def read_metrics(summary: dict[str, Any]) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """subject -> task -> method -> row of the per-model CSVs (values as written)."""
    out: dict[str, dict[str, dict[str, dict[str, str]]]] = {}
    for model, info in summary.get("models", {}).items():
        path = Path(info["csv"])
        if not path.is_file():
            raise FileNotFoundError(f"{path}: metrics of model {model} listed in summary.json not found")
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                out.setdefault(row["subject"], {}).setdefault(info["task"], {})[row["method"]] = row
    return out


def read_benchmarks(folder: Path | None) -> list[dict[str, Any]]:
    """Snakemake benchmark files (`<rule>[/<wildcards>].tsv`) grouped by rule: jobs, wall time, peak memory."""
    if folder is None or not folder.is_dir():
        return []
    rules: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.rglob("*.tsv")):
        rel = path.relative_to(folder)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        try:
            rows = _read_tsv(path)
        except (OSError, csv.Error, UnicodeDecodeError) as exc:
            log.warning("%s: unreadable benchmark file (%s)", path, exc)
            continue
        entry = rules.setdefault(rule, {"rule": rule, "jobs": 0, "seconds": 0.0, "max_rss_mb": None})
        for row in rows[:1]:  # repeated benchmarks: the first run
            entry["jobs"] += 1
            entry["seconds"] += _float(row.get("s")) or 0.0
            rss = _float(row.get("max_rss"))
            if rss is not None:
                entry["max_rss_mb"] = max(entry["max_rss_mb"] or 0.0, rss)

    def order(rule: str) -> tuple[int, str]:
        for i, prefix in enumerate(STAGE_ORDER):
            if prefix in rule:
                return i, rule
        return len(STAGE_ORDER), rule

    return [rules[r] for r in sorted(rules, key=order)]


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_subject_table(path: Path | None) -> dict[str, str]:
    """subject -> split, from results/preprocess/subjects.tsv (if given)."""
    if path is None or not path.is_file():
        return {}
    return {r["subject"]: r.get("split", "") for r in _read_tsv(path) if r.get("subject")}


def _redact(reason: str, source: str) -> str:
    """A manifest reason without the input's path or any of its components (they may hold names)."""
    text = reason.replace(source, "[input]") if source else reason
    for part in sorted(re.split(r"[/\\]", source), key=len, reverse=True):
        if len(part) > 2:
            text = text.replace(part, "[input]")
    return re.sub(r"\S*[/\\]\S*", "[path]", text)


def read_manifest(path: Path | None) -> dict[str, Any]:
    """Ingestion at a glance: counts by status and modality, skipped inputs' reasons (redacted), sidecars."""
    if path is None or not path.is_file():
        return {}
    rows = _read_tsv(path)
    status: dict[str, int] = {}
    modality: dict[str, int] = {}
    reasons: dict[str, int] = {}
    sidecars: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        status[r.get("status", "")] = status.get(r.get("status", ""), 0) + 1
        if r.get("status") == "ingested":
            modality[r.get("modality", "")] = modality.get(r.get("modality", ""), 0) + 1
            out = r.get("output", "")
            sub = r.get("subject", "")
            if out and SUBJECT_RE.match(sub) and r.get("primary", "yes") != "no":
                side = Path(re.sub(r"\.nii(\.gz)?$", ".json", out))
                if side.is_file():
                    try:
                        meta = json.loads(side.read_text())
                    except (OSError, json.JSONDecodeError):
                        meta = {}
                    sidecars.setdefault(sub, {})[r.get("modality", "")] = {
                        k: meta[k] for k, _ in SIDECAR_FIELDS if k in meta
                    }
        else:
            reason = _redact(r.get("reason", ""), r.get("source", "")) or "(no reason given)"
            reasons[reason] = reasons.get(reason, 0) + 1
    return {
        "status": status,
        "modality": modality,
        "skipped": sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])),
        "sidecars": sidecars,
    }


def git_commit() -> dict[str, str]:
    """The commit of the working directory's repository, and whether it had uncommitted changes."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
        return {"commit": commit, "short": commit[:10], "dirty": "yes" if dirty else "no"}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (not a git checkout)", "short": "unknown", "dirty": ""}


def versions() -> list[tuple[str, str]]:
    out = [("python", platform.python_version())]
    for name in PACKAGES:
        try:
            out.append((name, importlib.metadata.version(name)))
        except importlib.metadata.PackageNotFoundError:
            out.append((name, "not installed"))
    return out


def training_summaries(models_dir: Path | None, models: list[str]) -> dict[str, dict[str, Any]]:
    """Per model, what training recorded in `<models>/<model>/train_summary.json` (device, steps, time, ...)."""
    out: dict[str, dict[str, Any]] = {}
    for model in models:
        path = (models_dir or Path("results/models")) / model / "train_summary.json"
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable training summary (%s)", path, exc)
            continue
        if isinstance(meta, dict):
            params = meta.get("parameters")
            out[model] = {
                "device": str(meta.get("device", "")),
                "precision": str(meta.get("precision", "")),
                "steps": meta.get("steps"),
                "seconds": _float(meta.get("train_seconds")),
                "threads": meta.get("threads"),
                "parameters": params if isinstance(params, dict) else {},
            }
    return out


def device_info() -> dict[str, Any]:
    """Where the report ran: CPU, and the GPU if torch (when installed) sees one."""
    cpu = platform.processor() or platform.machine()
    info: dict[str, Any] = {"host": f"{cpu}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}",
                            "gpu": "none detected"}
    if importlib.util.find_spec("torch") is not None:
        try:
            import torch

            if torch.cuda.is_available():
                info["gpu"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        except Exception as exc:  # device detection must never break the report
            log.debug("no GPU information: %s", exc)
    return info


def _workflow_config(source: str | None) -> str:
    if not source:
        return ""
    import yaml

    text = source.strip()
    data = json.loads(text) if text.startswith("{") else yaml.safe_load(Path(source).read_text())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110)


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
    """Write the report; returns the pages written (index last)."""
    from markupsafe import Markup

    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path}: evaluation summary not found (run the evaluate stage first)")
    summary = json.loads(summary_path.read_text())
    for key in ("protocol", "tasks", "models", "figures"):
        if key not in summary:
            raise ValueError(f"{summary_path}: not an evaluation summary (no {key!r})")
    per_subject = read_metrics(summary)
    for sub in per_subject:
        if not SUBJECT_RE.match(sub):
            raise ValueError(f"subject label {sub!r} is not a pseudonym; refusing to build the report")
    splits = read_subject_table(subjects_tsv)
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
    training = {m: _copy(p, assets, f"training/{m}.png") for m, p in figs.get("training", {}).items()}
    data_files = []
    for model, info in summary["models"].items():
        data_files.append((f"{model}.csv", _copy(info["csv"], assets, f"data/{model}.csv")))
    data_files.append(("summary.json", _copy(summary_path, assets, "data/summary.json")))

    models = list(summary["models"])
    split_counts: dict[str, int] = {}
    for split in splits.values():
        split_counts[split] = split_counts.get(split, 0) + 1
    bench = read_benchmarks(benchmarks)
    common = {
        "title": cfg.title,
        "decimals": cfg.decimals,
        "generated": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "git": git_commit(),
        "metric_labels": METRIC_LABELS,
        "metric_units": METRIC_UNITS,
        "verdict_words": VERDICT_WORDS,
    }
    ctx = {
        **common,
        "summary": summary,
        "tasks": summary["tasks"],
        "protocol": summary["protocol"],
        "models": models,
        "subjects": subjects,
        "splits": splits,
        "split_counts": split_counts,
        "per_subject": per_subject,
        "strip": strip,
        "training": training,
        "data_files": data_files,
        "benchmarks": bench,
        "total_seconds": sum(b["seconds"] for b in bench) if bench else None,
        "ingest": read_manifest(manifest),
        "device": device_info(),
        "trained": training_summaries(models_dir, models),
        "versions": versions(),
        "workflow_config": _workflow_config(workflow_config),
        "evaluate_config": json.dumps(summary.get("config", {}), indent=2),
    }
    env = _environment()
    written = []
    ingest = ctx["ingest"]
    for i, sub in enumerate(subjects):
        sidecars = ingest.get("sidecars", {}).get(sub, {})
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
            sidecars=sidecars,
            sidecar_fields=[(k, label) for k, label in SIDECAR_FIELDS if any(k in m for m in sidecars.values())],
            protocol=summary["protocol"],
        )
        path = out_dir / "subjects" / f"{sub}.html"
        write_text(path, page)
        written.append(path)
    index = out_dir / "index.html"
    write_text(index, env.get_template("index.html").render(**ctx, root=""))
    written.append(index)
    log.info("wrote %s and %d subject page(s)", index, len(subjects))
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", type=Path, default=Path("results/metrics/summary.json"), help="evaluation summary")
    parser.add_argument("--out", type=Path, default=Path("reports"), help="output folder (index.html, subjects/, assets/)")
    parser.add_argument("--benchmarks", type=Path, default=Path("results/benchmarks"), help="Snakemake benchmark files")
    parser.add_argument("--subjects", type=Path, default=Path("results/preprocess/subjects.tsv"), help="subjects and splits")
    parser.add_argument("--manifest", type=Path, default=Path("results/ingest/manifest.tsv"), help="ingestion manifest")
    parser.add_argument("--models", type=Path, default=Path("results/models"), help="folder of trained models")
    parser.add_argument("--workflow-config", default=None, help="the resolved workflow config (inline JSON or YAML file)")
    parser.add_argument("--params", default=None, help="the `report` config section (inline JSON or YAML file)")


def main(args: argparse.Namespace) -> int:
    cfg = load_params(args.params, ReportConfig, "report")
    build_report(
        args.summary,
        args.out,
        cfg,
        benchmarks=args.benchmarks,
        subjects_tsv=args.subjects,
        manifest=args.manifest,
        models_dir=args.models,
        workflow_config=args.workflow_config,
    )
    return 0
