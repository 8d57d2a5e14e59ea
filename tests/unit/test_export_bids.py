"""The BIDS derivatives export: names, required fields, sidecars, and (when it is installed) bids-validator."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.export.bids import export_bids, file_stem, workflow_items
from pipeline.io.nifti import save_nifti
from pipeline.io.tables import write_subjects
from pipeline.stages import export_bids as stage
from tests.unit.ingest_helpers import affine_for
from tests.unit.test_export_dicom import sr_model, translation_model

#: sub-<label>/anat/sub-<label>_desc-<label>_<suffix>.nii.gz|json (BIDS: labels are alphanumeric)
NAME_RE = re.compile(r"^sub-([A-Za-z0-9]+)/anat/sub-\1_desc-[A-Za-z0-9]+_(T1w|T2w|PDw|FLAIR)\.(nii\.gz|json)$")
#: npm's bids-validator: $BIDS_VALIDATOR or on PATH (`npm install bids-validator@1.15.0`, then its .bin folder)
VALIDATOR = Path(os.environ.get("BIDS_VALIDATOR") or shutil.which("bids-validator") or "/nonexistent/bids-validator")


def _nifti(path: Path, seed: int = 0) -> Path:
    return save_nifti(np.random.default_rng(seed).random((16, 16, 4)), affine_for("axial"), path)


def _cohort(tmp_path: Path):
    """Preprocess and infer folders as the workflow leaves them: 2 test subjects, one train subject."""
    prep = tmp_path / "results" / "preprocess"
    rows = []
    for subject, split in (("sub-001", "test"), ("sub-002", "test"), ("sub-003", "train")):
        paths = {m: _nifti(prep / subject / f"{m}.nii.gz") for m in ("T1w", "T2w", "T1w_lr", "mask")}
        rows.append({"subject": subject, "split": split, **{k: str(p) for k, p in paths.items()}})
    write_subjects(rows, ["T1w", "T2w"], ["T1w"], prep / "subjects.tsv")
    for name, desc in (("srgan", "sr"), ("cyclegan", "T2w")):
        for subject in ("sub-001", "sub-002"):
            _nifti(tmp_path / "results" / "infer" / name / f"{subject}_{desc}.nii.gz", seed=1)
    models = tmp_path / "results" / "models"
    sr_model(models / "srgan" / "model.pt")
    translation_model(models / "cyclegan" / "model.pt")
    return [{"name": "srgan", "family": "srgan", "model_file": "model.pt", "input": "T1w_lr", "desc": "sr",
             "infer_args": []},
            {"name": "cyclegan", "family": "cyclegan", "model_file": "model.pt", "input": "T1w", "desc": "T2w",
             "infer_args": ["--direction", "A2B"]}]


def _export(tmp_path: Path) -> Path:
    outputs = _cohort(tmp_path)
    results = tmp_path / "results"
    out = results / "derivatives" / "medgan"
    args = ["--outputs", json.dumps(outputs), "--out", str(out), "--subjects", str(results / "preprocess" /
            "subjects.tsv"), "--infer", str(results / "infer"), "--models", str(results / "models")]
    parser = __import__("argparse").ArgumentParser()
    stage.add_arguments(parser)
    assert stage.main(parser.parse_args(args)) == 0
    return out


def test_layout_names_and_required_fields(tmp_path):
    out = _export(tmp_path)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == ["README", "dataset_description.json",
                     "sub-001/anat/sub-001_desc-cyclegan_T2w.json", "sub-001/anat/sub-001_desc-cyclegan_T2w.nii.gz",
                     "sub-001/anat/sub-001_desc-srgan_T1w.json", "sub-001/anat/sub-001_desc-srgan_T1w.nii.gz",
                     "sub-002/anat/sub-002_desc-cyclegan_T2w.json", "sub-002/anat/sub-002_desc-cyclegan_T2w.nii.gz",
                     "sub-002/anat/sub-002_desc-srgan_T1w.json", "sub-002/anat/sub-002_desc-srgan_T1w.nii.gz"]
    assert all(NAME_RE.match(f) for f in files if f.startswith("sub-"))
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative" and description["BIDSVersion"].startswith("1.")
    generated = description["GeneratedBy"][0]
    assert generated["Name"] == "medgan-pipeline" and generated["Version"] == "0.1.0"
    assert re.search(r"git commit [0-9a-f]{40}|not run from a git checkout", generated["Description"])
    assert description["DatasetLinks"] == {"preprocess": "../../preprocess/"}
    sidecar = json.loads((out / "sub-001/anat/sub-001_desc-srgan_T1w.json").read_text())
    assert sidecar["Sources"] == ["bids:preprocess:sub-001/T1w_lr.nii.gz"]
    # the URI resolves through DatasetLinks to the input the output came from
    link = (out / description["DatasetLinks"]["preprocess"] / "sub-001/T1w_lr.nii.gz").resolve()
    assert link == (tmp_path / "results/preprocess/sub-001/T1w_lr.nii.gz").resolve()
    assert "not for diagnosis" in sidecar["Description"] and "Synthetic" in sidecar["Description"]
    assert sidecar["Model"]["Family"] == "srgan" and sidecar["Model"]["Kind"] == "srgan"
    assert sidecar["Model"]["Version"] == "0.1.0"
    translated = json.loads((out / "sub-002/anat/sub-002_desc-cyclegan_T2w.json").read_text())
    assert translated["Sources"] == ["bids:preprocess:sub-002/T1w.nii.gz"] and translated["Model"]["Output"] == "cyclegan"
    image = out / "sub-002/anat/sub-002_desc-srgan_T1w.nii.gz"
    assert image.read_bytes() == (tmp_path / "results/infer/srgan/sub-002_sr.nii.gz").read_bytes()


def test_rerun_replaces_its_own_export_but_not_a_foreign_folder(tmp_path):
    out = _export(tmp_path)
    (out / "sub-001" / "anat" / "stale.txt").write_text("old")
    _export(tmp_path)
    assert not (out / "sub-001" / "anat" / "stale.txt").exists()
    foreign = tmp_path / "other"
    foreign.mkdir()
    (foreign / "data.txt").write_text("theirs")
    with pytest.raises(ValueError, match="not a medgan-pipeline export"):
        export_bids([], foreign)
    assert (foreign / "data.txt").read_text() == "theirs"


def test_labels_and_missing_outputs(tmp_path):
    assert file_stem("sub-001", "sr_gan-2", "T1w") == "sub-001_desc-srgan2_T1w"
    outputs = _cohort(tmp_path)
    (tmp_path / "results/infer/srgan/sub-002_sr.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="sub-002_sr"):
        workflow_items(outputs, tmp_path / "results/preprocess/subjects.tsv", tmp_path / "results/infer",
                       tmp_path / "results/models", ["test"])


def test_an_output_without_ground_truth_is_exported_for_every_subject(tmp_path):
    """selfsr of a cohort's own thick-slice scans (truth column = input column) ran on every subject, of any
    split: all of them are exported, the others' outputs only for the test split."""
    outputs = _cohort(tmp_path)
    for subject in ("sub-001", "sub-002", "sub-003"):
        _nifti(tmp_path / "results" / "infer" / "selfsr" / f"{subject}_selfsr.nii.gz", seed=2)
    sr_model(tmp_path / "results" / "models" / "selfsr" / "model.pt")
    own = {"name": "selfsr", "family": "selfsr", "model_file": "model.pt", "input": "T2w", "truth": "T2w",
           "desc": "selfsr", "infer_args": []}
    items = workflow_items([outputs[0], own], tmp_path / "results/preprocess/subjects.tsv",
                           tmp_path / "results/infer", tmp_path / "results/models", ["test"])
    assert [(i.output, i.subject) for i in items] == [("srgan", "sub-001"), ("srgan", "sub-002"),
                                                       ("selfsr", "sub-001"), ("selfsr", "sub-002"),
                                                       ("selfsr", "sub-003")]


def _validate(folder: Path) -> list[dict]:
    proc = subprocess.run([str(VALIDATOR), str(folder), "--json", "--ignoreNiftiHeaders"], capture_output=True,
                          text=True, timeout=120)
    return json.loads(proc.stdout)["issues"]["errors"]


@pytest.mark.skipif(not (VALIDATOR.exists() and shutil.which("node")),
                    reason="npm bids-validator not installed (set BIDS_VALIDATOR or put it on PATH)")
def test_bids_validator_accepts_all_but_the_derivative_entity(tmp_path):
    """npm's bids-validator (1.15, the latest on npm) checks raw datasets only: its one complaint is the desc
    entity, which raw anat files may not have (and then 'no valid data' for the subjects). With desc taken off,
    the same files, sidecars and dataset_description.json pass with no error."""
    out = _export(tmp_path)
    errors = _validate(out)
    assert {e["key"] for e in errors} <= {"NOT_INCLUDED", "NO_VALID_DATA_FOUND_FOR_SUBJECT"}, errors
    assert all("_desc-" in f["file"]["name"] for e in errors if e["key"] == "NOT_INCLUDED" for f in e["files"])
    raw = tmp_path / "raw"
    shutil.copytree(out, raw)
    for path in raw.rglob("*_desc-cyclegan_*"):
        path.unlink()
    for path in raw.rglob("*_desc-srgan_*"):
        path.rename(path.with_name(path.name.replace("_desc-srgan", "")))
    assert _validate(raw) == []


@pytest.mark.parametrize("task, scale, source, target, label, what", [
    ("super-resolution", 4, "T1w", "T1w", "SR x4 k", "super-resolution x4 of T1w"),
    ("translation", None, "T1w", "T2w", "T1w->T2w k", "translation of T1w to T2w"),
    ("inpainting", None, "T1w", "T1w", "T1w gaps filled k", "the missing slices of a T1w filled"),
    ("motion-correction", None, "T1w", "T1w", "T1w motion-corrected k", "motion-artifact correction of T1w"),
])
def test_exports_name_the_task_the_model_did(task, scale, source, target, label, what):
    """An inpainted or motion-corrected scan (same modality in and out, no scale) is not called super-resolution
    in its DICOM SeriesDescription / DerivationDescription or its BIDS sidecar."""
    from pipeline.export.provenance import ModelInfo

    info = ModelInfo(family="f", kind="k", version="1", source=source, target=target, scale=scale, task=task)
    assert info.label == label and info.description.startswith(f"Synthetic image ({what}")
