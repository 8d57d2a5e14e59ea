"""Real data (../shared/corpus, skipped where absent): bad files beside and inside a real series never cost it
a slice, and a seeded fuzz of mutated real slices leaves every file accounted for."""

from __future__ import annotations

import io
import json
import logging
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.ingest.run import ingest
from tests.conftest import CORPUS
from tests.unit.ingest_helpers import assert_all_accounted, assert_same_image, numbered_row, output_image

DECUBITUS = CORPUS / "dcm_qa_decubitus"
HFS = DECUBITUS / "In" / "HFS" / "3_t1_fl2d_sag"  # 35 sagittal slices, head first supine
HFS_REF = DECUBITUS / "Ref" / "t1_fl2d_sag_20220407150138.nii.gz"  # its dcm2niix reference (SOURCE.txt)
OTHER_POSITIONS = ("HFP", "HFDL", "HFDR")

pytestmark = [
    pytest.mark.corpus,
    pytest.mark.skipif(not HFS.is_dir() or not HFS_REF.is_file(), reason="../shared/corpus/dcm_qa_decubitus not present"),
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_decubitus_series_with_a_truncated_copy_an_empty_and_a_text_file(tmp_path):
    """The truncated copy sorts first in the series' folder: still all 35 good slices are used, the volume equals
    dcm2niix's, and each bad file has its own row and files.tsv entry."""
    root = tmp_path / "in"
    series = root / "HFS" / "3_t1_fl2d_sag"
    shutil.copytree(HFS, series)
    slices = sorted(series.iterdir())
    data = slices[16].read_bytes()
    (series / "0000_copy.dcm").write_bytes(data[: len(data) // 2])
    (series / "empty.dcm").write_bytes(b"")
    shutil.copy(HFS.parent / "HFS.txt", root / "HFS" / "HFS.txt")  # the upstream dcmdump of a slice
    (root / "HFS" / "notes").write_text("exported from PACS, see ticket\n")

    out = tmp_path / "out"
    rows = ingest(root, out).rows
    n, ok = numbered_row(rows, "HFS/3_t1_fl2d_sag/ (35 files, series 3)")
    assert ok.status == "ingested" and "1 file(s) left out of the series" in ok.reason
    assert_same_image(output_image(ok), nib.load(str(HFS_REF)))
    sidecar = json.loads(Path(ok.output.replace(".nii.gz", ".json")).read_text())
    assert sidecar["n_slices"] == 35
    expected = {
        "HFS/3_t1_fl2d_sag/0000_copy.dcm": "pixel data unreadable (",
        "HFS/3_t1_fl2d_sag/empty.dcm": "empty file (0 bytes)",
        "HFS/HFS.txt": "not an image file (neither DICOM nor NIfTI)",
        "HFS/notes": "not an image file: unreadable as DICOM",
    }
    files = assert_all_accounted(root, out)
    assert len(rows) == 1 + len(expected) and len(files) == 35 + len(expected)
    for source, reason in expected.items():
        m, row = numbered_row(rows, source)
        assert row.status == "skipped" and row.reason.startswith(reason), row
        assert files[source].manifest_row == m and files[source].reason == row.reason
    assert numbered_row(rows, "HFS/3_t1_fl2d_sag/0000_copy.dcm")[1].reason.endswith(f"series in manifest row {n}")
    assert {f.manifest_row for name, f in files.items() if name.startswith(f"{HFS.parent.name}/3_") and
            name not in expected} == {n}


# ------------------------------------------------------------------------------------------------ fuzz
N_MUTANTS = 320
SEED = 1307
DELETABLE = (
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns", "BitsAllocated",
    "PixelRepresentation", "SamplesPerPixel", "PhotometricInterpretation", "PixelData", "SOPInstanceUID",
    "SeriesInstanceUID", "SOPClassUID", "Modality", "SeriesDescription", "ProtocolName", "PatientID",
    "RescaleSlope", "SliceThickness", "SeriesNumber",
)


def _mutants(sources: list[Path], folder: Path, rng: np.random.Generator) -> dict[str, str]:
    """Write `N_MUTANTS` mutated copies of `sources` into `folder`; name -> kind of mutation."""
    folder.mkdir(parents=True)
    pixel_bytes = {}
    kinds = {}
    for i in range(N_MUTANTS):
        src = sources[int(rng.integers(len(sources)))]
        data = np.frombuffer(src.read_bytes(), np.uint8).copy()
        if src not in pixel_bytes:
            ds = pydicom.dcmread(src, stop_before_pixels=True)
            pixel_bytes[src] = int(ds.Rows) * int(ds.Columns) * int(ds.BitsAllocated) // 8
        header_end = len(data) - pixel_bytes[src] - 12  # PixelData is the last element
        kind = ("truncated", "header", "pixels", "tags")[i % 4]
        if kind == "truncated":
            data = data[: int(rng.integers(0, len(data)))]
        elif kind in ("header", "pixels"):
            lo, hi = (0, header_end) if kind == "header" else (header_end + 12, len(data))
            where = rng.integers(lo, hi, size=int(rng.integers(1, 9)))
            data[where] ^= rng.integers(1, 256, size=where.size).astype(np.uint8)
        else:
            ds = pydicom.dcmread(src)
            for keyword in rng.choice(DELETABLE, size=int(rng.integers(1, 4)), replace=False):
                if keyword in ds:
                    delattr(ds, str(keyword))
            buf = io.BytesIO()
            ds.save_as(buf)
            data = np.frombuffer(buf.getvalue(), np.uint8)
        name = f"m{i:03d}_{kind}.dcm"
        (folder / name).write_bytes(data.tobytes())
        kinds[f"{folder.name}/{name}"] = kind
    return kinds


def test_seeded_fuzz_beside_an_intact_series(tmp_path, caplog):
    """Mutated copies of the three other positions' slices (truncated at random offsets, bytes flipped in the
    header or the pixel data, tags deleted) in one folder beside an intact series: no crash, the intact series
    ingested exactly, every mutated file accounted for with a reason. (Mutants of the intact series' own
    slices are not used: a flipped position that still parses is a different slice, which no reader could tell
    from a real one.)"""
    rng = np.random.default_rng(SEED)
    root = tmp_path / "in"
    shutil.copytree(HFS, root / "intact")
    sources = sorted(p for pos in OTHER_POSITIONS for p in (DECUBITUS / "In" / pos).glob("*/*.dcm"))
    assert len(sources) == 105
    kinds = _mutants(sources, root / "fuzz", rng)

    start = time.perf_counter()
    with caplog.at_level(logging.INFO):
        rows = ingest(root, tmp_path / "out").rows
    seconds = time.perf_counter() - start
    _, intact = numbered_row(rows, "intact/ (35 files, series 3)")
    assert intact.status == "ingested"
    assert_same_image(output_image(intact), nib.load(str(HFS_REF)))
    files = assert_all_accounted(root, tmp_path / "out")
    assert set(kinds) <= set(files)
    for name, kind in kinds.items():
        entry = files[name]
        assert entry.status == "ingested" or entry.reason, (name, kind, entry)
        if kind == "truncated":  # never decodable
            assert entry.status == "skipped", (name, entry)
    assert "Traceback" not in caplog.text and "fuzz" not in caplog.text and "intact" not in caplog.text
    assert seconds < 30, f"{seconds:.1f} s"
