"""Write a 3-D volume as a DICOM series (one file per slice) with exact geometry.

The volume is (x, y, z) with an affine voxel -> RAS+ mm (nibabel's convention); slice `k` is `volume[:, :, k]`.
DICOM describes geometry in LPS patient coordinates:

- the image's columns run along the volume's first axis (ImageOrientationPatient's row cosine = affine column 0),
  its rows along the second axis (column cosine = affine column 1), so `pixel_array[r, c] == volume[c, r, k]`;
- ImagePositionPatient is the centre of each slice's first voxel, `affine @ (0, 0, k, 1)`, in LPS;
- PixelSpacing is [row spacing, column spacing] = [|affine[:, 1]|, |affine[:, 0]|]; SliceThickness and
  SpacingBetweenSlices are |affine[:, 2]|.

Used by the demo cohort (stage 1), test fixtures and the DICOM export of model outputs (`pipeline.export.dicom`,
which sets ImageType, references and identification through `extra` and `per_slice`).

Any orthogonal affine (axial, coronal, sagittal, oblique, either slice direction, left- or right-handed) is
written exactly; a sheared affine cannot be expressed in DICOM and is rejected. Pixels are int16 or uint16 with
RescaleSlope/RescaleIntercept; files are Explicit VR Little Endian, written atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from pipeline.io.atomic import atomic_path

SOP_CLASSES = {"MR": MRImageStorage, "CT": CTImageStorage}
PATIENT_POSITIONS = ("HFS", "HFP", "FFS", "FFP", "HFDR", "HFDL", "FFDR", "FFDL")
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def _ds(value: float) -> str:
    """A decimal string (DS) of at most 16 characters that keeps as much precision as fits."""
    value = float(value)
    if value == 0.0:  # avoid "-0.0" and exponent forms of tiny round-off
        return "0"
    return format_number_as_ds(value)


def _check_keywords(tags: dict[str, Any], what: str) -> None:
    unknown = [k for k in tags if tag_for_keyword(k) is None]
    if unknown:
        raise ValueError(f"{what}: unknown DICOM keyword(s) {', '.join(map(repr, unknown))}")


def choose_rescale(volume: np.ndarray) -> tuple[float, float, np.dtype]:
    """(slope, intercept, stored dtype) for `volume`.

    Integer-valued data that fit int16/uint16 are stored as they are (slope 1, intercept 0); anything else is
    mapped linearly onto the uint16 range (a quantisation step of about (max - min) / 65000).
    """
    vmin, vmax = float(volume.min()), float(volume.max())
    integral = np.issubdtype(volume.dtype, np.integer) or bool(np.all(volume == np.round(volume)))
    if integral and vmin >= -32768 and vmax <= 32767:
        return 1.0, 0.0, np.dtype("<i2")
    if integral and vmin >= 0 and vmax <= 65535:
        return 1.0, 0.0, np.dtype("<u2")
    # 65000 steps rather than 65535 leave room for the rounding of slope and intercept to DS strings.
    slope = float(_ds((vmax - vmin) / 65000.0)) if vmax > vmin else 1.0
    return slope, float(_ds(vmin)), np.dtype("<u2")


def _quantise(volume: np.ndarray, slope: float, intercept: float, dtype: np.dtype | None) -> np.ndarray:
    stored = np.round((volume.astype(np.float64) - intercept) / slope)
    if dtype is None:
        dtype = np.dtype("<i2") if stored.min() < 0 else np.dtype("<u2")
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(
            f"rescale (slope {slope}, intercept {intercept}) maps the data to [{stored.min():.0f}, "
            f"{stored.max():.0f}], outside {dtype.name}"
        )
    return stored.astype(dtype)


def slice_geometry(affine: np.ndarray) -> dict[str, Any]:
    """The DICOM geometry of a voxel -> RAS+ affine: orientation, spacings, and the slice positions' function.

    Returns ImageOrientationPatient (6 LPS cosines), PixelSpacing [row, column], SliceThickness, the slice
    normal (LPS) and a function k -> ImagePositionPatient (LPS).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    axes = affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis (voxel sizes {spacing.tolist()})")
    unit = axes / spacing
    gram = unit.T @ unit
    if np.max(np.abs(gram - np.eye(3))) > 1e-4:
        raise ValueError("affine is sheared (its axes are not orthogonal); DICOM cannot represent it")
    row_cos = unit[:, 0] * _RAS_TO_LPS
    col_cos = unit[:, 1] * _RAS_TO_LPS
    normal = np.cross(row_cos, col_cos)
    origin = affine[:3, 3] * _RAS_TO_LPS
    step = axes[:, 2] * _RAS_TO_LPS

    def position(k: int) -> np.ndarray:
        return origin + k * step

    return {
        "ImageOrientationPatient": [*row_cos, *col_cos],
        "PixelSpacing": [spacing[1], spacing[0]],
        "SliceThickness": spacing[2],
        "normal": normal,
        "position": position,
    }


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    patient: dict[str, str] | None = None,
    series_description: str = "",
    modality: str = "MR",
    series_number: int = 1,
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_position: str = "HFS",
    rescale: tuple[float, float] | None = None,
    file_name: Callable[[int], str] | None = None,
    extra: dict[str, Any] | None = None,
    uid_seed: str | None = None,
    per_slice: Callable[[int], dict[str, Any]] | None = None,
) -> list[Path]:
    """Write `volume` (x, y, z; `affine` voxel -> RAS+ mm) as one DICOM file per slice under `out_dir`.

    Args:
        patient: DICOM keyword -> value for the patient/study identification (PatientName, PatientID,
            PatientBirthDate, StudyDate, InstitutionName, AccessionNumber, ...); absent type-2 ones stay empty.
        series_description: SeriesDescription (and ProtocolName unless `extra` sets it).
        modality: "MR" (MR Image Storage) or "CT" (CT Image Storage).
        study_uid, series_uid: given UIDs; otherwise derived from `uid_seed` (same seed, same UIDs: the study
            UID from the seed alone, the series UID from the seed, `series_number` and `series_description`), or
            random when `uid_seed` is None. SOP instance and frame-of-reference UIDs derive from these.
        patient_position: PatientPosition (HFS, FFS, HFP, ...). Geometry tags are in patient coordinates, so
            the position does not change them.
        rescale: (slope, intercept) with real = stored * slope + intercept; None chooses it (see
            `choose_rescale`).
        file_name: slice index -> file name relative to `out_dir` (subfolders allowed); default
            f"IM{k + 1:04d}.dcm".
        extra: more DICOM keywords set on every slice (after the defaults, so they override them; not the
            per-slice SOPInstanceUID, InstanceNumber, ImagePositionPatient, SliceLocation and PixelData).
        uid_seed: string the UIDs are derived from, for reproducible files.
        per_slice: slice index -> more DICOM keywords for that slice only (e.g. a SourceImageSequence naming
            the source images the slice was derived from); set after `extra`, removed again before the next slice.

    Returns:
        The written paths, in slice order.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise ValueError(f"volume must be 3-D (x, y, z), got shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume contains NaN or infinite values")
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality {modality!r} not supported; choose one of {sorted(SOP_CLASSES)}")
    if patient_position not in PATIENT_POSITIONS:
        raise ValueError(f"patient_position {patient_position!r} is not one of {list(PATIENT_POSITIONS)}")
    patient = dict(patient or {})
    extra = dict(extra or {})
    _check_keywords(patient, "patient")
    _check_keywords(extra, "extra")
    geometry = slice_geometry(affine)

    if rescale is None:
        slope, intercept, dtype = choose_rescale(volume)
    else:
        slope, intercept, dtype = float(rescale[0]), float(rescale[1]), None
        if slope == 0:
            raise ValueError("rescale slope must not be 0")
    stored = _quantise(volume, slope, intercept, dtype)

    if study_uid is None:
        study_uid = generate_uid(entropy_srcs=[uid_seed, "study"]) if uid_seed is not None else generate_uid()
    if series_uid is None:
        series_uid = (
            generate_uid(entropy_srcs=[uid_seed, "series", str(series_number), series_description])
            if uid_seed is not None
            else generate_uid()
        )
    frame_uid = generate_uid(entropy_srcs=[study_uid, "frame-of-reference"])
    sop_class = SOP_CLASSES[modality]
    file_name = file_name or (lambda k: f"IM{k + 1:04d}.dcm")
    out_dir = Path(out_dir)
    window_center = float(volume.min() + volume.max()) / 2
    window_width = max(float(volume.max() - volume.min()), 1.0)

    # One dataset holds what all slices share; per slice only the instance UID and number, the position and
    # the pixels change (building each file's dataset from scratch costs more than writing it).
    n_slices = volume.shape[2]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.Manufacturer = "medgan-pipeline"
    # Type-2 identification attributes: present, empty unless `patient` fills them.
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, "")
    for keyword, value in patient.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ProtocolName = series_description
    ds.AcquisitionNumber = 1
    ds.PatientPosition = patient_position
    ds.PositionReferenceIndicator = ""
    ds.ImagesInAcquisition = n_slices
    ds.ImageOrientationPatient = [_ds(v) for v in geometry["ImageOrientationPatient"]]
    ds.PixelSpacing = [_ds(v) for v in geometry["PixelSpacing"]]
    ds.SliceThickness = _ds(geometry["SliceThickness"])
    ds.SpacingBetweenSlices = _ds(geometry["SliceThickness"])
    if modality == "MR":
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.EchoTrainLength = ""
    else:
        ds.KVP = ""
        ds.RescaleType = "HU"
    ds.set_pixel_data(  # the Image Pixel module (Rows, Columns, bits, representation); pixels set per slice
        np.ascontiguousarray(stored[:, :, 0].T), photometric_interpretation="MONOCHROME2", bits_stored=16,
        generate_instance_uid=False,
    )
    ds.RescaleSlope = _ds(slope)
    ds.RescaleIntercept = _ds(intercept)
    ds.WindowCenter = _ds(window_center)
    ds.WindowWidth = _ds(window_width)
    for keyword, value in extra.items():
        setattr(ds, keyword, value)

    paths = []
    for k in range(n_slices):
        sop_uid = generate_uid(entropy_srcs=[series_uid, "instance", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = k + 1
        position = geometry["position"](k)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(np.dot(position, geometry["normal"])))
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        own = dict(per_slice(k)) if per_slice is not None else {}
        _check_keywords(own, f"per_slice({k})")
        for keyword, value in own.items():
            setattr(ds, keyword, value)
        path = out_dir / file_name(k)
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        for keyword in own:
            delattr(ds, keyword)
        paths.append(path)
    return paths
