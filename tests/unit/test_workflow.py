"""What the rules learn from the families (pipeline.workflow): outputs, the split of each family's config between
training and inference, and which outputs run on which subjects or are skipped, and why."""

from __future__ import annotations

import json

import pytest

from pipeline import workflow as wf
from pipeline.models import FAMILIES
from pipeline.workflow_config import load_workflow_config

DEFAULTS = load_workflow_config({}).model_dump()


def _row(subject, split, *columns):
    return {"subject": subject, "split": split, "mask": "m", **{c: f"{subject}/{c}" for c in columns}}


def test_default_outputs_are_the_demo_generators():
    outs = wf.outputs(DEFAULTS)
    assert [(o.name, o.family, o.model_file, o.task, o.input, o.truth, o.desc) for o in outs] == [
        ("srresnet", "srgan", "srresnet.pt", "sr", "T1w_lr", "T1w", "sr"),
        ("srgan", "srgan", "model.pt", "sr", "T1w_lr", "T1w", "sr"),
        ("cyclegan", "cyclegan", "model.pt", "translation", "T1w", "T2w", "T2w"),
    ]
    only_sr = wf.outputs({**DEFAULTS, "models": ["srgan"]})
    assert [o.name for o in only_sr] == ["srresnet", "srgan"]


def test_inference_keys_go_to_infer_not_to_training():
    cfg = {**DEFAULTS, "srgan": {**DEFAULTS["srgan"], "tta": True, "overlap": 0.5, "roi_size": 32}}
    train = json.loads(wf.train_params(cfg, "srgan"))
    assert not {"tta", "overlap", "roi_size", "sw_batch_size"} & set(train)
    assert train["lr"] == DEFAULTS["srgan"]["lr"]
    srgan = next(o for o in wf.outputs(cfg) if o.name == "srgan")
    args = wf.infer_arguments(cfg, srgan).split()
    assert args[args.index("--overlap") + 1] == "0.5" and args[args.index("--roi-size") + 1] == "32"
    assert "--tta" in args and "--no-tta" not in args
    cyclegan = next(o for o in wf.outputs(DEFAULTS) if o.name == "cyclegan")
    args = wf.infer_arguments(DEFAULTS, cyclegan).split()
    assert args[-2:] == ["--direction", "A2B"] and "--roi-size" not in args  # CycleGAN's windows are its crops


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_inference_key_is_an_infer_option(name):
    """A family's inference-only keys become `infer` options: each must be one the stage parses (a key without
    its option fails every infer job of a config that sets it)."""
    import argparse

    from pipeline.stages import infer

    fam = FAMILIES[name]
    section = {k: fam.config_class.model_fields[k].default for k in fam.inference_keys}
    parser = argparse.ArgumentParser()
    infer.add_arguments(parser)
    for output in fam.outputs(fam.config_class()):
        args = wf.infer_arguments({name: section}, output).split()
        parsed = parser.parse_args(["--model", "m.pt", "--input", "a.nii.gz", "--output", "b.nii.gz", *args])
        for key, value in section.items():
            assert getattr(parsed, key) == value, f"{name}.{key}"


def test_plan_skips_what_cannot_be_scored_and_says_why():
    outs = wf.outputs(DEFAULTS)
    rows = [_row(f"sub-00{i}", "train", "T1w", "T1w_lr", "T2w") for i in range(3)]
    rows += [_row("sub-008", "test", "T1w", "T1w_lr"), _row("sub-009", "test", "T1w", "T1w_lr")]
    run, skipped = wf.plan(rows, outs, ["test"])
    assert run == {"srresnet": ["sub-008", "sub-009"], "srgan": ["sub-008", "sub-009"]}
    assert skipped == {"cyclegan": "no test subject has T1w and T2w"}
    messages = wf.plan_messages(rows, outs, ["test"])
    assert ("warning", "cyclegan (cyclegan) is skipped: no test subject has T1w and T2w") in messages
    assert ("info", "srgan (srgan): 3 training subject(s) with T1w, 2 evaluated") in messages


def test_selfsr_of_the_scans_themselves_runs_on_every_subject_and_is_scored_on_none():
    """selfsr's default is scored against the image its thick slices were made from; with `input: T2w` (a cohort
    of thick-slice scans) the truth column is the input's: every subject with T2w, of any split, none training."""
    rows = [_row("sub-001", "train", "T1w", "T1w_thick"), _row("sub-002", "test", "T1w", "T1w_thick", "T2w"),
            _row("sub-003", "val", "T2w"), _row("sub-004", "test", "T1w")]
    [scored] = wf.outputs({**DEFAULTS, "models": ["selfsr"]})
    assert (scored.input, scored.truth) == ("T1w_thick", "T1w")
    assert wf.plan(rows, [scored], ["test"]) == ({"selfsr": ["sub-002"]}, {})
    own = {**DEFAULTS, "models": ["selfsr"], "selfsr": {"input": "T2w"}}
    [unscored] = wf.outputs(own)
    assert (unscored.input, unscored.truth) == ("T2w", "T2w")
    assert wf.plan(rows, [unscored], ["test"]) == ({"selfsr": ["sub-002", "sub-003"]}, {})
    assert ("info", "selfsr (selfsr): 2 subject(s) with T2w, self-supervised, no ground truth to score against") \
        in wf.plan_messages(rows, [unscored], ["test"])
    assert wf.plan(rows[:1], [unscored], ["test"])[1] == {"selfsr": "no subject has T2w"}


def test_plan_skips_a_family_without_training_data():
    outs = wf.outputs(DEFAULTS)
    rows = [_row("sub-001", "train", "T1w", "T1w_lr"), _row("sub-002", "test", "T1w", "T1w_lr", "T2w")]
    run, skipped = wf.plan(rows, outs, ["test", "val"])
    assert skipped == {"cyclegan": "no training subject has T1w and T2w"}
    assert list(run) == ["srresnet", "srgan"]
    _, skipped = wf.plan([_row("sub-002", "test", "T1w", "T1w_lr", "T2w")], outs, ["test"])
    assert set(skipped) == {"srresnet", "srgan", "cyclegan"}  # one family, one training: skipped together


def test_plan_skips_unpaired_translation_with_one_training_subject():
    """A 3-subject cohort split 1/1/1 (the corpus with the default shares): CycleGAN and StarGAN cannot draw source
    and target from different subjects, so they are skipped with the reason, and SR still runs."""
    rows = [_row("sub-001", "test", "T1w", "T1w_lr", "T2w", "PDw"), _row("sub-002", "val", "T1w", "T1w_lr", "T2w", "PDw"),
            _row("sub-003", "train", "T1w", "T1w_lr", "T2w", "PDw")]
    outs = wf.outputs({**DEFAULTS, "models": ["srgan", "cyclegan", "stargan"]})
    run, skipped = wf.plan(rows, outs, ["test"])
    assert list(run) == ["srresnet", "srgan"]
    assert set(skipped) == {"cyclegan", "stargan_T2w", "stargan_PDw"}
    assert skipped["cyclegan"].startswith("1 training subject(s) with T1w or T2w; it needs at least 2")
    assert "needs at least 2" in skipped["stargan_PDw"]
    rows[1]["split"] = "train"  # two training subjects: both train
    run, skipped = wf.plan(rows, outs, ["test"])
    assert skipped == {} and run["cyclegan"] == ["sub-001"]


def test_an_output_name_exported_twice_is_an_error(monkeypatch):
    from pipeline.models import FAMILIES

    cyclegan = FAMILIES["cyclegan"]
    monkeypatch.setattr(cyclegan, "outputs", classmethod(lambda cls, cfg: [
        wf.Output("srgan", "cyclegan", "model.pt", "translation", "T1w", "T2w", "T2w")]))
    with pytest.raises(ValueError, match="both export 'srgan'"):
        wf.outputs(DEFAULTS)


def test_derived_inputs_are_made_only_for_the_families_that_read_them():
    """preprocess.motion / preprocess.gaps inputs: none in the default run, the motion family's alone with
    models [srgan, motion]; the rest of the section as configured."""
    default = json.loads(wf.preprocess_params(DEFAULTS))
    assert default["motion"]["modalities"] == [] and default["gaps"]["modalities"] == []
    assert default["sr"] == DEFAULTS["preprocess"]["sr"]
    assert DEFAULTS["preprocess"]["motion"]["modalities"] == ["T1w"]  # the config itself is not changed
    with_motion = json.loads(wf.preprocess_params({**DEFAULTS, "models": ["srgan", "motion"]}))
    assert with_motion["motion"]["modalities"] == ["T1w"] and with_motion["gaps"]["modalities"] == []
    assert with_motion["motion"]["fraction"] == DEFAULTS["preprocess"]["motion"]["fraction"]
    assert default["thick"]["modalities"] == [] and with_motion["thick"]["modalities"] == []
    with_selfsr = json.loads(wf.preprocess_params({**DEFAULTS, "models": ["selfsr"]}))
    assert with_selfsr["thick"]["modalities"] == ["T1w"] and with_selfsr["motion"]["modalities"] == []


def test_evaluation_learns_how_each_sr_input_was_made():
    """srgan's T1w_lr (k-space, in-plane) and selfsr's T1w_thick (thick slices along z) are two SR tasks, each
    with its own degradation (so zero-filled k-space is a baseline of the first only)."""
    found = json.loads(wf.sr_degradations(DEFAULTS))
    sr, thick = DEFAULTS["preprocess"]["sr"], DEFAULTS["preprocess"]["thick"]
    assert found["T1w_lr"] == {"method": sr["method"], "scale": sr["scale"], "axes": sr["axes"]}
    assert found["T1w_thick"] == {"method": "thick_slice", "scale": thick["factor"], "axes": "through",
                                  "profile": thick["profile"]}
