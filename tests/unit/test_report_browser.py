"""The report in a real headless Chromium (Debian's `chromium`): every page renders with no console error, no
network request and no dialog, every image loads, and escaped DICOM text shows as text; a skipped output's
"not evaluated" note is visible on the first screen, and a report with nothing evaluated renders too.

Talks to the browser over the DevTools pipe (`tests/unit/cdp.py`), so no extra Python package is needed.
Skipped when no Chromium is installed (CI installs it). Screenshots land in the test's tmp folder, or in
$REPORT_SCREENSHOTS when set (to look at them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.cdp import Browser, find_chromium
from tests.unit.eval_helpers import NO_T2W, XSS, XSS_IMG, make_partly_reported, make_unevaluated_report

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

IMAGES_JS = """
Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))
"""
PAGE_JS = """
({
  scripts: document.scripts.length,
  svgs: document.querySelectorAll('svg.plot').length,
  viewers: document.querySelectorAll('.viewer.ready').length,
  svgLinks: Array.from(document.querySelectorAll('svg.plot a')).map(a => a.getAttribute('xlink:href') || a.getAttribute('href')),
  text: document.body.innerText,
  title: document.title,
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  verdictBottom: document.querySelector('.verdict') ? document.querySelector('.verdict').getBoundingClientRect().bottom : null,
  viewport: window.innerHeight,
  notes: Array.from(document.querySelectorAll('.verdict.skipped')).map(n => {
    const r = n.getBoundingClientRect(), st = getComputedStyle(n);
    return {id: n.id, text: n.innerText, height: r.height, bottom: r.bottom, visible: st.visibility === 'visible' && st.display !== 'none'};
  }),
})
"""


def _check(browser: Browser, page: Path, shot: Path, *, images_expected: bool = True) -> dict:
    """Load `page`: no console error, request or dialog, every image loaded, not too wide; returns PAGE_JS's info."""
    browser.load(page.resolve().as_uri())
    images = browser.evaluate(IMAGES_JS)
    info = browser.evaluate(PAGE_JS)
    width, height = browser.screenshot(shot)
    browser.drain(0.3)

    assert browser.console_errors() == [], f"{page.name}: console errors"
    external = [u for u in browser.requests() if not u.startswith(("file://", "data:"))]
    assert external == [], f"{page.name}: network requests {external}"
    assert browser.dialogs() == [], f"{page.name}: a dialog opened (script ran)"
    assert bool(images) == images_expected, f"{page.name}: {len(images)} images"
    broken = [i["src"] for i in images if not i["complete"] or i["width"] == 0]
    assert broken == [], f"{page.name}: images that did not load"
    assert info["scripts"] == (0 if page.name == "index.html" or not info["viewers"] else 1)  # the viewer's
    assert info["overflow"] <= 0, f"{page.name}: wider than the window by {info['overflow']} px"
    assert shot.stat().st_size > 20_000 and height >= 900 and width == 1280
    return info


def test_report_renders_in_headless_chromium(reported_cohort, tmp_path):
    shots = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    pages = [reported_cohort / "index.html", *sorted((reported_cohort / "subjects").glob("*.html"))]
    assert len(pages) > 1
    partly = make_partly_reported(tmp_path / "partly")
    unevaluated = make_unevaluated_report(tmp_path / "unevaluated")
    with Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.open()
        for page in pages:
            info = _check(browser, page, shots / f"{page.stem}.png")
            assert info["notes"] == []
            if page.name == "index.html":
                assert info["svgs"] == 8 and len(info["svgLinks"]) > 0
                assert all(link.startswith("subjects/sub-") for link in info["svgLinks"])
                assert info["verdictBottom"] is not None and info["verdictBottom"] <= info["viewport"], "verdict not on the first screen"
            else:
                assert info["viewers"] == 3  # one per output, its script ran
                if page.stem == "sub-002":
                    assert XSS in info["text"]  # shown as text, not run

        # CycleGAN not evaluated: its note is shown, on the first screen, beside the SR verdicts.
        info = _check(browser, partly / "index.html", shots / "partly_index.png")
        assert info["svgs"] == 4 and info["verdictBottom"] <= info["viewport"]
        assert _check(browser, partly / "subjects/sub-002.html", shots / "partly_sub-002.png")["viewers"] == 2
        (note,) = info["notes"]
        assert note["id"] == "verdict-cyclegan" and note["visible"] and note["height"] > 20
        assert note["bottom"] <= info["viewport"], "the not-evaluated note is below the first screen"
        assert f"cyclegan — not evaluated: {NO_T2W}" in note["text"]
        # Nothing evaluated: the page says so, every note on the first screen, markup in a reason shown as text.
        info = _check(browser, unevaluated / "index.html", shots / "unevaluated_index.png", images_expected=False)
        assert "Nothing was evaluated" in info["text"] and info["svgs"] == 0
        assert [n["id"] for n in info["notes"]] == ["verdict-srresnet", "verdict-srgan", "verdict-cyclegan"]
        assert all(n["visible"] and n["bottom"] <= info["viewport"] for n in info["notes"])
        assert XSS_IMG in info["notes"][0]["text"]
