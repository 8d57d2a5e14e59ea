"""The shipped config, its JSON-Schema and the typed dataclasses agree; bad configs fail naming the key."""

from __future__ import annotations

import dataclasses
import typing

import jsonschema
import pytest
import yaml

from pipeline import config as cfgmod
from tests.conftest import REPO

CONFIG = REPO / "config" / "config.yaml"
SCHEMA = REPO / "config" / "config.schema.yaml"


def _schema():
    return yaml.safe_load(SCHEMA.read_text())


def _shipped():
    return yaml.safe_load(CONFIG.read_text())


def test_shipped_config_validates_against_schema_and_dataclasses():
    jsonschema.validate(_shipped(), _schema())
    parsed = cfgmod.load_config(CONFIG)
    assert isinstance(parsed, cfgmod.PipelineConfig)


def _compare(cls, schema_node, path="config"):
    """Schema properties == dataclass fields; schema defaults == dataclass defaults; every key documented."""
    props = schema_node["properties"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(props) == set(fields), f"{path}: schema {sorted(props)} vs dataclass {sorted(fields)}"
    assert schema_node.get("additionalProperties") is False, f"{path}: schema must reject unknown keys"
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for name, node in props.items():
        assert node.get("description"), f"{path}.{name} has no description"
        assert "default" in node, f"{path}.{name} has no default"
        if dataclasses.is_dataclass(hints[name]):
            _compare(hints[name], node, f"{path}.{name}")
        else:
            value = getattr(defaults, name)
            expected = node["default"]
            if isinstance(value, tuple):
                value = list(value)
            assert value == expected, f"{path}.{name}: dataclass default {value!r} != schema default {expected!r}"


def test_schema_and_dataclasses_agree():
    _compare(cfgmod.PipelineConfig, _schema())


def test_shipped_yaml_equals_defaults():
    """config.yaml states the defaults, so what a user reads is what runs."""
    assert cfgmod.load_config(CONFIG) == cfgmod.PipelineConfig()


def test_misspelt_key_is_named():
    data = _shipped()
    data["demo"]["n_subject"] = 3
    with pytest.raises(jsonschema.ValidationError, match="n_subject"):
        jsonschema.validate(data, _schema())
    with pytest.raises(cfgmod.ConfigError, match="n_subject"):
        cfgmod.parse_section(cfgmod.PipelineConfig, data)


def test_wrong_type_is_named():
    data = _shipped()
    data["demo"]["n_subjects"] = "twelve"
    with pytest.raises(jsonschema.ValidationError, match="twelve"):
        jsonschema.validate(data, _schema())
    with pytest.raises(cfgmod.ConfigError, match=r"demo\.n_subjects"):
        cfgmod.parse_section(cfgmod.PipelineConfig, data)


def test_load_params_inline_json_and_file(tmp_path):
    sec = cfgmod.load_params('{"n_subjects": 5}', cfgmod.DemoConfig, "demo")
    assert sec.n_subjects == 5 and sec.voxel_mm == cfgmod.DemoConfig().voxel_mm
    f = tmp_path / "demo.yaml"
    f.write_text("voxel_mm: 3\n")
    assert cfgmod.load_params(str(f), cfgmod.DemoConfig, "demo").voxel_mm == 3.0
    assert cfgmod.load_params(None, cfgmod.DemoConfig, "demo") == cfgmod.DemoConfig()
    with pytest.raises(cfgmod.ConfigError, match="neither inline JSON nor an existing file"):
        cfgmod.load_params(str(tmp_path / "missing.yaml"), cfgmod.DemoConfig, "demo")
