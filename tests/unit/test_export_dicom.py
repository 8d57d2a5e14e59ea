"""The DICOM export of model outputs: read back by dcm2niix it equals the NIfTI (voxels within the rescale
rounding, affine within 1e-3 mm) in axial, sagittal and oblique geometry; new UIDs, DERIVED\\SECONDARY, a synthetic
SeriesDescription; the pseudonym unless re-identification is asked for (then the source study and series)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from pipeline.cli import main as cli_main
from pipeline.export.dicom import export_dicom
from pipeline.gan.checkpoint import save_checkpoint
from pipeline.io.nifti import save_nifti
from pipeline.io.tables import FileRow, ManifestRow, write_files, write_manifest
from pipeline.models.cyclegan import CycleGAN
from pipeline.models.srgan import SRGAN
from tests.unit.ingest_helpers import (
    SECRETS,
    affine_for,
    dcm2niix,
    have_dcm2niix,
    random_volume,
    write_series,
)

needs_dcm2niix = pytest.mark.skipif(not have_dcm2niix(), reason="dcm2niix not on PATH")
SUBJECT = "sub-001"


def sr_model(path: Path, kind: str = "srgan") -> Path:
    """A model file with what the export reads (family, kind, version, modality, scale); no weights needed."""
    blob = {**SRGAN.model_file_header(kind), "sr": {"scale": 4, "factors": [4, 4, 1]}, "modality": "T1w",
            "normalisation": {"method": "percentile"}}
    return save_checkpoint(blob, path)


def translation_model(path: Path, target: str = "T2w") -> Path:
    blob = {**CycleGAN.model_file_header("cyclegan"), "translation": {"source": "T1w", "target": target},
            "normalisation": {}}
    return save_checkpoint(blob, path)


def model_output(tmp_path: Path, affine: np.ndarray, shape=(20, 18, 6), seed=3, name="sub-001_sr.nii.gz") -> Path:
    """A float output in [0, 1], as the infer stage writes them."""
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    return save_nifti(data, affine, tmp_path / "infer" / name)


def read_series(folder: Path) -> list[pydicom.Dataset]:
    return sorted((pydicom.dcmread(p) for p in folder.iterdir()), key=lambda ds: int(ds.InstanceNumber))


def write_key(path: Path, original: str = "SECRET-4711", kind: str = "dicom") -> Path:
    path.write_text(f"subject\tsource_kind\toriginal_id\n{SUBJECT}\t{kind}\t{original}\n")
    return path


@needs_dcm2niix
@pytest.mark.parametrize("plane", ["axial", "sagittal", "oblique"])
def test_read_back_by_dcm2niix_equals_the_nifti(tmp_path, plane):
    """Voxels within one rescale step's half (plus float32 rounding), affine within 1e-3 mm."""
    affine = affine_for(plane, spacing=(0.5, 0.55, 2.0))
    output = model_output(tmp_path, affine)
    out = tmp_path / "dicom"
    export_dicom(output, sr_model(tmp_path / "model.pt"), out)
    ref = nib.as_closest_canonical(dcm2niix(out, tmp_path / "ref"))
    ours = nib.as_closest_canonical(nib.load(output))
    np.testing.assert_allclose(ref.affine, ours.affine, atol=1e-3, rtol=0)
    slope = float(pydicom.dcmread(next(out.iterdir())).RescaleSlope)
    error = np.abs(np.asarray(ref.get_fdata()) - np.asarray(ours.get_fdata()))
    assert slope < 2e-5 and error.max() <= slope / 2 + 1e-6, (slope, error.max())


def test_pseudonymised_series_is_derived_new_and_holds_no_identifier(tmp_path):
    source = tmp_path / "source"
    write_series(source, random_volume((20, 18, 6)), affine_for("axial"))
    source_uids = {str(getattr(ds, k)) for ds in read_series(source)
                   for k in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID")}
    output = model_output(tmp_path, affine_for("axial", spacing=(0.5, 0.5, 2.5)))
    out = tmp_path / "dicom"
    key = write_key(tmp_path / "key.tsv")
    export_dicom(output, sr_model(tmp_path / "model.pt"), out, key=key)
    series = read_series(out)
    assert len(series) == 6 and len({ds.SOPInstanceUID for ds in series}) == 6
    first = series[0]
    assert list(first.ImageType) == ["DERIVED", "SECONDARY"]
    assert first.SOPClassUID == pydicom.uid.MRImageStorage and first.Modality == "MR"
    assert first.SeriesDescription == "SR x4 srgan - not for diagnosis"
    assert "srgan" in first.DerivationDescription and "0.1.0" in first.DerivationDescription
    assert first.PatientID == SUBJECT and str(first.PatientName) == SUBJECT
    assert first.PatientIdentityRemoved == "YES"
    assert "ReferencedSeriesSequence" not in first and "SourceImageSequence" not in first
    assert {first.StudyInstanceUID, first.SeriesInstanceUID} & source_uids == set()
    raw = b"".join(p.read_bytes() for p in out.iterdir())
    for value in [*SECRETS.values(), *source_uids]:
        assert value.encode() not in raw, value


def test_reidentified_series_joins_the_source_study_and_references_its_slices(tmp_path):
    """Output on the source's planes at 4x in-plane resolution: slice k's SourceImageSequence is source slice k."""
    source = tmp_path / "source"
    write_series(source, random_volume((20, 18, 6)), affine_for("axial", spacing=(2.0, 2.2, 2.5)))
    src = read_series(source)
    output = model_output(tmp_path, affine_for("axial", spacing=(0.5, 0.55, 2.5)), shape=(80, 72, 6))
    out = tmp_path / "dicom"
    export_dicom(output, sr_model(tmp_path / "model.pt"), out, key=write_key(tmp_path / "key.tsv"),
                 reidentify=True, reference=source)
    series = read_series(out)
    first = series[0]
    assert first.PatientID == "SECRET-4711" and str(first.PatientName) == SECRETS["PatientName"]
    assert first.AccessionNumber == SECRETS["AccessionNumber"] and first.PatientIdentityRemoved == "NO"
    assert first.StudyInstanceUID == src[0].StudyInstanceUID
    assert first.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert first.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert not {ds.SOPInstanceUID for ds in series} & {ds.SOPInstanceUID for ds in src}
    ref = first.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref.ReferencedInstanceSequence} == {ds.SOPInstanceUID for ds in src}
    for ds, src_ds in zip(series, src, strict=True):
        assert [i.ReferencedSOPInstanceUID for i in ds.SourceImageSequence] == [src_ds.SOPInstanceUID]
        assert ds.SourceImageSequence[0].ReferencedSOPClassUID == pydicom.uid.MRImageStorage


def test_reidentify_finds_the_source_through_ingest_tables(tmp_path):
    """With --ingest and --input-dir the source series is the files.tsv files of the subject's primary T1w row."""
    inputs = tmp_path / "inputs"
    write_series(inputs / "a" / "t1", random_volume((20, 18, 6)), affine_for("axial"))
    write_series(inputs / "b" / "t2", random_volume((20, 18, 6), seed=1), affine_for("axial"),
                 series_description="t2_tse")
    ingest = tmp_path / "ingest"
    ingest.mkdir()
    write_manifest([ManifestRow("b/t2/", "ingested", "", SUBJECT, "T2w", output="x_T2w.nii.gz", primary="yes"),
                    ManifestRow("a/t1/", "ingested", "", SUBJECT, "T1w", output="x_T1w.nii.gz", primary="yes")],
                   ingest / "manifest.tsv")
    write_files([FileRow(f"{p.parent.relative_to(inputs)}/{p.name}", "ingested", "", 1 if "t2" in str(p) else 2)
                 for p in sorted(inputs.rglob("IM*"))], ingest / "files.tsv")
    output = model_output(tmp_path, affine_for("axial"))
    out = tmp_path / "dicom"
    rc = cli_main(["export-dicom", "--output", str(output), "--model", str(sr_model(tmp_path / "model.pt")),
                   "--out", str(out), "--key", str(write_key(tmp_path / "key.tsv")), "--reidentify",
                   "--ingest", str(ingest), "--input-dir", str(inputs)])
    assert rc == 0
    t1 = read_series(inputs / "a" / "t1")[0]
    first = read_series(out)[0]
    assert first.ReferencedSeriesSequence[0].SeriesInstanceUID == t1.SeriesInstanceUID
    assert first.StudyInstanceUID == t1.StudyInstanceUID


def test_reidentified_nifti_input_gets_the_original_id_and_a_new_study(tmp_path):
    key = write_key(tmp_path / "key.tsv", original="P0042", kind="bids")
    output = model_output(tmp_path, affine_for("coronal"), name="sub-001_T2w.nii.gz")
    model = translation_model(tmp_path / "model.pt")
    export_dicom(output, model, tmp_path / "a", key=key, reidentify=True)
    export_dicom(output, model, tmp_path / "b", key=key)
    reid, pseudo = read_series(tmp_path / "a")[0], read_series(tmp_path / "b")[0]
    assert reid.PatientID == "P0042" and pseudo.PatientID == SUBJECT
    assert reid.SeriesDescription == "T1w->T2w cyclegan - not for diagnosis"
    assert "ReferencedSeriesSequence" not in reid
    # one key, one study per subject (all its outputs land together); the same output gives the same series
    assert reid.StudyInstanceUID == pseudo.StudyInstanceUID
    assert b"P0042" not in b"".join(p.read_bytes() for p in (tmp_path / "b").iterdir())


def test_ct_output_is_ct_image_storage(tmp_path):
    output = save_nifti(np.random.default_rng(0).integers(-1000, 2000, (16, 16, 4)).astype(np.float32),
                        affine_for("axial"), tmp_path / "sub-001_CT.nii.gz")
    out = tmp_path / "dicom"
    export_dicom(output, translation_model(tmp_path / "model.pt", target="CT"), out)
    first = read_series(out)[0]
    assert first.SOPClassUID == pydicom.uid.CTImageStorage and first.Modality == "CT"
    np.testing.assert_array_equal(  # integral HU are stored exactly
        first.pixel_array.T * float(first.RescaleSlope) + float(first.RescaleIntercept),
        nib.load(output).get_fdata()[:, :, 0])


def test_misuse_is_refused(tmp_path):
    output = model_output(tmp_path, affine_for("axial"))
    model = sr_model(tmp_path / "model.pt")
    with pytest.raises(ValueError, match="pseudonym key"):
        export_dicom(output, model, tmp_path / "a", reidentify=True)
    with pytest.raises(ValueError, match="needs --reidentify"):
        export_dicom(output, model, tmp_path / "b", reference=tmp_path)
    export_dicom(output, model, tmp_path / "c")
    with pytest.raises(ValueError, match="already holds files"):
        export_dicom(output, model, tmp_path / "c")


DRY_RUN_SNAKEFILE = """
configfile: "{repo}/config/config.yaml"
include: "{repo}/rules/common.smk"

checkpoint preprocess_scans:  # its outputs exist already (written by the test): nothing to run
    output: subjects="results/preprocess/subjects.tsv", manifest="results/ingest/manifest.tsv"
    shell: "false"

rule stand_in:
    output: "results/infer/{{output}}/outputs.tsv"
    shell: "touch {{output}}"

rule train_stand_in:
    output: "results/models/{{family}}/model.pt"
    shell: "touch {{output}}"

rule report_stand_in:
    output: "reports/index.html"
    shell: "touch {{output}}"

include: "{repo}/rules/export.smk"

rule all:
    input: final_targets()
    default_target: True
"""


def test_dry_run_plans_the_export_jobs(tmp_path):
    """With export.dicom and export.bids true, `snakemake -n` plans export_dicom for each output and test subject
    (re-identified: with the source lookup) and one export_bids; with the defaults only export_bids; with both off,
    neither."""
    import subprocess
    import sys

    from tests.conftest import REPO

    (tmp_path / "Snakefile").write_text(DRY_RUN_SNAKEFILE.format(repo=REPO))
    (tmp_path / "results/ingest").mkdir(parents=True)
    for name in ("manifest.tsv", "files.tsv", "pseudonym_key.tsv"):
        (tmp_path / "results/ingest" / name).write_text("subject\n")
    table = tmp_path / "results/preprocess/subjects.tsv"
    table.parent.mkdir(parents=True)
    cells = "\t".join(f"x/{c}.nii.gz" for c in ("T1w", "T2w", "mask", "T1w_lr"))
    table.write_text("subject\tsplit\tT1w\tT2w\tmask\tT1w_lr\n" +
                     "".join(f"{s}\t{split}\t{cells}\n" for s, split in
                             (("sub-001", "train"), ("sub-004", "train"), ("sub-002", "test"), ("sub-003", "test"))))
    (tmp_path / "inputs").mkdir()
    (tmp_path / "on.yaml").write_text("input_dir: inputs\nmodels: [srgan, cyclegan]\n"
                                         "export: {dicom: true, bids: true, reidentify: true}\n")

    def dry_run(*configs: str) -> str:
        cmd = [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "--configfile",
               str(REPO / "config/config.yaml"), *configs]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout + proc.stderr

    text = dry_run("on.yaml")
    folders = set(re.findall(r"results/export/dicom/\w+/sub-\d+", text))
    assert folders == {f"results/export/dicom/{o}/{s}" for o in ("srresnet", "srgan", "cyclegan")
                       for s in ("sub-002", "sub-003")}, text
    assert re.search(r"export_dicom\s+6\b", text) and re.search(r"export_bids\s+1\b", text), text
    assert "--direction A2B" in text and "--reidentify --ingest results/ingest --input-dir inputs" in text
    assert "results/derivatives/medgan" in text
    (tmp_path / "default.yaml").write_text("input_dir: inputs\nmodels: [srgan, cyclegan]\n")
    default = dry_run("default.yaml")  # BIDS derivatives by default, DICOM only when asked for
    assert "export_dicom" not in default and re.search(r"export_bids\s+1\b", default), default
    (tmp_path / "off.yaml").write_text("input_dir: inputs\nmodels: [srgan, cyclegan]\nexport: {bids: false}\n")
    off = dry_run("off.yaml")
    assert "export_dicom" not in off and "export_bids" not in off
