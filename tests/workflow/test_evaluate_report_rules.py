"""rules/evaluate.smk and rules/report.smk in a small workflow whose preprocessing and inference are stand-ins
(copies of the synthetic cohort in tests/unit/eval_helpers.py): the rules take the outputs the families of
`models:` export, plan, run, and `snakemake --report` collects the figures marked with report(); a cohort whose
test subjects lack T2w still runs to a report, with CycleGAN "not evaluated"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.unit.eval_helpers import NO_T2W, make_cohort

SNAKEFILE = f"""
configfile: "{REPO}/config/config.yaml"
include: "{REPO}/rules/common.smk"

checkpoint preprocess_scans:
    output: subjects="results/preprocess/subjects.tsv", manifest="results/ingest/manifest.tsv"
    shell: "cp -r stash/results/preprocess stash/results/ingest stash/results/benchmarks stash/results/models results/"

rule infer_stand_in:
    input: "results/preprocess/subjects.tsv"
    output: "results/infer/{{model}}/outputs.tsv"
    shell: "cp stash/results/infer/{{wildcards.model}}/*.nii.gz $(dirname {{output}}) && touch {{output}}"

include: "{REPO}/rules/evaluate.smk"
include: "{REPO}/rules/report.smk"

rule all:
    input: final_targets()
    default_target: True
"""
# The stand-in cohort's LR inputs are 2x in-plane k-space truncations (evaluation checks them against this).
FAST = ("input_dir: stash\npreprocess:\n  sr:\n    scale: 2\n    method: kspace\n    axes: inplane\n"
        "evaluate:\n  bootstrap_resamples: 1000\n  figure_dpi: 60\n"
        "export:\n  bids: false\n")  # this stand-in workflow has no export rules


def _workflow(tmp_path: Path, *, test_t2w: bool = True) -> Path:
    table = make_cohort(tmp_path / "stash")
    if not test_t2w:  # the test subjects have no T2w: no CycleGAN output can be scored
        lines = table.read_text().splitlines()
        col = lines[0].split("\t").index("T2w")
        rows = [line.split("\t") for line in lines[1:]]
        for row in rows:
            if row[1] == "test":
                row[col] = ""
        table.write_text("\n".join([lines[0], *("\t".join(r) for r in rows)]) + "\n")
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "fast.yaml").write_text(FAST)
    return tmp_path


def _snakemake(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--configfile", str(REPO / "config/config.yaml"), "fast.yaml", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_rules_plan_evaluation_and_report(tmp_path):
    wf = _workflow(tmp_path)
    out = _snakemake(wf, "-n", "--cores", "1")
    text = out.stdout + out.stderr
    assert "evaluate_models" in text and "build_report" in text


@pytest.mark.slow
def test_rules_run_and_snakemake_report(tmp_path):
    wf = _workflow(tmp_path)
    _snakemake(wf, "--cores", "2")
    assert (wf / "reports/index.html").is_file()
    assert sorted(p.name for p in (wf / "results/metrics").iterdir()) == [
        "cyclegan.csv", "srgan.csv", "srresnet.csv", "summary.json"]
    log = (wf / "logs/evaluate_models.log").read_text()
    assert "sr sub-002: scoring 3 baseline(s) and 2 model(s)" in log and "translation sub-002" in log
    # One training curve per family; SRResNet's is SRGAN's (its pretraining phase).
    assert sorted(p.name for p in (wf / "reports/assets/training").iterdir()) == ["cyclegan.png", "srgan.png"]
    _snakemake(wf, "--cores", "1", "--report", "report.html")
    html = (wf / "report.html").read_text(errors="replace")
    assert "summary.json" in html and "srgan.png" in html


@pytest.mark.slow
def test_a_cohort_without_test_t2w_runs_to_a_report(tmp_path):
    """The workflow skips CycleGAN (no test subject has T2w): SR is evaluated and reported, CycleGAN's CSV is
    the header only and the report says why it is missing."""
    wf = _workflow(tmp_path, test_t2w=False)
    _snakemake(wf, "--cores", "2")
    metrics = wf / "results/metrics"
    assert sorted(p.name for p in metrics.iterdir()) == ["cyclegan.csv", "srgan.csv", "srresnet.csv", "summary.json"]
    assert len((metrics / "cyclegan.csv").read_text().splitlines()) == 1
    assert len((metrics / "srgan.csv").read_text().splitlines()) > 1
    assert not (wf / "results/infer/cyclegan").exists()
    index = (wf / "reports/index.html").read_text()
    assert f"<b>cyclegan</b> — not evaluated: {NO_T2W}" in index and 'id="verdict-srgan"' in index
