"""A user's own folder, end to end: a T1w-only cohort in a folder named like a person runs to a report with the
super-resolution results and a "not evaluated" note for translation, and neither the folder's path nor any of its
folder names reaches logs/, reports/ or results/models/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.workflow.test_end_to_end import TINY

PERSON = "Doe_John_MRN12345"  # folder names often hold a patient's name or record number
INNER = "Roe_Jane_19700101"


def _snakemake(work: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
           "--configfile", str(REPO / "config" / "config.yaml"), str(work / "tiny.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout)


def _demo(out: Path, n_subjects: int) -> Path:
    params = json.dumps({"n_subjects": n_subjects, "n_dicom": 0, "voxel_mm": 4.0})
    subprocess.run([sys.executable, "-m", "pipeline", "demo", "--out", str(out), "--params", params], check=True,
                   capture_output=True)
    return out / "bids"


def _failure(proc: subprocess.CompletedProcess, work: Path) -> str:
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
    return f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}"


@pytest.fixture(scope="module")
def t1w_only_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    bids = _demo(root / "demo", 5)
    scans = root / PERSON / INNER
    for src in bids.rglob("*_T1w.nii.gz"):  # T1w only: no translation pair anywhere
        dest = scans / src.relative_to(bids)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    work = root / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "input_dir": str(root / PERSON)}))
    proc = _snakemake(work)
    assert proc.returncode == 0, _failure(proc, work)
    return work, root / PERSON, proc.stdout + proc.stderr


def test_t1w_only_cohort_reports_sr_and_says_translation_was_not_evaluated(t1w_only_run):
    work, _, out = t1w_only_run
    assert "cyclegan (cyclegan) is skipped: no training subject has T1w and T2w" in out
    assert list((work / "results/infer/srgan").glob("sub-*_sr.nii.gz"))
    assert not (work / "results/models/cyclegan").exists(), "a family without data was trained"
    summary = json.loads((work / "results/metrics/summary.json").read_text())
    assert "sr" in summary["tasks"] and "translation" not in summary["tasks"]
    index = (work / "reports/index.html").read_text()
    assert "not evaluated" in index and "no training subject has T1w and T2w" in index


def test_input_paths_never_reach_logs_reports_or_models(t1w_only_run):
    work, folder, _ = t1w_only_run
    needles = {str(folder), folder.name, INNER}
    leaks = []
    for root in (work / "logs", work / "reports", work / "results" / "models"):
        for path in root.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                leaks += [f"{path.relative_to(work)}: {n}" for n in needles if n.encode() in data]
    assert not leaks, leaks


@pytest.fixture(scope="module")
def test_split_without_t2w_run(tmp_path_factory):
    """Every subject has T1w; only the training and validation subjects have T2w. The split is pinned by the
    subjects' own BIDS labels (the override file maps them through the pseudonym key)."""
    root = tmp_path_factory.mktemp("cohort")
    bids = _demo(root / "demo", 5)
    scans = root / "scans"
    test_subjects = {"demo04", "demo05"}
    for src in [*bids.rglob("*_T1w.nii.gz"), *bids.rglob("*_T2w.nii.gz")]:
        label = src.name.split("_")[0].removeprefix("sub-")
        if src.name.endswith("_T2w.nii.gz") and label in test_subjects:
            continue
        dest = scans / src.relative_to(bids)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    work = root / "work"
    work.mkdir()
    split = work / "split.tsv"
    split.write_text("subject\tsplit\n" + "".join(f"demo0{i}\t{'test' if f'demo0{i}' in test_subjects else 'train'}\n"
                                               for i in range(1, 6)))
    preprocess = {**TINY["preprocess"], "split": {"train": 0.6, "val": 0.0, "test": 0.4, "subjects_file": str(split)}}
    (work / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "input_dir": str(scans), "preprocess": preprocess}))
    proc = _snakemake(work)
    assert proc.returncode == 0, _failure(proc, work)
    return work, proc.stdout + proc.stderr


def test_a_cohort_whose_test_split_lacks_t2w_still_reports(test_split_without_t2w_run):
    work, out = test_split_without_t2w_run
    assert "cyclegan (cyclegan) is skipped: no test subject has T1w and T2w" in out
    subjects = (work / "results/preprocess/subjects.tsv").read_text().splitlines()
    assert sum(line.split("\t")[1] == "test" for line in subjects[1:]) == 2  # the override by original IDs held
    assert len(list((work / "results/infer/srgan").glob("sub-*_sr.nii.gz"))) == 2
    assert not (work / "results/models/cyclegan").exists()
    index = (work / "reports/index.html").read_text()
    assert "not evaluated" in index and "no test subject has T1w and T2w" in index


def _planned(work: Path) -> str:
    proc = _snakemake(work, "-n", timeout=300)
    assert proc.returncode == 0, _failure(proc, work)
    return proc.stdout + proc.stderr


def test_reruns_follow_the_input_folder(t1w_only_run):
    work, folder, _ = t1w_only_run
    assert "Nothing to be done" in _planned(work)
    scan = next(folder.rglob("*_T1w.nii.gz"))
    extra = scan.with_name(scan.name.replace("_T1w", "_run-2_T1w"))
    shutil.copy(scan, extra)  # a scan added
    try:
        assert "ingest_scans" in _planned(work)
    finally:
        extra.unlink()  # ... and removed again: back to the recorded set of inputs
    assert "Nothing to be done" in _planned(work)
    before, original = scan.stat(), scan.read_bytes()
    other = next(p for p in folder.rglob("*_T1w.nii.gz") if p != scan)
    shutil.copy(other, scan)  # a scan changed (its content: a newer file with the same bytes is not a change)
    try:
        assert "ingest_scans" in _planned(work)
    finally:
        scan.write_bytes(original)
        os.utime(scan, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert "Nothing to be done" in _planned(work)
