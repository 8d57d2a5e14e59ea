"""Stable pseudonyms: `sub-001`, `sub-002`, ... ordered by a hash of the original subject ID.

The same set of inputs always gives the same pseudonyms. The only link back to the original IDs is the key
file (`pseudonym_key.tsv`) written here; only the preprocess stage reads it, to map the original IDs of the
split override file (no report, log or model file holds them).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

from pipeline.io.atomic import write_text

# An original subject: (kind, id), kind one of "dicom" (PatientID or a fallback), "bids" (subject label),
# "nifti" (file-name stem). Kinds are kept apart so a BIDS label never collides with a DICOM PatientID.
SubjectKey = tuple[str, str]


def _digest(key: SubjectKey) -> str:
    return hashlib.sha256(f"{key[0]}\0{key[1]}".encode()).hexdigest()


def assign_pseudonyms(keys: Iterable[SubjectKey]) -> dict[SubjectKey, str]:
    """Map each distinct original subject to `sub-NNN` (at least 3 digits), numbered in hash order."""
    unique = sorted(set(keys), key=_digest)
    width = max(3, len(str(len(unique))))
    return {key: f"sub-{i:0{width}d}" for i, key in enumerate(unique, start=1)}


def write_key(mapping: dict[SubjectKey, str], path: str | Path) -> Path:
    """Write the pseudonym key (`subject  source_kind  original_id`), sorted by pseudonym, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(("subject", "source_kind", "original_id"))
    for key, pseudonym in sorted(mapping.items(), key=lambda kv: kv[1]):
        writer.writerow((pseudonym, key[0], " ".join(key[1].split())))
    write_text(path, buf.getvalue())
    return Path(path)
