"""The whole-workflow configuration model and the JSON schema Snakemake validates `config/config.yaml` with.

The model is assembled from the base sections (`pipeline.config.WorkflowBase`) plus one section per registered
GAN family (`pipeline.models.FAMILIES[name].config_class`, under the family's name), so adding a family adds
its config block here without an edit. `config/config.schema.yaml` is generated from it, never edited by hand:

    python -m pipeline.workflow_config > config/config.schema.yaml    # regenerate
    python -m pipeline.workflow_config --check                        # exit 1 if the committed one is stale

The generated schema is self-contained (no `$ref`), gives every key its `description` and `default` (a
section's default is `{}`, which Snakemake's `validate(..., set_default=True)` then fills key by key),
and rejects unknown keys (`additionalProperties: false`) and every out-of-range value.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, create_model

from pipeline.config import Distinct, Section, WorkflowBase, parse

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO / "config" / "config.schema.yaml"
REGENERATE = "python -m pipeline.workflow_config > config/config.schema.yaml"
HEADER = f"""\
# GENERATED from the typed config sections (pipeline/config.py and the model families' config classes):
# do not edit by hand. Regenerate with
#   {REGENERATE}
# tests/unit/test_config.py fails when this file is stale.
"""
TITLE = "medgan-pipeline configuration"


@functools.cache
def workflow_model() -> type[Section]:
    """The model of the whole `config.yaml`: base sections, `models`, and one section per registered family."""
    from pipeline.models import FAMILIES

    names = tuple(FAMILIES)
    base = WorkflowBase.model_fields["models"]
    models: Any = (Distinct(Literal[names], "family"),  # type: ignore[valid-type]
                   Field(default_factory=base.default_factory, description=base.description))
    sections = {name: (FAMILIES[name].config_class, Field(default_factory=FAMILIES[name].config_class))
                for name in names}
    return create_model("WorkflowConfig", __base__=WorkflowBase, __doc__=WorkflowBase.__doc__,
                        models=models, **sections)


def load_workflow_config(data: dict[str, Any] | str | Path | None) -> Section:
    """Validate a whole config (a mapping, or a YAML file) and fill in the defaults."""
    if isinstance(data, (str, Path)):
        data = yaml.safe_load(Path(data).read_text())
    return parse(workflow_model(), data, "")


# --------------------------------------------------------------------------------------------- schema
def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `$ref` replaced by its definition (the `$ref`'s siblings win) and no `title`s."""
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    out = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "properties":  # property names are keys, not keywords (report.title is a key)
            out[key] = {name: _inline(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _inline(value, defs)
    return _simplify(out)


def _simplify(node: dict[str, Any]) -> dict[str, Any]:
    """Shorter equivalents of pydantic's spellings: `X | None` as `type: [X, "null"]`, tuples of one item
    schema as `items`."""
    options = node.get("anyOf")
    if options and len(options) == 2 and options[1] == {"type": "null"} and isinstance(options[0].get("type"), str):
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        node = {**options[0], "type": [options[0]["type"], "null"], **rest}
    prefix = node.get("prefixItems")
    if prefix and all(item == prefix[0] for item in prefix) and node.get("maxItems") == len(prefix):
        node = {("items" if k == "prefixItems" else k): (prefix[0] if k == "prefixItems" else v)
                for k, v in node.items()}
    return node


def _defaults(node: dict[str, Any], model: type[BaseModel]) -> None:
    """Give every property its default: a section `{}` (filled key by key), a key the model's own default."""
    values = model().model_dump(mode="json")
    for name, sub in node["properties"].items():
        annotation = model.model_fields[name].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            sub["default"] = {}
            _defaults(sub, annotation)
        else:
            sub["default"] = values[name]
        node["properties"][name] = {k: sub[k] for k in _ordered(sub)}


def _ordered(sub: dict[str, Any]) -> list[str]:
    """Keywords in a readable order: type first, description and default last (the nested ones after)."""
    first = [k for k in ("type", "enum") if k in sub]
    last = [k for k in ("description", "default") if k in sub]
    nested = [k for k in ("additionalProperties", "properties") if k in sub and isinstance(sub[k], dict)]
    middle = [k for k in sub if k not in first + last + nested]
    return first + middle + last + nested


def json_schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) of the whole config, self-contained, as written to config.schema.yaml."""
    model = workflow_model()
    raw = model.model_json_schema()
    schema = _inline({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    _defaults(schema, model)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": TITLE, **schema}


class _Dumper(yaml.SafeDumper):
    """Flow style for lists of scalars and short keyword mappings (`items: {type: string}`), `|` for text with
    line breaks, block style for the rest."""


def _flat(value: Any) -> bool:
    return not isinstance(value, (dict, list)) or (isinstance(value, list) and all(map(_flat, value)) and
                                                   not any(isinstance(v, list) for v in value))


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> Any:
    flow = all(not isinstance(item, (dict, list)) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> Any:
    flow = "description" not in data and all(map(_flat, data.values())) and len(str(data)) < 70
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Any:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(str, _represent_str)


def schema_yaml() -> str:
    """config/config.schema.yaml's text: the header comment and the schema."""
    body = yaml.dump(json_schema(), Dumper=_Dumper, sort_keys=False, width=110, allow_unicode=True,
                     default_flow_style=False)
    return HEADER + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.workflow_config", description=__doc__.split("\n")[0])
    parser.add_argument("--check", nargs="?", const=SCHEMA_PATH, type=Path, metavar="SCHEMA",
                        help=f"compare with the committed schema (default {SCHEMA_PATH.relative_to(REPO)}) instead "
                             "of printing it")
    args = parser.parse_args(argv)
    text = schema_yaml()
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if args.check.is_file() and args.check.read_text() == text:
        return 0
    print(f"{args.check} is stale; regenerate it: {REGENERATE}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
