"""`results/ingest/manifest.tsv`: one row per input series or stand-alone file, ingested or skipped and why."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from pipeline.io.atomic import write_text

INGESTED = "ingested"
SKIPPED = "skipped"

# The columns of the manifest, in order (docs/stages.md). `primary` is "yes" for the one series per subject and
# modality that later stages use, "no" for further series of the same modality (kept as run-2, run-3, ...).
COLUMNS = ("source", "status", "reason", "subject", "modality", "shape", "spacing", "output", "primary")


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


def _clean(value: str) -> str:
    """One line, no tabs: a TSV cell."""
    return " ".join(str(value).split())


def format_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(int(s)) for s in shape)


def format_spacing(spacing: tuple[float, ...]) -> str:
    return "x".join(f"{float(s):.4g}" for s in spacing)


def write_manifest(rows: list[ManifestRow], path: str | Path) -> Path:
    """Write `rows` as a tab-separated table with a header line, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_clean(getattr(row, c)) for c in COLUMNS])
    write_text(path, buf.getvalue())
    return Path(path)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a manifest written by `write_manifest` (missing trailing columns read as empty)."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        return [ManifestRow(**{c: (rec.get(c) or "") for c in COLUMNS}) for rec in reader]
