"""The workflow plans, lints clean and rejects bad configs before any job runs."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO

SNAKEFILE = REPO / "Snakefile"
CONFIG = REPO / "config" / "config.yaml"


def snakemake(*args, cwd, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(cwd), *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_dry_run_plans_the_chain(tmp_path):
    proc = snakemake("-n", "--configfile", str(CONFIG), "--cores", "2", cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "generate_demo" in out
    assert "all" in out


def test_lint_is_clean(tmp_path):
    """`snakemake --lint` finds nothing but its advice to give each rule a conda environment or container: the
    rules run `python -m pipeline` of the environment `pip install -e .` made (the one way to install; a conda
    file could not be created or tested here, so there is none)."""
    proc = snakemake("--lint", "--configfile", str(CONFIG), cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    lints = re.findall(r"^\s+\* (.+?):\s*$", out, re.M)
    assert lints, out  # the linter ran and reported (the conda advice, at least)
    assert set(lints) == {"Specify a conda environment or container for each rule."}, out


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c["demo"].update(n_subject=3), "n_subject"),
        (lambda c: c["demo"].update(n_subjects="twelve"), "twelve"),
        (lambda c: c.update(sed=1), "sed"),
    ],
)
def test_bad_config_fails_before_any_job(tmp_path, edit, needle):
    cfg = yaml.safe_load(CONFIG.read_text())
    edit(cfg)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake("--configfile", str(bad), "--cores", "1", cwd=tmp_path, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert needle in out
    assert not (tmp_path / "results").exists(), "a job ran despite the invalid config"


def test_slurm_profile_plans(tmp_path):
    """`snakemake --profile config/profiles/slurm -n` plans (needs the optional SLURM executor plugin)."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    profile = REPO / "config" / "profiles" / "slurm"
    proc = snakemake("--profile", str(profile), "-n", "--configfile", str(CONFIG), cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert "generate_demo" in out and "dry-run" in out
