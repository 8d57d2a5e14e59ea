"""What the report reads, summarised for the templates: evaluation's per-output CSVs, Snakemake benchmark files,
the subjects and manifest tables (pseudonyms only; skipped inputs' reasons redacted), training summaries of
the model families, and provenance (git commit, package versions, device, and the workflow config with the
input folder shown as INPUT_PLACEHOLDER: folder names often hold names or record numbers).

Nothing here computes a metric: the numbers come from evaluation as written.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import logging
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from pipeline.io.tables import INGESTED, SUBJECT_RE, read_manifest, read_subjects, resolve_path

log = logging.getLogger(__name__)

#: what the report shows instead of the input folder's path (folder names often hold names or record numbers)
INPUT_PLACEHOLDER = "<input folder>"
STAGE_ORDER = ("generate_demo", "ingest", "preprocess", "train", "infer", "evaluate", "report")
PACKAGES = ("medgan-pipeline", "torch", "monai", "numpy", "scipy", "scikit-image", "nibabel", "pydicom",
            "nilearn", "snakemake", "matplotlib", "jinja2")
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
    ("derived_slices", "filled slices (ingest.fill_missing_slices: derived, not measured)"),
)


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
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
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


def subject_splits(path: Path | None) -> dict[str, str]:
    """subject -> split, from results/preprocess/subjects.tsv (if given)."""
    if path is None or not path.is_file():
        return {}
    return {r["subject"]: r["split"] for r in read_subjects(path)}


def _redact(reason: str, source: str, input_dir: str = "") -> str:
    """A manifest reason without the input folder's path, the input's, or any of the input's components (they
    may hold names)."""
    text = reason
    for path in (_hidden_folder(input_dir), source):
        text = text.replace(path, "[input]") if path else text
    for part in sorted(re.split(r"[/\\]", source), key=len, reverse=True):
        if len(part) > 2:
            text = text.replace(part, "[input]")
    return re.sub(r"\S*[/\\]\S*", "[path]", text)


def ingest_summary(path: Path | None, input_dir: str = "") -> dict[str, Any]:
    """Ingestion at a glance: counts by status and modality, skipped inputs' reasons (redacted: no path of an
    input or of `input_dir`), sidecars."""
    if path is None or not path.is_file():
        return {}
    status: dict[str, int] = {}
    modality: dict[str, int] = {}
    reasons: dict[str, int] = {}
    sidecars: dict[str, dict[str, dict[str, Any]]] = {}
    for r in read_manifest(path):
        status[r.status] = status.get(r.status, 0) + 1
        if r.status == INGESTED:
            modality[r.modality] = modality.get(r.modality, 0) + 1
            if r.output and SUBJECT_RE.match(r.subject) and r.primary != "no":
                side = resolve_path(re.sub(r"\.nii(\.gz)?$", ".json", r.output), path)
                if side.is_file():
                    try:
                        meta = json.loads(side.read_text())
                    except (OSError, json.JSONDecodeError):
                        meta = {}
                    sidecars.setdefault(r.subject, {})[r.modality] = {
                        k: meta[k] for k, _ in SIDECAR_FIELDS if k in meta
                    }
        else:
            reason = _redact(r.reason, r.source, input_dir) or "(no reason given)"
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


def training_summaries(models_dir: Path | None, families: list[str]) -> dict[str, dict[str, Any]]:
    """Per model family, what training recorded in `<models>/<family>/train_summary.json` (device, steps, ...)."""
    out: dict[str, dict[str, Any]] = {}
    for family in families:
        path = (models_dir or Path("results/models")) / family / "train_summary.json"
        if not path.is_file():
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.warning("%s: unreadable training summary (%s)", path, exc)
            continue
        if isinstance(meta, dict):
            params = meta.get("parameters")
            out[family] = {
                "device": str(meta.get("device", "")),
                "precision": str(meta.get("precision", "")),
                "steps": meta.get("steps"),
                "seconds": _float(meta.get("train_seconds")),
                "threads": meta.get("threads"),
                "parameters": params if isinstance(params, dict) else {},
                "validation": _validation(meta.get("validation")),
            }
    return out


def _validation(entry: Any) -> dict[str, Any]:
    """The training-time validation check of a train_summary.json, for the report's warnings: `psnr_db`
    (name -> dB), `subjects`, `baseline` (the strongest baseline), `losing` (the exported outputs whose
    validation PSNR is below the baseline's) and, where each output has its own (translation),
    `baselines` (output -> {name, psnr_db}); empty when absent or malformed (older files)."""
    if not isinstance(entry, dict):
        return {}
    psnr = entry.get("psnr_db")
    psnr = {str(k): v for k, v in psnr.items() if _float(v) is not None} if isinstance(psnr, dict) else {}
    losing = entry.get("losing")
    subjects = entry.get("subjects")
    own = entry.get("baselines")
    own = {str(k): v for k, v in own.items() if isinstance(v, dict) and v.get("name")
           and _float(v.get("psnr_db")) is not None} if isinstance(own, dict) else {}
    return {
        "psnr_db": {k: float(v) for k, v in psnr.items()},
        "subjects": subjects if isinstance(subjects, int) and not isinstance(subjects, bool) else None,
        "baseline": str(entry.get("baseline") or ""),
        "losing": [str(x) for x in losing] if isinstance(losing, list) else [],
        "baselines": {k: {"name": str(v["name"]), "psnr_db": float(v["psnr_db"])} for k, v in own.items()},
    }


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


def read_workflow_config(source: str | None) -> dict[str, Any]:
    """The resolved workflow config (inline JSON or a YAML file); empty when not given."""
    if not source:
        return {}
    import yaml

    text = source.strip()
    data = json.loads(text) if text.startswith("{") else yaml.safe_load(Path(source).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"--workflow-config: expected a mapping, got {type(data).__name__}")
    return data


def _hidden_folder(input_dir: str) -> str:
    """The input folder's path as it is searched for in text ("" for the demo's empty one, or "." and the like,
    which name nobody and would match everywhere)."""
    folder = input_dir.rstrip("/\\")
    return folder if len(folder) > 2 else ""


def hide_input_dir(value: Any, input_dir: str) -> Any:
    """`value` (a config, or any part of it) with the input folder's path replaced by INPUT_PLACEHOLDER in every
    string. Empty `input_dir` (the demo): unchanged."""
    folder = _hidden_folder(input_dir)
    if not folder:
        return value
    if isinstance(value, dict):
        return {k: hide_input_dir(v, input_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_input_dir(v, input_dir) for v in value]
    if isinstance(value, str):
        return value.replace(folder, INPUT_PLACEHOLDER)
    return value


def workflow_config_text(config: dict[str, Any]) -> str:
    """The workflow config as YAML for the report, `input_dir` (and any path inside it) shown as a placeholder."""
    if not config:
        return ""
    import yaml

    shown = {**hide_input_dir(config, str(config.get("input_dir") or ""))}  # a copy: the caller's stays as it is
    if config.get("input_dir"):
        shown["input_dir"] = INPUT_PLACEHOLDER
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=None, width=110)


# ------------------------------------------------------------------------------------------ synthesis
#: the per-condition numbers of a synthesis.json the report shows (anything else in it is ignored)
SYNTHESIS_NUMBERS = ("classified_rate", "real_classified_rate", "fd_synthetic", "fd_real", "fd_real_min",
                     "fd_real_max", "fd_ratio", "fd_ratio_below_criterion", "position_mae", "real_position_mae",
                     "n_samples", "n_subjects", "n_halvings")
_FIGURE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.png$")


def synthesis_results(models_dir: Path | None, families: list[str]) -> dict[str, dict[str, Any]]:
    """Per family, the judgement its training job wrote to `<models>/<family>/synthesis.json` (families without
    per-subject outputs, such as dcgan): per condition the numbers of `SYNTHESIS_NUMBERS`, the criteria, the
    protocol (text) and the figures (file names beside the JSON, checked to be plain PNG names)."""
    out: dict[str, dict[str, Any]] = {}
    for family in families:
        path = (models_dir or Path("results/models")) / family / "synthesis.json"
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
            conditions = {
                str(c): {k: _float(v.get(k)) for k in SYNTHESIS_NUMBERS} | {"passes": bool(v.get("passes"))}
                for c, v in data["contrasts"].items()}
            figures = data.get("figures") or {}
            names = {"grid": figures.get("grid"), **{f"condition {c}": n
                                                      for c, n in (figures.get("per_contrast") or {}).items()}}
            bad = [n for n in names.values() if n is not None and not _FIGURE_NAME.match(str(n))]
            if bad:
                raise ValueError(f"figure names {bad} are not plain PNG file names")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{path}: not a synthesis result this report can read ({exc})") from None
        out[family] = {
            "conditions": conditions,
            "criteria": {k: _float(v) for k, v in (data.get("criteria") or {}).items()},
            "passes": bool(data.get("passes")),
            "protocol": {str(k): (v if isinstance(v, str) else json.dumps(v)) for k, v in
                         (data.get("protocol") or {}).items()},
            "figures": {k: path.parent / n for k, n in names.items() if n},
        }
    return out
