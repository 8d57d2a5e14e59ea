"""Shared fixtures: tiny real files on disk, written by the package's own writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture
def make_nifti(tmp_path):
    """Factory: write a small NIfTI volume and return its path."""
    from pipeline.io.nifti import save_nifti

    def _make(name: str = "img.nii.gz", shape=(24, 24, 20), spacing=(1.0, 1.0, 1.0), data=None, seed=0) -> Path:
        if data is None:
            data = np.random.default_rng(seed).random(shape, dtype=np.float32)
        affine = np.diag([*spacing, 1.0])
        return save_nifti(data, affine, tmp_path / name)

    return _make


@pytest.fixture
def make_dicom_series(tmp_path):
    """Factory: write a small DICOM series (one file per slice) and return its folder.

    `affine` is voxel -> RAS+ mm (any orthogonal orientation); further keyword arguments go to
    `pipeline.io.dicom_write.write_dicom_series` (patient, series_description, patient_position, ...).
    """
    from pipeline.io.dicom_write import write_dicom_series

    def _make(name: str = "series", shape=(24, 24, 20), affine=None, data=None, seed=0, **kwargs) -> Path:
        if data is None:
            data = np.random.default_rng(seed).integers(0, 1000, size=shape).astype(np.int16)
        folder = tmp_path / name
        kwargs.setdefault("uid_seed", f"{name}-{seed}")
        write_dicom_series(data, np.eye(4) if affine is None else affine, folder, **kwargs)
        return folder

    return _make


@pytest.fixture(scope="session")
def evaluated_cohort(tmp_path_factory):
    """A tiny synthetic cohort (results/ of every stage before evaluation) with the evaluate stage run on it.

    Returns the root folder (the working directory the stages ran in). Shared by the evaluation, report and
    browser tests; treat it as read-only.
    """
    from pipeline import cli
    from tests.unit.eval_helpers import evaluate_args, make_cohort, working_dir

    root = tmp_path_factory.mktemp("cohort")
    make_cohort(root)
    with working_dir(root):
        assert cli.main(evaluate_args()) == 0
    return root


@pytest.fixture(scope="session")
def reported_cohort(evaluated_cohort, tmp_path_factory):
    """`evaluated_cohort` plus the report stage; returns the report folder (index.html, subjects/, assets/)."""
    import json

    from pipeline import cli
    from tests.unit.eval_helpers import working_dir

    out = tmp_path_factory.mktemp("report") / "reports"
    with working_dir(evaluated_cohort):
        assert cli.main(["report", "--out", str(out), "--workflow-config", json.dumps({"seed": 42, "input_dir": ""})]) == 0
    return out
