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


def trained_families(config: Mapping[str, Any], skipped: Mapping[str, str]) -> list[str]:
    """The families of ``config["models"]`` a run trains: those with an output that is not `skipped`, and those
    that export no per-subject output (a synthesis family, judged by its own training job)."""
    names = []
    for name in config["models"]:
        outs = family(name).outputs(family_config(config, name))
        if not outs or any(o.name not in skipped for o in outs):
            names.append(name)
    return names


#: preprocess sub-sections that make derived inputs only opt-in families read: (section key, column suffix)
DERIVED_INPUTS: tuple[tuple[str, str], ...] = (("motion", "_motion"), ("gaps", "_gaps"), ("thick", "_thick"))


def preprocess_params(config: Mapping[str, Any]) -> str:
    """The preprocess stage's `--params` (inline JSON): the `preprocess` section, with each derived input of
    DERIVED_INPUTS made only for the modalities an output of `models:` reads (a run without the motion or
    inpainting family does not pay for simulating their inputs)."""
    section = dict(config.get("preprocess") or {})
    read = {o.input for o in outputs(config)}
    for key, suffix in DERIVED_INPUTS:
        if isinstance(section.get(key), Mapping):
            wanted = section[key].get("modalities", [])
            section[key] = {**section[key], "modalities": [m for m in wanted if f"{m}{suffix}" in read]}
    return json.dumps(section)


def sr_degradations(config: Mapping[str, Any]) -> str:
    """Evaluation's `--degradation` (inline JSON): how each SR input column is made from its modality
    (preprocess.sr's `<modality>_lr`, preprocess.thick's `<modality>_thick`)."""
    pre = config.get("preprocess") or {}
    sr, thick = pre.get("sr") or {}, pre.get("thick") or {}
    found = {f"{m}_lr": {k: sr[k] for k in ("method", "scale", "axes") if k in sr} for m in sr.get("modalities", [])}
    for m in thick.get("modalities", []):
        found[f"{m}_thick"] = {"method": "thick_slice", "scale": thick.get("factor", 4), "axes": "through",
                               "profile": thick.get("profile", "rect")}
    return json.dumps(found)


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


def _has(row: Mapping[str, Any], *columns: str) -> bool:
    return all(row.get(c) for c in (*columns, "mask"))


def _modalities(*columns: str) -> str:
    """'T1w and T2w' for the columns (an SR input `T1w_lr` is made from `T1w`, so it is named once)."""
    names = list(dict.fromkeys(c.removesuffix("_lr") for c in columns))
    return " and ".join(names)


def plan(rows: Sequence[Mapping[str, Any]], outputs_: Sequence[Output], eval_splits: Sequence[str],
         ) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Which subjects each output runs on, and why the others are skipped.

    Returns ``(run, skipped)``: output name -> the subjects of `eval_splits` with its input, ground truth and mask
    (those it is inferred on and scored on), and output name -> the reason it is not trained, inferred or
    evaluated: no training subject with its input or its ground truth, fewer training subjects than the family
    needs (`Family.min_train_subjects`: 2 for unpaired translation), or no evaluated subject with both. A family
    is skipped whole when any of its outputs lacks training data (they share one training). An output whose truth
    column is its input column (self-supervised, no ground truth) runs on every subject with its input, of any
    split, and is scored on none.
    """
    splits = list(eval_splits)
    where = "/".join(splits)
    skipped: dict[str, str] = {}
    train = [r for r in rows if r["split"] == "train"]
    lacking: set[str] = set()  # families that cannot train
    for out in outputs_:
        needed = family(out.family).min_train_subjects
        either = sum(1 for r in train if _has(r, out.input) or _has(r, out.truth))
        if out.truth == out.input:  # self-supervised, no ground truth: every subject with the input, nothing scored
            if not any(_has(r, out.input) for r in rows):
                skipped[out.name] = f"no subject has {out.input}"
        elif not any(_has(r, out.input) for r in train) or not any(_has(r, out.truth) for r in train):
            skipped[out.name] = f"no training subject has {_modalities(out.input, out.truth)}"
            lacking.add(out.family)
        elif either < needed:
            skipped[out.name] = (f"{either} training subject(s) with {_modalities(out.input)} or "
                                 f"{_modalities(out.truth)}; it needs at least {needed} (unpaired training takes "
                                 f"source and target from different subjects; preprocess.split sets the split)")
            lacking.add(out.family)
        elif not any(r["split"] in splits and _has(r, out.input, out.truth) for r in rows):
            skipped[out.name] = f"no {where} subject has {_modalities(out.input, out.truth)}"
    for out in outputs_:
        if out.family in lacking and out.name not in skipped:
            skipped[out.name] = next(skipped[o.name] for o in outputs_ if o.family == out.family and o.name in skipped)
    run = {o.name: [r["subject"] for r in rows if (o.truth == o.input or r["split"] in splits)
                    and _has(r, o.input, o.truth)]
           for o in outputs_ if o.name not in skipped}
    return run, skipped


def plan_messages(rows: Sequence[Mapping[str, Any]], outputs_: Sequence[Output], eval_splits: Sequence[str],
                  ) -> list[tuple[str, str]]:
    """(level, message) lines saying what each family runs on, or why it is skipped."""
    run, skipped = plan(rows, outputs_, eval_splits)
    lines = []
    for out in outputs_:
        if out.name in skipped:
            lines.append(("warning", f"{out.name} ({out.family}) is skipped: {skipped[out.name]}"))
        elif out.truth == out.input:
            lines.append(("info", f"{out.name} ({out.family}): {len(run[out.name])} subject(s) with {out.input}, "
                                  "self-supervised, no ground truth to score against"))
        else:
            n_train = sum(1 for r in rows if r["split"] == "train" and _has(r, out.input, out.truth))
            lines.append(("info", f"{out.name} ({out.family}): {n_train} training subject(s) with "
                                  f"{_modalities(out.input, out.truth)}, {len(run[out.name])} evaluated"))
    return lines
