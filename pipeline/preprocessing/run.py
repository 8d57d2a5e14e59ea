"""Stage 3 from end to end: read the manifest, split, preprocess every subject, write `subjects.tsv` last."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipeline.config import PreprocessConfig, to_dict
from pipeline.io.tables import SPLITS, ingested_scans, table_path, write_subjects
from pipeline.preprocessing.overrides import load_overrides
from pipeline.preprocessing.split import assign_splits
from pipeline.preprocessing.subject import MODALITIES, modality_order, preprocess_subject

log = logging.getLogger(__name__)


def preprocess(manifest: str | Path, out_dir: str | Path, cfg: PreprocessConfig, seed: int,
               pseudonym_key: str | Path | None = None) -> Path:
    """Preprocess every subject the ingest `manifest` lists into `out_dir`; return the `subjects.tsv` written.

    The split is seeded by `seed` (the top-level config seed); `cfg.split.subjects_file`, when it exists,
    pins the subjects it names, by pseudonym or, with ingest's `pseudonym_key` file, by the user's own IDs.
    The split is made (and checked: every split with a share > 0 needs a subject) before any image is read.
    """
    out_dir = Path(out_dir)
    scans = ingested_scans(manifest)
    log.info("preprocess: %d subject(s); config %s", len(scans), json.dumps(to_dict(cfg), sort_keys=True))

    overrides = load_overrides(cfg.split.subjects_file, set(scans), pseudonym_key)
    ratios = {"train": cfg.split.train, "val": cfg.split.val, "test": cfg.split.test}
    splits = assign_splits(list(scans), ratios, seed, overrides)

    rows = []
    for subject in sorted(scans):
        started = time.perf_counter()
        written = preprocess_subject(subject, scans[subject], cfg, out_dir, seed=seed)
        row = {"subject": subject, "split": splits[subject]}
        row.update({name: table_path(p) for name, p in written.items()})
        rows.append(row)
        log.info(
            "%s (%s): %s in %.1f s",
            subject,
            splits[subject],
            ", ".join(written),
            time.perf_counter() - started,
        )

    all_modalities = {m for s in scans.values() for m in s}
    table = write_subjects(rows, modality_order(all_modalities | set(MODALITIES)), cfg.sr.modalities,
                           out_dir / "subjects.tsv", derived=[f"{m}_motion" for m in cfg.motion.modalities]
                           + [f"{m}_gaps" for m in cfg.gaps.modalities]
                           + [f"{m}_thick" for m in cfg.thick.modalities])
    counts = {s: sum(1 for v in splits.values() if v == s) for s in SPLITS}
    log.info("wrote %s (train %d, val %d, test %d)", table, *counts.values())
    return table
