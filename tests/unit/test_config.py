"""One source of config: the typed sections, the generated schema and the shipped config.yaml agree.

A stage run by hand (`load_params`) and Snakemake (`snakemake.utils.validate` against the committed schema)
accept and reject the same values for every key with a range or choices; bad configs fail naming the key.
"""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import typing
from typing import Any

import annotated_types as at
import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from pipeline import config as cfgmod
from pipeline import workflow_config as wf
from pipeline.models.cyclegan import CycleGANConfig
from pipeline.models.srgan import SRGANConfig
from tests.conftest import REPO

CONFIG = REPO / "config" / "config.yaml"
SCHEMA = REPO / "config" / "config.schema.yaml"
# The commit before config.yaml was trimmed to the user-facing keys (it then spelled out every default).
UNTRIMMED = "b04f6c0"


@pytest.fixture(scope="module", autouse=True)
def _schema_parsed_once():
    """`snakemake.utils.validate` parses the schema file on every call (50 ms of pure-Python YAML): parse it
    once per path and hand each call a fresh copy (default filling mutates the schema's default objects)."""
    import snakemake.utils

    original, parsed = snakemake.utils._load_configfile, {}

    def load(source, filetype="Config"):
        if str(source) not in parsed:
            parsed[str(source)] = original(source, filetype=filetype)
        return copy.deepcopy(parsed[str(source)])

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(snakemake.utils, "_load_configfile", load)
        yield


def _shipped() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _snakemake(config: dict[str, Any]) -> dict[str, Any]:
    """What rules/common.smk does: validate against the committed schema, filling in the defaults."""
    validate(config, str(SCHEMA), set_default=True)
    return config


def _defaults() -> dict[str, Any]:
    return wf.workflow_model()().model_dump(mode="json")


# --------------------------------------------------------------------------------------------- the schema
def test_committed_schema_is_the_generated_one():
    assert SCHEMA.read_text() == wf.schema_yaml(), f"config/config.schema.yaml is stale; regenerate it: {wf.REGENERATE}"


def test_check_flags_a_stale_schema(tmp_path, capsys):
    assert wf.main(["--check"]) == 0
    stale = tmp_path / "schema.yaml"
    stale.write_text(SCHEMA.read_text().replace("default: 42", "default: 43"))
    assert wf.main(["--check", str(stale)]) == 1
    assert wf.REGENERATE in capsys.readouterr().err


def _walk(node: dict[str, Any], path: str = "config"):
    for name, sub in node.get("properties", {}).items():
        yield f"{path}.{name}", sub
        yield from _walk(sub, f"{path}.{name}")


def test_every_key_is_documented_and_unknown_keys_are_rejected():
    schema = yaml.safe_load(SCHEMA.read_text())
    assert "$ref" not in SCHEMA.read_text() and "$defs" not in schema  # Snakemake fills defaults without refs
    keys = list(_walk(schema))
    assert len(keys) > 100
    for path, node in keys:
        assert node.get("description"), f"{path} has no description"
        assert "default" in node, f"{path} has no default"
        if node.get("type") == "object" and "properties" in node:
            assert node["additionalProperties"] is False, f"{path} accepts unknown keys"


def test_snakemake_fills_every_default_nested_sections_included():
    assert _snakemake({}) == _defaults()
    partial = _snakemake({"preprocess": {"split": {"train": 0.5}}, "srgan": {"lr": 0.1}})
    expected = wf.load_workflow_config({"preprocess": {"split": {"train": 0.5}}, "srgan": {"lr": 0.1}})
    assert partial == expected.model_dump(mode="json")
    assert partial["preprocess"]["split"]["val"] == 0.1 and partial["preprocess"]["sr"]["scale"] == 4


# --------------------------------------------------------------------------------------------- config.yaml
def test_shipped_config_parses_and_resolves_like_snakemake():
    parsed = wf.load_workflow_config(CONFIG)
    assert parsed.models == ["srgan", "cyclegan"]
    assert _snakemake(_shipped()) == parsed.model_dump(mode="json")


def test_shipped_config_resolves_to_the_defaults():
    """config.yaml states only user-facing keys, with their default values: what runs is the defaults."""
    assert wf.load_workflow_config(CONFIG) == wf.workflow_model()()


def test_trimmed_config_resolves_to_what_the_untrimmed_one_gave():
    try:
        old = subprocess.run(["git", "show", f"{UNTRIMMED}:config/config.yaml"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"no git history with commit {UNTRIMMED}")
    assert "pretrain_steps: 3600" in old  # it spelled out every key
    old_cfg = yaml.safe_load(old)
    # defaults changed on purpose since (issue 14, measured on real scans): the rest must resolve as before
    old_cfg["preprocess"]["spacing"] = None
    old_cfg["srgan"].update(pretrain_steps=7200, patch_size=32, tta=True)
    old_cfg["cyclegan"]["train_downsample"] = 0
    # issues 18/19: 8 test subjects in the demo, so its verdicts can be conclusive
    old_cfg["demo"]["n_subjects"] = 26
    old_cfg["preprocess"]["split"].update(val=0.1, test=0.3)
    # the inverted histogram-matching baseline (T1w -> T2w inverts the contrast; it beat CycleGAN on real scans)
    old_cfg["evaluate"]["translation_baselines"].append("histogram_match_inverted")
    assert wf.load_workflow_config(old_cfg) == wf.load_workflow_config(CONFIG)
    assert _snakemake(copy.deepcopy(old_cfg)) == _snakemake(_shipped())


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda c: c.update(sed=1), "config: unknown key 'sed'"),
        (lambda c: c["demo"].update(n_subject=3), "demo: unknown key 'n_subject'"),
        (lambda c: c["preprocess"]["split"].update(trian=0.5), "preprocess.split: unknown key 'trian'"),
        (lambda c: c["srgan"].update(learning_rate=1e-3), "srgan: unknown key 'learning_rate'"),
    ],
)
def test_unknown_keys_are_rejected_with_the_key_named(edit, key):
    data = _shipped()
    edit(data)
    with pytest.raises(cfgmod.ConfigError, match=key):
        wf.load_workflow_config(data)
    with pytest.raises(WorkflowError, match=key.split("'")[1]):
        _snakemake(data)


@pytest.mark.parametrize("models", [["nosuchfamily"], ["srgan", "srgan"], "srgan"])
def test_models_lists_registered_families_once(models):
    with pytest.raises(cfgmod.ConfigError, match="models"):
        wf.load_workflow_config({"models": models})
    with pytest.raises(WorkflowError):
        _snakemake({"models": models})
    assert wf.load_workflow_config({"models": ["srgan"]}).models == ["srgan"]


# --------------------------------------------------------------------------------------------- by hand == Snakemake
def _sections() -> dict[str, type[BaseModel]]:
    model = wf.workflow_model()
    return {name: f.annotation for name, f in model.model_fields.items()
            if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}


def _bounds(metadata: list[Any]) -> list[Any]:
    """annotated_types constraints of a field or of a tuple item (`Annotated[float, Field(ge=0)]`)."""
    out = []
    for item in metadata:
        out.extend(_bounds(item.metadata) if hasattr(item, "metadata") and not isinstance(item, at.BaseMetadata)
                   else [item])
    return out


def _around(bound: Any, step: float) -> list[tuple[Any, bool]]:
    """Values just inside (True) and just outside (False) one bound."""
    if isinstance(bound, at.Ge):
        return [(bound.ge, True), (bound.ge - step, False)]
    if isinstance(bound, at.Gt):
        return [(bound.gt + step, True), (bound.gt, False)]
    if isinstance(bound, at.Le):
        return [(bound.le, True), (bound.le + step, False)]
    if isinstance(bound, at.Lt):
        return [(bound.lt - step, True), (bound.lt, False)]
    if isinstance(bound, at.MultipleOf):
        return [(2 * bound.multiple_of, True), (2 * bound.multiple_of + 1, False)]
    return []


def _choices(annotation: Any) -> tuple[Any, ...]:
    return typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()


def _invalid_choice(choices: tuple[Any, ...]) -> Any:
    if isinstance(choices[0], str):
        return "nope"
    return next(i for i in itertools.count() if i not in choices)


def _value_probes(annotation: Any, metadata: list[Any], extra: dict[str, Any], default: Any):
    """(value, inside) pairs for one key: each bound, each choice and one invalid one, the schema extras."""
    step = 1 if annotation is int else 1e-6
    for bound in _bounds(metadata):
        if isinstance(bound, at.MinLen):
            yield default[: bound.min_length], True
            yield default[: bound.min_length - 1], False
        else:
            yield from _around(bound, step)
    if choices := _choices(annotation):
        yield from ((c, True) for c in choices)
        yield _invalid_choice(choices), False
    if typing.get_origin(annotation) is list and (choices := _choices(typing.get_args(annotation)[0])):
        yield from (([c], True) for c in choices)
        yield [_invalid_choice(choices)], False
    if typing.get_origin(annotation) in (typing.Union, type(int | None)):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        yield None, True
    if typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        default = list(default) if default is not None else [1.0] * len(items)  # an optional tuple: probe a value
        yield list(default), True
        yield list(default)[:-1], False
        yield [*default, default[-1]], False
        for i, item in enumerate(items):
            for value, inside in _value_probes(float, list(getattr(item, "__metadata__", ())), {}, None):
                yield [*default[:i], value, *default[i + 1:]], inside
    if extra.get("not") == {"multipleOf": 2}:
        yield default, True
        yield default + 1, False
    if extra.get("uniqueItems"):
        some = list(default) or [next(iter(_choices(typing.get_args(annotation)[0])))]  # an empty default: one choice
        yield some, True
        yield [*some, some[0]], False
    if "propertyNames" in extra:
        yield {"T1w": ["t1"]}, True
        yield {"T1 w": ["t1"]}, False


def _probes():
    """(key path, value, inside) for every key with a range, choices or a schema-only rule, from the models."""
    def walk(model: type[BaseModel], path: tuple[str, ...]):
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                yield from walk(field.annotation, (*path, name))
                continue
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            default = field.get_default(call_default_factory=True)
            for value, inside in _value_probes(field.annotation, field.metadata, extra, default):
                yield (*path, name), value, inside

    return list(walk(wf.workflow_model(), ()))


PROBES = _probes()


def test_probes_cover_the_ranged_keys():
    keys = {".".join(p) for p, _, _ in PROBES}
    assert len(keys) > 60
    assert {"demo.n_subjects", "demo.voxel_mm", "preprocess.split.train", "preprocess.mr_percentiles", "models",
            "evaluate.ssim_window", "evaluate.figure_dpi", "report.decimals", "srgan.lr", "srgan.betas",
            "srgan.outer_kernel", "cyclegan.patch_size", "cyclegan.slice_axis", "ingest.modality_patterns"} <= keys


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    return {path[0]: value} if len(path) == 1 else {path[0]: _nest(path[1:], value)}


def _by_hand(path: tuple[str, ...], value: Any) -> str | None:
    """The stage's verdict on the key at `path`: None if accepted, else the error (it names the key)."""
    sections = _sections()
    try:
        if path[0] in sections:
            cfgmod.load_params(json.dumps(_nest(path[1:], value)), sections[path[0]], path[0])
        else:  # a top-level key (models): read by the workflow, not by a stage
            wf.load_workflow_config(_nest(path, value))
    except cfgmod.ConfigError as exc:
        key = ".".join(path)
        # A key's own rules name the key; rules across keys (n_dicom <= n_subjects, low < high of
        # mr_percentiles, ...) name the section, and JSON-schema cannot check them: Python-only by design.
        mine = [part for part in str(exc).split("; ") if part.startswith((f"{key}:", f"{key}["))]
        return "; ".join(mine) or None
    return None


def _by_snakemake(path: tuple[str, ...], value: Any) -> str | None:
    """Snakemake's verdict on the key at `path` (the whole config holding just that value, defaults filled)."""
    try:
        _snakemake(_nest(path, value))
    except WorkflowError as exc:
        error = exc.__context__  # the jsonschema error WorkflowError was raised from
        assert isinstance(error, jsonschema.ValidationError), exc
        return error.message if tuple(error.absolute_path)[: len(path)] == path else None
    return None


@pytest.mark.parametrize(("path", "value", "inside"), PROBES,
                         ids=[f"{'.'.join(p)}={json.dumps(v)}" for p, v, _ in PROBES])
def test_stage_by_hand_and_snakemake_agree(path, value, inside):
    hand, snake = _by_hand(path, value), _by_snakemake(path, value)
    assert (hand is None) == inside, f"by hand: {hand}"
    assert (snake is None) == inside, f"Snakemake: {snake}"


# --------------------------------------------------------------------------------------------- sections
def test_error_names_the_key_path_and_the_value():
    with pytest.raises(cfgmod.ConfigError, match=r"^srgan\.lr: must be > 0, got -1$"):
        cfgmod.load_params('{"lr": -1}', SRGANConfig, "srgan")
    with pytest.raises(cfgmod.ConfigError, match=r"^demo\.n_subjects: expected an integer, got str 'twelve'$"):
        cfgmod.load_params('{"n_subjects": "twelve"}', cfgmod.DemoConfig, "demo")
    with pytest.raises(cfgmod.ConfigError, match=r"^preprocess\.split\.train: must be >= 0, got -1$"):
        cfgmod.PreprocessConfig(split={"train": -1})
    with pytest.raises(cfgmod.ConfigError, match=r"^srgan\.betas\[1\]: must be < 1, got 1$"):
        SRGANConfig(betas=[0.9, 1])


@pytest.mark.parametrize(
    ("cls", "data", "message"),
    [
        (cfgmod.DemoConfig, {"n_subjects": 3, "n_dicom": 4}, r"demo: n_dicom must be between 0 and n_subjects"),
        (SRGANConfig, {"pretrain_steps": 0, "gan_steps": 0}, "pretrain_steps \\+ gan_steps must be >= 1"),
        (CycleGANConfig, {"n_steps": 0, "n_steps_decay": 0}, "n_steps \\+ n_steps_decay must be >= 1"),
        (CycleGANConfig, {"target": "T1w"}, "cyclegan: source and target are both 'T1w'"),
        (cfgmod.SplitConfig, {"train": 0, "val": 0, "test": 0}, r"preprocess\.split: ratios must not all be 0"),
        (cfgmod.SRConfig, {"method": "thick_slice"}, "set axes: through"),
        (cfgmod.PreprocessConfig, {"mr_percentiles": [99, 1]}, r"preprocess: mr_percentiles .*low < high"),
        (cfgmod.PreprocessConfig, {"ct_window": [0, 0]}, r"preprocess: ct_window .*low < high"),
        (cfgmod.IngestConfig, {"skip_patterns": ["[scout"]}, r"ingest\.skip_patterns: bad regular expression"),
        (cfgmod.IngestConfig, {"modality_patterns": {"T1w": ["t1("]}}, r"modality_patterns\.T1w: bad regular"),
    ],
)
def test_cross_key_rules(cls, data, message):
    with pytest.raises(cfgmod.ConfigError, match=message):
        cls(**data)
    with pytest.raises(cfgmod.ConfigError, match=message):
        cfgmod.load_params(json.dumps(data), cls, cls.where)


def test_demo_holds_the_rules_of_the_old_check_config():
    """demo.check_config's ranges (n_subjects >= 1, 0 <= n_dicom <= n_subjects, 0.5 <= voxel_mm <= 8) are the
    section's own, with n_subjects >= 3 as the schema had it."""
    for bad in ({"n_subjects": 2}, {"n_dicom": -1}, {"n_subjects": 3, "n_dicom": 4}, {"voxel_mm": 0.4},
                {"voxel_mm": 8.5}):
        with pytest.raises(cfgmod.ConfigError):
            cfgmod.DemoConfig(**bad)
    assert cfgmod.DemoConfig(n_subjects=3, n_dicom=3, voxel_mm=0.5).n_dicom == 3


def test_types_are_strict_where_they_were():
    for bad in ({"n_subjects": True}, {"n_subjects": 12.0}, {"voxel_mm": "2"}, {"noise": 1}):
        with pytest.raises(cfgmod.ConfigError):
            cfgmod.DemoConfig(**bad)
    with pytest.raises(cfgmod.ConfigError, match="spatial_dims"):
        SRGANConfig(spatial_dims=True)
    demo = cfgmod.DemoConfig(voxel_mm=3)
    assert demo.voxel_mm == 3.0 and isinstance(demo.voxel_mm, float)
    assert cfgmod.PreprocessConfig(spacing=[1, 2, 3]).spacing == (1.0, 2.0, 3.0)


def test_sections_are_frozen_and_round_trip():
    for cls in [*_sections().values(), cfgmod.SplitConfig, cfgmod.SRConfig]:
        section = cls()
        assert cls(**cfgmod.to_dict(section)) == section
        assert cfgmod.load_params(json.dumps(section.model_dump(mode="json")), cls, cls.where) == section
    with pytest.raises(Exception, match="frozen"):
        cfgmod.DemoConfig().seed = 1  # type: ignore[misc]
    assert cfgmod.to_dict(SRGANConfig())["betas"] == (0.9, 0.999)


def test_load_params_inline_json_and_file(tmp_path):
    sec = cfgmod.load_params('{"n_subjects": 5}', cfgmod.DemoConfig, "demo")
    assert sec.n_subjects == 5 and sec.voxel_mm == cfgmod.DemoConfig().voxel_mm
    f = tmp_path / "demo.yaml"
    f.write_text("voxel_mm: 3\n")
    assert cfgmod.load_params(str(f), cfgmod.DemoConfig, "demo").voxel_mm == 3.0
    f.write_text("demo:\n  voxel_mm: 4\n")  # a file holding just this section
    assert cfgmod.load_params(str(f), cfgmod.DemoConfig, "demo").voxel_mm == 4.0
    assert cfgmod.load_params(None, cfgmod.DemoConfig, "demo") == cfgmod.DemoConfig()
    with pytest.raises(cfgmod.ConfigError, match="neither inline JSON nor an existing file"):
        cfgmod.load_params(str(tmp_path / "missing.yaml"), cfgmod.DemoConfig, "demo")
    f.write_text("- 1\n")
    with pytest.raises(cfgmod.ConfigError, match="demo: expected a mapping"):
        cfgmod.load_params(str(f), cfgmod.DemoConfig, "demo")
