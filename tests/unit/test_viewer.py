"""The slice viewer: evaluation's sprite sheets hold every slice as the figures orient it; in headless Chromium
the slider, the mouse wheel and the arrow keys move every panel of a viewer together to the slice they show
(pixels read back from a screenshot), the plane buttons switch planes, the page's one inline script runs under
its hash-pinned CSP with no console error and no request beyond file:// and data:.

Screenshots of the viewer at two slider positions land in $REPORT_SCREENSHOTS when set (else the test's tmp folder).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import slices
from tests.unit.cdp import Browser, find_chromium

CHROMIUM = find_chromium()
browser_only = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


# ------------------------------------------------------------------------------------------ sprite sheets
def test_plane_stacks_are_oriented_as_the_figures():
    vol = np.zeros((4, 5, 6), dtype=np.float32)
    vol[3, 0, 0] = 1.0  # right (+x), posterior (-y), inferior (-z)
    axial, coronal, sagittal = (slices.plane_stack(vol, p) for p in slices.PLANES)
    assert axial.shape == (6, 5, 4) and coronal.shape == (5, 6, 4) and sagittal.shape == (4, 6, 5)
    assert axial[0, -1, 3] == 1  # slice z=0: posterior at the bottom, right on the right
    assert coronal[0, -1, 3] == 1  # slice y=0: inferior at the bottom, right on the right
    assert sagittal[3, -1, 0] == 1  # slice x=3: inferior at the bottom, posterior on the left


def test_sprite_sheets_hold_every_slice(evaluated_cohort):
    """Decoded back, tile i of each sheet is slice i of the volume, 8-bit with the figures' windowing; the error
    sheets are palette PNGs through inferno on the entry's scale."""
    from pipeline.io.nifti import load_nifti

    summary = json.loads((evaluated_cohort / "results/metrics/summary.json").read_text())
    entry = summary["figures"]["viewer"]["sub-003"]["srgan"]
    panels = {p["key"]: p for p in entry["panels"]}
    assert list(panels) == ["input", "baseline", "output", "truth", "error_baseline", "error_output"]
    truth, affine = load_nifti(evaluated_cohort / "results/preprocess/sub-003/T1w.nii.gz")
    pred, _ = load_nifti(evaluated_cohort / "results/infer/srgan/sub-003_sr.nii.gz")
    for plane in slices.PLANES:
        g = entry["planes"][plane]
        sheet = np.asarray(Image.open(evaluated_cohort / panels["truth"]["sprites"][plane]))
        stack = slices.to_uint8(slices.plane_stack(truth, plane), 1.0)
        assert g["n"] == stack.shape[0] and (g["height"], g["width"]) == stack.shape[1:]
        for i in (0, g["n"] // 2, g["n"] - 1):
            r, c = divmod(i, g["columns"])
            tile = sheet[r * g["height"]:(r + 1) * g["height"], c * g["width"]:(c + 1) * g["width"]]
            assert np.array_equal(tile, stack[i]), (plane, i)
        err = Image.open(evaluated_cohort / panels["error_output"]["sprites"][plane])
        assert err.mode == "P"
        rgb = np.asarray(err.convert("RGB"))[: g["height"], : g["width"]]
        expected = slices.to_uint8(slices.plane_stack(np.abs(np.clip(pred, 0, 1) - truth), plane)[0], entry["error_max"])
        from matplotlib import colormaps
        lut = np.round(colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
        assert np.abs(rgb.astype(int) - lut[expected].astype(int)).max() <= 1
    # shared panels are one file for both SR outputs; each output has its own
    other = {p["key"]: p for p in summary["figures"]["viewer"]["sub-003"]["srresnet"]["panels"]}
    assert other["truth"]["sprites"] == panels["truth"]["sprites"]
    assert other["output"]["sprites"] != panels["output"]["sprites"]
    assert entry["planes"]["axial"]["first_mm"] == pytest.approx(affine[2, 3])


def test_report_copies_the_sprites_once_per_subject(reported_cohort):
    files = sorted((reported_cohort / "assets/subjects/sub-002/slices").rglob("*.png"))
    # SR: 4 shared x 3 planes + 2 outputs x 2 x 3; translation: 4 x 3 + 1 x 2 x 3
    assert len(files) == 12 + 12 + 12 + 6
    page = (reported_cohort / "subjects/sub-002.html").read_text()
    assert page.count('class="viewer"') == 3
    geoms = [json.loads(m.replace("&#39;", "'")) for m in re.findall(r"data-geom='([^']*)'", page)]
    assert all(s.startswith("../assets/subjects/sub-002/slices/") for g in geoms for p in g["panels"]
               for s in p["sprites"].values())


# ------------------------------------------------------------------------------------------ in the browser
STATE_JS = """
(() => { const v = document.querySelectorAll('.viewer')[%d];
  return {ready: v.classList.contains('ready'), slider: Number(v.querySelector('input.slider').value),
    max: Number(v.querySelector('input.slider').max), pos: v.querySelector('.pos').textContent,
    panels: Array.from(v.querySelectorAll('.vpanel')).map(f => ({key: f.dataset.key, slice: f.dataset.slice,
      plane: f.dataset.plane, src: f.querySelector('img').getAttribute('src'),
      loaded: f.querySelector('img').complete && f.querySelector('img').naturalWidth > 0}))}; })()
"""
RECT_JS = """
(() => { const el = %s; el.scrollIntoView({block: 'center', behavior: 'instant'}); const r = el.getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height,
          sx: r.left, sy: r.top}; })()
"""


def _shot(browser: Browser, selector: str) -> tuple[np.ndarray, dict]:
    rect = browser.evaluate(RECT_JS % f"document.querySelector({json.dumps(selector)})")
    browser.drain(0.2)
    clip = {k: rect[k] for k in ("x", "y", "width", "height")} | {"scale": 1}
    data = browser.send("Page.captureScreenshot", {"format": "png", "clip": clip})["data"]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L")).astype(int), rect


def _shown_tile(img: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The voxel grid a panel screenshot shows (nearest-neighbour upscaled): one sample at each voxel's centre."""
    h, w = img.shape
    ys = ((np.arange(rows) + 0.5) * h / rows).astype(int)
    xs = ((np.arange(cols) + 0.5) * w / cols).astype(int)
    return img[np.ix_(ys, xs)]


def _assert_shows(browser, selector: str, expected: np.ndarray) -> np.ndarray:
    shot, _ = _shot(browser, selector)
    shown = _shown_tile(shot, *expected.shape)
    assert np.abs(shown - expected.astype(int)).max() <= 3, f"{selector} does not show the expected slice"
    return shot


def _viewport_shot(browser: Browser, path: Path) -> None:
    """The window as the user sees it (the viewer scrolled into view), as a PNG."""
    path.write_bytes(base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"]))


def _mouse(browser: Browser, kind: str, x: float, y: float, **extra) -> None:
    browser.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, **extra})


@browser_only
def test_slider_wheel_and_keys_move_every_panel_together(reported_cohort, evaluated_cohort, tmp_path):
    from pipeline.io.nifti import load_nifti

    shots = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    truth, _ = load_nifti(evaluated_cohort / "results/preprocess/sub-002/T1w.nii.gz")
    page = reported_cohort / "subjects/sub-002.html"
    with Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.open()
        browser.load(page.resolve().as_uri())
        assert browser.evaluate("document.scripts.length") == 1
        first = browser.evaluate(STATE_JS % 0)
        assert first["ready"], "the viewer's script did not run (blocked by the CSP?)"
        axial = slices.plane_stack(truth, "axial")
        start = first["slider"]
        assert {p["slice"] for p in first["panels"]} == {str(start)} and all(p["loaded"] for p in first["panels"])
        truth_panel = '.viewer .vpanel[data-key="truth"] .vp'
        before = _assert_shows(browser, truth_panel, slices.to_uint8(axial[start], 1.0))
        _viewport_shot(browser, shots / "viewer_slider_start.png")

        # the slider, clicked near its right end (a real mouse event), moves every panel to one new slice
        rect = browser.evaluate(RECT_JS % "document.querySelector('.viewer input.slider')")
        x, y = rect["sx"] + 0.85 * rect["width"], rect["sy"] + rect["height"] / 2
        _mouse(browser, "mousePressed", x, y, button="left", clickCount=1)
        _mouse(browser, "mouseReleased", x, y, button="left", clickCount=1)
        moved = browser.evaluate(STATE_JS % 0)
        k = moved["slider"]
        assert k > start + 3 and {p["slice"] for p in moved["panels"]} == {str(k)}
        assert moved["pos"].startswith(f"axial slice {k + 1} / {axial.shape[0]}")
        after = _assert_shows(browser, truth_panel, slices.to_uint8(axial[k], 1.0))
        assert not np.array_equal(before, after)
        _viewport_shot(browser, shots / "viewer_slider_moved.png")
        # the other viewers on the page keep their own position
        assert browser.evaluate(STATE_JS % 1)["slider"] == start

        # mouse wheel over the panels: one slice a notch; arrow keys on the focused viewer
        rect = browser.evaluate(RECT_JS % "document.querySelector('.viewer .panels')")
        _mouse(browser, "mouseWheel", rect["sx"] + 20, rect["sy"] + 20, deltaX=0, deltaY=-100)
        browser.drain(0.2)
        assert browser.evaluate(STATE_JS % 0)["slider"] == k - 1
        browser.evaluate("document.querySelector('.viewer').focus()")
        for _ in range(3):
            browser.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "ArrowDown", "code": "ArrowDown",
                                                     "windowsVirtualKeyCode": 40})
            browser.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "ArrowDown", "code": "ArrowDown",
                                                     "windowsVirtualKeyCode": 40})
        state = browser.evaluate(STATE_JS % 0)
        assert state["slider"] == k - 4 and {p["slice"] for p in state["panels"]} == {str(k - 4)}
        _assert_shows(browser, truth_panel, slices.to_uint8(axial[k - 4], 1.0))

        # the sagittal plane: every panel's sheet switches, and the slider walks its slices
        browser.evaluate("document.querySelector('.viewer input[value=sagittal]').click()")
        sag = browser.evaluate(STATE_JS % 0)
        sagittal = slices.plane_stack(truth, "sagittal")
        assert sag["max"] == sagittal.shape[0] - 1 and all(p["src"].endswith("_sagittal.png") for p in sag["panels"])
        browser.evaluate("(() => { const s = document.querySelector('.viewer input.slider'); s.value = 0;"
                         " s.dispatchEvent(new Event('input')); })()")
        browser.drain(0.3)
        assert {p["slice"] for p in browser.evaluate(STATE_JS % 0)["panels"]} == {"0"}
        _assert_shows(browser, truth_panel, slices.to_uint8(sagittal[0], 1.0))

        browser.drain(0.3)
        assert browser.console_errors() == []
        assert [u for u in browser.requests() if not u.startswith(("file://", "data:"))] == []
        assert browser.dialogs() == []


@browser_only
def test_a_script_not_pinned_by_the_csp_does_not_run(reported_cohort, tmp_path):
    """The CSP holds: the same page with its script changed by one character runs nothing and says so."""
    page = reported_cohort / "subjects/sub-003.html"
    tampered = page.parent / "tampered.html"
    tampered.write_text(page.read_text().replace('"use strict";', '"use strict"; ', 1))
    try:
        with Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log") as browser:
            browser.open()
            browser.load(tampered.resolve().as_uri())
            assert browser.evaluate(STATE_JS % 0)["ready"] is False
            assert any("Content Security Policy" in e for e in browser.console_errors())
    finally:
        tampered.unlink()
