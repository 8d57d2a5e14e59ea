"""The whole demo cohort under one folder, built aside and moved into place (`generate_demo`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from pipeline import __version__
from pipeline.config import DemoConfig
from pipeline.demo.simulate import load_template, simulate_subject
from pipeline.demo.write import write_bids_subject, write_dicom_subject
from pipeline.io.atomic import write_text

log = logging.getLogger(__name__)


def _tsv(rows: list[dict[str, object]]) -> str:
    header = list(rows[0])
    return "\n".join(["\t".join(header), *("\t".join(str(r[h]) for h in header) for r in rows)]) + "\n"


def _write_subject(cfg: DemoConfig, index: int, work: Path) -> tuple[dict[str, object], dict[str, object] | None]:
    """Simulate subject `index` and write it under `work`: (its participants.tsv row, its BIDS participants row)."""
    start = time.perf_counter()
    subject = simulate_subject(cfg, index)
    bids_row = None
    if index < cfg.n_dicom:
        where, fmt = write_dicom_subject(cfg, subject, work / "dicom"), "dicom"
    else:
        where, fmt = write_bids_subject(subject, work / "bids"), "bids"
        bids_row = {"participant_id": f"sub-{subject.label}", "sex": subject.sex, "age": subject.age}
    log.info("%s: %s, %s, %.1f s", subject.label, fmt, "x".join(map(str, subject.images["T1w"].shape)),
             time.perf_counter() - start)
    row = {"subject": subject.label, "format": fmt, "path": where.relative_to(work).as_posix(),
           "sex": subject.sex, "age": subject.age}
    return row, bids_row


def generate_demo(cfg: DemoConfig, out: str | Path, workers: int = 1) -> Path:
    """Write the whole cohort under `out` (see `pipeline.demo`); return the participants.tsv path.

    Everything is built in a hidden folder inside `out` and moved into place at the end, replacing `dicom/`
    and `bids/` of an earlier run; `participants.tsv` is removed first and written last. Subjects are simulated
    by `workers` processes (each subject depends only on the seed and its index: the files are the same).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    participants = out / "participants.tsv"
    participants.unlink(missing_ok=True)
    for stale in out.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    try:
        indices = range(cfg.n_subjects)
        if workers > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            load_template(cfg.voxel_mm)  # read once, before the workers fork
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                results = list(pool.map(_write_subject, [cfg] * len(indices), indices, [work] * len(indices)))
        else:
            results = [_write_subject(cfg, index, work) for index in indices]
        rows = [row for row, _ in results]
        bids_rows = [b for _, b in results if b is not None]
        if bids_rows:
            description = {
                "Name": "medgan-pipeline demo cohort (simulated from the MNI152 2009 template)",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": "medgan-pipeline demo", "Version": __version__}],
            }
            write_text(work / "bids" / "dataset_description.json", json.dumps(description, indent=2) + "\n")
            write_text(work / "bids" / "participants.tsv", _tsv(bids_rows))
        for name in ("dicom", "bids"):
            if (out / name).exists():
                shutil.rmtree(out / name)
            if (work / name).exists():
                os.replace(work / name, out / name)
        write_text(participants, _tsv(rows))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return participants
