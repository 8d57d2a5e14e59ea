"""Walk an input folder and sort every file into DICOM, NIfTI or skipped (with a reason).

DICOM files are recognised by content, not name (any nesting, with or without extension); only their headers
are read here (`stop_before_pixels`). A DICOMDIR is listed as skipped: the files it indexes are found by the
walk itself. Files that are plainly not images (`.json`, `.tsv`, README, ...) are listed as skipped
"not an image file", so every file under `input_dir` is accounted for (manifest.tsv, files.tsv); hidden files
(`.DS_Store`, `.git/`) are ignored. The log names no path (folder and file names can hold patient names).

Memory does not grow with the number of DICOM files: a `DicomFile` keeps its path and SeriesInstanceUID only;
its header is read again when asked for, through a small cache (`HEADER_CACHE` files), so while the series
are converted one after another only about one series' headers are in memory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from pipeline.ingest.volume import describe_error
from pipeline.io.tables import ManifestRow

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# Extensions that are never images here: listed as skipped without being opened.
NOT_IMAGE_SUFFIXES = frozenset(
    ".json .tsv .csv .txt .md .rst .html .htm .pdf .xml .yaml .yml .log .bval .bvec .py .sh .ini .cfg "
    ".png .jpg .jpeg .gif .bmp .tif .tiff .svg .zip .tar .tgz .bz2 .7z .gz .dump .icc .mgz .mgh .nrrd .mha".split()
)
NOT_IMAGE_NAMES = frozenset({"readme", "changes", "license", "licence", "copying", "authors"})
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# Tags of which a real DICOM file has at least one; a forced read of a non-DICOM file has none.
_PLAUSIBLE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID", "Rows")


#: headers kept in memory (most recently used); every other header is read again from its file when asked for
HEADER_CACHE = 1024


@dataclasses.dataclass
class DicomFile:
    """A DICOM file's path (absolute and relative to input_dir) and SeriesInstanceUID; `header` (no pixel
    data) is read from the file when asked for (cached for the most recently used `HEADER_CACHE` files)."""

    path: Path
    rel: str
    series_uid: str = ""

    @property
    def header(self):  # a pydicom Dataset
        return _cached_header(self.path)

    @property
    def root(self) -> Path:
        """The input folder the file was found in."""
        return self.path.parents[len(PurePosixPath(self.rel).parts) - 1]


@dataclasses.dataclass
class Discovery:
    dicom: list[DicomFile] = dataclasses.field(default_factory=list)
    nifti: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
    skipped: list[ManifestRow] = dataclasses.field(default_factory=list)
    n_files: int = 0


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Read leniently and silently: pydicom's warnings can quote element values (names, dates, IDs)."""
    import pydicom.config

    settings = pydicom.config.settings
    old_mode = settings.reading_validation_mode
    pdlog = logging.getLogger("pydicom")
    old_level = pdlog.level
    settings.reading_validation_mode = pydicom.config.IGNORE
    pdlog.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode = old_mode
        pdlog.setLevel(old_level)


def read_dicom_header(path: Path):
    """The header of a DICOM file (pixel data not read), or raise ValueError if it is not DICOM.

    Files without the 128-byte preamble and "DICM" (old or raw exports) are read a second time with
    `force=True` and accepted when they hold at least one of the usual identifying UIDs / image tags.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        return dcmread(path, stop_before_pixels=True, defer_size="64 KB")
    except InvalidDicomError:
        pass
    ds = dcmread(path, stop_before_pixels=True, defer_size="64 KB", force=True)
    if not any(kw in ds for kw in _PLAUSIBLE_KEYWORDS):
        raise ValueError("no DICOM preamble and no DICOM image/UID tags")
    return ds


@functools.lru_cache(maxsize=HEADER_CACHE)
def _cached_header(path: Path):
    return read_dicom_header(path)


def _walk(root: Path) -> Iterator[Path]:
    """Every regular, non-hidden file under `root`, in a stable (sorted) order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _is_nifti(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def _not_image_by_name(name: str) -> bool:
    low = name.lower()
    return Path(low).suffix in NOT_IMAGE_SUFFIXES or low in NOT_IMAGE_NAMES


def discover(root: Path) -> Discovery:
    """Sort the files under `root` (absolute) into DICOM headers, NIfTI paths and skipped rows."""
    found = Discovery()
    _cached_header.cache_clear()  # files may have changed since an earlier discovery in this process
    with quiet_pydicom():
        for path in _walk(root):
            found.n_files += 1
            rel = path.relative_to(root).as_posix()
            name = path.name
            if _is_nifti(name):
                found.nifti.append((path, rel))
                continue
            if _not_image_by_name(name):
                found.skipped.append(ManifestRow(rel, reason="not an image file (neither DICOM nor NIfTI)"))
                continue
            try:
                if not path.is_file():
                    raise ValueError("not a regular file")
                if path.stat().st_size == 0:
                    found.skipped.append(ManifestRow(rel, reason="empty file (0 bytes)"))
                    continue
                header = read_dicom_header(path)
            except Exception as exc:  # any unreadable file is one skipped row, never a stop
                found.skipped.append(
                    ManifestRow(rel, reason=f"not an image file: unreadable as DICOM ({describe_error(exc, path, root)})")
                )
                continue
            meta = getattr(header, "file_meta", None)
            sop = str(header.get("SOPClassUID", "") or (meta.get("MediaStorageSOPClassUID", "") if meta else ""))
            if sop == DICOMDIR_SOP_CLASS or "DirectoryRecordSequence" in header:
                found.skipped.append(
                    ManifestRow(rel, reason="DICOMDIR index (the files it lists are read from the folder tree)")
                )
                continue
            found.dicom.append(DicomFile(path, rel, str(header.get("SeriesInstanceUID", "") or "").strip()))
    log.info(  # no path: folder names can hold names or record numbers
        "found %d files: %d DICOM, %d NIfTI, %d other",
        found.n_files, len(found.dicom), len(found.nifti), len(found.skipped),
    )
    return found
