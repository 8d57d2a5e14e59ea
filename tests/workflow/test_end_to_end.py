"""The whole workflow on a tiny demo cohort: every stage runs, the report is written, and the demo's made-up
patient identifiers appear nowhere under results/ (the demo's own DICOM and the pseudonym key aside) or reports/."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
import yaml

from tests.conftest import REPO

TINY = {
    "demo": {"n_subjects": 4, "n_dicom": 2, "voxel_mm": 4.0},
    "preprocess": {"spacing": [4.0, 4.0, 4.0]},
    "srgan": {
        "channels": 8, "n_blocks": 1, "d_channels": 8, "d_layers": 2, "patch_size": 32, "batch_size": 2,
        "roi_size": 16,
        "pretrain_steps": 4, "gan_steps": 2, "log_every": 2, "checkpoint_every": 2,
    },
    "cyclegan": {
        "ngf": 8, "ndf": 8, "n_blocks": 1, "d_layers": 2, "patch_size": 32, "batch_size": 2, "warmup_steps": 0,
        "n_steps": 2, "n_steps_decay": 2, "log_every": 1, "checkpoint_every": 2,
    },
    "evaluate": {"bootstrap_resamples": 200, "figure_dpi": 50},
}
IDENTIFIER_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName", "AccessionNumber")


def _identifiers(dicom_dir: Path) -> set[str]:
    found: set[str] = set()
    for path in dicom_dir.rglob("*"):
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            found |= {str(ds.get(tag, "")) for tag in IDENTIFIER_TAGS}
    return {v for v in found if len(v) >= 4}


def _searchable(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [
        sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work),
        "--configfile", str(REPO / "config" / "config.yaml"), str(work / "tiny.yaml"), "--cores", "2",
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=1200)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((work / "logs").rglob("*.log")))
    assert proc.returncode == 0, f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}\n{logs}"
    return work


def test_every_stage_produced_its_outputs(tiny_run):
    work = tiny_run
    assert (work / "results/ingest/manifest.tsv").is_file()
    assert (work / "results/preprocess/subjects.tsv").is_file()
    for model in ("srgan", "srresnet", "cyclegan"):
        assert list((work / "results/infer" / model).glob("sub-*.nii.gz")), model
    assert (work / "results/metrics/summary.json").is_file()
    index = work / "reports/index.html"
    assert index.is_file()
    subjects = list((work / "reports/subjects").glob("sub-*.html"))
    assert subjects, "no subject pages"


def test_demo_identifiers_never_leave_the_key_file(tiny_run):
    work = tiny_run
    identifiers = _identifiers(work / "results/demo/dicom")
    assert any("DEMO" in v or "^" in v for v in identifiers), identifiers  # the demo does set them
    leaks = []
    for root in (work / "results", work / "reports", work / "logs"):
        for path in root.rglob("*"):
            if not path.is_file() or path.name == "pseudonym_key.tsv" or (work / "results/demo") in path.parents:
                continue
            content = _searchable(path)
            leaks += [f"{path.relative_to(work)}: {v}" for v in identifiers if v.encode() in content]
    assert not leaks, leaks


def test_demo_report_renders_in_headless_chromium(tiny_run, tmp_path):
    """The report of a real run: every page renders with no console error and no network request, and every
    image loads (Chromium is installed by .ci/run; skipped where it is absent)."""
    from tests.unit.cdp import Browser, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    reports = tiny_run / "reports"
    pages = [reports / "index.html", *sorted((reports / "subjects").glob("*.html"))]
    images_js = "Array.from(document.images).map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))"
    with Browser(chromium, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.open()
        for page in pages:
            browser.load(page.resolve().as_uri())
            images = browser.evaluate(images_js)
            browser.screenshot(tmp_path / f"{page.stem}.png")
            browser.drain(0.3)
            assert browser.console_errors() == [], f"{page.name}: console errors"
            external = [u for u in browser.requests() if not u.startswith(("file://", "data:"))]
            assert external == [], f"{page.name}: network requests {external}"
            assert images and all(i["ok"] for i in images), f"{page.name}: images {images}"


def _planned_jobs(work: Path, *configfiles: Path) -> dict[str, int]:
    """The jobs `snakemake -n` plans in a finished run's folder (job name -> count)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work), "-n",
           "--configfile", str(REPO / "config" / "config.yaml"), *map(str, configfiles), "--cores", "2"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def _variant(work: Path, name: str, **sections: dict) -> Path:
    """TINY with some keys of some sections changed, as a config file beside the run."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY))
    for section, keys in sections.items():
        cfg.setdefault(section, {}).update(keys)
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_finished_run_has_nothing_left_to_do(tiny_run):
    assert _planned_jobs(tiny_run, tiny_run / "tiny.yaml") == {}


def test_inference_settings_rerun_inference_not_training(tiny_run):
    inference_only = _variant(tiny_run, "tta", srgan={"tta": True, "overlap": 0.5}, cyclegan={"tta": False})
    jobs = _planned_jobs(tiny_run, inference_only)
    assert "train_model" not in jobs and jobs.get("infer_model", 0) >= 3, jobs
    assert "evaluate_models" in jobs  # the new outputs are evaluated again
    training = _variant(tiny_run, "lr", srgan={"lr": 1e-3})
    jobs = _planned_jobs(tiny_run, training)
    assert jobs.get("train_model") == 1, jobs  # SRGAN only: CycleGAN's section did not change


def test_snakemake_report_of_the_run(tiny_run):
    """Snakemake's own report of the finished run (`snakemake --report`): one self-contained HTML file holding the
    results the rules flag with report() (the evaluation's summary, metrics and figures), and no demo identifier."""
    out = tiny_run / "snakemake_report.html"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tiny_run),
           "--configfile", str(REPO / "config" / "config.yaml"), str(tiny_run / "tiny.yaml"), "--cores", "1",
           "--report", str(out)]
    proc = subprocess.run(cmd, cwd=tiny_run, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    html = out.read_text()
    results = json.loads(re.search(r"var results = (\{.*?\});\s*</script>", html, re.S).group(1))
    paths = {Path(p).as_posix(): r for p, r in results.items()}
    written = [*(tiny_run / "results/metrics").glob("*.*"), *(tiny_run / "results/figures").rglob("*.png")]
    expected = {p.relative_to(tiny_run).as_posix() for p in written}
    assert "results/metrics/summary.json" in expected and "results/metrics/srgan.csv" in expected
    assert expected <= set(paths), sorted(expected - set(paths))  # every metrics file and figure is in it
    assert all(r["job_properties"]["rule"] == "evaluate_models" and r["data_uri"].startswith("data:")
               for r in paths.values())  # embedded: the file opens anywhere
    leaks = [v for v in _identifiers(tiny_run / "results/demo/dicom") if v in html]
    assert not leaks, leaks
