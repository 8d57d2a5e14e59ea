"""A model output as a new derived DICOM series, for PACS and DICOM viewers.

`export_dicom(output, model, out_dir, ...)` writes `results/infer/<output>/<subject>_<desc>.nii.gz` as MR (or CT,
when the model's output modality is CT) Image Storage, one file per slice, through `pipeline.io.dicom_write` (exact
per-slice geometry from the NIfTI affine, RAS -> LPS; voxels stored as uint16/int16 with RescaleSlope/Intercept,
so they come back within half a rescale step). Every file says what it is: ImageType DERIVED\\SECONDARY, a
SeriesDescription such as "SR x4 srgan - not for diagnosis", a DerivationDescription naming the model family, kind
and package versions; Series and SOP Instance UIDs are new (derived from the study, the model and the voxels, so
exporting the same output again gives the same UIDs and a PACS replaces rather than duplicates it).

Identification has two modes:

- pseudonymised (the default): PatientID and PatientName are the pseudonym, PatientIdentityRemoved YES; nothing of
  the source is read or written: no name, date, accession, and no source UID (UIDs let anyone with PACS access link
  the series back to the patient), so the study is a new one per subject (derived from the pseudonym key's digest
  when the key is given: all outputs of a subject land in one study; without a key a random one per export);
- re-identified (`reidentify=True`, needs the pseudonym `key`): PatientID is the original ID from the key; when the
  input was DICOM (a `reference` series folder, or ingest's tables to find it) the patient and study identification
  and the StudyInstanceUID and FrameOfReferenceUID come from the source series, the ReferencedSeriesSequence names
  it, and each slice's SourceImageSequence names the source images whose planes meet the slice, so the series
  files into the patient's study beside its input.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from pipeline.export.provenance import NOT_FOR_DIAGNOSIS, PACKAGE, ModelInfo, model_info, subject_of
from pipeline.export.sources import (
    SourceSeries,
    find_source_files,
    key_digest,
    read_key,
    read_source_series,
)
from pipeline.io.dicom_write import slice_geometry, write_dicom_series
from pipeline.io.nifti import load_nifti

log = logging.getLogger(__name__)

DEIDENTIFICATION = f"{PACKAGE} pseudonym; no source IDs, dates or UIDs"  # LO: 64 chars


def series_description(info: ModelInfo) -> str:
    """"SR x4 srgan - not for diagnosis" (at most 64 characters, DICOM's LO)."""
    return f"{info.label} - {NOT_FOR_DIAGNOSIS}"[-64:]


def _reference(uid_pairs: Sequence[tuple[str, str]]) -> list[Dataset]:
    items = []
    for sop_class, sop_uid in uid_pairs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    return items


def _series_reference(source: SourceSeries) -> list[Dataset]:
    item = Dataset()
    item.SeriesInstanceUID = source.series_uid
    item.ReferencedInstanceSequence = _reference([(i.sop_class, i.sop_uid) for i in source.images])
    return [item]


def _identification(subject: str, key: str | Path | None, reidentify: bool,
                    source: SourceSeries | None) -> dict[str, str]:
    """The patient/study identification keywords of the export (see the module docstring)."""
    if not reidentify:
        return {"PatientID": subject, "PatientName": subject}
    if key is None:
        raise ValueError("re-identification needs the pseudonym key (--key results/ingest/pseudonym_key.tsv)")
    mapping = read_key(key)
    if subject not in mapping:
        raise ValueError(f"{subject} is not in the pseudonym key")
    original = mapping[subject][1]
    found = {k: v for k, v in (source.study if source else {}).items() if v}
    return {"PatientName": original, **found, "PatientID": original}


def _source(reidentify: bool, reference: str | Path | None, ingest_dir: str | Path | None,
            input_dir: str | Path | None, subject: str, modality: str) -> SourceSeries | None:
    if not reidentify:
        if reference is not None:
            raise ValueError("--reference links the export to the source study (its UIDs identify the patient); "
                             "it needs --reidentify and --key")
        return None
    if reference is not None:
        folder = Path(reference)
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else [folder]
        return read_source_series(files)
    if ingest_dir is not None and input_dir is not None:
        files = find_source_files(ingest_dir, input_dir, subject, modality)
        if files:
            return read_source_series(files)
    return None  # the input was NIfTI (or no reference was given): a new study


def _study_uid(subject: str, key: str | Path | None, source: SourceSeries | None) -> str:
    if source is not None and source.study_uid:
        return source.study_uid
    salt = key_digest(key) or secrets.token_hex(16)
    return generate_uid(entropy_srcs=[PACKAGE, "export-study", salt, subject])


def export_dicom(
    output: str | Path,
    model: str | Path,
    out_dir: str | Path,
    *,
    subject: str | None = None,
    direction: str | None = None,
    key: str | Path | None = None,
    reidentify: bool = False,
    reference: str | Path | None = None,
    ingest_dir: str | Path | None = None,
    input_dir: str | Path | None = None,
    series_number: int = 1001,
) -> list[Path]:
    """Write the model output `output` (NIfTI) made by `model` (its model file) as a DICOM series in `out_dir`
    (which must not exist or be empty); see the module docstring. Returns the files, in slice order.

    Args:
        subject: the pseudonym (default: from the file name `<subject>_<desc>.nii.gz`).
        direction: the generator of a model file that holds several (CycleGAN: A2B by default).
        key: ingest's pseudonym key; derives the study UID, and gives the original ID when `reidentify`.
        reference: the source DICOM series (a folder or file); only with `reidentify`.
        ingest_dir, input_dir: ingest's output folder and the folder it read, to find the source series of
            the model's input modality when `reference` is not given (with `reidentify`).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} already holds files; remove it or choose another --out")
    info = model_info(model, direction)
    subject = subject or subject_of(output)
    data, affine = load_nifti(output)
    source = _source(reidentify, reference, ingest_dir, input_dir, subject, info.source)
    patient = _identification(subject, key, reidentify, source)
    study_uid = _study_uid(subject, key, source)
    voxels = hashlib.sha256(np.ascontiguousarray(data).tobytes() + np.asarray(affine).tobytes()).hexdigest()
    series_uid = generate_uid(entropy_srcs=[study_uid, info.label, info.family, voxels, str(series_number)])
    extra: dict[str, Any] = {
        "ImageType": ["DERIVED", "SECONDARY"],
        "DerivationDescription": info.description_of(output),
        "BurnedInAnnotation": "NO",
        "PatientIdentityRemoved": "NO" if reidentify else "YES",
    }
    if not reidentify:
        extra["DeidentificationMethod"] = DEIDENTIFICATION
    per_slice = None
    if source is not None:
        if source.frame_uid:
            extra["FrameOfReferenceUID"] = source.frame_uid
        extra["ReferencedSeriesSequence"] = _series_reference(source)
        geometry = slice_geometry(affine)
        normal, thickness = np.asarray(geometry["normal"]), float(geometry["SliceThickness"])

        def per_slice(k: int) -> dict[str, Any]:
            images = source.images_in_slab(geometry["position"](k), normal, thickness)
            return {"SourceImageSequence": _reference([(i.sop_class, i.sop_uid) for i in images])} if images else {}

    staging = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    paths = write_dicom_series(
        data, affine, staging, patient=patient, series_description=series_description(info),
        modality="CT" if info.target == "CT" else "MR", series_number=series_number, study_uid=study_uid,
        series_uid=series_uid, extra=extra, per_slice=per_slice,
    )
    if out_dir.exists():
        out_dir.rmdir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, out_dir)
    log.info("%s: %s as %d DICOM slices (%s)%s", subject, info.label, len(paths),
             "re-identified" if reidentify else "pseudonymised",
             ", linked to its source series" if source is not None else "")
    return [out_dir / p.name for p in paths]
