"""What to evaluate: the generator outputs the model families export (`--outputs`), grouped into tasks.

An output names one generator's images: `results/infer/<name>/<subject>_<desc>.nii.gz`, scored against the
subjects.tsv column `truth`, made from the column `input`, by a model of `family` (whose training history is
`results/models/<family>/history.csv`). Its `task` (a kind in `TASK_KINDS`) picks the baselines and how the
input is read. Outputs of one kind with the same input and truth form one task: they are scored side by side
against the same baselines, in one table and one set of figures. Nothing here knows a family by name.

An output that is not evaluated (`--skipped`: the workflow did not train or infer it; or no subject of the
evaluated splits has its input and truth) is a `Skipped`, with its reason. It still belongs to its task, so the
task's name and description do not depend on which outputs the data allowed; a task whose outputs are all
skipped has no outputs to score and only its `skipped` list.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.config import EvaluateConfig

log = logging.getLogger(__name__)

#: The kinds of task evaluation knows: super-resolution (input on a coarser grid), translation (same grid) and
#: restoration (a corrupted scan of the truth on its grid, e.g. motion artifacts; the baseline is the input itself).
TASK_KINDS: tuple[str, ...] = ("sr", "translation", "restoration", "inpainting")
#: inpainting: an input with deleted slices (NaN) on the truth's grid, scored inside the deleted voxels only
#: (`pipeline.evaluation.inpainting`), against interpolation across the gaps (`evaluate.inpainting_baselines`)
#: the one baseline of a restoration task: the corrupted input as it is
RESTORATION_BASELINES: tuple[str, ...] = ("input",)
OUTPUT_KEYS: tuple[str, ...] = ("name", "family", "task", "input", "truth", "desc")
#: what an item of `--skipped` has beyond OUTPUT_KEYS
SKIPPED_KEYS: tuple[str, ...] = ("reason",)
# Output names, families and descs become file names and HTML anchors.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class Output:
    """One evaluated generator output (an item of `--outputs`)."""

    name: str  # results/infer/<name>/<subject>_<desc>.nii.gz and results/metrics/<name>.csv
    family: str  # results/models/<family>/ holds its history.csv and train_summary.json
    task: str  # a kind in TASK_KINDS
    input: str  # the subjects.tsv column the generator reads (e.g. T1w_lr or T1w)
    truth: str  # the subjects.tsv column it is scored against (e.g. T1w or T2w)
    desc: str  # file-name suffix of its images


@dataclasses.dataclass(frozen=True)
class Skipped:
    """An output that is not evaluated (an item of `--skipped`, or one no subject can be scored on), and why."""

    output: Output
    reason: str  # shown in the report as "not evaluated: <reason>"


@dataclasses.dataclass
class Task:
    """One evaluation task: outputs of one kind with the same input and ground truth, and their baselines."""

    name: str  # the kind ("sr", "translation"), or kind-input-truth when a kind has several tasks
    kind: str  # "sr" | "translation"
    outputs: list[Output]
    target: str  # ground-truth column of subjects.tsv
    source: str  # the input column
    baselines: list[str]
    description: str
    degradation: dict[str, Any] = dataclasses.field(default_factory=dict)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)  # its outputs that are not evaluated

    @property
    def models(self) -> list[str]:
        """The names of the task's outputs, in the order given."""
        return [o.name for o in self.outputs]


def parse_json(text: str, what: str) -> Any:
    """An argument given as inline JSON or as the path of a JSON file."""
    stripped = text.strip()
    if stripped[:1] not in ("[", "{"):
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"{what}: {text!r} is neither inline JSON nor an existing file")
        stripped = path.read_text()
    try:
        return json.loads(stripped)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what}: not valid JSON ({exc})") from exc


def _parse_item(item: Any, where: str, extra: tuple[str, ...] = ()) -> Output:
    """One object of `--outputs` (or, with `extra` keys, of `--skipped`), checked."""
    keys = (*OUTPUT_KEYS, *extra)
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected an object with keys {', '.join(keys)}")
    missing = [k for k in keys if k not in item]
    if missing:
        raise ValueError(f"{where}: missing key(s) {', '.join(missing)}; expected {', '.join(keys)}")
    for key in keys:
        if not isinstance(item[key], str) or not item[key]:
            raise ValueError(f"{where}.{key}: expected a non-empty string, got {item[key]!r}")
    for key in ("name", "family", "desc"):
        if not NAME_RE.match(item[key]):
            raise ValueError(f"{where}.{key}: {item[key]!r} is not a plain name (letters, digits, . _ -)")
    if item["task"] not in TASK_KINDS:
        raise ValueError(f"{where}.task: {item['task']!r} is not one of {', '.join(TASK_KINDS)}")
    return Output(**{k: item[k] for k in OUTPUT_KEYS})


def _check_list(data: Any, what: str) -> list[Any]:
    if not isinstance(data, list):
        raise ValueError(f"{what}: expected a JSON list of objects, one per generator output")
    return data


def parse_outputs(data: Any) -> list[Output]:
    """Check the `--outputs` list (parsed JSON): objects with every key of OUTPUT_KEYS, unique names.

    Other keys of `pipeline.models.contract.Output` (model_file, infer_args) are for inference; they are
    allowed and ignored here. The list may be empty (every output skipped; see `check_outputs`).
    """
    outputs = [_parse_item(item, f"--outputs[{i}]") for i, item in enumerate(_check_list(data, "--outputs"))]
    names = [o.name for o in outputs]
    if len(set(names)) != len(names):
        raise ValueError(f"a model is named twice: {names}")
    return outputs


def parse_skipped(data: Any) -> list[Skipped]:
    """Check the `--skipped` list (parsed JSON): the objects of `--outputs` plus a `reason`, unique names."""
    skipped = [Skipped(_parse_item(item, f"--skipped[{i}]", SKIPPED_KEYS), item["reason"])
               for i, item in enumerate(_check_list(data, "--skipped"))]
    names = [s.output.name for s in skipped]
    if len(set(names)) != len(names):
        raise ValueError(f"--skipped: an output is named twice: {names}")
    return skipped


def check_outputs(outputs: Sequence[Output], skipped: Sequence[Skipped]) -> None:
    """No output both evaluated and skipped. Both may be empty: the run's families export no per-subject output
    (a synthesis family such as dcgan is judged by its training job), and the summary then has no task."""
    both = sorted({o.name for o in outputs} & {s.output.name for s in skipped})
    if both:
        raise ValueError(f"output(s) {', '.join(both)} in both --outputs and --skipped")


def _sr_task(name: str, outputs: list[Output], degradation: dict[str, Any], cfg: EvaluateConfig) -> Task:
    modality, source = outputs[0].truth, outputs[0].input
    baselines = list(cfg.sr_baselines)
    method = degradation.get("method")
    if "zerofill" in baselines and method not in (None, "kspace"):
        baselines.remove("zerofill")
        log.info("zero-filled k-space baseline skipped: the LR inputs came from %r degradation", method)
    if not baselines:
        raise ValueError("evaluate.sr_baselines: no baseline left to compare with")
    desc = f"x{degradation['scale']} " if "scale" in degradation else ""
    how = f"{degradation.get('method', '?')}, {degradation.get('axes', '?')}" if degradation else "from the LR/HR grids"
    if method == "thick_slice":
        how = f"thick slices, {degradation.get('profile', 'rect')} profile, {degradation.get('axes', '?')}"
    if source == modality:  # the scans themselves (self-supervised): nothing to score against
        return Task(name, "sr", outputs, modality, source, baselines,
                    f"super-resolution of the {modality} scans themselves (no ground truth)", degradation)
    return Task(name, "sr", outputs, modality, source, baselines,
                f"super-resolution {desc}of {modality} ({how})", degradation)


def _translation_task(name: str, outputs: list[Output], cfg: EvaluateConfig) -> Task:
    src, tgt = outputs[0].input, outputs[0].truth
    if not cfg.translation_baselines:
        raise ValueError("evaluate.translation_baselines: no baseline to compare with")
    return Task(name, "translation", outputs, tgt, src, list(cfg.translation_baselines), f"translation {src} → {tgt}")


def _restoration_task(name: str, outputs: list[Output]) -> Task:
    src, tgt = outputs[0].input, outputs[0].truth
    return Task(name, "restoration", outputs, tgt, src, list(RESTORATION_BASELINES), f"restoration {src} → {tgt}")


def _inpainting_task(name: str, outputs: list[Output], cfg: EvaluateConfig) -> Task:
    src, tgt = outputs[0].input, outputs[0].truth
    return Task(name, "inpainting", outputs, tgt, src, list(cfg.inpainting_baselines),
                f"inpainting of missing slices {src} → {tgt}")


def build_tasks(outputs: Sequence[Output], degradations: dict[str, Any], cfg: EvaluateConfig,
                columns: Sequence[str], table: Path | str, skipped: Sequence[Skipped] = ()) -> list[Task]:
    """Group `outputs` and then `skipped` into tasks (in that order), with their baselines; `degradations` says how
    each SR input column was made ({"T1w_lr": {"method": "kspace", "scale": 4, "axes": "inplane"}, ...});
    `columns` are subjects.tsv's (needed only for the outputs evaluated)."""
    if not isinstance(degradations, dict) or not all(isinstance(v, dict) for v in degradations.values()):
        raise ValueError(f"--degradation: expected a JSON object of SR input column -> its degradation "
                         f"(an object), got {degradations!r}")
    groups: dict[tuple[str, str, str], list[Output]] = {}
    for out in [*outputs, *(s.output for s in skipped)]:
        groups.setdefault((out.task, out.input, out.truth), []).append(out)
    kinds = [kind for kind, _, _ in groups]
    tasks = []
    for (kind, source, truth), members in groups.items():
        evaluated = [o for o in members if o in outputs]
        missing = [col for col in (source, truth) if col not in columns]
        if evaluated and missing:
            raise ValueError(f"{table}: no column {missing[0]!r} for {kind} {source} → {truth} "
                             f"({', '.join(o.name for o in evaluated)})")
        name = kind if kinds.count(kind) == 1 else f"{kind}-{source}-{truth}"
        if kind == "sr":
            task = _sr_task(name, members, degradations.get(source, {}), cfg)
        elif kind == "restoration":
            task = _restoration_task(name, members)
        elif kind == "inpainting":
            task = _inpainting_task(name, members, cfg)
        else:
            task = _translation_task(name, members, cfg)
        task.outputs = evaluated
        task.skipped = [s for s in skipped if s.output in members]
        tasks.append(task)
    return tasks
