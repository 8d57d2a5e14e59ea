"""DICOM series -> one 3D volume with a RAS affine, or a reason why not; and what became of each file.

Files are grouped by SeriesInstanceUID and a series is classified from one header (`classify`): non-image
objects, secondary captures, localizers, colour images and unsupported modalities are refused as a whole.
A series is then built from the files that hold a usable slice: a file whose header gives no geometry, whose
pixel data cannot be decoded, or that repeats a slice already in the series (the same SOPInstanceUID, or the
same position, geometry and pixel data: the first in the walk's order is kept) is left out with its own
reason (`SeriesFiles`), and the series is judged on the slices left (`dicom_geometry.geometry`: one
orientation and size, `min_slices`, no repeated positions, no missing slices, even spacing). The same holds
for single frames of an enhanced multi-frame file. Only when no file is usable is the series refused as one.
Only technical tag values ever reach a reason, a log or a sidecar.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

from pipeline.config import IngestConfig
from pipeline.ingest.dicom_geometry import SliceRef, file_slices, geometry, tag_text
from pipeline.ingest.dicom_pixels import content_key, decode, stack
from pipeline.ingest.discover import DicomFile
from pipeline.ingest.modality import CT, ModalityMatcher
from pipeline.ingest.pseudonym import SubjectKey
from pipeline.ingest.volume import SkipInput, Volume, describe_error

NON_IMAGE_MODALITIES = frozenset(
    "SR PR KO DOC RTSTRUCT RTPLAN RTRECORD RTDOSE RTTREAT REG SEG FID RWV PLAN ECG HD AU RESP".split()
)
# Words in a SOP class name (pydicom's UID names) that mark an object without an anatomical image.
NON_IMAGE_SOP_WORDS = (
    "SR Storage", "Presentation State", "Waveform", "Encapsulated", "Raw Data", "Registration", "Document",
    "Plan Storage", "Structure Set", "Segmentation", "Dose Storage", "Treatment Record", "Key Object",
)
SUPPORTED_MODALITIES = ("MR", "CT")


@dataclasses.dataclass
class Series:
    """The files of one SeriesInstanceUID (in the walk's order: folders and names sorted)."""

    uid: str
    files: list[DicomFile]

    @functools.cached_property
    def lead(self) -> DicomFile:
        """The file whose header speaks for the series: the first with an image size (Rows), else the first."""
        for f in self.files:
            try:
                if "Rows" in f.header:
                    return f
            except Exception:  # an unreadable header speaks for nothing
                continue
        return self.files[0]

    @property
    def header(self) -> Any:
        return self.lead.header

    @property
    def source(self) -> str:
        """Where the series came from, relative to input_dir (`series_source`)."""
        return series_source([f.rel for f in self.files], self.header.get("SeriesNumber"))


def series_source(rels: Sequence[str], number: Any = None) -> str:
    """A few file names, or the series' folder and a count: "a/b/ (36 files, series 2)"; files from several
    folders are named by their common parent: "a/ (36 files from 2 folders, series 2)"."""
    if len(rels) <= 3:
        return "; ".join(rels)
    tail = f", series {number}" if number not in (None, "") else ""
    folders = sorted({os.path.dirname(r) or "." for r in rels})
    if len(folders) == 1:
        return f"{folders[0]}/ ({len(rels)} files{tail})"
    common = os.path.commonprefix([PurePosixPath(d).parts if d != "." else () for d in folders])
    return f"{'/'.join(common) or '.'}/ ({len(rels)} files from {len(folders)} folders{tail})"


@dataclasses.dataclass
class SeriesFiles:
    """What became of a series' files: filled in by `load_series`, also when it refuses the series."""

    #: file (relative to input_dir) -> why it was left out of the series
    left_out: dict[str, str] = dataclasses.field(default_factory=dict)
    #: file -> which of its frames were left out and why (its other frames are used)
    frames_left_out: dict[str, str] = dataclasses.field(default_factory=dict)
    #: no file was usable: the series is refused as a whole (`left_out` still holds each file's reason)
    all_bad: bool = False

    def used(self, series: Series) -> list[DicomFile]:
        """The files the series was judged on (every file when none was usable)."""
        return series.files if self.all_bad else [f for f in series.files if f.rel not in self.left_out]


def group_series(files: list[DicomFile]) -> list[Series]:
    """Group DICOM files by SeriesInstanceUID; a file without one is a series of its own."""
    groups: dict[str, list[DicomFile]] = defaultdict(list)
    for f in files:
        groups[f.series_uid or f"no-uid:{f.rel}"].append(f)
    return [Series(uid, fs) for uid, fs in groups.items()]


def subject_key(series: Series) -> SubjectKey:
    """The original subject: PatientID, else PatientName, else StudyInstanceUID (never printed)."""
    ds = series.header
    for keyword in ("PatientID", "PatientName", "StudyInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
        if value:
            return ("dicom", value)
    return ("dicom", "unknown")


def classify(series: Series, matcher: ModalityMatcher, skip: ModalityMatcher) -> str:
    """The series' modality (header only), or SkipInput with the reason it is not a usable scan."""
    from pydicom.uid import UID

    ds = series.header
    dicom_modality = tag_text(ds, "Modality").upper()
    sop = tag_text(ds, "SOPClassUID")
    sop_name = UID(sop).name if sop else "no SOP class"
    if dicom_modality in NON_IMAGE_MODALITIES or any(word in sop_name for word in NON_IMAGE_SOP_WORDS):
        raise SkipInput(f"non-image object (Modality {dicom_modality or '?'}, {sop_name})")
    if "Rows" not in ds or "Columns" not in ds:
        raise SkipInput(f"no image in the file (no Rows/Columns; Modality {dicom_modality or '?'}, {sop_name})")
    if "Secondary Capture" in sop_name:
        raise SkipInput(f"secondary capture ({sop_name})")
    image_type = ds.get("ImageType") or []
    image_type = [str(v).upper() for v in ([image_type] if isinstance(image_type, str) else image_type)]
    if "LOCALIZER" in image_type or "SCOUT" in image_type:
        raise SkipInput("localizer/scout (ImageType LOCALIZER)")
    names = [tag_text(ds, k) for k in ("SeriesDescription", "ProtocolName")]
    if skip.match(names):
        raise SkipInput("localizer/scout/calibration (series description matches ingest.skip_patterns)")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = tag_text(ds, "PhotometricInterpretation").upper()
    if samples > 1 or photometric.startswith(("RGB", "YBR", "PALETTE")):
        raise SkipInput(f"colour image ({photometric or f'{samples} samples per pixel'}), not a grey-scale scan")
    if series.uid.startswith("no-uid:"):
        raise SkipInput("no SeriesInstanceUID (an incomplete or truncated DICOM header)")
    if dicom_modality == "CT":
        return CT
    if dicom_modality != "MR":
        raise SkipInput(f"Modality {dicom_modality or 'missing'} is not ingested (only {' and '.join(SUPPORTED_MODALITIES)})")
    found = matcher.match(tag_text(ds, k) for k in ("SeriesDescription", "ProtocolName", "SequenceName", "PulseSequenceName"))
    if found is None:
        number = ds.get("SeriesNumber")
        raise SkipInput(
            f"MR series {number if number not in (None, '') else '?'}: modality not recognised "
            "(no ingest.modality_patterns matched its series description, protocol or sequence name)"
        )
    return found[0]


# ------------------------------------------------------------------------------------------- files -> slices
def count_reasons(reasons: Sequence[str], unit: str = "files", most: int = 3) -> str:
    """One reason, or the `most` common ones with their counts: "12 files: <reason>; 1 file: <reason>"
    (`unit` a plural ending in s)."""
    counts = Counter(reasons).most_common()
    if len(counts) == 1:
        return reasons[0] if len(reasons) == 1 else f"{reasons[0]} (all {len(reasons)} {unit})"
    listed = "; ".join(f"{n} {unit if n > 1 else unit[:-1]}: {reason}" for reason, n in counts[:most])
    return listed + (f"; {len(counts) - most} other reason(s)" if len(counts) > most else "")


def _ranges(numbers: Sequence[int]) -> str:
    """1-based, compact: [0, 1, 2, 5] -> "1-3, 6"."""
    runs: list[list[int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a + 1}" if a == b else f"{a + 1}-{b + 1}" for a, b in runs)


def _without_copies(refs: list[SliceRef], bad: dict[str, list[tuple[int | None, str]]]) -> list[SliceRef]:
    """`refs` less the second copies of a slice (recorded in `bad`); the first, in the walk's order, is kept."""
    kept: list[SliceRef] = []
    by_instance: dict[str, tuple] = {}
    contents: set[tuple] = set()
    for ref in refs:
        key = content_key(ref)
        if ref.instance in by_instance:
            why = ("a second copy of a slice already in the series (same SOPInstanceUID, position and pixel data)"
                   if by_instance[ref.instance] == key else
                   "a conflicting copy of a slice already in the series (same SOPInstanceUID, other position, "
                   "geometry or pixel data)")
        elif key in contents:
            why = "a copy of a slice already in the series (same position, geometry and pixel data)"
        else:
            by_instance[ref.instance] = key
            contents.add(key)
            kept.append(ref)
            continue
        bad[ref.file.rel].append((ref.frame, why))
    return kept


def usable_slices(series: Series, files: SeriesFiles) -> list[SliceRef]:
    """The decoded slices of the series' usable files, each left-out file (or frame) recorded in `files`;
    SkipInput when no file is usable."""
    bad: dict[str, list[tuple[int | None, str]]] = defaultdict(list)  # file -> (frame or None, reason)
    n_slices: dict[str, int] = {}
    good: list[SliceRef] = []
    for f in series.files:
        try:
            refs = file_slices(f)
        except SkipInput as exc:
            bad[f.rel].append((None, str(exc)))
            continue
        except Exception as exc:  # a header too damaged to give its geometry
            bad[f.rel].append((None, f"header unreadable ({describe_error(exc, f.path, f.root)})"))
            continue
        n_slices[f.rel] = len(refs)
        for ref, problem in zip(refs, decode(f, refs), strict=True):
            if problem:
                bad[f.rel].append((ref.frame, problem))
            else:
                good.append(ref)
    kept = _without_copies(good, bad)
    for rel, problems in bad.items():
        reasons = [reason for _, reason in problems]
        if problems[0][0] is None or len(problems) == n_slices.get(rel):
            files.left_out[rel] = count_reasons(reasons, "frames")
        else:
            frames = _ranges([frame for frame, _ in problems])
            files.frames_left_out[rel] = f"frame(s) {frames} of {n_slices[rel]} left out: {count_reasons(reasons, 'frames')}"
    if not kept:
        files.all_bad = True
        raise SkipInput(count_reasons([files.left_out[f.rel] for f in series.files]))
    return kept


# ------------------------------------------------------------------------------------------- sidecar
def _number(ds: Any, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else round(float(value), 4)
    except (TypeError, ValueError):
        return None


def technical_meta(series: Series) -> dict[str, Any]:
    """Acquisition parameters for the sidecar: technical values only (no names, dates, places, devices)."""
    ds = series.header
    meta: dict[str, Any] = {"source_format": "DICOM", "dicom_modality": tag_text(ds, "Modality")}
    number = _number(ds, "SeriesNumber")
    meta["series_number"] = int(number) if number is not None else None
    for key, keyword in (
        ("echo_time_ms", "EchoTime"), ("repetition_time_ms", "RepetitionTime"),
        ("inversion_time_ms", "InversionTime"), ("flip_angle_deg", "FlipAngle"),
        ("magnetic_field_strength_t", "MagneticFieldStrength"), ("slice_thickness_mm", "SliceThickness"),
        ("kvp", "KVP"),
    ):
        value = _number(ds, keyword)
        if value is not None:
            meta[key] = value
    return meta


def load_series(series: Series, cfg: IngestConfig, files: SeriesFiles | None = None) -> Volume:
    """Convert a (classified) series into a Volume from its usable files, or raise SkipInput.

    `files` (when given) is filled in with the files and frames left out, also when the series is refused.
    """
    files = SeriesFiles() if files is None else files
    refs = usable_slices(series, files)
    refs, affine, notes = geometry(refs, cfg)
    data = stack(refs)
    meta = technical_meta(Series(series.uid, files.used(series)))
    meta["n_slices"] = len(refs)
    if cfg.fill_missing_slices:  # missing slices inserted and filled (derived data, flagged); see pipeline.ingest.fill
        import numpy as np

        from pipeline.ingest.fill import filled_volume

        data, derived, note = filled_volume(data, np.array([r.position for r in refs]), affine, cfg.fill_model)
        meta.update(derived)
        notes = [*notes, note] if note else notes
    return Volume(data, affine, notes, meta)
