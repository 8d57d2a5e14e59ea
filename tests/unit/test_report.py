"""The report assembles (never computes) a self-contained, escaped, pseudonymous HTML report; it says which
outputs were not evaluated and why, renders with nothing evaluated, and shows no input path."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.config import ReportConfig
from pipeline.report import build, inputs
from tests.unit.eval_helpers import (
    NO_T2W,
    PERSON_FOLDER,
    SUBJECTS,
    XSS,
    XSS_IMG,
    make_partly_reported,
    make_unevaluated_report,
    working_dir,
)

TEST_SUBJECTS = sorted(s for s, split in SUBJECTS if split == "test")


class _Refs(HTMLParser):
    """Collect src/href attributes, element ids and tags of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href") and v is not None:
                self.refs.append((k, v))
            if k == "id" and v:
                self.ids.add(v)


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text())
    return p


def _pages(report: Path) -> list[Path]:
    reader = [report / "reader.html"] if (report / "reader.html").is_file() else []
    return [report / "index.html", *reader, *sorted((report / "subjects").glob("*.html"))]


@pytest.fixture(scope="module")
def partly_reported(tmp_path_factory) -> Path:
    """A report with CycleGAN not evaluated, from an input folder named like a person (eval_helpers)."""
    return make_partly_reported(tmp_path_factory.mktemp("partly"))


@pytest.fixture(scope="module")
def unevaluated_report(tmp_path_factory) -> Path:
    """A report with every output skipped."""
    return make_unevaluated_report(tmp_path_factory.mktemp("unevaluated"))


def _section(index: str, name: str) -> str:
    start = index.index(f'<section id="{name}"')
    return index[start:index.index("</section>", start)]


def test_pages_for_every_subject_and_self_contained(reported_cohort, partly_reported, unevaluated_report):
    assert sorted(p.stem for p in (reported_cohort / "subjects").glob("*.html")) == TEST_SUBJECTS
    assert sorted(p.stem for p in (partly_reported / "subjects").glob("*.html")) == TEST_SUBJECTS
    assert list((unevaluated_report / "subjects").iterdir()) == []
    for report in (reported_cohort, partly_reported, unevaluated_report):
        _assert_self_contained(report)


def _assert_self_contained(report: Path) -> None:
    for page in _pages(report):
        parsed = _parse(page)
        assert "link" not in parsed.tags, page
        _assert_scripts_pinned(page)
        for attr, ref in parsed.refs:
            assert not re.match(r"^[a-z][a-z0-9+.-]*://", ref, re.I), f"{page}: external reference {ref}"
            target, _, fragment = ref.partition("#")
            if target:  # a relative file that must exist in the report folder
                resolved = (page.parent / target).resolve()
                assert resolved.is_file(), f"{page}: {attr}={ref} does not exist"
                assert report.resolve() in resolved.parents, f"{page}: {ref} points outside reports/"
                if fragment and resolved.suffix == ".html":
                    assert fragment in _parse(resolved).ids, f"{page}: {ref}: no element with id {fragment!r}"
            elif fragment:
                assert fragment in parsed.ids, f"{page}: no anchor #{fragment}"
        text = page.read_text()
        assert not re.search(r"url\(\s*['\"]?(?!#)", text) and "@import" not in text  # only url(#local-id)
        assert "Content-Security-Policy" in text


def _assert_scripts_pinned(page: Path) -> None:
    """A subject page and the reader page run one inline script, which their CSP allows by its SHA-256 (and
    nothing else: no 'unsafe-inline', no 'self', no source file); the index runs none and its CSP allows none."""
    import base64
    import hashlib

    text = page.read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text).group(1).replace("&#39;", "'")
    scripts = re.findall(r"<script>(.*?)</script>", text, re.DOTALL)
    assert len(re.findall(r"<script", text)) == len(scripts)  # no script with attributes (src=, type=, ...)
    if page.name == "index.html":
        assert scripts == [] and "script-src" not in csp, page
        return
    (body,) = scripts
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in csp and "unsafe" not in csp.split("script-src")[1].split(";")[0], page
    assert "default-src 'none'" in csp and "connect-src" not in csp and "form-action 'none'" in csp


def test_every_subject_figure_and_strip_plot_link(reported_cohort):
    index = (reported_cohort / "index.html").read_text()
    for sub in TEST_SUBJECTS:
        for method in ("srgan", "srresnet", "zerofill", "cyclegan", "identity"):
            assert f'xlink:href="subjects/{sub}.html#{method}"' in index
        page = (reported_cohort / "subjects" / f"{sub}.html").read_text()
        for model in ("srgan", "srresnet", "cyclegan"):
            assert f'src="../assets/subjects/{sub}/{model}.png"' in page
    assert index.count("<svg ") == 8  # 4 metrics x 2 tasks, inlined
    assert (reported_cohort / "assets/data/summary.json").is_file()


def test_one_training_curve_per_family_shown_for_each_of_its_outputs(reported_cohort, evaluated_cohort):
    """A real run writes only results/models/srgan/history.csv for SRGAN and SRResNet (phase 1 of the same
    training): the report shows that family's curve, naming both outputs."""
    models = evaluated_cohort / "results/models"
    assert sorted(p.name for p in models.iterdir()) == ["cyclegan", "srgan"]  # no srresnet/history.csv
    assert sorted(p.name for p in (reported_cohort / "assets/training").iterdir()) == ["cyclegan.png", "srgan.png"]
    index = (reported_cohort / "index.html").read_text()
    training = index[index.index('<section id="training"'):index.index('<section id="run"')]
    for family, outputs in (("srgan", ("srresnet", "srgan")), ("cyclegan", ("cyclegan",))):
        figure = re.search(rf'<figure id="training-{family}">(.*?)</figure>', training, re.DOTALL)
        assert figure, f"no training curve of the {family} family"
        assert f'src="assets/training/{family}.png"' in figure.group(1)
        caption = figure.group(1).split("<figcaption>")[1]
        assert all(name in caption for name in outputs), caption
    assert "<td>srgan</td><td>srresnet, srgan</td>" in training  # the training summary of the family


def test_dicom_text_is_escaped_and_identifiers_never_shown(reported_cohort):
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    sub_page = (reported_cohort / "subjects" / "sub-002.html").read_text()
    assert escaped in sub_page  # the series description, shown as text
    index = (reported_cohort / "index.html").read_text()
    assert "&lt;img src=x onerror=alert(2)&gt;" in index  # a skipped input's reason quoting a DICOM tag
    for page in _pages(reported_cohort):
        text = page.read_text()
        assert XSS not in text and XSS_IMG not in text
        assert len(re.findall("<script", text, re.IGNORECASE)) == (0 if page.name == "index.html" else 1)  # its own only
        assert "DOE" not in text and "JOHN" not in text, f"{page}: an identifier from an input path leaked"


def test_verdict_comes_first(reported_cohort):
    index = (reported_cohort / "index.html").read_text()
    sections = re.findall(r'<section id="([^"]+)"', index)
    assert sections[0] == "verdict"
    summary = json.loads((reported_cohort / "assets/data/summary.json").read_text())
    verdict = index[index.index('<section id="verdict"'):index.index('<section id="results"')]
    for task in summary["tasks"].values():
        assert task["methods"][task["strongest_baseline"]]["label"] in verdict
        for model in task["models"]:
            assert f'id="verdict-{model}"' in verdict
    assert "95% CI" in verdict and "Wilcoxon p" in verdict


def test_report_shows_the_summary_numbers_it_is_given(evaluated_cohort, tmp_path):
    """Assembles only: a number planted in summary.json appears as it is, nothing is recomputed."""
    src = evaluated_cohort
    shutil.copytree(src / "results", tmp_path / "results")
    path = tmp_path / "results/metrics/summary.json"
    summary = json.loads(path.read_text())
    task = summary["tasks"]["sr"]
    cmp = task["comparisons"]["srgan"][task["strongest_baseline"]]["psnr"]
    cmp.update(mean_diff=12.3456, ci_low=11.1111, ci_high=13.9999, wilcoxon_p=0.0421, verdict="better")
    task["methods"]["srgan"]["metrics"]["psnr"]["mean"] = 77.7777
    path.write_text(json.dumps(summary))
    with working_dir(tmp_path):
        build.build_report(Path("results/metrics/summary.json"), Path("reports"), ReportConfig(title="Planted"))
    index = (tmp_path / "reports/index.html").read_text()
    assert "+12.35 dB" in index and "[+11.11, +14.00]" in index and "p = 0.042" in index
    assert "77.78" in index and "<title>Planted</title>" in index


def test_benchmarks_grouped_by_rule(evaluated_cohort):
    rows = {b["rule"]: b for b in inputs.read_benchmarks(evaluated_cohort / "results/benchmarks")}
    assert rows["infer_srgan"]["jobs"] == 2 and rows["infer_srgan"]["seconds"] == pytest.approx(6.0)
    assert list(rows)[:3] == ["generate_demo", "ingest", "preprocess"]  # workflow order
    assert inputs.read_benchmarks(evaluated_cohort / "nowhere") == []


def test_formatting_helpers():
    assert build.fmt_metric(31.234, "psnr") == "31.23"
    assert build.fmt_metric(-0.01234, "ssim", 3, signed=True) == "−0.012"
    assert build.fmt_metric(None, "psnr") == "–" and build.fmt_metric(float("inf"), "psnr") == "∞"
    assert build.fmt_p(0.0004) == "< 0.001" and build.fmt_p(0.0421) == "0.042" and build.fmt_p(None) == "–"
    assert build.fmt_seconds(4.2) == "4.2 s" and build.fmt_seconds(1834) == "30 min 34 s"
    assert inputs._redact("no geometry (dicom/DOE^JOHN/1.dcm)", "dicom/DOE^JOHN") == "no geometry [path]"


def test_missing_summary_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="summary.json: evaluation summary not found"):
        build.build_report(tmp_path / "summary.json", tmp_path / "reports", ReportConfig())


def test_single_subject_gives_no_interval_and_still_renders(tmp_path):
    """n = 1: no CI, no test, verdict n/a; the JSON stays strict and the report still builds."""
    from pipeline import cli
    from tests.unit.eval_helpers import evaluate_args, make_cohort

    make_cohort(tmp_path)
    with working_dir(tmp_path):
        assert cli.main(evaluate_args(splits=["train"])) == 0
        summary = json.loads(Path("results/metrics/summary.json").read_text())
        sr = summary["tasks"]["sr"]
        cmp = sr["comparisons"]["srgan"][sr["strongest_baseline"]]["psnr"]
        assert sr["n_subjects"] == 1 and cmp["verdict"] == "n/a" and cmp["ci_low"] is None and cmp["wilcoxon_p"] is None
        assert sr["methods"]["srgan"]["metrics"]["psnr"]["sd"] is None
        assert cli.main(["report", "--out", "reports"]) == 0
    index = (tmp_path / "reports/index.html").read_text()
    assert 'class="chip na">n/a<' in index and "n = 1 · too few subjects for a confidence interval or a test" in index
    assert "CI ·" not in index  # no empty interval
    assert (tmp_path / "reports/subjects/sub-001.html").is_file()


# ------------------------------------------------------------------------------------------ not evaluated
def test_a_skipped_output_is_shown_where_its_task_would_be(partly_reported):
    """CycleGAN skipped: a visible note in the verdict and in the results, under the translation task's heading;
    SRGAN and SRResNet as usual."""
    index = (partly_reported / "index.html").read_text()
    note = f"<b>cyclegan</b> — not evaluated: {NO_T2W}"
    verdict = _section(index, "verdict")
    assert 'id="verdict-srgan"' in verdict and 'id="verdict-srresnet"' in verdict
    block = re.search(r'<div class="task-verdict" id="task-translation">(.*?)</div>', verdict, re.DOTALL)
    assert block and "<h3>Translation T1w → T2w</h3>" in block.group(1)
    assert 'class="verdict skipped" id="verdict-cyclegan"' in block.group(1) and note in block.group(1)
    assert "2 models (1 more not evaluated)" in verdict and "not evaluated: cyclegan" in verdict
    results = _section(index, "results")
    assert 'Translation T1w → T2w <span class="pill">not evaluated</span>' in results
    assert re.search(rf'<p class="note" id="skipped-cyclegan"><b>cyclegan</b> .*? — not evaluated: {NO_T2W}</p>', results)
    assert results.index("Super-resolution") < results.index("Translation")
    assert index.count("<svg ") == 4  # SR's strip plots only
    for sub in TEST_SUBJECTS:
        page = (partly_reported / "subjects" / f"{sub}.html").read_text()
        assert 'id="fig-srgan"' in page and "cyclegan" not in page


def test_nothing_evaluated_still_renders(unevaluated_report):
    """Every output skipped: the page says so and why (escaped), with the ingest summary and the provenance."""
    index = (unevaluated_report / "index.html").read_text()
    verdict = _section(index, "verdict")
    assert "Nothing was evaluated on the test split" in verdict
    reason = "no training subject has T1w &lt;img src=x onerror=alert(2)&gt;"
    assert f"<b>srresnet</b> — not evaluated: {reason}" in verdict and f"<b>srgan</b> — not evaluated: {reason}" in verdict
    assert f"<b>cyclegan</b> — not evaluated: {NO_T2W}" in verdict
    assert XSS_IMG not in index
    assert "none · not evaluated: srresnet, srgan, cyclegan" in verdict
    assert "No subject was evaluated." in _section(index, "subjects")
    assert "Inputs: 8 ingested, 1 skipped." in _section(index, "run")
    assert "Workflow configuration" in _section(index, "provenance")
    assert sorted(p.name for p in (unevaluated_report / "assets/data").iterdir()) == ["summary.json"]


# ------------------------------------------------------------------------------------------ provenance
def test_provenance_shows_no_input_path(partly_reported):
    """input_dir (and a path inside it) show as a placeholder; a skipped input's reason that quotes the input
    folder is redacted; no file of the report holds the folder's name."""
    index = (partly_reported / "index.html").read_text()
    config = _section(index, "provenance")
    assert "input_dir: &lt;input folder&gt;" in config and "subjects_file: &lt;input folder&gt;/splits.tsv" in config
    assert "[path] not an image" in _section(index, "run")
    leaks = [p for p in partly_reported.rglob("*") if p.is_file() and PERSON_FOLDER.encode() in p.read_bytes()]
    assert leaks == []


def test_the_demo_input_dir_stays_empty(reported_cohort):
    config = _section((reported_cohort / "index.html").read_text(), "provenance")
    assert "input_dir: &#39;&#39;" in config and "input folder" not in config


def test_hide_input_dir():
    config = {"input_dir": "/data/Jane_Roe/", "preprocess": {"split": {"subjects_file": "/data/Jane_Roe/s.tsv"}},
              "models": ["srgan"], "seed": 42}
    text = inputs.workflow_config_text(config)
    assert "Jane" not in text and "input_dir: <input folder>" in text and "subjects_file: <input folder>/s.tsv" in text
    assert config["input_dir"] == "/data/Jane_Roe/"  # the caller's config is left as it was
    assert inputs.hide_input_dir(config, "") == config
    here = {"input_dir": ".", "preprocess": {"split": {"subjects_file": "config/s.tsv"}}}
    dot = inputs.workflow_config_text(here)
    assert "input_dir: <input folder>" in dot and "subjects_file: config/s.tsv" in dot  # "." is hidden, not hunted
    assert here["input_dir"] == "."
    assert inputs.workflow_config_text({}) == ""
    assert inputs._redact("/data/Jane_Roe/x.dcm unreadable", "x.dcm", "/data/Jane_Roe") == "[path] unreadable"
