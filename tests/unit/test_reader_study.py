"""The blinded reader study: evaluation samples pairs (seeded) whose images match the key's sides, the report's
reader page names no method, subject or slice and holds no key; in Chromium the ratings are saved only as a
downloaded JSON file, which `reader-results` un-blinds; its summary of a made-up ratings file is right."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.evaluation import reader, slices
from tests.unit.cdp import Browser, find_chromium

CHROMIUM = find_chromium()
NAMES = ("srgan", "srresnet", "cyclegan", "zero-filled", "zerofill", "bicubic", "histogram", "sub-00", "model", "baseline")


def _key(pairs: dict[str, tuple[str, str]], study: str = "abc123") -> dict:
    return {"format": reader.FORMAT, "study": study, "seed": 1,
            "pairs": {p: {"output": out, "task": "sr", "baseline": "zerofill", "subject": "sub-001", "plane": "axial",
                          "slice": 3, "model_side": side} for p, (out, side) in pairs.items()}}


def _ratings(entries: list[tuple[str, int | None, int | None, str | None]], study: str = "abc123") -> dict:
    return {"format": reader.FORMAT, "study": study, "reader": "AB",
            "ratings": [{"pair": p, "left": left, "right": right, "preference": pref} for p, left, right, pref in entries]}


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_made_up_ratings_give_the_right_summary(tmp_path, capsys):
    """srgan on 4 pairs (model left, right, left, right): model rated 5, 4, 4, 3 and baseline 3, 3, 4, 2;
    model preferred 3 times of 4. srresnet: one pair, unanswered preference."""
    from pipeline import cli

    key = _write(tmp_path / "key.json", _key({"a1": ("srgan", "left"), "b2": ("srgan", "right"), "c3": ("srgan", "left"),
                                              "d4": ("srgan", "right"), "e5": ("srresnet", "left")}))
    ratings = _write(tmp_path / "r.json", _ratings([("a1", 5, 3, "left"), ("b2", 3, 4, "right"), ("c3", 4, 4, "right"),
                                                    ("d4", 2, 3, "right"), ("e5", 2, None, None)]))
    s = reader.summarise([ratings], key)["outputs"]
    srgan = s["srgan"]
    assert srgan["ratings"]["n"] == 4 and srgan["ratings"]["model_mean"] == 4.0 and srgan["ratings"]["baseline_mean"] == 3.0
    assert srgan["ratings"]["mean_diff"] == 1.0
    # diffs 2, 1, 0, 1: sd sqrt(2/3), t(0.975, 3) = 3.18245 -> half width 1.29924
    assert srgan["ratings"]["ci_low"] == pytest.approx(1 - 1.29924, abs=1e-4)
    assert srgan["ratings"]["ci_high"] == pytest.approx(1 + 1.29924, abs=1e-4)
    pref = srgan["preference"]
    assert (pref["model_preferred"], pref["n"], pref["rate"]) == (3, 4, 0.75)
    assert pref["ci_low"] == pytest.approx(0.3006, abs=1e-4) and pref["ci_high"] == pytest.approx(0.9544, abs=1e-4)
    assert pref["binomial_p"] == pytest.approx(0.625)
    assert s["srresnet"]["ratings"]["n"] == 0 and s["srresnet"]["preference"]["n"] == 0 and s["srresnet"]["unanswered"] == 1

    assert cli.main(["reader-results", str(ratings), "--key", str(key), "--out", str(tmp_path / "s.json")]) == 0
    table = capsys.readouterr().out
    assert re.search(r"srgan\s+zerofill\s+4\s+4\.00\s+3\.00\s+\+1\.00 \[-0\.30, \+2\.30\]\s+3/4\s+0\.75 \[0\.30, 0\.95\]\s+0\.625", table), table
    assert json.loads((tmp_path / "s.json").read_text())["outputs"]["srgan"]["preference"]["model_preferred"] == 3
    # two readers pool their pairs
    both = reader.summarise([ratings, ratings], key)["outputs"]["srgan"]
    assert both["preference"]["n"] == 8 and both["readers"] == ["AB"]


@pytest.mark.parametrize(("change", "message"), [
    ({"study": "other"}, "ratings of study 'other', the key is of study 'abc123'"),
    ({"ratings": [{"pair": "zz", "left": 3, "right": 3, "preference": "left"}]}, "pair 'zz' is not in the key"),
    ({"ratings": [{"pair": "a1", "left": 6, "right": 3, "preference": "left"}]}, "a rating is 1 to 5"),
    ({"ratings": [{"pair": "a1", "left": 3, "right": 3, "preference": "model"}]}, "preference is 'left', 'right' or null"),
    ({"format": "x"}, "not a ratings file of this pipeline"),
])
def test_a_ratings_file_that_does_not_fit_the_key_is_refused(tmp_path, change, message):
    key = _write(tmp_path / "key.json", _key({"a1": ("srgan", "left")}))
    ratings = _write(tmp_path / "r.json", {**_ratings([("a1", 3, 3, "left")]), **change})
    with pytest.raises(ValueError, match=re.escape(message)):
        reader.summarise([ratings], key)


def test_pairs_are_seeded_and_their_images_match_the_key(evaluated_cohort):
    from pipeline.io.nifti import load_nifti

    summary = json.loads((evaluated_cohort / "results/metrics/summary.json").read_text())
    study = summary["figures"]["reader"]
    key = json.loads((evaluated_cohort / "results/viewer/reader/key.json").read_text())
    assert study["study"] == key["study"] and sorted(p["id"] for p in study["pairs"]) == sorted(key["pairs"])
    per_output = {o: sum(e["output"] == o for e in key["pairs"].values()) for o in ("srgan", "srresnet", "cyclegan")}
    assert per_output == {"srgan": 12, "srresnet": 12, "cyclegan": 12}  # 10 a output, ceil(10 / 3) per subject
    sides = [e["model_side"] for e in key["pairs"].values()]
    assert 8 <= sides.count("left") <= 28  # both sides, in a random order
    public = json.dumps(study)
    assert "model_side" not in public and not any(n in public for n in ("srgan", "cyclegan", "sub-00", "axial"))
    for pair in study["pairs"][:6]:
        entry = key["pairs"][pair["id"]]
        desc = "T2w" if entry["output"] == "cyclegan" else "sr"
        pred, _ = load_nifti(evaluated_cohort / f"results/infer/{entry['output']}/{entry['subject']}_{desc}.nii.gz")
        model = slices.to_uint8(slices.plane_stack(np.clip(pred, 0, 1), entry["plane"])[entry["slice"]], 1.0)
        shown = np.asarray(Image.open(evaluated_cohort / pair[entry["model_side"]]))
        other = np.asarray(Image.open(evaluated_cohort / pair["right" if entry["model_side"] == "left" else "left"]))
        assert np.array_equal(shown, model) and not np.array_equal(other, model)
    # the same seed draws the same pairs and sides
    mask = np.zeros((16, 16, 16), dtype=bool)
    mask[3:13, 3:13, 3:13] = True
    rng = np.random.default_rng(0)
    assert reader.sample_slices(mask, 5, np.random.default_rng(7)) == reader.sample_slices(mask, 5, np.random.default_rng(7))
    picks = reader.sample_slices(mask, 40, rng)
    assert len(set(picks)) == len(picks) and all(3 <= i <= 12 for _, i in picks)


def test_the_reader_page_holds_no_key(reported_cohort):
    page = (reported_cohort / "reader.html").read_text()
    text = re.sub(r"<script>.*?</script>", "", page, flags=re.DOTALL).lower()
    assert not [n for n in NAMES if n in text.split("<footer>")[0].split("</header>")[1]]
    assert not list(reported_cohort.rglob("key.json"))
    assert "model_side" not in (reported_cohort / "assets/data/summary.json").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == 72 and all(re.fullmatch(r"assets/reader/[0-9a-f]{6}-[12]\.png", s) for s in srcs)
    assert 'href="reader.html"' in (reported_cohort / "index.html").read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_ratings_are_downloaded_and_unblinded(reported_cohort, evaluated_cohort, tmp_path, capsys):
    from pipeline import cli

    shots = Path(os.environ.get("REPORT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with Browser(CHROMIUM, tmp_path / "profile", tmp_path / "chromium.log") as browser:
        browser.open()
        browser.send("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}, session=False)
        browser.load((reported_cohort / "reader.html").resolve().as_uri())
        images = browser.evaluate("Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
        assert len(images) == 72 and all(images)
        pairs = browser.evaluate("Array.from(document.querySelectorAll('.pair')).map(p => p.dataset.pair)")
        # the reader rates the first three pairs: left 4 / right 2, preferring left; the fourth only half
        clicks = [(f"{p}-{side}", v) for p in pairs[:3] for side, v in (("left", 4), ("right", 2), ("pref", "left"))]
        clicks.append((f"{pairs[3]}-left", 5))
        for name, value in clicks:
            browser.evaluate(f"document.querySelector(\"input[name='{name}'][value='{value}']\").click()")
        assert browser.evaluate("document.getElementById('progress').textContent") == "3 of 36 pairs complete"
        browser.evaluate("document.getElementById('reader-name').value = 'R. One'")
        browser.screenshot(shots / "reader_page.png")
        browser.evaluate("document.getElementById('save').click()")
        deadline = time.monotonic() + 15
        while not [p for p in downloads.glob("*.json")] and time.monotonic() < deadline:
            browser.drain(0.2)
        assert browser.console_errors() == [] and browser.dialogs() == []
        assert [u for u in browser.requests() if not u.startswith(("file://", "data:", "blob:"))] == []
    (saved,) = downloads.glob("*.json")
    key = json.loads((evaluated_cohort / "results/viewer/reader/key.json").read_text())
    assert saved.name == f"ratings-{key['study']}-R_One.json"
    data = json.loads(saved.read_text())
    assert data["study"] == key["study"] and data["reader"] == "R. One" and len(data["ratings"]) == 36
    assert data["ratings"][0] == {"pair": pairs[0], "left": 4, "right": 2, "preference": "left"}
    assert data["ratings"][3] == {"pair": pairs[3], "left": 5, "right": None, "preference": None}
    assert all(r == {"pair": p, "left": None, "right": None, "preference": None} for r, p in zip(data["ratings"][4:], pairs[4:], strict=True))

    assert cli.main(["reader-results", str(saved), "--key", str(evaluated_cohort / "results/viewer/reader/key.json")]) == 0
    capsys.readouterr()
    s = reader.summarise([saved], evaluated_cohort / "results/viewer/reader/key.json")["outputs"]
    left_is_model = [key["pairs"][p]["model_side"] == "left" for p in pairs[:3]]
    assert sum(o["preference"]["n"] for o in s.values()) == 3
    assert sum(o["preference"]["model_preferred"] for o in s.values()) == sum(left_is_model)
    assert sum(o["ratings"]["n"] for o in s.values()) == 3 and sum(o["unanswered"] for o in s.values()) == 33
    for name, o in s.items():
        if o["ratings"]["n"]:
            mine = [m for p, m in zip(pairs[:3], left_is_model, strict=True) if key["pairs"][p]["output"] == name]
            assert o["ratings"]["model_mean"] == pytest.approx(np.mean([4 if m else 2 for m in mine]))
