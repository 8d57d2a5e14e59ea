"""Peak memory per workflow rule for a small and a large demo cohort (does any stage grow with the cohort?).

    python benchmarks/memory_scaling.py                          # 12 and 48 subjects, tiny training
    python benchmarks/memory_scaling.py --subjects 12 48 --cores 2 --work /tmp/memory_scaling
    python benchmarks/memory_scaling.py --tabulate-only          # re-read the runs already in --work

Runs the whole workflow (Snakefile of `--repo`, its `config/config.yaml` plus a small override file: the demo
cohort size, `n_dicom` = a third of it, tiny networks and a few training steps, a small bootstrap) once per
cohort size in `<work>/n<N>`, then writes a markdown table per rule to `--out`:

- ``max_rss``: Snakemake's `benchmark:` record (psutil, the job's process tree; sampled every 0.5 s for the
  first ~15 s of a job, then only every 30 s, so a short peak in a long job can be missed);
- ``peak``: the exact peak resident set (``getrusage`` ``ru_maxrss``) of each `python -m pipeline` process,
  recorded at exit by a `sitecustomize` this script puts on the jobs' PYTHONPATH (harness only; the pipeline
  is unchanged). This also covers rules without a `benchmark:` (build_report).

Rules that run once per subject (infer_*) show the maximum over their jobs. A stage whose memory is bounded
whatever the cohort size has a 48/12 ratio near 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

#: Tiny training: memory of the data path, not of the networks, is what this benchmark is about.
TINY = {
    "srgan": {"channels": 16, "n_blocks": 2, "d_channels": 16, "d_layers": 2, "batch_size": 8,
              "pretrain_steps": 20, "gan_steps": 10, "log_every": 10, "checkpoint_every": 30},
    "cyclegan": {"ngf": 8, "ndf": 8, "n_blocks": 2, "d_layers": 2, "batch_size": 4,
                 "warmup_steps": 10, "n_steps": 20, "n_steps_decay": 10, "log_every": 10, "checkpoint_every": 30},
    "evaluate": {"bootstrap_resamples": 200, "figure_dpi": 50},
}

#: Records, at exit, the peak RSS of every `python -m pipeline` process (harness only).
SITECUSTOMIZE = textwrap.dedent('''\
    import atexit, json, os, resource, sys

    def _record():
        argv = list(sys.argv)
        if not argv or not argv[0].endswith(os.path.join("pipeline", "__main__.py")):
            return
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        with open(os.environ["MEMORY_SCALING_LOG"], "a") as fh:
            fh.write(json.dumps({"argv": argv[1:], "peak_mb": peak_mb}) + "\\n")

    if os.environ.get("MEMORY_SCALING_LOG"):
        atexit.register(_record)
    ''')


def override(n_subjects: int) -> dict:
    """The config overrides of one cohort size."""
    return {"demo": {"n_subjects": n_subjects, "n_dicom": max(1, n_subjects // 3)}, **TINY}


def run_cohort(repo: Path, work: Path, n_subjects: int, cores: int) -> float:
    """Run the workflow for one cohort size in `work` (from scratch); returns the wall time in seconds."""
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / "override.yaml").write_text(yaml.safe_dump(override(n_subjects), sort_keys=False))
    hook = work / "harness"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), str(hook)]),
           "MEMORY_SCALING_LOG": str(work / "peak_rss.jsonl"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(work),
           "--configfile", str(repo / "config" / "config.yaml"), str(work / "override.yaml"),
           "--cores", str(cores)]
    print(f"[{n_subjects} subjects] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    with open(work / "snakemake.out", "w") as out:
        proc = subprocess.run(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"snakemake failed for {n_subjects} subjects: see {work / 'snakemake.out'} and {work}/logs")
    print(f"[{n_subjects} subjects] done in {elapsed:.0f} s", flush=True)
    return elapsed


def _rule_of(argv: list[str]) -> str:
    """The workflow rule of a `python -m pipeline` command line."""
    stage = argv[0] if argv else "?"
    if stage == "train":
        return f"train_model_{argv[1]}"
    if stage == "infer":  # results/infer/<output>/<subject>_<desc>.nii.gz
        return f"infer_model_{Path(argv[argv.index('--output') + 1]).parent.name}"
    return {"demo": "generate_demo", "ingest": "ingest_scans", "preprocess": "preprocess_scans",
            "evaluate": "evaluate_models", "report": "build_report"}.get(stage, stage)


def collect(work: Path) -> dict[str, dict]:
    """Per rule: jobs, max of Snakemake's max_rss (MB), max exact peak (MB), max wall time (s)."""
    rules: dict[str, dict] = {}
    bench = work / "results" / "benchmarks"
    for tsv in sorted(bench.rglob("*.tsv")):
        rel = tsv.relative_to(bench)
        rule = rel.parts[0] if len(rel.parts) > 1 else tsv.stem
        with tsv.open(newline="") as fh:
            row = next(csv.DictReader(fh, delimiter="\t"))
        r = rules.setdefault(rule, {"jobs": 0, "max_rss": [], "peak": [], "s": []})
        r["jobs"] += 1
        if row.get("max_rss") not in (None, "", "NA", "-"):
            r["max_rss"].append(float(row["max_rss"]))
        r["s"].append(float(row["s"]))
    log = work / "peak_rss.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            rec = json.loads(line)
            rule = _rule_of(rec["argv"])
            r = rules.setdefault(rule, {"jobs": 0, "max_rss": [], "peak": [], "s": []})
            r["peak"].append(rec["peak_mb"])
            if not r["s"]:
                r["jobs"] = max(r["jobs"], len(r["peak"]))
    return rules


ORDER = ["generate_demo", "ingest_scans", "preprocess_scans", "train_model_srgan", "train_model_cyclegan",
         "infer_model_srresnet", "infer_model_srgan", "infer_model_cyclegan", "evaluate_models", "build_report"]


def table(small: dict[str, dict], large: dict[str, dict], n_small: int, n_large: int) -> str:
    """The markdown table: per rule, jobs, max_rss and exact peak for both cohorts and their ratios."""
    def mx(values: list[float]) -> float | None:
        return max(values) if values else None

    def fmt(v: float | None, digits: int = 0) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    def ratio(a: float | None, b: float | None) -> str:
        return "-" if not a or b is None else f"{b / a:.2f}"

    head = (f"| rule | jobs {n_small} / {n_large} | max_rss {n_small} (MB) | max_rss {n_large} (MB) | ratio "
            f"| peak {n_small} (MB) | peak {n_large} (MB) | ratio | wall {n_small} / {n_large} (s) |")
    lines = [head, "|" + "---|" * 9]
    rules = [r for r in ORDER if r in small or r in large] + sorted((set(small) | set(large)) - set(ORDER))
    empty = {"jobs": 0, "max_rss": [], "peak": [], "s": []}
    for rule in rules:
        a, b = small.get(rule, empty), large.get(rule, empty)
        ra, rb, pa, pb = mx(a["max_rss"]), mx(b["max_rss"]), mx(a["peak"]), mx(b["peak"])
        lines.append(f"| {rule} | {a['jobs']} / {b['jobs']} | {fmt(ra)} | {fmt(rb)} | {ratio(ra, rb)} | {fmt(pa)} "
                     f"| {fmt(pb)} | {ratio(pa, pb)} | {fmt(mx(a['s']), 1)} / {fmt(mx(b['s']), 1)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, nargs=2, default=[12, 48], metavar=("SMALL", "LARGE"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/memory_scaling"), help="runs go to WORK/n<N>")
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose workflow and package run")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory_scaling.md")
    parser.add_argument("--title", default="Peak memory per rule, demo cohort")
    parser.add_argument("--tabulate-only", action="store_true", help="do not run; tabulate the runs in --work")
    args = parser.parse_args(argv)

    repo = args.repo.resolve()
    n_small, n_large = args.subjects
    walls = {}
    for n in (n_small, n_large):
        if not args.tabulate_only:
            walls[n] = run_cohort(repo, args.work / f"n{n}", n, args.cores)
    small, large = collect(args.work / f"n{n_small}"), collect(args.work / f"n{n_large}")
    text = [f"# {args.title}: {n_small} vs {n_large} subjects", "",
            f"Workflow of `{repo}`, `--cores {args.cores}`, config/config.yaml plus (per cohort size N):", "",
            "```yaml", yaml.safe_dump(override(n_large), sort_keys=False).replace(
                f"n_subjects: {n_large}", "n_subjects: N").replace(f"n_dicom: {n_large // 3}", "n_dicom: N // 3").rstrip(),
            "```", "",
            "max_rss: Snakemake's benchmark record (sampled); peak: exact ru_maxrss of the `python -m pipeline` "
            "process. Per-subject rules (infer_*): maximum over their jobs. Ratio: large / small.", "",
            table(small, large, n_small, n_large)]
    if walls:
        text.append("Workflow wall time: " + ", ".join(f"{n} subjects {s:.0f} s" for n, s in walls.items())
                    + f" (shared CPU; median job times are not comparable across runs). {time.strftime('%Y-%m-%d')}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(text))
    print("\n".join(text))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
