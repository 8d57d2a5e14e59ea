"""Every input file accounted for: the manifest rows with the files each stands for, `files.tsv`, the log.

A DICOM series' row stands for the files it was judged on; a file (or some frames of one) left out of a series
has its own row, whose reason names the problem and the series' row. `files.tsv` gives every file the walk
found its status, reason and manifest row. When nothing is usable, `why_nothing.tsv` (not a declared output
of the rule, so Snakemake keeps it when it deletes the failed job's outputs) lists every file with its reason
and the input it was judged as. The log names manifest row numbers and pseudonyms, never a path: folder and
file names can hold patient names or record numbers (`source` stays in manifest.tsv and files.tsv, the
user's own index beside the pseudonym key).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from pipeline.ingest.dicom_series import Series, SeriesFiles
from pipeline.ingest.pseudonym import SubjectKey
from pipeline.io.tables import INGESTED, SKIPPED, FileRow, ManifestRow, write_why_nothing

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class Entry:
    """A manifest row and the input files (relative to input_dir) it stands for."""

    row: ManifestRow
    files: list[str]
    key: SubjectKey | None = None
    #: a member file's own reason: frames of it left out, or (`all_bad`) why it was unusable
    own: dict[str, str] = dataclasses.field(default_factory=dict)
    #: no file of the series was usable: `own` replaces the row's reason for each file
    all_bad: bool = False
    #: a file, or frames of one, left out of a series: that series' entry
    series: Entry | None = None
    #: the file whose left-out frames this row stands for (the file itself stays in `series`)
    frames_of: str = ""
    #: the row's reason before references to other rows were added
    problem: str = ""
    #: member file -> the manifest row of its left-out frames
    frames_row: dict[str, int] = dataclasses.field(default_factory=dict)


def split_left_out(entry: Entry, series: Series, files: SeriesFiles) -> list[Entry]:
    """Take the files `load_series` left out of `series` off its entry (after its conversion): one entry each."""
    if files.all_bad:  # one row for the series; each file keeps its own reason in files.tsv
        if len(series.files) > 1:
            entry.own, entry.all_bad = dict(files.left_out), True
        return []
    if not (files.left_out or files.frames_left_out):
        return []
    used = files.used(series)
    entry.files = [f.rel for f in used]
    entry.row.source = Series(series.uid, used).source
    notes = [n for n in entry.row.reason.split("; ") if n]
    if files.left_out:
        notes.append(f"{len(files.left_out)} file(s) left out of the series, each in its own manifest row")
    if files.frames_left_out:
        notes.append(f"frames of {len(files.frames_left_out)} file(s) left out, each in its own manifest row")
    entry.row.reason = "; ".join(notes)
    entry.own = {}
    out = [Entry(ManifestRow(rel, reason=why), [rel], entry.key, series=entry) for rel, why in files.left_out.items()]
    for rel, why in files.frames_left_out.items():
        entry.own[rel] = why
        out.append(Entry(ManifestRow(rel, reason=why), [], entry.key, series=entry, frames_of=rel))
    return out


def link(ordered: list[Entry]) -> None:
    """Name each left-out row's series by its manifest row (1-based, as `files.tsv` counts)."""
    number = {id(e): n for n, e in enumerate(ordered, start=1)}
    for e in ordered:
        e.problem = e.row.reason
    for n, e in enumerate(ordered, start=1):
        if e.series is not None:
            e.row.reason = f"{e.problem}; left out of the series in manifest row {number[id(e.series)]}"
            if e.frames_of:
                e.series.frames_row[e.frames_of] = n


def _file_reason(e: Entry, rel: str, refs: bool = True) -> str:
    """Why file `rel` of entry `e` was not used (or which of its frames were not); `refs`: with row numbers."""
    own = e.own.get(rel, "")
    if own and refs and rel in e.frames_row:
        own = f"{own} (manifest row {e.frames_row[rel]})"
    if e.row.status != SKIPPED or (own and e.all_bad):
        return own
    row_reason = e.row.reason if refs else e.problem
    return "; ".join(x for x in (own, row_reason) if x)


def file_rows(ordered: list[Entry]) -> list[FileRow]:
    """One row per input file, sorted by name: its row's status, its reason, the row's number."""
    rows = [FileRow(rel, e.row.status, _file_reason(e, rel), n)
            for n, e in enumerate(ordered, start=1) for rel in e.files]
    return sorted(rows, key=lambda r: r.file)


def file_problems(ordered: list[Entry]) -> list[tuple[str, str, str]]:
    """(file, why it was not used, the input it was judged as) for every input file, sorted by name."""
    return sorted((rel, _file_reason(e, rel, refs=False), (e.series or e).row.source)
                  for e in ordered for rel in e.files)


def write_reasons(ordered: list[Entry], path: Path) -> list[str]:
    """Write `why_nothing.tsv`; return each file's reason (for the most common ones in the error message)."""
    rows = file_problems(ordered)
    write_why_nothing(rows, path)
    return [reason for _, reason, _ in rows]


def log_rows(ordered: list[Entry]) -> None:
    """One line per manifest row: its number, pseudonym and reason; no path of the input."""
    for n, e in enumerate(ordered, start=1):
        r = e.row
        if r.status == INGESTED:
            log.info("manifest row %d: %s %s ingested (%s voxels of %s mm) as %s", n, r.subject, r.modality,
                     r.shape, r.spacing, r.output)
            continue
        level = logging.DEBUG if r.reason.startswith("not an image file") else logging.INFO
        log.log(level, "manifest row %d skipped%s: %s", n, f" ({r.subject})" if r.subject else "", r.reason)
