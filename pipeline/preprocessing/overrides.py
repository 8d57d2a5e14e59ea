"""The split override file (`preprocess.split.subjects_file`): the split that some subjects must be in.

A TSV with columns `subject` and `split` (train, val or test; a row with an empty split pins nothing) and an
optional `id_type`. `subject` is a pseudonym (`sub-003`) or, given the pseudonym key that ingest wrote
(`results/ingest/pseudonym_key.tsv`, see `pipeline.ingest.pseudonym`), the user's own ID as ingest took it: a BIDS
subject label (`01` or `sub-01`), a DICOM PatientID (PatientName or StudyInstanceUID where there was none), or the
name ingest derived from a NIfTI file's folder and name. An ID that names no subject of the data, or several, is an
error naming the file and the line; `id_type` (`pseudonym`, `bids`, `dicom` or `nifti`: the key's `source_kind`)
says which kind of ID a row means when one ID is both. Original IDs are never logged: messages name the file, the
line and pseudonyms only (an ID that matches nothing is named as written, so that it can be found and fixed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Mapping
from pathlib import Path

from pipeline.io.tables import SPLITS, read_tsv

log = logging.getLogger(__name__)

KEY_COLUMNS = ("subject", "source_kind", "original_id")  # pipeline.ingest.pseudonym.write_key's columns
PSEUDONYM = "pseudonym"
ID_TYPES = (PSEUDONYM, "bids", "dicom", "nifti")


@dataclasses.dataclass(frozen=True)
class Override:
    """One row of the override file that pins a subject: `subject` as written, its `split`, its `id_type`."""

    line: int
    subject: str
    split: str
    id_type: str = ""  # "" = any kind of ID


def _id(text: str) -> str:
    """An ID compared as the key stores it (runs of white space as one space, none at the ends)."""
    return " ".join(text.split())


def read_overrides(path: str | Path) -> list[Override]:
    """The rows of the override TSV at `path` that pin a subject (rows with an empty subject or split skipped)."""
    path = Path(path)
    rows = []
    for line, row in enumerate(read_tsv(path, ("subject", "split"), "split overrides"), start=2):
        subject, split, id_type = _id(row["subject"]), row["split"].strip(), row.get("id_type", "").strip()
        if not subject or not split:
            continue
        if split not in SPLITS:
            raise ValueError(f"{path}, line {line}: split {split!r} is not one of {', '.join(SPLITS)}")
        if id_type and id_type not in ID_TYPES:
            raise ValueError(f"{path}, line {line}: id_type {id_type!r} is not one of {', '.join(ID_TYPES)}")
        rows.append(Override(line, subject, split, id_type))
    return rows


def read_pseudonym_key(path: str | Path) -> dict[tuple[str, str], str]:
    """(source_kind, original_id) -> pseudonym, from ingest's `pseudonym_key.tsv`."""
    rows = read_tsv(path, KEY_COLUMNS, "pseudonym key", "written by the ingest stage")
    return {(row["source_kind"], _id(row["original_id"])): row["subject"] for row in rows}


def _matches(entry: Override, subjects: Collection[str], key: Mapping[tuple[str, str], str]) -> dict[str, str]:
    """Pseudonym -> the kind of ID `entry.subject` is of it (`pseudonym`, or the key's source_kind)."""
    found = {}
    if entry.id_type in ("", PSEUDONYM) and entry.subject in subjects:
        found[entry.subject] = PSEUDONYM
    for (kind, original), pseudonym in key.items():
        if entry.id_type not in ("", kind):
            continue
        forms = (original, f"sub-{original}") if kind == "bids" else (original,)
        if entry.subject in forms:
            found.setdefault(pseudonym, kind)
    return found


def resolve_overrides(
    entries: list[Override],
    subjects: Collection[str],
    key: Mapping[tuple[str, str], str] | None,
    path: str | Path,
) -> dict[str, str]:
    """Pseudonym -> split for the override `entries` (read from `path`), given the data's `subjects`.

    `key` is the pseudonym key (`read_pseudonym_key`), or None: then only pseudonyms are accepted. Raises
    ValueError for an ID that names no subject or several, and for a subject pinned to two different splits.
    """
    pinned: dict[str, Override] = {}
    for entry in entries:
        where = f"{path}, line {entry.line}"
        found = _matches(entry, subjects, key or {})
        if not found:
            known = ("neither a pseudonym of the data nor an original ID in the pseudonym key" if key is not None
                     else "not a pseudonym of the data (sub-NNN); the user's own IDs are looked up only when the "
                     "preprocess stage is given the pseudonym key (--pseudonym-key results/ingest/pseudonym_key.tsv)")
            raise ValueError(f"{where}: subject {entry.subject!r} is {known}")
        if len(found) > 1:
            what = ", ".join(f"the pseudonym {p}" if kind == PSEUDONYM else f"the {kind} ID of {p}"
                             for p, kind in sorted(found.items()))
            raise ValueError(f"{where}: the subject ID is {what}; say which is meant in an id_type column "
                             f"({', '.join(ID_TYPES)})")
        ((pseudonym, _),) = found.items()
        if pseudonym not in subjects:
            raise ValueError(f"{where}: the subject is {pseudonym}, which has no ingested scan in the manifest")
        first = pinned.setdefault(pseudonym, entry)
        if first.split != entry.split:
            raise ValueError(f"{path}, lines {first.line} and {entry.line}: {pseudonym} is pinned to both "
                             f"{first.split} and {entry.split}")
    return {pseudonym: entry.split for pseudonym, entry in pinned.items()}


def load_overrides(
    path: str | Path | None, subjects: Collection[str], key_path: str | Path | None = None
) -> dict[str, str]:
    """Pseudonym -> split pinned by the override file at `path` ({} when `path` is empty or no file).

    Original IDs are looked up in the pseudonym key at `key_path` (read only when the file pins a subject).
    """
    if not path or not Path(path).is_file():
        return {}
    entries = read_overrides(path)
    key = read_pseudonym_key(key_path) if key_path and entries else None
    overrides = resolve_overrides(entries, subjects, key, path)
    if overrides:
        by_original = sum(1 for e in entries if e.subject not in subjects or e.id_type not in ("", PSEUDONYM))
        log.info("split: %d subject(s) pinned by %s (%d named by original ID)", len(overrides), path, by_original)
    return overrides
