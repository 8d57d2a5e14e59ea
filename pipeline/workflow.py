"""What the Snakemake rules learn from the GAN families (imported by `rules/common.smk`).

The rules are generic over families: `train_model` trains any family of ``config["models"]``, `infer_model`
applies any exported generator (`Output`) to a subject, evaluation and the report take the list of outputs. A
family's config section is split in two: the keys only inference reads (`Family.inference_keys`: window size,
overlap, test-time augmentation...) become `infer` arguments, the rest is the training's `--params`, so changing
an inference key re-runs inference but never training.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.config import load_params
from pipeline.models import family
from pipeline.models.contract import Output


def family_config(config: Mapping[str, Any], name: str) -> Any:
    """The typed config section of the family `name` from the workflow config."""
    return load_params(json.dumps(config.get(name) or {}), family(name).config_class, name)


def outputs(config: Mapping[str, Any]) -> list[Output]:
    """Every generator the families of ``config["models"]`` export, in that order (names unique)."""
    found: dict[str, Output] = {}
    for name in config["models"]:
        for out in family(name).outputs(family_config(config, name)):
            if out.name in found:
                raise ValueError(f"models: {name} and {found[out.name].family} both export {out.name!r}")
            found[out.name] = out
    return list(found.values())


def train_params(config: Mapping[str, Any], name: str) -> str:
    """The training's `--params` of family `name`: its section without the inference-only keys (inline JSON)."""
    keys = family(name).inference_keys
    return json.dumps({k: v for k, v in (config.get(name) or {}).items() if k not in keys})


def infer_arguments(config: Mapping[str, Any], output: Output) -> str:
    """The `infer` options of `output`: its family's inference-only keys, then the output's own arguments."""
    section = config.get(output.family) or {}
    args: list[str] = []
    for key in family(output.family).inference_keys:
        if key not in section:
            continue
        value, option = section[key], "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(option if value else "--no-" + key.replace("_", "-"))
        else:
            args += [option, str(value)]
    return " ".join(shlex.quote(a) for a in (*args, *output.infer_args))


def alternatives(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly one of `names`."""
    return "|".join(re.escape(n) for n in names) or "(?!)"
