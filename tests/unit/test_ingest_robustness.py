"""Bad and odd inputs: each becomes a manifest row with the documented status and reason, the run goes on;
nothing usable at all fails with a message saying what was looked for where."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.config import IngestConfig
from pipeline.ingest.run import ingest
from pipeline.io.tables import read_manifest
from tests.conftest import REPO
from tests.unit.ingest_helpers import affine_for, assert_all_accounted, random_volume, write_series


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _by_source(rows, fragment):
    found = [r for r in rows if fragment in r.source]
    assert len(found) == 1, (fragment, [(r.source, r.reason) for r in rows])
    return found[0]


def _good(root: Path, name="good", desc="t1_mprage", seed=0, **kw) -> list[Path]:
    return write_series(root / name, random_volume(seed=seed), affine_for("axial"), series_description=desc,
                        uid_seed=name, **kw)


def test_bad_inputs_get_documented_rows(tmp_path, caplog):
    root = tmp_path / "in"
    _good(root)
    # a series with one truncated slice (pixel data cut): the file is left out, the series skipped for the gap
    t2 = _good(root, "t2trunc", "t2_tse", seed=1)
    t2[4].write_bytes(t2[4].read_bytes()[:-300])
    # a file cut inside its header, a zero-byte file, a text file named .dcm, a README
    junk = root / "junk"
    junk.mkdir()
    (junk / "header_cut.dcm").write_bytes(t2[0].read_bytes()[:200])
    (junk / "empty.dcm").write_bytes(b"")
    (junk / "notes.dcm").write_text("this is not DICOM\n" * 20)
    (root / "README.txt").write_text("scans exported 2023\n")
    # a series with a missing slice (5th of 12 removed)
    missing = _good(root, "missing", "t2_tse", seed=2)
    missing[5].unlink()
    # a series with uneven spacing (one slice moved 0.8 mm along the normal, spacing 2.5 mm)
    uneven = _good(root, "uneven", "pd_tse", seed=3)
    ds = pydicom.dcmread(uneven[6])
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.8]
    ds.save_as(uneven[6])
    # two volumes in one series (fMRI-like: every position twice): never stacked
    _good(root, "fmri/a", "t2_tse", seed=4, series_uid="1.2.826.0.1.3680043.8.498.4444")
    for path in _good(root, "fmri/b", "t2_tse", seed=5, series_uid="1.2.826.0.1.3680043.8.498.4444"):
        ds = pydicom.dcmread(path)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(path)
    # a localizer (ImageType) and an MR series no pattern recognises
    _good(root, "loc", "t1_whatever", seed=6, extra={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]})
    _good(root, "dwi", "ep2d_diff_b1000", seed=7)
    # a NIfTI with NaNs
    data = np.random.default_rng(0).random((16, 16, 10)).astype(np.float32)
    data[3, 4, 5] = np.nan
    data[0, 0, 0] = np.inf
    (root / "nifti").mkdir()
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), root / "nifti" / "p7_T2w.nii.gz")
    # a truncated .nii.gz
    nib.save(nib.Nifti1Image(data, np.eye(4)), root / "nifti" / "p8_t1.nii.gz")
    cut = root / "nifti" / "p8_t1.nii.gz"
    cut.write_bytes(cut.read_bytes()[:100])

    result = ingest(root, tmp_path / "out")
    rows = result.rows
    assert [r.status for r in rows if r.status == "ingested"] == ["ingested"] * 2

    assert _by_source(rows, "good/").modality == "T1w"
    r = _by_source(rows, "t2trunc/ (11 files")
    assert r.status == "skipped" and r.reason.startswith("missing slice(s)") and "1 file(s) left out" in r.reason
    r = _by_source(rows, f"t2trunc/{t2[4].name}")
    assert r.status == "skipped" and r.reason.startswith("pixel data unreadable (")
    assert r.reason.endswith(f"left out of the series in manifest row {rows.index(_by_source(rows, 't2trunc/ (')) + 1}")
    assert _by_source(rows, "header_cut.dcm").reason.startswith("no image in the file")
    assert _by_source(rows, "empty.dcm").reason == "empty file (0 bytes)"
    assert "unreadable as DICOM" in _by_source(rows, "notes.dcm").reason
    assert _by_source(rows, "README.txt").reason.startswith("not an image file")
    r = _by_source(rows, "missing/")
    assert r.status == "skipped" and r.reason.startswith("missing slice(s) at position(s)") and "1 missing" in r.reason
    r = _by_source(rows, "uneven/")
    assert r.status == "skipped" and r.reason.startswith("uneven slice spacing")
    r = _by_source(rows, "fmri/")
    assert r.status == "skipped" and "holds 2 volumes" in r.reason and r.source.startswith("fmri/ (24 files from 2 folders")
    assert "localizer" in _by_source(rows, "loc/").reason
    assert "modality not recognised" in _by_source(rows, "dwi/").reason
    r = _by_source(rows, "p7_T2w.nii.gz")
    assert r.status == "ingested" and r.reason == "2 NaN/Inf voxel(s) replaced by 0"
    out = nib.load(r.output).get_fdata()
    assert np.isfinite(out).all() and out[3, 4, 5] == 0
    r = _by_source(rows, "p8_t1.nii.gz")
    assert r.status == "skipped" and r.reason.startswith("conversion failed")

    # the manifest on disk says the same; nothing printed a traceback
    on_disk = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert [(r.source, r.status, r.reason) for r in on_disk] == [(r.source, r.status, r.reason) for r in rows]
    assert "Traceback" not in caplog.text
    assert str(tmp_path) not in "".join(r.reason for r in rows)  # no paths in reasons
    assert_all_accounted(root, tmp_path / "out")


def test_nothing_usable_fails_clearly(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "notes.txt").write_text("nothing here")
    (root / "x.dcm").write_text("not dicom")
    with pytest.raises(RuntimeError, match=r"nothing usable in .*looked for DICOM series.*NIfTI.*BIDS.*why_nothing"):
        ingest(root, tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    assert {r.source for r in rows} == {"notes.txt", "x.dcm"} and {r.status for r in rows} == {"skipped"}
    assert_all_accounted(root, tmp_path / "out")
    assert (tmp_path / "out" / "why_nothing.tsv").is_file()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest(tmp_path / "nope", tmp_path / "out")


def test_cli_exit_codes(tmp_path):
    env_cwd = REPO
    _good(tmp_path / "in")
    ok = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
         "--params", '{"min_slices": 4}'],
        capture_output=True, text=True, cwd=env_cwd,
    )
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "out" / "manifest.tsv").is_file() and (tmp_path / "out" / "sub-001" / "sub-001_T1w.json").is_file()
    (tmp_path / "empty").mkdir()
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")],
        capture_output=True, text=True, cwd=env_cwd,
    )
    assert bad.returncode == 1 and "nothing usable" in bad.stderr and "Traceback" not in bad.stderr
    assert str(tmp_path / "empty") not in bad.stderr and "found no file" in bad.stderr  # no input path
    (tmp_path / "empty" / "a.txt").write_text("a")
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")],
        capture_output=True, text=True, cwd=env_cwd,
    )
    assert bad.returncode == 1 and "(not an image file (neither DICOM nor NIfTI))" in bad.stderr
    assert "why_nothing.tsv" in bad.stderr and (tmp_path / "o2" / "why_nothing.tsv").is_file()
    typo = subprocess.run(
        [sys.executable, "-m", "pipeline", "ingest", "--input", str(tmp_path / "in"), "--params", '{"min_slice": 4}'],
        capture_output=True, text=True, cwd=env_cwd,
    )
    assert typo.returncode == 1 and "min_slice" in typo.stderr


def test_rerun_replaces_stale_outputs(tmp_path):
    root = tmp_path / "in"
    _good(root, "a", "t1_mprage", seed=0)
    _good(root, "b", "t1_mprage", seed=1, patient={"PatientID": "OTHER"})
    ingest(root, tmp_path / "out")
    assert len(list((tmp_path / "out").glob("sub-*/*.nii.gz"))) == 2
    shutil.rmtree(root / "b")
    ingest(root, tmp_path / "out")
    assert len(list((tmp_path / "out").glob("sub-*/*.nii.gz"))) == 1
    assert not (tmp_path / "out" / ".staging").exists()


def test_non_image_objects_secondary_capture_and_multiframe_skipped(tmp_path):
    """A few of pydicom's own odd files (local only, never downloaded), each skipped with its reason."""
    from pydicom.data import get_testdata_files

    wanted = {"rtplan.dcm": "non-image object", "rtstruct.dcm": "non-image object", "test-SR.dcm": "non-image object",
              "JPEG2000.dcm": "secondary capture", "CT_small.dcm": "1 slice(s)", "DICOMDIR": "DICOMDIR index"}
    root = tmp_path / "in"
    root.mkdir()
    for path in get_testdata_files():
        name = Path(path).name
        if name in wanted and not (root / name).exists():
            shutil.copy(path, root / name)
    assert len(list(root.iterdir())) == len(wanted)
    with pytest.raises(RuntimeError, match="nothing usable"):
        ingest(root, tmp_path / "out")
    rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    for name, reason in wanted.items():
        assert reason in _by_source(rows, name).reason, name


def test_every_pydicom_test_file_is_accounted_for(tmp_path, caplog):
    """All DICOM (and other) files shipped inside pydicom in one folder: the run completes, each file is named
    in files.tsv (with its status, reason and manifest row) and counted in its manifest row, nothing raises."""
    from pydicom.data import get_testdata_files

    base = Path(pydicom.__file__).parent / "data"
    root = tmp_path / "in"
    n = 0
    for path in map(Path, get_testdata_files()):
        if not path.is_file() or any(p.startswith(".") for p in path.relative_to(base).parts):
            continue
        target = root / path.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        n += 1
    assert n > 80
    try:
        rows = ingest(root, tmp_path / "out", IngestConfig(min_slices=2)).rows
    except RuntimeError:  # acceptable only if nothing was usable; the manifest must exist either way
        rows = read_manifest(tmp_path / "out" / "manifest.tsv")
    for r in rows:
        assert r.status in ("ingested", "skipped") and (r.status == "ingested" or r.reason), r
    files = assert_all_accounted(root, tmp_path / "out")
    assert len(files) == n
    # each series row counts the files that went into it
    for number, r in enumerate(rows, start=1):
        members = sum(f.manifest_row == number for f in files.values())
        if r.source.endswith(")") and " files" in r.source:
            assert members == int(r.source.rsplit("(", 1)[1].split()[0]), r.source
    assert "Traceback" not in caplog.text
