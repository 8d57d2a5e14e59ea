"""A bad file never costs good data: files (and frames) left out of their series with rows of their own, series
rows naming their folder, every input file in files.tsv, the reasons kept when nothing is usable, and no input
path in the log."""

from __future__ import annotations

import logging
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from pipeline.ingest.dicom_series import series_source
from pipeline.ingest.run import ingest
from pipeline.io.tables import read_files, read_tsv
from tests.unit.ingest_helpers import (
    affine_for,
    assert_all_accounted,
    assert_same_image,
    enhanced_from_classic,
    numbered_row,
    output_image,
    random_volume,
    write_series,
)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _truth(seed=0, affine=None):
    return nib.Nifti1Image(random_volume(seed=seed).astype(np.float32), affine_for("axial") if affine is None else affine)


def _resave(src, dst, **changes):
    ds = pydicom.dcmread(src)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(dst)


def test_bad_files_and_copies_are_left_out_the_series_is_kept(tmp_path):
    """A truncated copy (first in the walk), an exact copy, a copy with a new SOPInstanceUID, a copy without a
    position: each its own row; the series is ingested from its 12 good slices, voxels and affine exact."""
    root = tmp_path / "in"
    paths = write_series(root / "s", random_volume(), affine_for("axial"), series_description="t1_mprage",
                         uid_seed="s")
    (root / "s" / "IM0000_cut.dcm").write_bytes(paths[5].read_bytes()[:-300])
    shutil.copy(paths[7], root / "s" / "IM0099_copy.dcm")
    uid = generate_uid()
    _resave(paths[2], root / "s" / "IM0098_reuid.dcm", SOPInstanceUID=uid)
    _resave(paths[3], root / "s" / "IM0097_nopos.dcm", ImagePositionPatient=None)
    ds = pydicom.dcmread(paths[8])
    arr = ds.pixel_array.copy()
    arr[0, 0] += 1
    ds.PixelData = arr.tobytes()
    ds.save_as(root / "s" / "IM0096_conflict.dcm")

    rows = ingest(root, tmp_path / "out").rows
    n, series = numbered_row(rows, "s/ (12 files, series 1)")
    assert series.status == "ingested" and "5 file(s) left out of the series" in series.reason, series
    assert_same_image(output_image(series), _truth())
    expected = {
        "IM0000_cut.dcm": "pixel data unreadable (",
        "IM0099_copy.dcm": "a second copy of a slice already in the series (same SOPInstanceUID",
        "IM0098_reuid.dcm": "a copy of a slice already in the series (same position, geometry and pixel data)",
        "IM0097_nopos.dcm": "no ImagePositionPatient: geometry unknown",
        "IM0096_conflict.dcm": "a conflicting copy of a slice already in the series",
    }
    files = assert_all_accounted(root, tmp_path / "out")
    for name, reason in expected.items():
        m, row = numbered_row(rows, f"s/{name}")
        assert row.status == "skipped" and row.reason.startswith(reason), row
        assert row.reason.endswith(f"; left out of the series in manifest row {n}") and row.subject == series.subject
        assert (files[f"s/{name}"].manifest_row, files[f"s/{name}"].status) == (m, "skipped")
    assert files["s/IM0001.dcm"].manifest_row == n and files["s/IM0001.dcm"].reason == ""


def test_a_file_left_out_can_leave_a_gap(tmp_path):
    """Without a copy to replace it, the truncated slice's absence is what the series row reports."""
    root = tmp_path / "in"
    paths = write_series(root / "s", random_volume(), affine_for("axial"), series_description="t1_mprage",
                         uid_seed="s")
    paths[4].write_bytes(paths[4].read_bytes()[:-300])
    with pytest.raises(RuntimeError, match="nothing usable"):
        ingest(root, tmp_path / "out")
    rows = read_files(tmp_path / "out" / "files.tsv")
    assert {r.status for r in rows} == {"skipped"} and len(rows) == 12
    by_file = {r.file: r for r in rows}
    assert by_file["s/IM0005.dcm"].reason.startswith("pixel data unreadable")
    assert by_file["s/IM0006.dcm"].reason.startswith("missing slice(s) at position(s)")
    assert "1 file(s) left out of the series" in by_file["s/IM0006.dcm"].reason


def test_frames_that_fail_to_decode_are_left_out(tmp_path):
    """An RLE multi-frame file whose last frame is corrupt: that frame has its row; the other 11 make the volume."""
    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import RLELossless

    volume = random_volume(seed=3)
    affine = affine_for("axial")
    paths = write_series(tmp_path / "classic", volume, affine, series_description="t1_mprage", uid_seed="c")
    target = tmp_path / "in" / "enh.dcm"
    enhanced_from_classic(paths, target)
    ds = pydicom.dcmread(target)
    ds.compress(RLELossless)
    frames = list(generate_frames(ds.PixelData, number_of_frames=12))
    frames[11] = frames[11][:20]
    ds.PixelData = encapsulate(frames)
    ds.save_as(target)

    rows = ingest(tmp_path / "in", tmp_path / "out").rows
    assert [(r.source, r.status) for r in rows] == [("enh.dcm", "ingested"), ("enh.dcm", "skipped")]
    assert rows[1].reason.startswith("frame(s) 12 of 12 left out: pixel data unreadable")
    assert rows[1].reason.endswith("left out of the series in manifest row 1")
    assert_same_image(output_image(rows[0]), nib.Nifti1Image(volume[:, :, :11].astype(np.float32), affine))
    (entry,) = read_files(tmp_path / "out" / "files.tsv")
    assert (entry.status, entry.manifest_row) == ("ingested", 1)
    assert entry.reason.startswith("frame(s) 12 of 12 left out") and entry.reason.endswith("(manifest row 2)")


def test_series_rows_name_their_folder():
    assert series_source([f"a/b/IM{k}" for k in range(36)], 2) == "a/b/ (36 files, series 2)"
    assert series_source([f"IM{k}" for k in range(20)], 1) == "./ (20 files, series 1)"
    spread = [f"p/{'x' if k < 6 else 'y/z'}/IM{k}" for k in range(12)]
    assert series_source(spread, 3) == "p/ (12 files from 2 folders, series 3)"
    assert series_source([f"{'m' if k < 6 else 'n'}/IM{k}" for k in range(12)]) == "./ (12 files from 2 folders)"
    assert series_source(["a/1.dcm", "b/2.dcm"], 4) == "a/1.dcm; b/2.dcm"


def test_a_series_spanning_folders_is_one_row(tmp_path):
    root = tmp_path / "in"
    write_series(root / "p", random_volume(), affine_for("axial"), series_description="t1_mprage", uid_seed="p",
                 file_name=lambda k: f"{'x' if k < 6 else 'y'}/IM{k:04d}")
    rows = ingest(root, tmp_path / "out").rows
    assert [(r.source, r.status) for r in rows] == [("p/ (12 files from 2 folders, series 1)", "ingested")]
    assert_same_image(output_image(rows[0]), _truth())
    assert_all_accounted(root, tmp_path / "out")


def test_nothing_usable_keeps_the_reasons_and_says_the_commonest(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    for k in range(3):
        (root / f"notes{k}.txt").write_text("nothing here")
    (root / "x.dcm").write_text("not dicom")
    paths = write_series(root / "s", random_volume(), affine_for("axial"), series_description="t1_mprage",
                         uid_seed="s")
    paths[4].write_bytes(paths[4].read_bytes()[:-300])
    out = tmp_path / "out"
    with pytest.raises(RuntimeError) as err:
        ingest(root, out)
    message = str(err.value)
    assert "found 16 file(s): 12 DICOM, 0 NIfTI, all skipped (11 files: missing slice(s) at position(s)" in message
    assert "3 files: not an image file (neither DICOM nor NIfTI)" in message and "1 file: " in message
    assert message.endswith("each file and why: out/why_nothing.tsv") and str(root) not in message
    why = read_tsv(out / "why_nothing.tsv", ("file", "reason", "input"))
    assert len(why) == 16 and all(r["reason"] for r in why)
    cut = next(r for r in why if r["file"] == "s/IM0005.dcm")
    assert cut["reason"].startswith("pixel data unreadable") and cut["input"] == "s/ (11 files, series 1)"
    # a later run that finds something removes it
    for path in paths:
        path.unlink()
    write_series(root / "s", random_volume(), affine_for("axial"), series_description="t1_mprage", uid_seed="s")
    ingest(root, out)
    assert not (out / "why_nothing.tsv").exists()


def test_no_input_path_in_the_log(tmp_path, caplog):
    """Folder and file names (here a name and a record number) never reach the log, whatever happens."""
    root = tmp_path / "Doe_Jane MRN-4711"
    series = root / "Smith_John" / "MRN-0815 brain"
    paths = write_series(series, random_volume(), affine_for("axial"), series_description="t1_mprage",
                         uid_seed="s", file_name=lambda k: f"Smith_slice{k:02d}.dcm")
    (series / "Smith_cut.dcm").write_bytes(paths[3].read_bytes()[:-300])
    (root / "Smith_John" / "Smith_notes.dcm").write_text("not dicom")
    (root / "Smith_John" / "Smith_t1.nii.gz").write_bytes(b"\x1f\x8b broken")
    (root / "Smith_empty").write_bytes(b"")
    with caplog.at_level(logging.DEBUG):
        result = ingest(root, tmp_path / "out")
        with pytest.raises(RuntimeError) as err:
            ingest(_only_bad(root, tmp_path), tmp_path / "out2")
    assert result.n_ingested == 1 and len(result.rows) == 5
    text = caplog.text + str(err.value)
    assert "manifest row 1: sub-001 T1w ingested" in caplog.text and "manifest row" in caplog.text
    for secret in ("Doe", "Jane", "MRN", "Smith", "John", "brain", str(tmp_path)):
        assert secret not in text, (secret, [line for line in text.splitlines() if secret in line])
    sources = {r.source for r in result.rows}  # the manifest keeps the user's own index
    assert "Smith_John/MRN-0815 brain/Smith_cut.dcm" in sources


def _only_bad(root, tmp_path):
    """A copy of `root` without its good series: nothing usable (the error message is logged by the CLI)."""
    bad = tmp_path / "Doe_Jane MRN-4711 bad"
    shutil.copytree(root, bad)
    for path in (bad / "Smith_John" / "MRN-0815 brain").glob("Smith_slice*"):
        path.unlink()
    return bad
