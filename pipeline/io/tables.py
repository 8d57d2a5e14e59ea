"""The tables the stages pass on: `results/ingest/manifest.tsv` (with `files.tsv` beside it),
`results/preprocess/subjects.tsv` and the infer job's `results/infer/<output>/outputs.tsv`.

The one reader and writer of each, and the one rule for resolving the paths they hold (`resolve_path`).
Paths are written relative to the working directory (`table_path`); a table read from elsewhere (another
working directory, a copied results folder) still finds its files.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.io.atomic import write_text

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------ paths
def resolve_path(value: str | Path, table: str | Path) -> Path:
    """Resolve a path read from a table in `results/<stage>/`.

    Tried in turn: as given (absolute, or relative to the current directory), relative to the working
    directory the table implies (two levels above its folder), and relative to the table's folder. Returns the
    first that exists, else the first candidate.
    """
    path = Path(value)
    if path.is_absolute():
        return path
    table = Path(table)
    candidates = [path, table.parent.parent.parent / path, table.parent / path]
    return next((c for c in candidates if c.exists()), candidates[0])


def table_path(path: str | Path) -> str:
    """A path for a table: relative to the working directory when below it, else absolute."""
    path = Path(path).absolute()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.as_posix()


def _cell(value: Any) -> str:
    """One line, no tabs: a TSV cell."""
    return " ".join(str(value).split())


def _write_tsv(path: str | Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]],
               cell: Callable[[Any], str] = _cell) -> Path:
    """Write a header line and `rows` (each cell through `cell`), atomically; csv quotes what needs it."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c, "")) for c in columns])
    write_text(path, buf.getvalue())
    return Path(path)


def read_tsv(path: str | Path, required: Sequence[str], what: str = "table", hint: str = "") -> list[dict[str, str]]:
    """The rows of a tab-separated table with a header line, as column -> text ("" where empty).

    Raises FileNotFoundError (naming `what`, and `hint` if given) when there is no file, ValueError when a
    `required` column is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found" + (f" ({hint})" if hint else ""))
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        return [{k: (v or "") for k, v in rec.items() if k is not None} for rec in reader]


# ------------------------------------------------------------------------------------------ outputs.tsv (infer)
LISTING_COLUMNS = ("input", "output", "note")


def write_listing(path: str | Path, pairs: Sequence[tuple[str | Path, str | Path]], notes: Mapping[str, str]) -> Path:
    """The infer job's listing of the scans written: (input, output, note); `note` is the output's
    `Family.outcome_note` (empty where the model made it as usual)."""
    return _write_tsv(path, LISTING_COLUMNS, [{"input": i, "output": o, "note": notes.get(str(o), "")} for i, o in pairs])


def listing_notes(folder: str | Path) -> dict[str, str]:
    """{output file name: note} of the infer listing in `folder` (``outputs.tsv``), for the outputs the model did
    not make as usual (an inpainting self-check's interpolation); {} without a listing."""
    listing = Path(folder) / "outputs.tsv"
    if not listing.is_file():
        return {}
    return {Path(r["output"]).name: r["note"] for r in read_tsv(listing, ("output",), "infer listing") if r.get("note")}


def listing_note(image: str | Path) -> str | None:
    """The note the infer listing beside `image` gives it (`listing_notes`); None without one."""
    return listing_notes(Path(image).parent).get(Path(image).name)


# ------------------------------------------------------------------------------------------ manifest.tsv
INGESTED = "ingested"
SKIPPED = "skipped"

# The columns of the manifest, in order (docs/stages.md). `primary` is "yes" for the one series per subject and
# modality that later stages use, "no" for further series of the same modality (kept as run-2, run-3, ...).
MANIFEST_COLUMNS = ("source", "status", "reason", "subject", "modality", "shape", "spacing", "output", "primary")


@dataclasses.dataclass
class ManifestRow:
    """One input series (DICOM) or file (NIfTI, or anything skipped)."""

    source: str
    status: str = SKIPPED
    reason: str = ""
    subject: str = ""
    modality: str = ""
    shape: str = ""
    spacing: str = ""
    output: str = ""
    primary: str = ""


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def format_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{float(s):.4g}" for s in spacing)


def write_manifest(rows: Sequence[ManifestRow], path: str | Path) -> Path:
    """Write `rows` as a tab-separated table with a header line, atomically."""
    return _write_tsv(path, MANIFEST_COLUMNS, [dataclasses.asdict(r) for r in rows])


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Every row of a manifest (missing trailing columns read as empty)."""
    path = Path(path)
    rows = read_tsv(path, ("subject", "modality", "status", "output"), "manifest", "run the ingest stage first")
    return [ManifestRow(**{c: rec.get(c, "") for c in MANIFEST_COLUMNS}) for rec in rows]


def ingested_scans(manifest: str | Path) -> dict[str, dict[str, Path]]:
    """The scans later stages use: subject -> modality -> NIfTI path (checked to exist).

    Rows whose `primary` column says "no" (further series of a modality) are left out; of several remaining
    rows for one subject and modality the first is used.
    """
    manifest = Path(manifest)
    scans: dict[str, dict[str, Path]] = {}
    for line, row in enumerate(read_manifest(manifest), start=2):
        if row.status != INGESTED:
            continue
        if row.primary.strip().lower() == "no":  # a further series of the same modality
            log.debug("%s line %d: not the primary %s series; skipped", manifest, line, row.modality)
            continue
        subject, modality, output = row.subject.strip(), row.modality.strip(), row.output.strip()
        if not subject or not modality or not output:
            raise ValueError(f"{manifest}, line {line}: an ingested row needs subject, modality and output")
        path = resolve_path(output, manifest)
        if not path.is_file():
            raise FileNotFoundError(f"{manifest}, line {line}: output {output!r} does not exist")
        by_modality = scans.setdefault(subject, {})
        if modality in by_modality:
            log.warning("%s: several %s scans; using %s, ignoring %s", subject, modality, by_modality[modality],
                        output)
            continue
        by_modality[modality] = path
    if not scans:
        raise ValueError(f"{manifest}: no row with status 'ingested'; nothing to preprocess")
    return scans


# ------------------------------------------------------------------------------------------ files.tsv
# Beside the manifest: one row per input file (every file the walk of input_dir finds), so that each file's fate
# can be looked up. `manifest_row` is the 1-based data row of manifest.tsv the file went into (empty if none).
FILES_COLUMNS = ("file", "status", "reason", "manifest_row")
# Written only when nothing was usable (a file Snakemake does not delete with the failed job's outputs): every
# input file, why it was not used, and the input (its series, or itself) it was judged as.
WHY_NOTHING_COLUMNS = ("file", "reason", "input")


@dataclasses.dataclass
class FileRow:
    """One input file (relative to input_dir): the status of the manifest row it went into, its reason (its own,
    or its row's when skipped), and that row's number."""

    file: str
    status: str = SKIPPED
    reason: str = ""
    manifest_row: int | None = None


def write_files(rows: Sequence[FileRow], path: str | Path) -> Path:
    """Write `files.tsv` atomically (file names exactly as they are: csv quotes a tab or newline in one)."""
    records = [{**dataclasses.asdict(r), "manifest_row": "" if r.manifest_row is None else r.manifest_row}
               for r in rows]
    return _write_tsv(path, FILES_COLUMNS, records, cell=str)


def read_files(path: str | Path) -> list[FileRow]:
    """Every row of a `files.tsv`."""
    rows = read_tsv(path, FILES_COLUMNS, "file table", "run the ingest stage first")
    return [FileRow(r["file"], r["status"], r["reason"], int(r["manifest_row"]) if r["manifest_row"] else None)
            for r in rows]


def write_why_nothing(rows: Sequence[tuple[str, str, str]], path: str | Path) -> Path:
    """Write `why_nothing.tsv` (file, reason, input) atomically."""
    return _write_tsv(path, WHY_NOTHING_COLUMNS, [dict(zip(WHY_NOTHING_COLUMNS, r, strict=True)) for r in rows],
                      cell=str)


# ------------------------------------------------------------------------------------------ subjects.tsv
SPLITS = ("train", "val", "test")
SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def subjects_columns(modalities: Sequence[str], lr_modalities: Sequence[str], derived: Sequence[str] = ()) -> list[str]:
    """The columns of `subjects.tsv`: subject, split, one per modality, mask, one per SR input, then the other
    derived inputs (`derived`, e.g. the motion-corrupted ``T1w_motion``)."""
    return ["subject", "split", *modalities, "mask", *[f"{m}_lr" for m in lr_modalities],
            *[c for c in dict.fromkeys(derived)]]


def write_subjects(rows: Sequence[Mapping[str, Any]], modalities: Sequence[str], lr_modalities: Sequence[str],
                   path: str | Path, derived: Sequence[str] = ()) -> Path:
    """Write `subjects.tsv` atomically (paths as `table_path` gives them; empty where a subject lacks one).

    Cells are written as given (a path keeps its spaces), not collapsed to one line like the manifest's.
    """
    columns = subjects_columns(modalities, lr_modalities, derived)
    return _write_tsv(path, columns, [{c: row.get(c) or "" for c in columns} for row in rows], cell=str)


def read_subjects(path: str | Path, splits: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Rows of `subjects.tsv` (of `splits` when given): ``subject`` and ``split`` as strings, every other column
    a resolved `Path`, or None where empty."""
    path = Path(path)
    rows = read_tsv(path, ("subject", "split"), "subjects table", "run the preprocess stage first")
    wanted = None if splits is None else ({splits} if isinstance(splits, str) else set(splits))
    out = []
    for line, row in enumerate(rows, start=2):
        if not SUBJECT_RE.match(row["subject"]):
            raise ValueError(f"{path}, line {line}: subject label {row['subject']!r} is not a pseudonym like sub-001")
        if row["split"] not in SPLITS:
            raise ValueError(f"{path}, line {line}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
        if wanted is not None and row["split"] not in wanted:
            continue
        item: dict[str, Any] = {"subject": row["subject"], "split": row["split"]}
        for key, value in row.items():
            if key not in item:
                item[key] = resolve_path(value, path) if value else None
        out.append(item)
    return out
