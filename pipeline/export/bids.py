"""The model outputs as a BIDS derivatives dataset (`results/derivatives/medgan/`).

    dataset_description.json   DatasetType "derivative", BIDSVersion, GeneratedBy (medgan-pipeline, version, commit)
    README
    sub-<label>/anat/sub-<label>_desc-<output>_<suffix>.nii.gz   (+ .json)

`<label>` is the pseudonym without `sub-`, `<output>` the output's name (srresnet, srgan, cyclegan; letters and
digits only), `<suffix>` its output modality (T1w for super-resolution of T1w, T2w for T1w -> T2w). The NIfTI is
the inference output byte for byte; its sidecar gives its Sources (a BIDS URI into the dataset the input came
from, named in dataset_description's DatasetLinks, e.g. `bids:preprocess:sub-001/T1w_lr.nii.gz`), the model
(family, kind, version) and a Description that says it is synthetic and not for diagnosis.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.export.provenance import NOT_FOR_DIAGNOSIS, PACKAGE, model_info
from pipeline.io.atomic import write_text
from pipeline.io.tables import read_subjects

log = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"
NAME = "medgan"
README = f"""Synthetic images made by {PACKAGE} (super-resolution, modality translation,
inpainting and restoration with GANs).
Every image here is the output of a generative model, {NOT_FOR_DIAGNOSIS}. Subjects are the pipeline's
pseudonyms; each image's JSON sidecar names its source and the model that made it.
"""


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to export: an output's inference file for a subject, its model file and its input scan."""

    output: str  #: the output's name: the desc label
    subject: str  #: the pseudonym, sub-NNN
    image: Path
    model: Path
    source: Path
    direction: str | None = None


def git_commit() -> str | None:
    """The commit of the package's checkout (None outside a git checkout)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, timeout=10,
                              capture_output=True, text=True, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def label(text: str) -> str:
    """A BIDS label: letters and digits only."""
    clean = re.sub(r"[^A-Za-z0-9]", "", text)
    if not clean:
        raise ValueError(f"{text!r} has no letter or digit for a BIDS label")
    return clean


def file_stem(subject: str, output: str, suffix: str) -> str:
    """`sub-001_desc-srgan_T1w` for subject sub-001."""
    return f"sub-{label(subject.removeprefix('sub-'))}_desc-{label(output)}_{label(suffix)}"


def _source_uri(source: Path, root: Path, links: dict[str, str]) -> str:
    """A BIDS URI of `source` in the dataset it lies in (the folder above its `sub-*` folder; recorded in
    `links`), or its path relative to `root` when it lies in no subject folder."""
    parts = source.parts
    at = max((i for i, p in enumerate(parts) if p.startswith("sub-")), default=None)
    if at is None or at == 0:
        return os.path.relpath(source, root)
    dataset = Path(*parts[:at])
    name = label(dataset.name)
    links.setdefault(name, os.path.relpath(dataset, root).replace(os.sep, "/") + "/")
    return f"bids:{name}:{Path(*parts[at:]).as_posix()}"


def dataset_description(links: Mapping[str, str]) -> dict[str, Any]:
    commit = git_commit()
    generated = {"Name": PACKAGE, "Version": __version__,
                 "Description": f"git commit {commit}" if commit else "not run from a git checkout"}
    return {"Name": "medgan-pipeline synthetic images", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
            "GeneratedBy": [generated], **({"DatasetLinks": dict(links)} if links else {})}


def _ours(folder: Path) -> bool:
    try:
        description = json.loads((folder / "dataset_description.json").read_text())
        return description["GeneratedBy"][0]["Name"] == PACKAGE
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return False


def export_bids(items: Sequence[Item], out_dir: str | Path) -> list[Path]:
    """Write `items` as the derivatives dataset `out_dir` (replacing an earlier export of ours; any other
    non-empty folder is refused). Returns the written images."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not _ours(out_dir):
        raise ValueError(f"{out_dir} holds files that are not a {PACKAGE} export; choose another --out")
    staging = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    links: dict[str, str] = {}
    images = []
    for item in items:
        info = model_info(item.model, item.direction)
        stem = file_stem(item.subject, item.output, info.target)
        target = staging / f"sub-{label(item.subject.removeprefix('sub-'))}" / "anat" / f"{stem}.nii.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.image, target)
        sidecar = {"Description": info.description_of(item.image),
                   "Sources": [_source_uri(Path(os.path.abspath(item.source)), Path(os.path.abspath(out_dir)),
                                           links)],
                   "SkullStripped": False,
                   "Model": {**info.as_dict(), "Output": item.output}}
        write_text(target.with_name(f"{stem}.json"), json.dumps(sidecar, indent=2) + "\n")
        images.append(out_dir / target.relative_to(staging))
    write_text(staging / "dataset_description.json", json.dumps(dataset_description(links), indent=2) + "\n")
    write_text(staging / "README", README)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out_dir)
    log.info("BIDS derivatives: %d image(s) of %d subject(s)", len(images), len({i.subject for i in items}))
    return images


def workflow_items(outputs: Sequence[Mapping[str, Any]], subjects: str | Path, infer_dir: str | Path,
                   models_dir: str | Path, splits: Sequence[str]) -> list[Item]:
    """The workflow's inference outputs (`pipeline.models.contract.Output` dicts) for every subject of `splits`
    that has the output's input and a mask (those the infer rule ran on); of every split for an output with no
    ground truth (its truth column is its input's: the cohort's own scans, all super-resolved)."""
    every = read_subjects(subjects)
    items = []
    for out in outputs:
        args = list(out.get("infer_args") or ())
        direction = args[args.index("--direction") + 1] if "--direction" in args else None
        rows = every if out.get("truth") == out["input"] else [r for r in every if r["split"] in splits]
        for row in rows:
            if not (row.get(out["input"]) and row.get("mask")):
                continue
            image = Path(infer_dir) / out["name"] / f"{row['subject']}_{out['desc']}.nii.gz"
            if not image.is_file():
                raise FileNotFoundError(f"{image}: no inference output (run the infer stage first)")
            items.append(Item(out["name"], row["subject"], image, Path(models_dir) / out["family"] /
                              out["model_file"], Path(row[out["input"]]), direction))
    return items
