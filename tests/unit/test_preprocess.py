"""Stage 3 (pipeline.preprocessing): grid, orientation, normalisation, mask, split, SR inputs and the table."""

from __future__ import annotations

import csv
import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pipeline.config import ConfigError, PreprocessConfig, load_params
from pipeline.imaging.degrade import lr_affine
from pipeline.imaging.intensity import foreground_mask, normalise
from pipeline.io.nifti import save_nifti
from pipeline.io.tables import SPLITS, ingested_scans, read_subjects, write_subjects
from pipeline.preprocessing.overrides import load_overrides, read_overrides, resolve_overrides
from pipeline.preprocessing.split import assign_splits
from pipeline.preprocessing.subject import load_ras

HEADER = "source\tstatus\treason\tsubject\tmodality\tshape\tspacing\toutput\tprimary\n"


def _head(shape=(22, 26, 18), seed=0, hole=True) -> np.ndarray:
    """A noisy ellipsoid 'head' with darker inner structure (voxel units), background ~0."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    r = np.sqrt(sum((g / (0.36 * n)) ** 2 for g, n in zip(grid, shape, strict=True)))
    img = np.where(r < 1.0, 800.0, 0.0) + np.where(r < 0.45, -300.0, 0.0) + 40.0 * grid[0] * (r < 1.0)
    if hole:
        img[r < 0.15] = 0.0  # a dark hole inside (ventricle-like): the mask must fill it
    return np.abs(img + rng.normal(0.0, 15.0, shape)).astype(np.float32)


def _ras_to_lps(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image stored with flipped x and y voxel axes (an LPS-ordered file)."""
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3], flip[1, 3] = data.shape[0] - 1, data.shape[1] - 1
    return np.ascontiguousarray(data[::-1, ::-1]), affine @ flip


def _affine(spacing=(1.5, 1.5, 2.0), origin=(-16.0, -20.0, -18.0)) -> np.ndarray:
    aff = np.diag([*spacing, 1.0])
    aff[:3, 3] = origin
    return aff


@pytest.fixture
def cohort(tmp_path, monkeypatch):
    """Working dir with results/ingest/manifest.tsv and 4 subjects (T1w RAS, T2w LPS, one with CT only)."""
    monkeypatch.chdir(tmp_path)
    lines = [HEADER, "a.dcm\tskipped\tnot an image\t\t\t\t\t\t\n"]
    for i in range(1, 5):
        sub = f"sub-{i:03d}"
        folder = Path("results/ingest") / sub
        t1 = _head(seed=i)
        if i == 4:
            ct = t1 * 1.5 - 1000.0  # background -1000 HU (air), tissue up to ~ +300 HU
            save_nifti(ct, _affine(), folder / f"{sub}_CT.nii.gz")
            lines.append(f"x\tingested\t\t{sub}\tCT\t\t\t{folder}/{sub}_CT.nii.gz\tyes\n")
            continue
        save_nifti(t1, _affine(), folder / f"{sub}_T1w.nii.gz")
        t2 = (2.0 * t1 + 10.0).astype(np.float32)  # same anatomy, other intensity scale
        data, aff = _ras_to_lps(t2, _affine())
        save_nifti(data, aff, folder / f"{sub}_T2w.nii.gz")
        lines.append(f"x\tingested\t\t{sub}\tT1w\t\t\t{folder}/{sub}_T1w.nii.gz\tyes\n")
        lines.append(f"x\tingested\t\t{sub}\tT2w\t\t\t{folder}/{sub}_T2w.nii.gz\tyes\n")
        lines.append(f"y\tingested\t\t{sub}\tT2w\t\t\tmissing/run-2.nii.gz\tno\n")  # non-primary: ignored
    Path("results/ingest/manifest.tsv").write_text("".join(lines))
    return tmp_path


def _run(params: dict, seed: int = 42, extra: list[str] | None = None) -> int:
    from pipeline.cli import main

    return main(
        [
            "preprocess",
            "--manifest",
            "results/ingest/manifest.tsv",
            "--out",
            "results/preprocess",
            "--params",
            json.dumps(params),
            "--seed",
            str(seed),
            *(extra or []),
        ]
    )


def _table(path="results/preprocess/subjects.tsv") -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


# ------------------------------------------------------------------------------------------ the stage
def test_stage_writes_one_grid_per_subject(cohort):
    params = {"spacing": [2.0, 2.0, 2.0], "sr": {"scale": 4, "method": "kspace", "axes": "inplane"}}
    assert _run(params) == 0
    rows = _table()
    assert list(rows[0]) == ["subject", "split", "T1w", "T2w", "PDw", "FLAIR", "CT", "mask", "T1w_lr", "T1w_motion",
                             "T1w_gaps", "T1w_thick"]
    assert [r["subject"] for r in rows] == ["sub-001", "sub-002", "sub-003", "sub-004"]
    assert sorted(r["split"] for r in rows) == ["test", "train", "train", "val"]
    ct_row = rows[3]
    assert ct_row["CT"] and not ct_row["T1w"] and not ct_row["T1w_lr"] and ct_row["mask"]

    row = rows[0]
    assert not Path(row["T1w"]).is_absolute()  # relative to the working directory
    t1, t2, mask, lr = (nib.load(row[k]) for k in ("T1w", "T2w", "mask", "T1w_lr"))
    assert t1.shape == t2.shape == mask.shape
    np.testing.assert_allclose(t2.affine, t1.affine)
    np.testing.assert_allclose(np.sqrt((t1.affine[:3, :3] ** 2).sum(0)), [2.0, 2.0, 2.0])
    assert np.all(np.diag(t1.affine)[:3] > 0)  # RAS
    assert t1.shape[0] % 4 == 0 and t1.shape[1] % 4 == 0
    assert mask.get_data_dtype() == np.uint8 and t1.get_data_dtype() == np.float32
    assert lr.shape == (t1.shape[0] // 4, t1.shape[1] // 4, t1.shape[2])
    np.testing.assert_allclose(lr.affine, lr_affine(t1.affine, 4, (0, 1)), atol=1e-5)
    # the thick-slice input (preprocess.thick: rect, 4 voxels): z padded to a multiple of 4, each slice the mean of
    # the 4 voxels it covers, on the grid whose slice m is centred on voxel 4m + 1.5
    thick = nib.load(row["T1w_thick"])
    assert t1.shape[2] % 4 == 0 and thick.shape == (t1.shape[0], t1.shape[1], t1.shape[2] // 4)
    np.testing.assert_allclose(thick.affine, lr_affine(t1.affine, 4, (2,)), atol=1e-5)
    means = t1.get_fdata().reshape(t1.shape[0], t1.shape[1], -1, 4).mean(axis=3)
    np.testing.assert_allclose(thick.get_fdata(), means, atol=1e-5)
    a1, a2 = t1.get_fdata(), t2.get_fdata()
    assert a1.min() >= 0.0 and a1.max() <= 1.0 and a2.max() <= 1.0
    # the LPS-stored T2w (= 2 * T1w + 10) overlays the T1w voxel for voxel: equal after normalisation
    inside = mask.get_fdata() > 0
    assert inside.mean() > 0.1
    np.testing.assert_allclose(a2[inside], a1[inside], atol=1e-4)

    norm = json.loads(Path(row["T1w"]).with_name("normalisation.json").read_text())
    assert norm["T1w"]["method"] == "percentile" and norm["T1w"]["low"] < norm["T1w"]["high"]
    assert norm["T1w"]["lr"]["scale"] == 4 and norm["T1w"]["lr"]["method"] == "kspace"
    ct_norm = json.loads(Path(ct_row["CT"]).with_name("normalisation.json").read_text())
    assert ct_norm["CT"]["method"] == "window" and (ct_norm["CT"]["low"], ct_norm["CT"]["high"]) == (
        -1000.0,
        2000.0,
    )

    # read_subjects resolves the paths, also from another working directory
    got = read_subjects(cohort / "results/preprocess/subjects.tsv", splits="test")
    assert len(got) == 1 and got[0]["T1w"].is_file() and got[0]["PDw"] is None


def test_stage_is_deterministic_and_keeps_native_grid(cohort):
    params = {"spacing": None, "sr": {"scale": 2, "method": "thick_slice", "axes": "through"}, "thick": {"modalities": []}}
    assert _run(params) == 0
    first = Path("results/preprocess/subjects.tsv").read_text()
    t1 = nib.load(_table()[0]["T1w"])
    np.testing.assert_allclose(np.sqrt((t1.affine[:3, :3] ** 2).sum(0)), [1.5, 1.5, 2.0])
    assert t1.shape == (22, 26, 18)  # z already divisible by 2: nothing padded
    lr = nib.load(_table()[0]["T1w_lr"])
    assert lr.shape == (22, 26, 9)
    assert _run(params) == 0
    assert Path("results/preprocess/subjects.tsv").read_text() == first


def test_stage_bad_manifest_is_named(cohort, caplog):
    Path("results/ingest/manifest.tsv").write_text(
        HEADER + "x\tingested\t\tsub-001\tT1w\t\t\tnope.nii.gz\tyes\n"
    )
    assert _run({}) == 1
    assert "line 2" in caplog.text and "nope.nii.gz" in caplog.text


# ------------------------------------------------------------------------------------------ pieces
def test_load_ras_keeps_world_position_of_a_voxel(tmp_path):
    data = np.zeros((10, 12, 8), np.float32)
    data[2, 3, 5] = 1.0
    aff = _affine(spacing=(2.0, 1.5, 3.0), origin=(30.0, 20.0, -10.0))
    lps_data, lps_aff = _ras_to_lps(data, aff)
    lps_aff = lps_aff.copy()
    path = save_nifti(lps_data, lps_aff, tmp_path / "lps.nii.gz")
    assert nib.aff2axcodes(nib.load(path).affine) == ("L", "P", "S")
    img = load_ras(path)
    out_aff = img.affine.numpy()
    assert nib.aff2axcodes(out_aff) == ("R", "A", "S")
    voxel = np.argwhere(img[0].numpy() == 1.0)[0]
    world = out_aff[:3, :3] @ voxel + out_aff[:3, 3]
    np.testing.assert_allclose(world, aff[:3, :3] @ [2, 3, 5] + aff[:3, 3])


def test_load_ras_logs_nothing_about_monais_gpu_dicom_codec(tmp_path, caplog):
    """MONAI's GPU DICOM reader warned once per scan that its codec is missing (78 lines in a demo's log)."""
    from pipeline.preprocessing import subject

    path = save_nifti(np.zeros((4, 4, 4), np.float32), np.eye(4), tmp_path / "a.nii.gz")
    subject._nifti_loader.cache_clear()
    with caplog.at_level(logging.DEBUG):
        load_ras(path)
        load_ras(path)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").level == logging.NOTSET  # restored


def test_normalise_mr_percentiles_and_ct_window():
    cfg = PreprocessConfig()
    rng = np.random.default_rng(0)
    image = rng.normal(500.0, 100.0, (20, 20, 20)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[5:15, 5:15, 5:15] = 1
    out, params = normalise(image, "T1w", mask, cfg)
    low, high = np.percentile(image[mask > 0], [0.5, 99.5])
    assert params["low"] == pytest.approx(low) and params["high"] == pytest.approx(high)
    assert out.min() == 0.0 and out.max() == 1.0 and out.dtype == np.float32
    within = (image >= low) & (image <= high)
    np.testing.assert_allclose(
        params["low"] + out[within] * (params["high"] - params["low"]), image[within], rtol=1e-4
    )

    hu = np.array([-3000.0, -1000.0, 500.0, 2000.0, 3000.0], np.float32).reshape(5, 1, 1)
    out, params = normalise(hu, "CT", None, cfg)
    np.testing.assert_allclose(out.ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    assert params["unit"] == "HU" and params["window"] == [-1000.0, 2000.0]


def test_foreground_mask_fills_holes_and_keeps_largest_component():
    image = _head(shape=(24, 24, 24), seed=3)
    image[1:4, 1:4, 1:4] = 900.0  # a separate bright speck outside the head
    mask = foreground_mask(image)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    grid = np.meshgrid(*[np.arange(24) - 11.5] * 3, indexing="ij")
    r = np.sqrt(sum((g / (0.36 * 24)) ** 2 for g in grid))
    truth = r < 1.0
    dice = 2 * np.sum(mask & truth) / (mask.sum() + truth.sum())
    assert dice > 0.9
    assert mask[12, 12, 12] == 1  # the dark hole in the middle is filled
    assert mask[2, 2, 2] == 0  # the speck is not the head
    ct = image * 1.5 - 1000.0
    assert 2 * np.sum(foreground_mask(ct, is_ct=True) & truth) / (truth.sum() * 2) > 0.85
    with pytest.raises(ValueError, match="constant"):
        foreground_mask(np.zeros((8, 8, 8)))


# ------------------------------------------------------------------------------------------ split
def _subjects(n):
    return [f"sub-{i:03d}" for i in range(1, n + 1)]


RATIOS = {"train": 0.6, "val": 0.2, "test": 0.2}


@pytest.mark.parametrize(
    ("n", "expected"), [(3, (1, 1, 1)), (5, (3, 1, 1)), (10, (6, 2, 2)), (12, (7, 3, 2))]
)
def test_split_counts(n, expected):
    split = assign_splits(_subjects(n), RATIOS, seed=1)
    assert tuple(sum(v == s for v in split.values()) for s in SPLITS) == expected


def test_split_small_cohorts_and_zero_ratio():
    assert set(assign_splits(_subjects(1), {"train": 1.0, "val": 0.0, "test": 0.0}, 0).values()) == {"train"}
    no_val = assign_splits(_subjects(6), {"train": 0.8, "val": 0.0, "test": 0.2}, 0)
    assert "val" not in no_val.values() and "test" in no_val.values()
    # two subjects and no validation: one to train, one to test (not both to train, as the shares alone give)
    assert sorted(assign_splits(_subjects(2), {"train": 0.6, "val": 0.0, "test": 0.4}, 0).values()) == [
        "test", "train"]


@pytest.mark.parametrize(("n", "ratios", "needed"), [
    (2, RATIOS, "at least 3 subjects, one for each split with a share > 0 (train, val, test; "
                "shares train 0.6, val 0.2, test 0.2), and there are 2"),
    (1, RATIOS, "at least 3 subjects"),
    (1, {"train": 0.8, "val": 0.0, "test": 0.2}, "at least 2 subjects, one for each split with a share > 0 "
                                                 "(train, test; shares train 0.8, val 0, test 0.2), and there are 1"),
])
def test_split_with_too_few_subjects_says_how_many_are_needed(n, ratios, needed):
    with pytest.raises(ValueError, match="needs " + re.escape(needed)) as err:
        assign_splits(_subjects(n), ratios, seed=0)
    assert "preprocess.split.val: 0" in str(err.value)  # and how to need fewer


def test_split_pins_that_empty_a_split_are_an_error():
    with pytest.raises(ValueError, match=r"leaves (val|test) without a subject: of 3 subjects, 2 are pinned .*"
                                         r"\(train 2\) and 1 left"):
        assign_splits(_subjects(3), RATIOS, 0, overrides={"sub-001": "train", "sub-002": "train"})
    with pytest.raises(ValueError, match="not in the data: sub-009"):
        assign_splits(_subjects(3), RATIOS, 0, overrides={"sub-009": "train"})


def test_split_is_deterministic_and_seeded():
    subjects = _subjects(20)
    a = assign_splits(subjects, RATIOS, seed=7)
    assert assign_splits(list(reversed(subjects)), RATIOS, seed=7) == a
    others = [assign_splits(subjects, RATIOS, seed=s) for s in range(8, 12)]
    assert any(o != a for o in others)


def test_split_overrides_pin_subjects_and_keep_ratios(tmp_path):
    path = tmp_path / "subjects.tsv"
    path.write_text("subject\tsplit\tnote\nsub-001\ttest\tpinned\nsub-002\ttest\t\nsub-003\t\tno override\n")
    assert [(o.line, o.subject, o.split) for o in read_overrides(path)] == [(2, "sub-001", "test"),
                                                                           (3, "sub-002", "test")]
    overrides = load_overrides(path, _subjects(10))
    assert overrides == {"sub-001": "test", "sub-002": "test"}
    split = assign_splits(_subjects(10), RATIOS, seed=3, overrides=overrides)
    assert split["sub-001"] == split["sub-002"] == "test"
    assert tuple(sum(v == s for v in split.values()) for s in SPLITS) == (6, 2, 2)
    assert load_overrides(tmp_path / "absent.tsv", _subjects(10)) == {} == load_overrides("", _subjects(10))

    path.write_text("subject\tsplit\nsub-001\ttesting\n")
    with pytest.raises(ValueError, match=r"subjects.tsv, line 2: split 'testing'"):
        read_overrides(path)
    path.write_text("subject\tsplit\tid_type\nsub-001\ttest\tpatient\n")
    with pytest.raises(ValueError, match=r"subjects.tsv, line 2: id_type 'patient' is not one of pseudonym, bids"):
        read_overrides(path)
    path.write_text("subject\tfold\nsub-001\t1\n")
    with pytest.raises(ValueError, match="missing column"):
        read_overrides(path)


# The pseudonym key ingest writes (pipeline.ingest.pseudonym.write_key): a BIDS label, a DICOM PatientID (with a
# space), a name made from a NIfTI file's folder, and a BIDS label `003` that is also the pseudonym of another subject.
KEY = {("bids", "01"): "sub-002", ("dicom", "PAT 77"): "sub-001", ("nifti", "site2/mary"): "sub-004",
       ("bids", "003"): "sub-005", ("dicom", "ghost"): "sub-006"}
DATA = ("sub-001", "sub-002", "sub-003", "sub-004", "sub-005")  # sub-006: in the key, no ingested scan


def _key_file(path: Path) -> Path:
    from pipeline.ingest.pseudonym import write_key

    return write_key(KEY, path)


def _overrides_file(path: Path, rows: str, header: str = "subject\tsplit") -> Path:
    path.write_text(header + "\n" + rows)
    return path


def test_split_overrides_by_original_ids_through_the_pseudonym_key(tmp_path):
    key = _key_file(tmp_path / "pseudonym_key.tsv")
    path = _overrides_file(tmp_path / "o.tsv", "01\ttest\nPAT  77 \tval\nsite2/mary\ttrain\n")
    assert load_overrides(path, DATA, key) == {"sub-002": "test", "sub-001": "val", "sub-004": "train"}
    # a BIDS label with its sub- prefix; a pseudonym still works, with and without the key
    path = _overrides_file(tmp_path / "o.tsv", "sub-01\ttest\nsub-004\tval\n")
    assert load_overrides(path, DATA, key) == {"sub-002": "test", "sub-004": "val"}
    assert load_overrides(_overrides_file(path, "sub-004\tval\n"), DATA) == {"sub-004": "val"}
    # the same subject twice: fine in one split, an error in two
    path = _overrides_file(tmp_path / "o.tsv", "01\ttest\nsub-002\ttest\n")
    assert load_overrides(path, DATA, key) == {"sub-002": "test"}
    path = _overrides_file(tmp_path / "o.tsv", "01\ttest\nsub-002\ttrain\n")
    with pytest.raises(ValueError, match=r"o.tsv, lines 2 and 3: sub-002 is pinned to both test and train"):
        load_overrides(path, DATA, key)


def test_split_override_ids_that_match_nothing_or_two_subjects_are_errors(tmp_path):
    key = _key_file(tmp_path / "pseudonym_key.tsv")
    path = _overrides_file(tmp_path / "o.tsv", "01\ttest\nPAT 78\ttrain\n")
    with pytest.raises(ValueError, match=r"o.tsv, line 3: subject 'PAT 78' is neither a pseudonym of the data nor "
                                         r"an original ID in the pseudonym key"):
        load_overrides(path, DATA, key)
    # without the key an original ID is unknown, and the message says what would look it up
    with pytest.raises(ValueError, match=r"o.tsv, line 2: subject '01' is not a pseudonym .*--pseudonym-key"):
        load_overrides(path, DATA)
    # in the key, but nothing of it was ingested
    with pytest.raises(ValueError, match=r"line 2: the subject is sub-006, which has no ingested scan"):
        load_overrides(_overrides_file(path, "ghost\ttest\n"), DATA, key)
    # `sub-003` is the pseudonym sub-003 and BIDS label 003 (sub-005): ambiguous, named by pseudonyms only
    path = _overrides_file(path, "sub-003\ttest\n")
    with pytest.raises(ValueError, match=r"line 2: the subject ID is the pseudonym sub-003, the bids ID of sub-005; "
                                         r"say which is meant in an id_type column") as err:
        load_overrides(path, DATA, key)
    assert "003" not in str(err.value).split("line 2:")[1].replace("sub-003", "")  # no original label spelled out
    assert load_overrides(path, DATA) == {"sub-003": "test"}  # without the key it can only be the pseudonym
    # an id_type column says which is meant
    path = _overrides_file(path, "sub-003\ttest\tpseudonym\n003\tval\tbids\n", "subject\tsplit\tid_type")
    assert load_overrides(path, DATA, key) == {"sub-003": "test", "sub-005": "val"}
    path = _overrides_file(path, "sub-003\ttest\tbids\n01\tval\tdicom\n", "subject\tsplit\tid_type")
    with pytest.raises(ValueError, match="line 3: subject '01' is neither"):
        load_overrides(path, DATA, key)
    # resolve_overrides checks the entries it is given the same way
    entries = read_overrides(_overrides_file(path, "sub-009\ttrain\n"))
    with pytest.raises(ValueError, match=r"line 2: subject 'sub-009'"):
        resolve_overrides(entries, DATA, None, path)


def test_stage_uses_the_override_file(cohort):
    Path("overrides.tsv").write_text("subject\tsplit\nsub-004\tval\nsub-001\tval\n")
    assert _run({"split": {"subjects_file": "overrides.tsv"}, "sr": {"scale": 2}}) == 0
    split = {r["subject"]: r["split"] for r in _table()}
    assert split["sub-004"] == split["sub-001"] == "val"


def test_stage_maps_original_ids_through_the_pseudonym_key_and_never_logs_them(cohort, caplog):
    from pipeline.ingest.pseudonym import write_key

    caplog.set_level(logging.INFO)
    originals = {("dicom", "Jane^Roe 1961"): "sub-001", ("bids", "zq77"): "sub-002",
                 ("nifti", "oslo/kari"): "sub-003", ("dicom", "X-4410"): "sub-004"}
    key = write_key(originals, "results/ingest/pseudonym_key.tsv")
    Path("overrides.tsv").write_text("subject\tsplit\nJane^Roe 1961\ttest\nsub-zq77\ttest\noslo/kari\tval\n")
    params = {"split": {"subjects_file": "overrides.tsv"}, "sr": {"scale": 2}}
    assert _run(params, extra=["--pseudonym-key", str(key)]) == 0
    split = {r["subject"]: r["split"] for r in _table()}
    assert split == {"sub-001": "test", "sub-002": "test", "sub-003": "val", "sub-004": "train"}
    assert "3 subject(s) pinned by overrides.tsv (3 named by original ID)" in caplog.text
    for _, original in originals:
        for part in [original, *original.replace("^", " ").replace("/", " ").split()]:
            assert part not in caplog.text, part
    # without the key, the stage fails naming the file, the line and the ID (not a silent ignore)
    caplog.clear()
    assert _run(params) == 1
    assert "overrides.tsv, line 2: subject 'Jane^Roe 1961' is not a pseudonym" in caplog.text


def test_stage_with_too_few_subjects_fails_before_reading_images(cohort, caplog):
    lines = Path("results/ingest/manifest.tsv").read_text().splitlines(keepends=True)
    Path("results/ingest/manifest.tsv").write_text("".join(
        line for line in lines if "sub-001" in line or "sub-002" in line or line.startswith("source")))
    assert _run({}) == 1
    assert "the split needs at least 3 subjects" in caplog.text and "there are 2" in caplog.text
    assert not Path("results/preprocess").exists()
    assert _run({"split": {"val": 0.0}}) == 0  # 2 subjects: one to train, one to test
    assert sorted(r["split"] for r in _table()) == ["test", "train"]


# ------------------------------------------------------------------------------------------ inputs, config
def test_read_manifest_checks(tmp_path):
    manifest = tmp_path / "results" / "ingest" / "manifest.tsv"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("source\tstatus\n")
    with pytest.raises(ValueError, match="missing column"):
        ingested_scans(manifest)
    manifest.write_text(HEADER + "x\tskipped\tbad\t\t\t\t\t\t\n")
    with pytest.raises(ValueError, match="no row with status 'ingested'"):
        ingested_scans(manifest)
    # an output relative to the manifest's folder is found too
    save_nifti(np.ones((4, 4, 4)), np.eye(4), manifest.parent / "sub-001" / "a.nii.gz")
    manifest.write_text(HEADER + "x\tingested\t\tsub-001\tT1w\t\t\tsub-001/a.nii.gz\t\n")
    assert ingested_scans(manifest)["sub-001"]["T1w"].is_file()
    with pytest.raises(FileNotFoundError, match="manifest not found"):
        ingested_scans(tmp_path / "none.tsv")


def test_subjects_table_round_trip_keeps_paths_as_written(tmp_path):
    folder = tmp_path / "my  data" / "results" / "preprocess"
    image = save_nifti(np.ones((4, 4, 4)), np.eye(4), folder / "sub-001" / "T1w.nii.gz")
    rows = [{"subject": "sub-001", "split": "test", "T1w": image.as_posix(), "mask": ""},
            {"subject": "sub-002", "split": "train"}]
    table = write_subjects(rows, ["T1w", "T2w"], ["T1w"], folder / "subjects.tsv")
    assert table.read_text().splitlines()[0] == "subject\tsplit\tT1w\tT2w\tmask\tT1w_lr"
    got = read_subjects(table, splits=("test", "val"))
    assert [r["subject"] for r in got] == ["sub-001"]
    assert got[0]["T1w"] == image and got[0]["T2w"] is None and got[0]["mask"] is None  # the double space kept
    assert len(read_subjects(table)) == 2
    table.write_text("subject\tsplit\nsub-001\ttesting\n")
    with pytest.raises(ValueError, match="line 2: split 'testing'"):
        read_subjects(table)

def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="thick_slice"):
        load_params('{"sr": {"method": "thick_slice"}}', PreprocessConfig, "preprocess")
    with pytest.raises(ConfigError, match="scale"):
        load_params('{"sr": {"scale": 3}}', PreprocessConfig, "preprocess")
    with pytest.raises(ConfigError, match="mr_percentiles"):
        load_params('{"mr_percentiles": [99, 1]}', PreprocessConfig, "preprocess")
    assert load_params('{"spacing": null}', PreprocessConfig, "preprocess").spacing is None


def test_downsampling_is_antialiased_and_a_scan_at_the_target_spacing_is_untouched():
    """A 1 mm pattern at the Nyquist frequency (alternate voxels 0/1) taken to 2 mm must become its mean, not an
    aliased pattern of 0s or 1s; a scan already at the target spacing is not filtered at all."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Spacing

    from pipeline.preprocessing.subject import antialias

    x = np.indices((40, 40, 40)).sum(0) % 2
    img = MetaTensor(torch.from_numpy(x.astype(np.float32))[None], affine=torch.eye(4, dtype=torch.float64))
    aliased = Spacing(pixdim=(2.0, 2.0, 2.0), mode="bilinear")(img)[0].numpy()[4:-4, 4:-4, 4:-4]
    smooth = Spacing(pixdim=(2.0, 2.0, 2.0), mode="bilinear")(antialias(img, (2.0, 2.0, 2.0)))[0].numpy()[4:-4, 4:-4, 4:-4]
    assert abs(aliased.mean() - 0.5) > 0.4  # without the filter: every other voxel, all 0s (or all 1s)
    assert smooth.std() < 0.05 and abs(smooth.mean() - 0.5) < 0.05  # the 0.5-voxel Gaussian leaves 0.29^3 of it
    assert antialias(img, (1.0, 1.0, 1.0)) is img
    # only the axis that gets coarser is filtered: a pattern along x survives a coarser z
    stripes = MetaTensor(torch.from_numpy((np.indices((40, 40, 40))[0] % 2).astype(np.float32))[None],
                         affine=torch.eye(4, dtype=torch.float64))
    # (the filter pads with zeros: the first and last slices along z blend with the background)
    np.testing.assert_allclose(antialias(stripes, (1.0, 1.0, 3.0))[0].numpy()[..., 4:-4], stripes[0].numpy()[..., 4:-4],
                               atol=1e-5)
