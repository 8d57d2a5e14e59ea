"""Adding a GAN family is one new module, one registry entry and one config block: no rule, no stage, no
evaluation or report code changes, and the whole workflow then trains, applies, evaluates and reports it.

The toy family (`tests/workflow/toy_family.py`) is added to a copy of the repository and run end to end on a tiny
demo cohort with `models: [toy]`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

TOY_BLOCK = """
# A toy paired translator (tests/workflow/toy_family.py).
toy:
  n_steps: 4
"""
TINY = {
    "models": ["toy"],
    "demo": {"n_subjects": 4, "n_dicom": 1, "voxel_mm": 4.0},
    "preprocess": {"spacing": [4.0, 4.0, 4.0], "split": {"train": 0.5, "val": 0.0, "test": 0.5}},
    "evaluate": {"bootstrap_resamples": 200, "figure_dpi": 50},
}


def _git(repo: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo), *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def _copy_repo(dest: Path) -> None:
    """The repository's files (tracked and new, as in the working tree) in a fresh git repository."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for rel in listed:
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    _git(dest, "init", "-q")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "base")


def _add_toy_family(repo: Path, env: dict[str, str]) -> None:
    """What a contributor does: the module, its registry entry, its config block, the regenerated schema."""
    shutil.copy(REPO / "tests/workflow/toy_family.py", repo / "pipeline/models/toy.py")
    registry = repo / "pipeline/models/__init__.py"
    lines = registry.read_text().splitlines(keepends=True)
    last_import = max(i for i, line in enumerate(lines) if line.startswith("from pipeline.models."))
    lines.insert(last_import + 1, "from pipeline.models.toy import Toy\n")
    entry = next(i for i, line in enumerate(lines) if line.startswith("FAMILIES"))
    assert lines[entry].rstrip().endswith("}"), lines[entry]  # the registry is one line: one entry is one edit
    lines[entry] = lines[entry].rstrip()[:-1] + ', "toy": Toy}\n'
    registry.write_text("".join(lines))
    with (repo / "config/config.yaml").open("a") as fh:
        fh.write(TOY_BLOCK)
    schema = subprocess.run([sys.executable, "-m", "pipeline.workflow_config"], cwd=repo, env=env, check=True,
                            capture_output=True, text=True).stdout
    (repo / "config/config.schema.yaml").write_text(schema)


def test_adding_a_family_is_one_module_and_one_config_block(tmp_path):
    repo = tmp_path / "repo"
    _copy_repo(repo)
    env = {**os.environ, "PYTHONPATH": str(repo)}
    _add_toy_family(repo, env)
    _git(repo, "add", "-A")
    stat = _git(repo, "diff", "--cached", "--stat")
    changed = set(_git(repo, "diff", "--cached", "--name-only").split())
    assert changed == {"pipeline/models/toy.py", "pipeline/models/__init__.py", "config/config.yaml",
                       "config/config.schema.yaml"}, stat
    numstat = {line.split("\t")[2]: line.split("\t")[:2] for line in _git(repo, "diff", "--cached", "--numstat").splitlines()}
    assert numstat["pipeline/models/__init__.py"] == ["2", "1"], stat  # the import and the registry entry
    print(stat)  # the must-show of the model-contract issue (pytest -s shows it)

    work = tmp_path / "work"
    work.mkdir()
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
           "--configfile", str(repo / "config/config.yaml"), str(work / "tiny.yaml"), "--cores", "2"]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}\n{logs}"
    assert "train_model" in proc.stderr + proc.stdout
    outputs = sorted((work / "results/infer/toy").glob("sub-*_T2w.nii.gz"))
    assert outputs, "no toy output"
    assert (work / "results/metrics/toy.csv").read_text().count("\n") >= 1 + len(outputs)
    assert "toy" in (work / "reports/index.html").read_text()
    assert not (work / "results/models/srgan").exists()
