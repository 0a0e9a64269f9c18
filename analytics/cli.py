"""The ``cartographer`` command line.

    cartographer analyze DATASET [--embeddings FILE | --checkpoint PATH] [--dynamics DIR]
                         [--dynamics-from probe|finetune|checkpoints|folder] [--finetune-epochs N ...]
                         [--clusters kmeans|hdbscan|none] [--n-clusters K] [--ray ADDRESS]
                         [--no-issues | --skip-check duplicates|non_iid|columns|images ...] --out DIR
    cartographer issues RUN_DIR [--leak-free-split FILE]
    cartographer export-dynamics RUN_DIR --out DIR [--seed S]
    cartographer impact RUN_DIR --out DIR [--experiment pruning|easy-hard|what-if] [...]
    cartographer validate DATASET [--label COL] [--id COL] [--text COL] [--image COL] [--split COL]
    cartographer samples
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from analytics.access import AccessError, Policy, resolve_data_path
from analytics.analysis_config import DYNAMICS_REGISTRY, AnalysisConfig, ConfigError, Wording, check_config
from analytics.datasets import ColumnRoles, DatasetError, MissingLabelsError, load_dataset
from analytics.dynamics import DynamicsError
from analytics.embeddings import EMBEDDING_REGISTRY, EmbeddingError, EmbeddingSpec
from analytics.finetune_config import HELDOUT_CHOICES, FinetuneConfig
from analytics.names import ROLE_COLUMNS
from analytics.overview import summarize
from analytics.parallel import ExecutorError
from analytics.pipeline import RunError
from analytics.samples import SAMPLES

__all__ = ["main", "command"]

CHECKS = ("duplicates", "non_iid", "columns", "images")  # IssueOptions' switches, for --skip-check


def _add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="a CSV/TSV/Parquet/JSONL file or an image folder")
    for role in ROLE_COLUMNS:
        parser.add_argument(f"--{role}", metavar="COLUMN", default=None,
                            help=f"the {role} column (detected when omitted; '' for none)")
    parser.add_argument("--annotator", metavar="COLUMN", action="append", default=[],
                        help="one annotator's label column; repeat once per annotator (--annotator ann_a "
                             "--annotator ann_b …). Missing values mean not labelled. Without a label column "
                             "each row's label is the annotators' majority vote")
    parser.add_argument("--drop-missing-labels", action="store_true",
                        help="drop rows without a label instead of stopping")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of CSV/TSV/JSON files")
    parser.add_argument("--max-images", type=int, default=None, metavar="N",
                        help="open an image folder only if it holds at most N images "
                             "(default: CARTOGRAPHER_MAX_IMAGES, 200000)")


def _load(args: argparse.Namespace):
    """The dataset, under the operator's rules in the environment (data roots, caps)."""
    roles = ColumnRoles(id=args.id, label=args.label, text=args.text, image=args.image, split=args.split,
                        annotator=tuple(args.annotator))
    return load_dataset(args.dataset, roles=roles, drop_missing_labels=args.drop_missing_labels,
                        encoding=args.encoding, max_images=args.max_images or Policy.from_env().max_images)


def _validate(args: argparse.Namespace) -> int:
    dataset = _load(args)
    summary = summarize(dataset)
    print(f"{dataset.source}: {dataset.kind} dataset, {summary.n_examples} examples, "
          f"{summary.n_classes} classes, fingerprint {dataset.fingerprint}")
    roles = ", ".join(f"{role}={col!r}" for role, col in dataset.roles.as_dict().items() if col)
    print(f"columns used: {roles}")
    for row in summary.class_counts.itertuples():
        print(f"  {row.label:<24} {row.count:>8}  {row.share:6.1%}")
    for note in dataset.notes:
        print(f"note: {note}")
    for skipped in dataset.skipped:
        print(f"skipped: {skipped.path}: {skipped.reason}")
    return 0


# --finetune-* option → FinetuneConfig field
_FINETUNE_OPTIONS = {"finetune_epochs": "epochs", "finetune_lr": "learning_rate", "finetune_batch_size": "batch_size",
                     "finetune_max_tokens": "max_tokens", "finetune_seed": "seed", "finetune_model": "model",
                     "finetune_heldout": "heldout"}
# analysis_config.check_config's refusals, worded with the flags ("path" is set per call: the flag that gave it)
_FLAG_WORDING = Wording(
    names={"dynamics_dir": "--dynamics", "checkpoints": "several --checkpoint files", "column": "--vector-column",
           "architecture": "--architecture", "trust": "--trust-checkpoint",
           **{field: f"--{option.replace('_', '-')}" for option, field in _FINETUNE_OPTIONS.items()}},
    both_inputs="Give either {first} or {second}, not both: each is a source of training dynamics.",
    conflict="--dynamics-from {chosen} conflicts with {given} (training dynamics from the {implied}): choose one "
             "source.",
    needs={"folder": "--dynamics-from folder needs --dynamics DIR: the folder of dynamics_epoch_*.jsonl files, or "
                     "the model output folder that holds training_dynamics/.",
           "checkpoints": "--dynamics-from checkpoints needs --checkpoint once per epoch, in order (at least two); "
                          "{n} given."},
    settings="{options} apply only to --dynamics-from {owner} (the training dynamics here come from the {chosen}).",
    no_scores="--no-scores computes no training dynamics: leave out --dynamics-from, --dynamics and the per-epoch "
              "checkpoints, or compute the scores.",
    embedding_option="{option} does not go with --embedding-source {source}: the '{source}' source takes no {field} "
                     "(sources that do: {owners}).",
    architecture="{option} applies only to --checkpoint: it names the model class of a state-dict checkpoint.",
)


_PATH_FLAGS = {"file": "--embeddings", "checkpoint": "--checkpoint"}  # the flag that gives each source's path


def _embedding_spec(args: argparse.Namespace, checkpoints: tuple[str, ...]) -> EmbeddingSpec | None:
    """The embedding source the flags ask for: --embedding-source, else the one --embeddings,
    --checkpoint or --vector-column imply (None: chosen from the data). Several checkpoints with
    another source are training dynamics only."""
    if args.embeddings and checkpoints:
        raise DatasetError("Give either --embeddings or --checkpoint, not both.")
    by_path = "file" if args.embeddings else "checkpoint" if checkpoints else None
    name = args.embedding_source or by_path or ("column" if args.vector_column else None)
    if name is None:
        return None
    source = EMBEDDING_REGISTRY[name]
    if by_path and name != by_path and source.path is not None:
        raise DatasetError(f"--embedding-source {name} takes its path from {_PATH_FLAGS[name]}, "
                           f"not {_PATH_FLAGS[by_path]}.")
    dynamics_only = len(checkpoints) > 1 and name != "checkpoint"
    path = None if dynamics_only else args.embeddings or (checkpoints[-1] if checkpoints else None)
    # an option the source does not take stays in the spec, so check_config names its flag
    return EmbeddingSpec(source=name, path=path, column=args.vector_column, batch_size=args.batch_size,
                         **{option: getattr(args, flag) for option, flag in (("architecture", "architecture"),
                                                                               ("trust", "trust_checkpoint"))
                            if source.takes(option)})


def _checked_sources(args: argparse.Namespace, spec: EmbeddingSpec | None, checkpoints: tuple[str, ...]) -> str:
    """The source of training dynamics the flags ask for, after
    :func:`analytics.analysis_config.check_config` (worded with the flags) found them compatible."""
    per_epoch = checkpoints if len(checkpoints) > 1 or args.dynamics_from == "checkpoints" else ()
    wording = replace(_FLAG_WORDING, names={**_FLAG_WORDING.names,
                                            "path": "--embeddings" if args.embeddings else "--checkpoint"})
    return check_config(embedding=spec, dynamics_from=args.dynamics_from, dynamics_dir=args.dynamics,
                        checkpoints=per_epoch, architecture=args.architecture,
                        finetune=FinetuneConfig(**_finetune_settings(args)), scores=not args.no_scores,
                        wording=wording)


def _finetune_settings(args: argparse.Namespace) -> dict:
    """The FinetuneConfig fields the --finetune-* flags give (those not given are left out)."""
    return {field: getattr(args, option) for option, field in _FINETUNE_OPTIONS.items()
            if getattr(args, option) is not None}


def _finetune_config(args: argparse.Namespace):
    """The fine-tuning settings from the --finetune-* flags (the defaults for those not given)."""
    given = _finetune_settings(args)
    if "model" in given:
        given["model"] = str(resolve_data_path(given["model"], Policy.from_env(), what="model to fine-tune"))
    return FinetuneConfig(device=args.device, **given)


def _analyze(args: argparse.Namespace) -> int:
    from analytics.dynamics import ProbeConfig
    from analytics.clusters import ClusterConfig
    from analytics.data_issues import IssueOptions
    from analytics.pipeline import run_analysis
    from analytics.slices import SliceConfig

    dataset = _load(args)
    checkpoints = tuple(args.checkpoint or ())
    spec = _embedding_spec(args, checkpoints)
    source = _checked_sources(args, spec, checkpoints)
    dynamics_dir = (str(resolve_data_path(args.dynamics, Policy.from_env(), what="folder of training dynamics",
                                          allow_file=False)) if args.dynamics else None)
    config = AnalysisConfig(embedding=spec, projection=args.projection, k=args.k, seed=args.seed,
                            device=args.device, scores=not args.no_scores, dynamics_dir=dynamics_dir,
                            checkpoints=checkpoints if source == "checkpoints" else (),
                            architecture=args.architecture, trust=args.trust_checkpoint, dynamics_from=source,
                            finetune=_finetune_config(args) if source == "finetune" else FinetuneConfig(),
                            probe=ProbeConfig(hidden=args.probe_hidden, epochs=args.probe_epochs,
                                              seeds=args.probe_seeds, device=args.device,
                                              scheme=args.probe_scheme),
                            umap_init=args.umap_init,
                            clusters=None if args.clusters == "none" else
                            ClusterConfig(method=args.clusters, k=args.n_clusters),
                            slices=SliceConfig(min_support=args.min_slice_support),
                            issues=None if args.no_issues or set(args.skip_check) >= set(CHECKS) else
                            IssueOptions(**{check: check not in args.skip_check for check in CHECKS}))
    print(f"{dataset.source}: {dataset.kind} dataset, {dataset.n_examples:,} examples, "
          f"{len(dataset.classes)} classes", file=sys.stderr)
    executor = None
    if args.ray:  # Ray is an optional extra: imported only when asked for
        from analytics.ray_executor import RayExecutor

        executor = RayExecutor(args.ray, cpus_per_unit=args.ray_cpus_per_unit)
        cluster = executor.describe()
        print(f"parallel units run on the Ray cluster at {args.ray}: {cluster['nodes']} node"
              f"{'s' * (cluster['nodes'] != 1)}, {cluster['cpus']} CPUs", file=sys.stderr)
    last = {"stage": None, "time": 0.0, "step": -1}

    def progress(stage: str, fraction: float, message: str) -> None:
        # A line when a stage starts or ends, every 5 % of it and at least every 5 s: a fine-tuning
        # epoch's steps (with the time the epoch is expected to take) show, without a line per step.
        now, step = time.monotonic(), int(fraction * 20)
        if stage != last["stage"] or fraction >= 1.0 or step != last["step"] or now - last["time"] > 5:
            print(f"[{stage:>10}] {fraction:4.0%} {message}", file=sys.stderr, flush=True)
            last.update(stage=stage, time=now, step=step)

    try:
        run = run_analysis(dataset, config, out_dir=args.out, progress=progress, executor=executor)
    finally:
        if executor is not None:
            executor.close()
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in run.manifest["timings_s"].items())
    print(f"wrote {run.path}/examples.parquet and manifest.json ({timings})")
    return 0


def _issues(args: argparse.Namespace) -> int:
    """Print the run's data-issue table; with --leak-free-split, export the leak-free split."""
    from analytics.export import export_subset
    from analytics.pipeline import load_run, read_issues

    run = load_run(args.run)
    summary = read_issues(run)
    if summary is None:
        raise RunError(f"{run.path}: this run has no issues.json (it was analysed with --no-issues, or before "
                       "the data-issue checks existed): run `cartographer analyze` again.")
    rows = [(name, f"{entry['count']:,} {entry['unit']}", entry["severity"], entry["meaning"])
            for name, entry in summary["issues"].items()]
    header = ("issue type", "affected", "severity", "meaning")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3])
    leaks = summary.get("split_leaks")
    if leaks:
        for pair in leaks["pairs"]:
            print(f"leaks {pair['splits'][0]} ↔ {pair['splits'][1]}: {pair['examples']:,} examples in "
                  f"{pair['sets']:,} duplicate sets")
    p_value = (summary.get("non_iid") or {}).get("p_value")
    if p_value is not None:
        print(f"non-IID p-value (row order): {p_value:.3g}")
    if args.leak_free_split:
        counts = {name: entry["count"] for name, entry in summary["issues"].items()}
        result = export_subset(run.dataset, args.leak_free_split, scores=run.examples, leak_free=True,
                               issue_counts=counts, description="every example, leak-free split",
                               fingerprint=run.dataset.fingerprint)
        print(f"wrote {result.path} (leak-free split: {result.manifest['leak_free_split']['moved']:,} examples "
              f"moved) and {result.manifest_path.name}")
    return 0


def _export_dynamics(args: argparse.Namespace) -> int:
    import numpy as np

    from analytics.dynamics import TrainingDynamics, write_reference_dynamics
    from analytics.pipeline import load_run

    run = load_run(args.run)
    path = run.path / "dynamics.npy"
    if not path.exists():
        raise RunError(f"{run.path}: this run has no training dynamics (it was analysed with --no-scores).")
    logits = np.load(path, mmap_mode="r")
    if not 0 <= args.seed < logits.shape[0]:
        raise RunError(f"{path}: holds seeds 0..{logits.shape[0] - 1}; --seed {args.seed} is not one of them.")
    dynamics = TrainingDynamics(logits=np.asarray(logits[args.seed:args.seed + 1], dtype=np.float32),
                                gold=run.dataset.label_codes, source=run.manifest["dynamics"]["source"])
    files = write_reference_dynamics(dynamics, run.examples["id"].tolist(), args.out)
    print(f"wrote {len(files)} files (dynamics_epoch_0..{len(files) - 1}.jsonl) to {args.out}")
    return 0


def _impact(args: argparse.Namespace) -> int:
    """Run one curation-impact experiment on a run folder and write its report."""
    import numpy as np

    from analytics import impact
    from analytics.impact_report import write_report
    from analytics.pipeline import load_run

    run = load_run(args.run)
    data = impact.impact_data(run)
    if data.scores.empty:
        raise RunError(f"{run.path}: this run has no scores (it was analysed with --no-scores).")
    if args.probe == "run":
        if data.probe is None:
            raise RunError(f"{run.path}: its dynamics did not come from a probe; use --probe linear.")
        probe = data.probe
    else:
        probe = impact.IMPACT_PROBE
    probe = replace(probe, device=args.device, **({"epochs": args.epochs} if args.epochs else {}))
    evaluation = impact.Evaluation(method=args.evaluation, test_split=args.test_split, folds=args.folds,
                                   repeats=args.repeats)
    common = dict(seeds=args.seeds, evaluation=evaluation, probe=probe)
    config, changes = _experiment_config(args, run, data, common)
    print(f"{run.path}: {args.experiment} on {data.n:,} examples; {impact.describe_evaluation(data, evaluation)}; "
          f"probe: {impact.describe_probe(probe)}", file=sys.stderr)
    last = {"time": 0.0}

    def progress(fraction: float, message: str) -> None:
        now = time.monotonic()
        if fraction >= 1.0 or now - last["time"] > 5:
            print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)
            last["time"] = now

    result = impact.run_experiment(args.experiment, data, config, changes=changes, progress=progress)
    files = write_report(result, args.out)
    with np.printoptions(precision=4):
        print(result.table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {', '.join(f.name for f in files)} to {args.out}"
          + (" (from the workspace cache)" if result.info.get("cached") else ""))
    return 0


def _experiment_config(args: argparse.Namespace, run, data, common: dict) -> tuple:
    """``(config, changes)``: the settings of the experiment --experiment names, from its flags and
    ``common`` (seeds, evaluation, probe); what-if's changes (None for the others)."""
    from analytics import impact

    if args.experiment == "pruning":
        scores = tuple(args.scores or [s for s in impact.PRUNING_SCORES if s in data.scores.columns])
        return impact.PruningConfig(scores=scores, direction=args.direction, offset=args.offset,
                                    fractions=tuple(args.fractions), class_balanced=args.class_balanced,
                                    random_baseline=not args.no_random, **common), None
    if args.experiment == "easy-hard":
        return impact.EasyHardConfig(score=args.score, buckets=args.buckets, by_cluster=args.by_cluster,
                                     **common), None
    changes = _what_if_changes(args, run)
    return impact.WhatIfConfig(evaluate_on=args.evaluate_on, **common), changes


def _what_if_changes(args: argparse.Namespace, run):
    """The changes a what-if experiment makes: a review session's outcome, a file of ids to remove, or
    the rows a run column flags (exactly one of --session, --remove-ids, --remove-flagged)."""
    import pandas as pd

    from analytics import impact

    given = [bool(args.session), bool(args.remove_ids), bool(args.remove_flagged)]
    if sum(given) != 1:
        raise RunError("what-if needs exactly one of --session, --remove-ids or --remove-flagged.")
    if args.session:
        from analytics.store import ReviewStore

        with ReviewStore.open(args.database_url) as store:
            session = store.get_session(int(args.session) if args.session.isdigit() else args.session)
            return impact.changes_from_outcome(store.outcome(session.id), source=f"session '{session.name}'")
    if args.remove_ids:
        lines = Path(args.remove_ids).read_text(encoding="utf-8").splitlines()
        return impact.changes_from_ids([line.strip() for line in lines if line.strip()],
                                       source=f"ids in {Path(args.remove_ids).name}")
    column = args.remove_flagged
    if column not in run.examples.columns:
        raise RunError(f"{run.path}: no column '{column}' to remove flagged rows by.")
    flagged = pd.to_numeric(run.examples[column], errors="coerce").fillna(0).to_numpy() != 0
    return impact.changes_from_ids(run.examples["id"].astype(str).to_numpy()[flagged],
                                   source=f"rows flagged by {column}")


def _samples(_: argparse.Namespace) -> int:
    for sample in SAMPLES:
        print(f"{sample.key:<16} {sample.path}\n  {sample.description}")
    return 0


def _add_impact_parser(commands) -> None:
    from analytics.impact import DEFAULT_FRACTIONS, DIRECTIONS

    impact = commands.add_parser(
        "impact", help="retrain the probe to measure what curation does: pruning curves, easy-to-hard, what-if")
    impact.add_argument("run", help="a run folder written by `cartographer analyze` or the app")
    impact.add_argument("--out", required=True, metavar="DIR", help="folder for the CSV, JSON and HTML report")
    impact.add_argument("--experiment", choices=("pruning", "easy-hard", "what-if"), default="pruning")
    common = impact.add_argument_group("evaluation and probe")
    common.add_argument("--evaluation", choices=("auto", "test-split", "cross-validation"), default="auto",
                        help="auto: the test split when the data has one, else cross-validation")
    common.add_argument("--test-split", default="test", metavar="NAME", help="the held-out split's name")
    common.add_argument("--folds", type=int, default=5)
    common.add_argument("--repeats", type=int, default=1, help="cross-validation repeats (reshuffled folds)")
    common.add_argument("--seeds", type=int, default=3, help="probe seeds (and random draws) per point")
    common.add_argument("--probe", choices=("linear", "run"), default="linear",
                        help="linear: a cheap linear head; run: the probe the analysis trained")
    common.add_argument("--epochs", type=int, default=None, help="override the probe's epochs")
    common.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")
    pruning = impact.add_argument_group("pruning curves")
    pruning.add_argument("--scores", nargs="+", metavar="SCORE",
                         help="score columns to rank by (default: el2n, forgetting_events, aum, confidence, "
                              "label_quality, knn_shapley, those present); random is added")
    pruning.add_argument("--direction", choices=tuple(DIRECTIONS), default="drop-hardest")
    pruning.add_argument("--offset", type=float, default=0.0,
                         help="window only: share of the ranking skipped from the hardest end")
    pruning.add_argument("--fractions", type=float, nargs="+", default=list(DEFAULT_FRACTIONS), metavar="F",
                         help="kept fractions (default 0.1 0.2 … 1.0)")
    pruning.add_argument("--class-balanced", action="store_true", help="keep the same fraction of every class")
    pruning.add_argument("--no-random", action="store_true", help="leave out the random baseline")
    easy = impact.add_argument_group("easy to hard")
    easy.add_argument("--score", default="el2n", help="the hardness score that makes the buckets")
    easy.add_argument("--buckets", type=int, default=3, choices=(2, 3, 4, 5))
    easy.add_argument("--by-cluster", action="store_true", help="stratify by class and cluster")
    what_if = impact.add_argument_group("what-if (one of --session, --remove-ids, --remove-flagged)")
    what_if.add_argument("--session", metavar="NAME|ID", help="a review session: drops removed, relabels applied")
    what_if.add_argument("--database-url", default=None,
                         help="the review database (default: $CARTOGRAPHER_DATABASE_URL or the workspace's)")
    what_if.add_argument("--remove-ids", metavar="FILE", help="a text file of example ids to remove, one a line")
    what_if.add_argument("--remove-flagged", metavar="COLUMN",
                         help="remove the rows where a run column is true, e.g. label_issue")
    what_if.add_argument("--evaluate-on", choices=("curated", "original"), default="curated",
                         help="judge on the labels after the changes (removed rows not judged) or the original ones")
    impact.set_defaults(handler=_impact)


def _add_analyze_parser(commands) -> None:
    """The ``analyze`` command: a dataset and its options, in the order ``--help`` lists them."""
    analyze = commands.add_parser("analyze", help="run the whole analysis headless and write a run folder")
    _add_dataset_arguments(analyze)
    analyze.add_argument("--out", required=True, metavar="DIR", help="folder for examples.parquet and manifest.json")
    _add_embedding_arguments(analyze)
    _add_dynamics_arguments(analyze)
    _add_finetune_arguments(analyze)
    _add_map_arguments(analyze)
    _add_execution_arguments(analyze)
    analyze.set_defaults(handler=_analyze)


def _add_embedding_arguments(analyze: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the embeddings: a file, checkpoints, a column or a forced source."""
    source = analyze.add_argument_group("embeddings (chosen from the data when omitted)")
    source.add_argument("--embeddings", metavar="FILE",
                        help=".npy (rows in dataset order) or .parquet (with an id column) of vectors")
    source.add_argument("--checkpoint", metavar="PATH", action="append",
                        help="a Hugging Face model folder, a TorchScript file, or a state dict (with "
                             "--architecture). Give it once per epoch, in order, to take the training "
                             "dynamics from the checkpoints; the last one gives the embeddings")
    source.add_argument("--architecture", metavar="MODULE:CLASS",
                        help="the model class for a state-dict checkpoint, e.g. mypkg.models:Net")
    source.add_argument("--trust-checkpoint", action="store_true",
                        help="allow full unpickling of the checkpoint: it can run arbitrary code, "
                             "so use only for files from a source you trust")
    source.add_argument("--embedding-source", choices=tuple(EMBEDDING_REGISTRY),
                        help="force a source instead of the data's default; file and checkpoint take their "
                             "path from --embeddings and --checkpoint")
    source.add_argument("--vector-column", metavar="COLUMN",
                        help="the dataset column holding vectors (implies --embedding-source column)")
    source.add_argument("--batch-size", type=int, default=64)


def _add_dynamics_arguments(analyze: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the source of training dynamics and the probe."""
    scores = analyze.add_argument_group("training dynamics and scores")
    scores.add_argument("--dynamics-from", choices=tuple(DYNAMICS_REGISTRY), default=None,
                        help="where the training dynamics come from: a probe on the embeddings (default), "
                             "fine-tuning the model on the examples, the per-epoch --checkpoint files, or the "
                             "--dynamics folder (the last two are implied by their flags)")
    scores.add_argument("--dynamics", metavar="DIR",
                        help="training dynamics in the allenai/cartography format: the folder of "
                             "dynamics_epoch_{e}.jsonl files, or the model output folder that holds "
                             "training_dynamics/")
    scores.add_argument("--probe-epochs", type=int, default=10)
    scores.add_argument("--probe-seeds", type=int, default=3)
    scores.add_argument("--probe-hidden", type=int, default=256, help="hidden units; 0 for a linear probe")
    scores.add_argument("--probe-scheme", choices=("auto", "independent", "cross-fit"), default="auto",
                        help="independent: seeds probes on every example plus K-fold probes for held-out "
                             "probabilities; cross-fit: seeds + 1 probes give both (2.3x less training); "
                             "auto: cross-fit from 100,000 examples on")
    scores.add_argument("--no-scores", action="store_true", help="only the map: no dynamics or scores")


def _add_finetune_arguments(analyze: argparse.ArgumentParser) -> None:
    """``analyze``'s --finetune-* options (see ``_FINETUNE_OPTIONS``)."""
    tune = analyze.add_argument_group("fine-tuning (--dynamics-from finetune; defaults give the paper's map)")
    tune.add_argument("--finetune-epochs", type=int, default=None, metavar="N", help="epochs, at least 2 (default 5)")
    tune.add_argument("--finetune-lr", type=float, default=None, metavar="LR",
                      help="AdamW learning rate, decayed linearly to 0 (default: 3e-5 for text, 1e-3 for "
                           "tables and images)")
    tune.add_argument("--finetune-batch-size", type=int, default=None, metavar="N", help="batch size (default 32)")
    tune.add_argument("--finetune-max-tokens", type=int, default=None, metavar="N",
                      help="text is cut to this many tokens (default 96)")
    tune.add_argument("--finetune-seed", type=int, default=None, metavar="S", help="seed (default 0)")
    tune.add_argument("--finetune-model", default=None, metavar="PATH",
                      help="the model to fine-tune: a Hugging Face text model folder, or for images a "
                           "Hugging Face image model folder or a TorchScript file (default: MiniLM for "
                           "text, a small CNN on the pixels for images; tables always train an MLP)")
    tune.add_argument("--finetune-heldout", choices=HELDOUT_CHOICES, default=None,
                      help="held-out probabilities: cross-fit the fine-tuning, take the probe's, or "
                           "auto (cross-fit when it fits the time budget)")


def _add_map_arguments(analyze: argparse.ArgumentParser) -> None:
    """``analyze``'s options for the subpopulations, the map and the shared kNN graph."""
    groups = analyze.add_argument_group("subpopulations")
    groups.add_argument("--clusters", choices=("kmeans", "hdbscan", "none"), default="kmeans",
                        help="k-means on the embeddings (default), HDBSCAN on the map, or no clustering")
    groups.add_argument("--n-clusters", type=int, default=None, metavar="K",
                        help="k for k-means (default: chosen by silhouette)")
    groups.add_argument("--min-slice-support", type=int, default=None, metavar="N",
                        help="smallest slice listed in slices.parquet (default: 0.5%% of the examples, at least 10)")
    analyze.add_argument("--projection", choices=("umap", "pca"), default="umap")
    analyze.add_argument("--umap-init", choices=("auto", "spectral", "pca"), default="auto",
                         help="UMAP's starting layout: spectral, or the PCA map (no eigen-solve; "
                              "auto: PCA from 200,000 examples on)")
    analyze.add_argument("--k", type=int, default=15, help="neighbours per example in the shared kNN graph")
    analyze.add_argument("--seed", type=int, default=None,
                         help="seed UMAP for a bit-reproducible map (single-threaded, ~1.9x slower)")
    analyze.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: CUDA when present)")


def _add_execution_arguments(analyze: argparse.ArgumentParser) -> None:
    """``analyze``'s options for a Ray cluster and the data-issue checks."""
    cluster = analyze.add_argument_group("Ray (optional extra: pip install 'data-cartographer[ray]')")
    cluster.add_argument("--ray", metavar="ADDRESS", default=None,
                         help="run the parallel units (embedding chunks, checkpoints, probe seeds and folds) on "
                              "the running Ray cluster at ADDRESS (HOST:PORT of its head, or 'auto')")
    cluster.add_argument("--ray-cpus-per-unit", type=int, default=None, metavar="N",
                         help="CPUs (and torch threads) per unit (default: the cluster's CPUs shared among a "
                              "stage's units)")
    checks = analyze.add_argument_group("data issues (duplicates, split leaks, order, columns, image properties)")
    checks.add_argument("--no-issues", action="store_true", help="skip every data-issue check (no issues.json)")
    checks.add_argument("--skip-check", choices=CHECKS, action="append", default=[], metavar="CHECK",
                        help=f"skip one family of checks ({', '.join(CHECKS)}); repeat for several")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cartographer", description="Data Cartographer, headless.")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_analyze_parser(commands)
    issues = commands.add_parser("issues", help="print a run's data-issue table (from its issues.json)")
    issues.add_argument("run", help="a run folder written by `cartographer analyze` or the app")
    issues.add_argument("--leak-free-split", metavar="FILE", default=None,
                        help="also export every example with the leak-free split (.csv, .parquet or .jsonl; "
                             "the old split in original_split, the number moved in the manifest)")
    issues.set_defaults(handler=_issues)
    validate = commands.add_parser("validate", help="load a dataset, check it and summarise it")
    _add_dataset_arguments(validate)
    validate.set_defaults(handler=_validate)
    export = commands.add_parser("export-dynamics",
                                 help="write a run's training dynamics in the allenai/cartography format")
    export.add_argument("run", help="a run folder written by `cartographer analyze` or the app")
    export.add_argument("--out", required=True, metavar="DIR")
    export.add_argument("--seed", type=int, default=0, help="which probe seed to export")
    export.set_defaults(handler=_export_dynamics)
    _add_impact_parser(commands)
    samples = commands.add_parser("samples", help="list the bundled sample datasets")
    samples.set_defaults(handler=_samples)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except MissingLabelsError as exc:
        print(f"error: {exc}\n(use --drop-missing-labels to drop them)", file=sys.stderr)
        return 2
    except (DatasetError, EmbeddingError, ConfigError, RunError, DynamicsError, ExecutorError, AccessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a setting out of range (e.g. --n-clusters 0)
        print(f"error: {exc}", file=sys.stderr)
        return 2


def command() -> None:
    """The ``cartographer`` command: :func:`main`, then a quick exit.

    Tearing the interpreter down after an analysis (freeing torch's, numba's and LLVM's objects
    one by one) took 1-2 s at 100k examples, longer than some stages. Nothing is left to save by
    then: every file is written and closed, the exit handlers run (logging, temporary folders)
    and the output is flushed, so the process leaves without the teardown. An exception leaves
    the usual way, with its traceback.
    """
    code = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed by the caller: nothing left to flush
            pass
    os._exit(0 if code is None else int(code))


if __name__ == "__main__":
    command()
