"""Typed configuration sections.

`config/config.yaml` is validated twice: by Snakemake against `config/config.schema.yaml` before the DAG is
built, and here, section by section, when a stage starts (`python -m pipeline <stage> --params ...`). Each
section is a frozen dataclass that rejects unknown keys and wrong types with a message naming the key.
`tests/unit/test_config.py` checks that schema, YAML and dataclasses agree, so they cannot drift.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, misspelt or of the wrong type."""


# --------------------------------------------------------------------------------------------- sections
@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """The embedded demo cohort (stage 1)."""

    n_subjects: int = 12
    n_dicom: int = 4
    voxel_mm: float = 2.0
    seed: int = 20261122


@dataclasses.dataclass(frozen=True)
class IngestConfig:
    """DICOM/NIfTI/BIDS ingestion (stage 2)."""

    modality_patterns: dict[str, list[str]] = dataclasses.field(
        default_factory=lambda: {
            "T1w": [r"t1", r"mprage", r"spgr", r"tfl3d", r"bravo", r"tfe"],
            "T2w": [r"t2(?!\*)(?!.*flair)", r"tse", r"fse", r"space"],
            "PDw": [r"\bpd\b", r"pdw", r"proton.?density"],
            "FLAIR": [r"flair", r"\bdark.?fluid"],
        }
    )


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """The whole workflow configuration (`config/config.yaml`)."""

    input_dir: str = ""
    seed: int = 42
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    ingest: IngestConfig = dataclasses.field(default_factory=IngestConfig)


# --------------------------------------------------------------------------------------------- parsing
def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Return `value` checked (and for nested dataclasses, parsed) against the type hint `hint`."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
            try:
                return _check_type(value, option, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: {value!r} matches none of {hint}")
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(hint))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        items = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, vtype = typing.get_args(hint) or (Any, Any)
        return {k: _check_type(v, vtype, f"{where}.{k}") for k, v in value.items()}
    if hint is Any:
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if hint in (str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def parse_section(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build the dataclass `cls` from `data`, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(fields))}")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def load_params(source: str | None, cls: type[T], where: str) -> T:
    """Parse a section given on the command line as inline JSON, a YAML/JSON file path, or nothing (defaults)."""
    if not source:
        return cls()
    text = source.strip()
    if text.startswith("{"):
        data = json.loads(text)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"--params: {source!r} is neither inline JSON nor an existing file")
        data = yaml.safe_load(path.read_text())
    return parse_section(cls, data, where)


def load_config(path: str | Path) -> PipelineConfig:
    """Read and validate a whole `config.yaml`."""
    path = Path(path)
    data = yaml.safe_load(path.read_text()) or {}
    return parse_section(PipelineConfig, data, where=str(path))


def to_dict(section: Any) -> dict[str, Any]:
    """The resolved section as plain data (for provenance and checkpoints)."""
    return dataclasses.asdict(section)
