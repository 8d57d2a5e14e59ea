"""Stage 2 from end to end: discover, convert, name, pseudonymise, write the manifest and `files.tsv`.

Each DICOM series and each NIfTI file is converted on its own, inside a try: a bad input becomes a
skipped manifest row and the run goes on; a bad file inside a series is left out of it with a row of its own
(`pipeline.ingest.accounting`). Converted volumes are staged first (pseudonyms and run numbers are known only
once every input has been read), then moved to `<out>/sub-NNN/sub-NNN[_run-R]_<modality>.nii.gz` with a JSON
sidecar of technical fields only. Outputs: `manifest.tsv`, `files.tsv`, `pseudonym_key.tsv`, the images and
sidecars; when nothing is usable also `why_nothing.tsv`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import IngestConfig
from pipeline.ingest import dicom_series, nifti_inputs
from pipeline.ingest.accounting import Entry, file_rows, link, log_rows, split_left_out, write_reasons
from pipeline.ingest.discover import discover, quiet_pydicom
from pipeline.ingest.modality import ModalityMatcher
from pipeline.ingest.pseudonym import SubjectKey, assign_pseudonyms, write_key
from pipeline.ingest.volume import SkipInput, Volume, describe_error, storage_dtype
from pipeline.io.atomic import write_text
from pipeline.io.nifti import save_nifti
from pipeline.io.tables import (
    INGESTED,
    SKIPPED,
    ManifestRow,
    format_shape,
    format_spacing,
    table_path,
    write_files,
    write_manifest,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.tsv"
FILES = "files.tsv"
KEY = "pseudonym_key.tsv"
WHY_NOTHING = "why_nothing.tsv"  # only when nothing is usable; not a declared output, so a failed job keeps it
STAGING = ".staging"


@dataclasses.dataclass
class _Converted:
    """An ingested input waiting for its final name."""

    entry: Entry
    modality: str
    staged: Path
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    meta: dict[str, Any]
    order: int

    @property
    def rank(self) -> tuple[float, int, int]:
        """Primary first: finest voxels, then most voxels, then input order."""
        return (float(np.prod(self.spacing)), -int(np.prod(self.shape)), self.order)


@dataclasses.dataclass
class IngestResult:
    rows: list[ManifestRow]
    manifest: Path
    key: Path
    files: Path | None = None

    @property
    def n_ingested(self) -> int:
        return sum(r.status == INGESTED for r in self.rows)


def _display_path(path: Path) -> str:
    """`path` relative to the working directory (the convention for paths in manifests)."""
    return Path(os.path.relpath(path.resolve(), Path.cwd())).as_posix()


def _stage(volume: Volume, staging: Path, index: int) -> Path:
    dtype = storage_dtype(volume.data)
    return save_nifti(volume.data, volume.affine, staging / f"{index:05d}.nii.gz", dtype=dtype)


def ingest(input_dir: str | Path, out_dir: str | Path, cfg: IngestConfig | None = None) -> IngestResult:
    """Ingest everything under `input_dir` into `out_dir`; raise RuntimeError if nothing is usable.

    The manifest, `files.tsv` and the pseudonym key are written in either case; when nothing is usable also
    `why_nothing.tsv` (which a failed Snakemake job keeps), and the error message says the most common reasons.
    """
    cfg = cfg or IngestConfig()
    root = Path(input_dir).resolve()
    if not root.is_dir():  # the path itself stays out of the message (and so out of the log)
        raise FileNotFoundError("the input folder (input_dir) does not exist or is not a folder")
    out = Path(out_dir)
    matcher = ModalityMatcher(cfg.modality_patterns)
    skip_matcher = ModalityMatcher({"skip": list(cfg.skip_patterns)})
    staging = out / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (out / WHY_NOTHING).unlink(missing_ok=True)

    found = discover(root)
    skipped: list[Entry] = [Entry(row, [row.source]) for row in found.skipped]
    converted: list[_Converted] = []

    def convert(entry: Entry, modality: str, load: Callable[[], Volume], path: Path | None = None) -> bool:
        """Load one identified input and stage it, or record why not; False if it failed unexpectedly."""
        try:
            volume = load()
            staged = _stage(volume, staging, len(converted))
        except SkipInput as exc:
            entry.row.reason = str(exc)
            skipped.append(entry)
            return True
        except Exception as exc:  # one bad input never stops the run
            entry.row.reason = f"conversion failed: {describe_error(exc, path, root)}"
            skipped.append(entry)
            return False
        entry.row.reason = "; ".join(volume.notes)
        order = len(converted)
        converted.append(_Converted(entry, modality, staged, volume.spacing, volume.data.shape, volume.meta, order))
        return True

    with quiet_pydicom():
        for series in dicom_series.group_series(found.dicom):
            entry = Entry(ManifestRow(series.source), [f.rel for f in series.files])
            try:
                entry.key = dicom_series.subject_key(series)
                modality = dicom_series.classify(series, matcher, skip_matcher)
            except SkipInput as exc:
                entry.row.reason = str(exc)
                skipped.append(entry)
                continue
            except Exception as exc:
                entry.row.reason = f"unreadable header: {describe_error(exc, root=root)}"
                skipped.append(entry)
                continue
            files = dicom_series.SeriesFiles()
            if convert(entry, modality, lambda s=series, fs=files: dicom_series.load_series(s, cfg, fs)):
                skipped += split_left_out(entry, series, files)

        for path, rel in found.nifti:
            entry = Entry(ManifestRow(rel), [rel])
            try:
                entry.key, modality = nifti_inputs.identify(rel, matcher)
            except SkipInput as exc:
                entry.row.reason = str(exc)
                skipped.append(entry)
                continue
            convert(entry, modality, lambda p=path: nifti_inputs.load_nifti_volume(p, cfg.min_slices), path)

    pseudonyms = assign_pseudonyms(c.entry.key for c in converted)
    ordered = _place(converted, pseudonyms, out, cfg, skipped)
    for e in skipped:
        e.row.status = SKIPPED
        e.row.subject = pseudonyms.get(e.key, "") if e.key else ""
    ordered += sorted(skipped, key=lambda e: e.row.source)
    link(ordered)
    log_rows(ordered)
    rows = [e.row for e in ordered]
    _remove_stale(out, {Path(r.output).name for r in rows if r.output})
    shutil.rmtree(staging, ignore_errors=True)

    manifest = write_manifest(rows, out / MANIFEST)
    files_path = write_files(file_rows(ordered), out / FILES)
    key_path = write_key(pseudonyms, out / KEY)
    result = IngestResult(rows, manifest, key_path, files_path)
    n_ok = result.n_ingested
    log.info("ingested %d of %d inputs for %d subject(s); manifest: %s", n_ok, len(rows), len(pseudonyms),
             table_path(manifest))
    if n_ok == 0:
        why = out / WHY_NOTHING
        reasons = write_reasons(ordered, why)
        seen = (f"found {found.n_files} file(s): {len(found.dicom)} DICOM, {len(found.nifti)} NIfTI, all skipped "
                f"({dicom_series.count_reasons(reasons)}); each file and why: {table_path(why)}"
                if reasons else "found no file")
        raise RuntimeError(
            "nothing usable in the input folder: looked for DICOM series (any nesting, with or without file "
            f"extension), NIfTI files (.nii, .nii.gz) and BIDS datasets; {seen}"
        )
    return result


def _place(
    converted: list[_Converted],
    pseudonyms: dict[SubjectKey, str],
    out: Path,
    cfg: IngestConfig,
    skipped: list[Entry],
) -> list[Entry]:
    """Name, move and describe the staged volumes; the primary of each subject/modality first."""
    groups: dict[tuple[str, str], list[_Converted]] = defaultdict(list)
    for c in converted:
        groups[(pseudonyms[c.entry.key], c.modality)].append(c)
    placed: list[Entry] = []
    for (subject, modality), items in sorted(groups.items()):
        items.sort(key=lambda c: c.rank)
        primary_row = len(placed) + 1  # the primary is placed first: its manifest row
        for run, c in enumerate(items, start=1):
            row = c.entry.row
            row.subject, row.modality = subject, modality
            row.shape, row.spacing = format_shape(c.shape), format_spacing(c.spacing)
            if run > 1 and not cfg.keep_duplicates:
                row.reason = (f"another {modality} series of {subject} is primary (manifest row {primary_row}); "
                              "keep_duplicates is false")
                c.staged.unlink(missing_ok=True)
                skipped.append(c.entry)
                continue
            name = f"{subject}_{modality}" if run == 1 else f"{subject}_run-{run}_{modality}"
            target = out / subject / f"{name}.nii.gz"
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(c.staged, target)
            sidecar = {
                "modality": modality,
                "subject": subject,
                "run": run,
                "primary": run == 1,
                "shape": list(c.shape),
                "spacing_mm": [round(s, 6) for s in c.spacing],
                **c.meta,
                "notes": [n for n in row.reason.split("; ") if n],
            }
            write_text(target.with_name(f"{name}.json"), json.dumps(sidecar, indent=2) + "\n")
            row.status, row.output, row.primary = INGESTED, _display_path(target), "yes" if run == 1 else "no"
            if run > 1:
                extra = f"not primary: manifest row {primary_row} is the primary {modality} of {subject}"
                row.reason = "; ".join(x for x in (row.reason, extra) if x)
            placed.append(c.entry)
    return placed


def _remove_stale(out: Path, keep: set[str]) -> None:
    """Delete ingest outputs of an earlier run that this run did not write (same naming pattern only)."""
    for path in sorted(out.glob("sub-*/sub-*")):
        if path.name.endswith((".nii.gz", ".json")) and path.name.replace(".json", ".nii.gz") not in keep:
            path.unlink()
    for folder in out.glob("sub-*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
