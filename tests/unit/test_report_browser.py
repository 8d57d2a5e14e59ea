"""The report in a real headless Chromium (Debian's `chromium`): every page renders with no console error, no
network request and no dialog, every image loads, and escaped DICOM text shows as text.

Talks to the browser over the DevTools pipe (`tests/unit/cdp.py`), so no extra Python package is needed.
Skipped when no Chromium is installed (CI installs it). Screenshots land in the test's tmp folder, or in
$REPORT_SCREENSHOTS when set (to look at them).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.cdp import Browser, find_chromium
from tests.unit.eval_helpers import XSS

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

IMAGES_JS = """
Array.from(document.images).map(i => ({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth}))
"""
PAGE_JS = """
({
  scripts: document.scripts.length,
  svgs: document.querySelectorAll('svg.plot').length,
  svgLinks: Array.from(document.querySelectorAll('svg.plot a')).map(a => a.getAttribute('xlink:href') || a.getAttribute('href')),
  text: document.body.innerText,
  title: document.title,
  overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  verdictBottom: document.querySelector('.verdict') ? document.querySelector('.verdict').getBoundingClientRect().bottom : null,
  viewport: window.innerHeight,
})
"""


def test_report_renders_in_headless_chromium(reported_cohort, tmp_path):
    shots = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    pages = [reported_cohort / "index.html", *sorted((reported_cohort / "subjects").glob("*.html"))]
    assert len(pages) > 1
    with Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.open()
        for page in pages:
            browser.load(page.resolve().as_uri())
            images = browser.evaluate(IMAGES_JS)
            info = browser.evaluate(PAGE_JS)
            shot = shots / f"{page.stem}.png"
            width, height = browser.screenshot(shot)
            browser.drain(0.3)

            assert browser.console_errors() == [], f"{page.name}: console errors"
            external = [u for u in browser.requests() if not u.startswith(("file://", "data:"))]
            assert external == [], f"{page.name}: network requests {external}"
            assert browser.dialogs() == [], f"{page.name}: a dialog opened (script ran)"
            assert images, f"{page.name}: no images"
            broken = [i["src"] for i in images if not i["complete"] or i["width"] == 0]
            assert broken == [], f"{page.name}: images that did not load"
            assert info["scripts"] == 0
            assert info["overflow"] <= 0, f"{page.name}: wider than the window by {info['overflow']} px"
            assert shot.stat().st_size > 20_000 and height >= 900 and width == 1280

            if page.name == "index.html":
                assert info["svgs"] == 8 and len(info["svgLinks"]) > 0
                assert all(link.startswith("subjects/sub-") for link in info["svgLinks"])
                assert info["verdictBottom"] is not None and info["verdictBottom"] <= info["viewport"], "verdict not on the first screen"
            elif page.stem == "sub-002":
                assert XSS in info["text"]  # shown as text, not run
