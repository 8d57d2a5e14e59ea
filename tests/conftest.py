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
