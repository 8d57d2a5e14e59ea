"""Modality, subject and pseudonym assignment; duplicates; and no identifier in any output but the key."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import ConfigError, IngestConfig
from pipeline.ingest.modality import ModalityMatcher
from pipeline.ingest.nifti_inputs import identify
from pipeline.ingest.pseudonym import assign_pseudonyms
from pipeline.ingest.run import ingest
from pipeline.ingest.volume import SkipInput
from pipeline.io.tables import read_manifest
from tests.unit.ingest_helpers import SECRETS, affine_for, random_volume, write_series

DEFAULT = ModalityMatcher(IngestConfig().modality_patterns)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["T2 FLAIR AX"], "FLAIR"),
        (["t1_flair_sag"], "FLAIR"),
        (["t2_tirm_tra_dark-fluid"], "FLAIR"),
        (["Sag 3D FLAIR SPACE"], "FLAIR"),
        (["t1_mprage_sag_p2_iso"], "T1w"),
        (["AX T1 SE", "", "*se2d1"], "T1w"),
        (["t1_tse_tra"], "T1w"),
        (["MP2RAGE_UNI"], "T1w"),
        (["", "", "*tfl3d1_16ns"], "T1w"),
        (["Ax FSPGR BRAVO"], "T1w"),
        (["t2_tse_tra_320"], "T2w"),
        (["Sag CUBE T2", "", ""], "T2w"),
        (["T2 SPACE"], "T2w"),
        (["pd_tse_cor"], "PDw"),
        (["PD FSE"], "PDw"),
        (["PDW_TSE"], "PDw"),
        (["Proton Density"], "PDw"),
        (["t2_star_gre"], None),
        (["T2* GRE"], None),
        (["ep2d_diff_mddw"], None),
        (["ep2d_bold_rest"], None),
        (["updated"], None),  # "pd" inside a word is not PD
    ],
)
def test_default_modality_patterns(names, expected):
    found = DEFAULT.match(names)
    assert (found[0] if found else None) == expected


def test_bad_pattern_or_modality_name_is_a_config_error():
    with pytest.raises(ConfigError, match=r"modality_patterns\.T1w: bad regular expression"):
        IngestConfig(modality_patterns={"T1w": ["t1("]})
    with pytest.raises(ConfigError, match="letters/digits"):
        IngestConfig(modality_patterns={"T1 w": ["t1"]})
    with pytest.raises(ConfigError, match=r"skip_patterns: bad regular expression"):
        IngestConfig(skip_patterns=["[scout"])
    with pytest.raises(ConfigError, match="min_slices"):
        IngestConfig(min_slices=1)


@pytest.mark.parametrize(
    ("rel", "key", "modality"),
    [
        ("bids/sub-01/anat/sub-01_T1w.nii.gz", ("bids", "01"), "T1w"),
        ("bids/sub-01/ses-2/anat/sub-01_ses-2_run-2_FLAIR.nii", ("bids", "01"), "FLAIR"),
        ("bids/sub-ab12/ct/sub-ab12_CT.nii.gz", ("bids", "ab12"), "CT"),
        ("scans/p01_t1.nii.gz", ("nifti", "scans/p01"), "T1w"),
        ("scans/p01_T2.nii.gz", ("nifti", "scans/p01"), "T2w"),
        ("p02/flair.nii", ("nifti", "p02"), "FLAIR"),
        ("p03_mprage.nii.gz", ("nifti", "p03"), "T1w"),
        ("PD.nii.gz", ("nifti", "PD"), "PDw"),
    ],
)
def test_nifti_identify(rel, key, modality):
    assert identify(rel, DEFAULT) == (key, modality)


@pytest.mark.parametrize(
    ("rel", "reason"),
    [
        ("bids/sub-01/func/sub-01_task-rest_bold.nii.gz", r"BIDS suffix \(the name's last part\) is not an ingested"),
        ("bids/derivatives/x/sub-01/anat/sub-01_T1w.nii.gz", "BIDS derivative"),
        ("scans/brain.nii.gz", "modality not recognised"),
    ],
)
def test_nifti_identify_skips(rel, reason):
    with pytest.raises(SkipInput, match=reason):
        identify(rel, DEFAULT)


def test_pseudonyms_follow_hash_order_not_input_order():
    keys = [("dicom", f"P{i}") for i in range(12)]
    a = assign_pseudonyms(keys)
    b = assign_pseudonyms(list(reversed(keys)) + keys[:3])
    assert a == b and sorted(a.values()) == [f"sub-{i:03d}" for i in range(1, 13)]
    assert assign_pseudonyms([("bids", "01"), ("dicom", "01")]).keys() == {("bids", "01"), ("dicom", "01")}


def _secret_bytes() -> list[bytes]:
    values = list(SECRETS.values()) + ["Doe", "Jane", "St Elsewhere", "patient-Smith"]
    return [v.encode() for v in values]


def test_no_identifier_in_any_output_or_log(tmp_path, caplog):
    root = tmp_path / "in"
    write_series(root / "dicom" / "s1", random_volume(), affine_for("axial"), patient=SECRETS,
                 series_description="t1_mprage", extra={"StationName": "patient-Smith"})
    # a NIfTI whose header carries identifying text in every free-text field, and an extension
    img = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4))
    img.header["descrip"] = b"Doe^Jane SECRET-4711"
    img.header["aux_file"] = b"ACC99887766"
    img.header["intent_name"] = b"Doe"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"St Elsewhere Hospital 19700101"))
    (root / "bids" / "sub-01" / "anat").mkdir(parents=True)
    nib.save(img, root / "bids" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")

    with caplog.at_level(logging.DEBUG):
        result = ingest(root, tmp_path / "out")
    assert result.n_ingested == 2
    out = tmp_path / "out"
    checked = 0
    for path in out.rglob("*"):
        if not path.is_file() or path.name == "pseudonym_key.tsv":
            continue
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        for secret in _secret_bytes():
            assert secret not in data, (path, secret)
        checked += 1
    assert checked >= 5  # manifest + 2 images + 2 sidecars
    for secret in _secret_bytes():
        assert secret.decode() not in caplog.text
    key = (out / "pseudonym_key.tsv").read_text()
    assert "SECRET-4711" in key
    for row in read_manifest(out / "manifest.tsv"):
        hdr = nib.load(row.output).header
        assert hdr["descrip"].tobytes().strip(b"\0") == b"" and not hdr.extensions
    sidecar = json.loads(next(out.rglob("*T1w.json")).read_text())
    assert "Manufacturer" not in json.dumps(sidecar) and sidecar["modality"] == "T1w"


def test_same_input_same_pseudonyms(tmp_path):
    root = tmp_path / "in"
    for i in range(4):
        write_series(root / f"p{i}", random_volume(seed=i), affine_for("axial"),
                     patient={"PatientID": f"ID{i}"}, series_description="t2_tse", uid_seed=f"p{i}")
    first = {r.source: r.subject for r in ingest(root, tmp_path / "o1").rows}
    second = {r.source: r.subject for r in ingest(root, tmp_path / "o2").rows}
    assert first == second and len(set(first.values())) == 4


def test_several_series_of_one_modality(tmp_path):
    """Kept all: the finest resolution is primary (sub-NNN_T1w), the others run-2, ...; or only the primary."""
    root = tmp_path / "in"
    write_series(root / "coarse", random_volume(seed=1), affine_for("axial", spacing=(1.0, 1.0, 3.0)),
                 patient={"PatientID": "A"}, series_description="t1_se", series_number=2, uid_seed="c")
    write_series(root / "fine", random_volume(seed=2), affine_for("sagittal", spacing=(1.0, 1.0, 1.0)),
                 patient={"PatientID": "A"}, series_description="t1_mprage", series_number=5, uid_seed="f")
    rows = [r for r in ingest(root, tmp_path / "out").rows if r.status == "ingested"]
    assert [(Path(r.output).name, r.primary) for r in rows] == [
        ("sub-001_T1w.nii.gz", "yes"), ("sub-001_run-2_T1w.nii.gz", "no")
    ]
    assert rows[0].source.startswith("fine/") and "not primary" in rows[1].reason
    sidecar = json.loads(Path(rows[1].output).with_suffix("").with_suffix(".json").read_text())
    assert sidecar["run"] == 2 and sidecar["primary"] is False and sidecar["series_number"] == 2

    rows = ingest(root, tmp_path / "out2", IngestConfig(keep_duplicates=False)).rows
    assert [(r.source.split("/")[0], r.status) for r in rows] == [("fine", "ingested"), ("coarse", "skipped")]
    assert "keep_duplicates is false" in rows[1].reason


def test_bids_dataset_end_to_end(tmp_path):
    """Subjects from BIDS labels, modalities from suffixes; 4D, derivatives and sidecars skipped with reasons."""
    root = tmp_path / "bids"
    rng = np.random.default_rng(0)

    def save(rel, shape=(12, 14, 10)):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(rng.random(shape).astype(np.float32), np.diag([1.0, 1.2, 2.0, 1.0])), path)

    save("sub-01/anat/sub-01_T1w.nii.gz")
    save("sub-01/anat/sub-01_FLAIR.nii.gz")
    save("sub-02/anat/sub-02_T2w.nii")
    save("sub-02/func/sub-02_task-rest_bold.nii.gz", (12, 14, 10, 5))
    save("sub-02/anat/sub-02_acq-x_T1w.nii.gz", (12, 14, 10, 5))
    save("derivatives/fs/sub-01/anat/sub-01_T1w.nii.gz")
    (root / "sub-01" / "anat" / "sub-01_T1w.json").write_text("{}")
    (root / "dataset_description.json").write_text("{}")

    rows = {r.source: r for r in ingest(root, tmp_path / "out").rows}
    ingested = {(r.subject, r.modality) for r in rows.values() if r.status == "ingested"}
    key = (tmp_path / "out" / "pseudonym_key.tsv").read_text().splitlines()[1:]
    label_of = {line.split("\t")[0]: line.split("\t")[2] for line in key}
    assert {(label_of[s], m) for s, m in ingested} == {("01", "T1w"), ("01", "FLAIR"), ("02", "T2w")}
    assert rows["sub-02/func/sub-02_task-rest_bold.nii.gz"].reason == (
        "BIDS suffix (the name's last part) is not an ingested modality (CT, FLAIR, PDw, T1w, T2w)")
    assert "with 5 volumes" in rows["sub-02/anat/sub-02_acq-x_T1w.nii.gz"].reason
    assert "BIDS derivative" in rows["derivatives/fs/sub-01/anat/sub-01_T1w.nii.gz"].reason
    assert rows["dataset_description.json"].reason.startswith("not an image file")
    t1 = rows["sub-01/anat/sub-01_T1w.nii.gz"]
    assert t1.shape == "12x14x10" and t1.spacing == "1x1.2x2" and t1.output.endswith("_T1w.nii.gz")
