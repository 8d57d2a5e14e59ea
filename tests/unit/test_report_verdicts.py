"""The report says plainly when a model is worse than its baseline: a "worse" verdict in red, and a red warning
beside each output that training's validation check found below the strongest interpolation baseline
(train_summary.json's `validation.losing`); older training summaries without `losing` give no warning."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from pipeline.config import ReportConfig
from pipeline.report import build, inputs
from tests.unit.eval_helpers import XSS, working_dir

VALIDATION = {"psnr_db": {"zerofill": 21.07, "srresnet": 19.25, "srgan": 19.1}, "subjects": 1,
              "baseline": "zerofill", "losing": ["srresnet", "srgan"]}


def _report(cohort: Path, root: Path, *, validation: dict | None = None, worse: str | None = None) -> str:
    """Build the report of a copy of `cohort` with the srgan family's train_summary.json given `validation`,
    and, with `worse`, that output's PSNR verdict planted as a non-significant "worse"; returns index.html."""
    shutil.copytree(cohort / "results", root / "results")
    if validation is not None:
        path = root / "results/models/srgan/train_summary.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "validation": validation}))
    if worse is not None:
        path = root / "results/metrics/summary.json"
        summary = json.loads(path.read_text())
        task = summary["tasks"]["sr"]
        task["comparisons"][worse][task["strongest_baseline"]]["psnr"].update(
            mean_diff=-1.8, ci_low=-2.4, ci_high=-1.1, wilcoxon_p=0.25, verdict="worse",
            note="the CI lies below 0; n = 3 is too few for the Wilcoxon test to reach p < 0.05")
        path.write_text(json.dumps(summary))
    with working_dir(root):
        build.build_report(Path("results/metrics/summary.json"), Path("reports"), ReportConfig())
    return (root / "reports/index.html").read_text()


def _article(index: str, model: str) -> str:
    start = index.index(f'id="verdict-{model}"')
    return index[start:index.index("</article>", start)]


def test_losing_outputs_get_a_red_warning_beside_their_verdict(evaluated_cohort, tmp_path):
    index = _report(evaluated_cohort, tmp_path, validation=VALIDATION)
    for model, psnr in (("srresnet", "19.25"), ("srgan", "19.10")):
        article = _article(index, model)
        assert f'<p class="warning" id="validation-{model}">' in article
        text = re.sub(r"<[^>]+>", "", article)
        assert f"On the 1 validation subject it scored {psnr} dB PSNR" in text
        assert "below zero-filled" in text and "(21.07 dB)" in text  # the baseline by its label
        assert "lost to zero-filled k-space at training time" in text and "do not use it in place of zero-filled" in text
    assert index.count('class="warning"') == 2
    assert ".warning {" in index and "var(--worse)" in index  # styled red


def test_only_the_losing_outputs_are_warned_about_and_text_is_escaped(evaluated_cohort, tmp_path):
    validation = {**VALIDATION, "baseline": XSS, "losing": ["srgan"], "subjects": 2}
    index = _report(evaluated_cohort, tmp_path, validation=validation)
    assert 'id="validation-srgan"' in _article(index, "srgan") and "on the 2 validation subjects" in index.lower()
    assert 'id="validation-srresnet"' not in index
    assert XSS not in index and "&lt;script&gt;" in index


def test_no_warning_without_losing(evaluated_cohort, tmp_path):
    """Older training summaries (no `validation`, or one without `losing`) give no warning."""
    old = {k: v for k, v in VALIDATION.items() if k != "losing"}
    index = _report(evaluated_cohort, tmp_path, validation=old)
    assert 'class="warning"' not in index and "validation-" not in index
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert 'class="warning"' not in _report(evaluated_cohort, fresh)


def test_a_worse_verdict_is_shown_red_and_plainly(evaluated_cohort, tmp_path):
    index = _report(evaluated_cohort, tmp_path, worse="srgan")
    article = _article(index, "srgan")
    assert index[:index.index('id="verdict-srgan"')].endswith('<article class="verdict worse" ')
    assert '<span class="chip worse">worse</span>' in article
    assert "<b>srgan</b> is worse than zero-filled" in article and "n = 3 is too few" in article
    assert re.search(r"\.chip\.worse \{[^}]*background: var\(--worse\)", index)  # a solid red chip


def test_validation_entry_is_read_defensively():
    assert inputs._validation(None) == {} and inputs._validation(["srgan"]) == {}
    got = inputs._validation({"psnr_db": {"srgan": "x", "zerofill": 21}, "subjects": True, "losing": "srgan"})
    assert got == {"psnr_db": {"zerofill": 21.0}, "subjects": None, "baseline": "", "losing": [], "baselines": {}}
    warned = build._validation_warnings({"srgan": {"validation": inputs._validation(VALIDATION)}, "cyclegan": {}})
    assert set(warned) == {"srresnet", "srgan"}
    assert warned["srgan"] == {"family": "srgan", "psnr": 19.1, "baseline": "zerofill", "baseline_psnr": 21.07,
                               "subjects": 1}


def test_a_translation_output_is_warned_against_its_own_baseline():
    """Translation families name each output's strongest baseline (StarGAN: one per target); malformed entries
    are dropped."""
    entry = {"psnr_db": {"stargan_T2w": 12.0, "stargan_PDw": 14.0}, "subjects": 3, "losing": ["stargan_T2w"],
             "baselines": {"stargan_T2w": {"name": "histogram_match_inverted", "psnr_db": 13.5},
                           "stargan_PDw": {"name": "identity", "psnr_db": "x"}}}
    val = inputs._validation(entry)
    assert val["baselines"] == {"stargan_T2w": {"name": "histogram_match_inverted", "psnr_db": 13.5}}
    warned = build._validation_warnings({"stargan": {"validation": val}})
    assert warned == {"stargan_T2w": {"family": "stargan", "psnr": 12.0, "baseline": "histogram_match_inverted",
                                      "baseline_psnr": 13.5, "subjects": 3}}
