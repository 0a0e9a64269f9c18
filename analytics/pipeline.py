"""Run the analysis stages in order and write a run folder that the app and the CLI share.

Stages: embeddings → neighbours (kNN graph) → PCA map → UMAP map → training dynamics →
held-out probabilities → scores → data issues → clusters → artefacts. Each stage's
result is cached in the workspace under the dataset fingerprint and the stage's parameters, so
a run that stopped after a stage resumes from there, and a second run with the same inputs is
instant.

Training dynamics come from one of four sources (``AnalysisConfig.dynamics_from``): the probe
on the embeddings, fine-tuning (:mod:`analytics.finetune`), per-epoch checkpoints, or a folder
in the allenai/cartography format. :func:`check_sources` checks the chosen source before any
stage runs, so a wrong folder or checkpoint fails in seconds, not after the embeddings and UMAP.

A run folder holds:

- ``examples.parquet`` — one row per example: the dataset's columns (``id``, ``label``,
  ``text``/``image``/``split`` and metadata), then ``x``, ``y`` (the map) and ``pca_x``,
  ``pca_y``; later stages add their per-example scores as columns;
- ``manifest.json`` — dataset fingerprint, sources, parameters, versions, timings per stage,
  and the size and SHA-256 of every other file of the run (written last: a folder without it
  is not a run). :func:`load_run` checks every file against it (:func:`verify_run`), and every
  file read later goes through the same check (:func:`read_artefact`);
- ``embeddings.npy`` (float16, n × d) and ``neighbors.npz`` (``indices`` int32 and
  ``distances`` float16, n × k) so later stages need not recompute them;
- ``dynamics.npy`` (float16, seeds × epochs × n × classes: the logits of every epoch) and
  ``heldout_probs.npy`` (float32, n × classes: out-of-fold probabilities);
- ``clusters.parquet`` — one row per cluster (coarse and fine levels): name, size, label mix,
  purity, accuracy, region mix, share of likely label issues, mean scores, representatives;
- ``slices.parquet`` — slices ranked by how much worse the model does there (see
  :mod:`analytics.slices`), when the run has predictions to judge;
- ``issues.json`` — the data-issue summary of :func:`analytics.data_issues.check_dataset`
  (duplicates, split leaks, non-IID order, class imbalance, column checks, spurious cues, image
  properties), whose per-example columns are in ``examples.parquet``; absent when the checks
  were turned off (``AnalysisConfig.issues=None``) and in runs that predate them;
- ``score_agreement.parquet`` (Spearman's rho between every two numeric scores),
  ``score_quantiles.parquet`` (each score's box-plot statistics per label, region, split and
  cluster) and, with several seeds, ``seed_stability.parquet`` — the Hardness and Data map
  pages' summaries over every row (:func:`analytics.hardness.hardness_tables`), listed under
  ``manifest["hardness"]["files"]``; absent without scores and in runs that predate them.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analytics.access import AccessError, Policy, check_architecture, resolve_data_path
from analytics.clusters import ClusterConfig, Clustering, cluster_embeddings, cluster_summary, name_clusters
from analytics.annotators import ANNOTATORS_FILE, dataset_annotators
from analytics.annotators import EXAMPLE_COLUMNS as ANNOTATOR_EXAMPLE_COLUMNS
from analytics.data_issues import DataIssues, IssueOptions, check_dataset, issue_columns
from analytics.datasets import ColumnRoles, Dataset
from analytics.dynamics import (
    DynamicsError,
    ProbeConfig,
    TrainingDynamics,
    checkpoint_dynamics,
    cross_fit_dynamics,
    cross_fit_probabilities,
    find_dynamics_folder,
    resolve_scheme,
    read_reference_dynamics,
    train_probe,
)
from analytics.embeddings import EmbeddingSpec, checkpoint_outputs, compute_embeddings, default_spec
from analytics.finetune_config import FinetuneConfig, FinetuneError, check_finetune
from analytics.hardness import SCORE_AGREEMENT_FILE, hardness_tables
from analytics.neighbors import KnnGraph, build_knn
from analytics.parallel import LOCAL, Executor
from analytics.projection import PCA_START_FROM, PROJECTIONS, UMAP_INITS, project_pca, project_umap
from analytics.slices import SliceConfig, discover_slices, slice_features, uniformity
from analytics.scores import SCORES, RegionThresholds, ScoreInputs, assign_regions, available_scores, compute_scores
from analytics.workspace import Workspace, atomic_write, atomic_write_text, file_sha256, params_key

__all__ = [
    "AnalysisConfig",
    "AnalysisRun",
    "CheckedSource",
    "DYNAMICS_SOURCES",
    "RunError",
    "SourceError",
    "check_sources",
    "DamagedRunError",
    "RunProblem",
    "STAGES",
    "run_analysis",
    "run_dir_for",
    "load_run",
    "verify_run",
    "read_artefact",
    "is_run_dir",
    "MAP_COLUMNS",
    "CLUSTER_COLUMNS",
    "cluster_tables",
    "discover_run_slices",
    "run_slice_features",
    "run_slice_config",
    "analysis_columns",
    "ISSUE_COLUMNS",
    "ISSUES_FILE",
    "read_issues",
]

DYNAMICS_SOURCES = ("probe", "finetune", "checkpoints", "folder")
STAGES = ("embeddings", "neighbors", "pca", "umap", "dynamics", "heldout", "scores", "issues", "clusters",
          "artefacts")
ISSUE_COLUMNS = frozenset(issue_columns(images=True))
ISSUES_FILE = "issues.json"
CLUSTER_COLUMNS = ("cluster", "cluster_fine")
ROLE_COLUMNS = ("id", "text", "image")
MAP_COLUMNS = ("x", "y", "pca_x", "pca_y")
FORMAT = "data-cartographer-run"
FORMAT_VERSION = 1
SCHEME_NOTES = {
    "independent": "probe seeds each trained on every example; out-of-fold probabilities from "
                   "separate stratified K-fold probes",
    "cross-fit": "seeds + 1 probes, each trained on all but one stratified fold: each example's "
                 "seeds are the probes that trained on it, its out-of-fold probabilities come from "
                 "the one that held it out (used from 200,000 examples on; see "
                 "analytics.dynamics.cross_fit_dynamics)",
}
StageProgress = Callable[[str, float, str], None]


class RunError(ValueError):
    """A run folder is missing, incomplete or was modified; the message names the file."""


@dataclass(frozen=True)
class RunProblem:
    """One file of a run folder that cannot be trusted: its name within the folder and why."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file} {self.reason}"


class DamagedRunError(RunError):
    """Files of a run folder do not match its manifest (truncated, edited, partly copied or
    missing); ``problems`` lists them by their names within the folder, never a server path."""

    def __init__(self, problems: list[RunProblem] | tuple[RunProblem, ...]):
        self.problems = tuple(problems)
        super().__init__("The run is damaged: " + "; ".join(str(p) for p in self.problems) + ".")


class SourceError(RunError):
    """The training-dynamics source cannot be used: a dynamics folder that is missing, has a gap
    in its epochs, guids that match no example or a class index beyond the labels; a checkpoint
    that is missing or outside the data roots, or an architecture the operator's rules refuse;
    fine-tuning settings that cannot work. Raised by :func:`check_sources` before any stage runs;
    the message names the file (and line) at fault and is safe to show a browser user."""


# The configuration, its dynamics sources and the rules about which settings go together live in
# analytics.analysis_config; imported here so `from analytics.pipeline import AnalysisConfig` keeps working.
from analytics.analysis_config import AnalysisConfig  # noqa: E402


@dataclass(frozen=True, eq=False)
class AnalysisRun:
    """A run folder, loaded: the dataset, the per-example table and the manifest."""

    path: Path
    dataset: Dataset
    examples: pd.DataFrame
    manifest: dict = field(repr=False)

    def read(self, name: str, *, mmap: bool = False):
        """The run's file ``name``, checked against the manifest (see :func:`read_artefact`)."""
        return read_artefact(self.path, name, manifest=self.manifest, mmap=mmap)

    def embeddings(self) -> np.ndarray:
        """ndarray of shape (n, d), float32 (stored as float16)."""
        return self.read("embeddings.npy").astype(np.float32)

    def neighbors(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices int32, distances float32), each of shape (n, k)."""
        archive = self.read("neighbors.npz")
        return archive["indices"], archive["distances"].astype(np.float32)

    def dynamics(self) -> np.ndarray:
        """Memory-mapped float16 logits of shape (seeds, epochs, n, classes)."""
        return self.read("dynamics.npy", mmap=True)


@dataclass(frozen=True, eq=False)
class CheckedSource:
    """A training-dynamics source that :func:`check_sources` found usable.

    Attributes
    ----------
    source : {"probe", "finetune", "checkpoints", "folder"}
    folder : Path, optional
        (folder) The resolved folder of the ``dynamics_epoch_*.jsonl`` files.
    reference : TrainingDynamics, optional
        (folder) The dynamics read from it, aligned with the dataset (kept so the dynamics stage
        does not read the folder again).
    notes : tuple of str
        What the reader noticed (guids not in the dataset, gold labels that differ).
    """

    source: str
    folder: Path | None = None
    reference: TrainingDynamics | None = None
    notes: tuple[str, ...] = ()


def check_sources(dataset: Dataset, config: AnalysisConfig, *, policy: Policy | None = None) -> CheckedSource:
    """Check the training-dynamics source of ``config`` on ``dataset``, before anything expensive.

    :func:`run_analysis` calls it first (the app also calls it when the user presses Compute):

    - ``"folder"``: the folder is found (either layout, :func:`analytics.dynamics.find_dynamics_folder`)
      and read in full: every epoch from 0 without gaps, every example's guid present, every
      line well formed, every gold class index within the dataset's labels;
    - ``"checkpoints"``: every path exists as a regular file or folder inside the data roots,
      and the architecture (for state dicts) is one the operator's rules allow
      (:func:`analytics.access.check_architecture`); nothing is loaded yet;
    - ``"finetune"``: :func:`analytics.finetune.check_finetune` (model folder, settings, data);
    - ``"probe"``: nothing to check.

    Parameters
    ----------
    policy : Policy, optional
        The operator's rules (data roots, caps, allowed architectures); by default
        :meth:`Policy.from_env`.

    Returns
    -------
    CheckedSource
        For a folder, with the dynamics already read.

    Raises
    ------
    SourceError
        The source cannot be used; the message names the file and, for a dynamics file, the line.
    """
    source = config.dynamics_source
    try:
        policy = policy or Policy.from_env()
        if source == "folder":
            folder = find_dynamics_folder(config.dynamics_dir, policy=policy)
            dynamics, notes = read_reference_dynamics(folder, dataset.table["id"].tolist(),
                                                      n_classes=len(dataset.classes), gold=dataset.label_codes,
                                                      policy=policy, classes=list(dataset.classes))
            return CheckedSource(source, folder=folder, reference=dynamics, notes=tuple(notes))
        if source == "checkpoints":
            for epoch, path in enumerate(config.checkpoints):
                try:
                    resolve_data_path(path, policy, what="checkpoint")
                except AccessError as exc:
                    raise SourceError(f"Checkpoint {epoch + 1} of {len(config.checkpoints)}: {exc}") from None
            if config.architecture:
                check_architecture(config.architecture, policy, trust=config.trust)
        elif source == "finetune":
            check_finetune(dataset, config.finetune, policy=policy)
    except (DynamicsError, FinetuneError, AccessError) as exc:
        raise SourceError(str(exc)) from None
    return CheckedSource(source)


def run_dir_for(dataset: Dataset, config: AnalysisConfig, workspace: Workspace) -> Path:
    """Where the app keeps the run of ``config`` on ``dataset``."""
    return _run_path(dataset, config.resolved(dataset), workspace)


def _run_path(dataset: Dataset, config: AnalysisConfig, workspace: Workspace, dynamics: dict | None = None) -> Path:
    return Path(workspace.root) / "runs" / dataset.fingerprint / params_key(_config_params(config, dynamics))


def run_analysis(
    dataset: Dataset,
    config: AnalysisConfig | None = None,
    *,
    out_dir: str | Path | None = None,
    workspace: Workspace | None = None,
    progress: StageProgress | None = None,
    on_stage: Callable[[str, object], None] | None = None,
    executor: Executor | None = None,
) -> AnalysisRun:
    """Run every stage on ``dataset`` and write the run folder.

    Parameters
    ----------
    out_dir : path, optional
        Where to write the artefacts; by default ``<workspace>/runs/<fingerprint>/<key>``.
    progress : callable, optional
        ``progress(stage, fraction, message)`` as stages advance.
    on_stage : callable, optional
        ``on_stage(stage, result)`` when a stage finishes (the app shows the PCA map while UMAP
        still runs).
    executor : Executor, optional
        Where the independent units of the parallel stages run (probe seeds and folds,
        checkpoints, embedding chunks): here by default, or on Ray (:mod:`analytics.ray_executor`).
        The artefacts are the same either way.
    """
    executor = executor or LOCAL
    config = (config or AnalysisConfig()).resolved(dataset)
    # the dynamics source first: a wrong folder or checkpoint fails in seconds, before any stage
    checked = check_sources(dataset, config) if config.scores else None
    dynamics_key = _dynamics_params(config) if config.scores else None  # once: it may hash checkpoints
    workspace = workspace or Workspace.default()
    out = Path(out_dir) if out_dir else _run_path(dataset, config, workspace, dynamics_key)
    report = progress or (lambda stage, fraction, message: None)
    on_stage = on_stage or (lambda stage, result: None)
    timings: dict[str, float] = {}
    fingerprint = dataset.fingerprint
    spec = config.embedding

    def timed(stage: str, compute):
        start = time.perf_counter()
        report(stage, 0.0, f"{stage}: starting")
        result = compute()
        timings[stage] = round(time.perf_counter() - start, 3)
        report(stage, 1.0, f"{stage}: done in {timings[stage]:.1f} s")
        on_stage(stage, result)
        return result

    embed_params = {**spec.cache_params(), "n": dataset.n_examples}
    vectors = timed("embeddings", lambda: workspace.cached(
        fingerprint, "embeddings", embed_params,
        lambda: compute_embeddings(dataset, spec, device=config.device, executor=executor,
                                   progress=lambda f, m: report("embeddings", f, m)),
        fmt="npy"))

    knn_params = {"embedding": embed_params, "k": config.k, "metric": spec.metric,
                  "exact_max": config.exact_knn_max}
    graph = timed("neighbors", lambda: _cached_knn(workspace, fingerprint, knn_params, vectors, config, spec,
                                                        progress=lambda f, m: report("neighbors", f, m)))

    pca = timed("pca", lambda: workspace.cached(fingerprint, "pca", {"embedding": embed_params},
                                                lambda: project_pca(vectors), fmt="npy"))
    if config.projection == "umap":
        umap_init = _umap_init(config, dataset.n_examples)
        umap_params = {"knn": knn_params, "seed": config.seed, "fit_max": config.umap_fit_max,
                       **({"init": umap_init} if umap_init != "spectral" else {})}
        coords = timed("umap", lambda: workspace.cached(
            fingerprint, "umap", umap_params,
            lambda: project_umap(vectors, knn=graph, n_neighbors=config.k + 1, metric=spec.metric,
                                 seed=config.seed, fit_max=config.umap_fit_max,
                                 init=pca if umap_init == "pca" else None,
                                 progress=lambda f, m: report("umap", f, m)),
            fmt="npy"))
    else:
        coords = pca

    dynamics = heldout = None
    heldout_note = heldout_from = None
    score_table = pd.DataFrame(index=range(dataset.n_examples))
    notes: list[str] = []
    if config.scores:
        labels = dataset.label_codes
        scheme = resolve_scheme(config.probe, labels) if config.dynamics_source == "probe" else None
        # fine-tuning never sees the embeddings: its dynamics do not depend on them
        dyn_params = {**({"embedding": embed_params} if config.dynamics_source != "finetune" else {}),
                      **dynamics_key, **({"scheme": scheme} if scheme else {})}
        heldout_params = {"embedding": embed_params, "probe": asdict(config.probe), "v": 1,
                          **({"scheme": scheme} if scheme == "cross-fit" else {})}
        dynamics = timed("dynamics", lambda: _cached_dynamics(
            workspace, fingerprint, dyn_params, dataset, vectors, config, notes, scheme=scheme,
            heldout_params=heldout_params, checked=checked, executor=executor,
            progress=lambda f, m: report("dynamics", f, m)))
        heldout, heldout_note, heldout_from = timed("heldout", lambda: _cached_heldout(
            workspace, fingerprint, heldout_params, dataset, vectors, config, scheme=scheme,
            dynamics_params=dynamics_key, executor=executor, progress=lambda f, m: report("heldout", f, m)))
        inputs = ScoreInputs(labels=dynamics.gold, logits_by_epoch=dynamics.logits,
                             early_epoch=dynamics.early_epoch, heldout_probs=heldout,
                             knn_indices=graph.indices, knn_distances=graph.distances,
                             hidden_norms=dynamics.hidden_norms, vog_raw=dynamics.vog)
        score_table = timed("scores", lambda: compute_scores(
            inputs, progress=lambda f, m: report("scores", f, m)))
        thresholds = RegionThresholds()
        score_table["region"] = assign_regions(score_table["confidence"].to_numpy(),
                                               score_table["variability"].to_numpy(), thresholds)
        heldout_predicted = heldout.argmax(axis=1)
        score_table["heldout_correct"] = heldout_predicted == labels
        # Whose errors the clusters and slices judge. The user's checkpoints: their model's, from
        # its last checkpoint. Fine-tuning: the held-out predictions (the fine-tuned model's own
        # when it was cross-fitted, else the probe's), never the last epoch's training-pass
        # logits, which have seen the example and its label. Otherwise the probe's out-of-fold.
        if dynamics.source == "checkpoints":
            predicted = dynamics.logits[0, -1].argmax(axis=1)
            error_source = "model (last checkpoint)"
        else:
            predicted = heldout_predicted
            error_source = "fine-tuned model (out-of-fold)" if heldout_from == "finetune" else "probe (out-of-fold)"
        score_table["predicted_label"] = np.asarray(dataset.classes, dtype=object)[predicted]
        score_table["correct"] = predicted == labels

    annotators = None
    if dataset.roles.annotator:  # several annotators: consensus and each annotator's quality
        annotators = dataset_annotators(dataset, heldout_probs=heldout)
        for column in ANNOTATOR_EXAMPLE_COLUMNS:
            score_table[column] = annotators.examples[column].to_numpy()

    issues = None
    if config.issues is not None:
        issue_params = {"knn": knn_params, "options": asdict(config.issues), "v": 1}
        issues = timed("issues", lambda: _cached_issues(workspace, fingerprint, issue_params, dataset, graph,
                                                        config.issues, progress=lambda f, m: report("issues", f, m)))

    clustering = None
    if config.clusters is not None:
        cluster_params = {"embedding": embed_params, **config.clusters.params(),
                          **({"map": umap_params if config.projection == "umap" else "pca"}
                             if config.clusters.method == "hdbscan" else {})}
        clustering = timed("clusters", lambda: _cached_clusters(
            workspace, fingerprint, cluster_params, vectors, coords, config.clusters, spec.metric,
            progress=lambda f, m: report("clusters", f, m)))
        score_table["cluster"] = clustering.coarse
        score_table["cluster_fine"] = clustering.fine

    start = time.perf_counter()
    report("artefacts", 0.0, f"Writing the run to {out}")
    # A folder being rewritten (a damaged run recomputed) is not a run until its new manifest lands.
    (out / "manifest.json").unlink(missing_ok=True)
    examples = dataset.table.copy()
    examples["x"], examples["y"] = coords[:, 0], coords[:, 1]
    examples["pca_x"], examples["pca_y"] = pca[:, 0], pca[:, 1]
    for column in score_table.columns:
        examples[column] = score_table[column].to_numpy()
    if issues is not None:
        for column in issues.columns.columns:
            examples[column] = issues.columns[column].to_numpy()
    clusters_table = slices_table = None
    cluster_info = None
    if clustering is not None:
        score_names = [c for c in score_table.columns if c in _score_column_names()]
        clusters_table = cluster_tables(dataset, examples, clustering, score_names)
        cluster_info = {**{k: v for k, v in clustering.to_meta().items() if k not in ("representatives", "fine_parent")},
                        "config": config.clusters.params(), "n_fine": int(len(clustering.fine_parent)),
                        "noise": int((clustering.coarse < 0).sum())}
        if "correct" in examples.columns:
            coarse = clusters_table[(clusters_table["level"] == "coarse") & (clusters_table["cluster"] >= 0)]
            cluster_info["uniformity"] = uniformity(coarse["accuracy"].to_numpy())
            cluster_info["errors"] = error_source
            slices_table = discover_run_slices(examples, clusters_table, config.slices)
    hardness = _hardness_tables(examples, dynamics, timings) if config.scores else {}
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name, "source": str(dataset.source), "fingerprint": fingerprint,
            "kind": dataset.kind, "n_examples": dataset.n_examples, "classes": list(dataset.classes),
            "roles": dataset.roles.as_dict(), "ids_generated": dataset.ids_generated,
            "notes": list(dataset.notes), "skipped": [asdict(s) for s in dataset.skipped],
        },
        "config": _config_params(config, dynamics_key),
        "embedding": {**{k: v for k, v in asdict(spec).items() if k != "options"},
                      "options": dict(spec.options), "dims": int(vectors.shape[1]),
                      "metric": spec.metric},
        "neighbors": {"k": graph.k, "metric": graph.metric, "method": graph.method,
                      "recall": round(float(graph.recall), 5), "recall_queries": graph.recall_queries,
                      **({"warning": graph.warning} if graph.warning else {})},
        "projection": {"method": config.projection, "seeded": config.seed is not None,
                       "init": _umap_init(config, dataset.n_examples) if config.projection == "umap" else None,
                       "seed": config.seed, "umap_fit_max": config.umap_fit_max},
        "map_columns": list(MAP_COLUMNS),
        "score_columns": list(score_table.columns),
        "issue_columns": list(issues.columns.columns) if issues is not None else [],
        "issues": _issues_manifest(issues.summary) if issues is not None else None,
        "annotators": annotators.summary() if annotators is not None else None,
        "scores": {score.name: {"columns": list(score.columns), "direction": score.direction,
                                "reference": score.reference, "description": score.description}
                   for score in (available_scores(inputs) if config.scores else [])},
        "dynamics": (_dynamics_manifest(config, dynamics, checked, notes, scheme=scheme, heldout_note=heldout_note,
                                        heldout_from=heldout_from)
                     if dynamics is not None else None),
        "region_thresholds": asdict(RegionThresholds()) if config.scores else None,
        "hardness": {"files": sorted(hardness)} if hardness else None,
        "clusters": cluster_info,
        "device": _device_name(config.device),
        "executor": executor.describe(),
        "versions": _versions(),
        "timings_s": timings,
        "artefacts": {},
    }
    writers = {
        "examples.parquet": lambda handle: examples.to_parquet(handle, index=False),
        "embeddings.npy": lambda handle: _save_npy_in_chunks(handle, vectors, np.float16),
        "neighbors.npz": lambda handle: np.savez(handle, indices=graph.indices,
                                                 distances=graph.distances.astype(np.float16)),
    }
    if dynamics is not None:
        writers["dynamics.npy"] = lambda handle: _save_npy_in_chunks(handle, dynamics.logits, np.float16)
        writers["heldout_probs.npy"] = lambda handle: np.save(handle, heldout.astype(np.float32))
    if clusters_table is not None:
        writers["clusters.parquet"] = lambda handle: clusters_table.to_parquet(handle, index=False)
    if slices_table is not None:
        writers["slices.parquet"] = lambda handle: slices_table.to_parquet(handle, index=False)
    if annotators is not None:
        writers[ANNOTATORS_FILE] = lambda handle: annotators.annotators.to_parquet(handle, index=False)
    if issues is not None:
        writers[ISSUES_FILE] = lambda handle: handle.write(issues.summary_json().encode("utf-8"))
    for name, table in hardness.items():  # the agreement matrix keeps its index: the score names
        writers[name] = lambda handle, table=table, name=name: table.to_parquet(
            handle, index=name == SCORE_AGREEMENT_FILE)
    for name, write in writers.items():
        atomic_write(out / name, write)
        manifest["artefacts"][name] = {"bytes": (out / name).stat().st_size, "sha256": file_sha256(out / name)}
    timings["artefacts"] = round(time.perf_counter() - start - timings.get("hardness", 0.0), 3)
    manifest["timings_s"]["total"] = round(sum(timings.values()), 3)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    report("artefacts", 1.0, f"Run written to {out}")
    return AnalysisRun(path=out, dataset=dataset, examples=examples, manifest=manifest)


def is_run_dir(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file()


def load_run(path: str | Path, *, verify: bool = True) -> AnalysisRun:
    """Open a run folder written by :func:`run_analysis` (from the app or the CLI).

    With ``verify`` the size and SHA-256 of every file of the run are checked against the
    manifest (:func:`verify_run`), so a partial copy, a truncated or an edited file is refused
    rather than trusted.

    Raises
    ------
    RunError
        The folder is not a run; :class:`DamagedRunError` when a file of it does not match the
        manifest or cannot be read (the message names the file within the run).
    """
    path = Path(path).expanduser()
    if not (path / "manifest.json").is_file():
        raise RunError(f"'{path.name}' is not a run folder (no manifest.json). Run `cartographer analyze` first.")
    manifest, problems = _read_manifest(path)
    if not problems and verify:
        problems = _verify_files(path, manifest)
    if problems:
        raise DamagedRunError(problems)
    examples = read_artefact(path, "examples.parquet", manifest=manifest, verify=False)
    info = manifest["dataset"]
    analysis_columns = [c for c in examples.columns if c in manifest.get("map_columns", MAP_COLUMNS)
                        or c in manifest.get("score_columns", []) or c in manifest.get("issue_columns", [])]
    try:
        dataset = Dataset(
            name=info["name"], source=Path(info["source"]),
            table=examples.drop(columns=analysis_columns).reset_index(drop=True),
            classes=tuple(info["classes"]), kind=info["kind"], roles=ColumnRoles(**info["roles"]),
            fingerprint=info["fingerprint"], ids_generated=info.get("ids_generated", False),
            notes=tuple(info.get("notes", [])),
        )
    except (KeyError, TypeError) as exc:
        raise DamagedRunError([RunProblem("manifest.json", f"is incomplete: its dataset lacks {exc}")]) from None
    return AnalysisRun(path=path, dataset=dataset, examples=examples, manifest=manifest)


def verify_run(path: str | Path) -> list[RunProblem]:
    """Every file of the run folder ``path`` that does not match its manifest.

    Checks that ``manifest.json`` is a readable run manifest, that it lists every file the run
    needs, and that each listed file exists with the recorded size and SHA-256.

    Returns
    -------
    list of RunProblem
        Empty when the run is intact; otherwise one entry per untrusted file, named by its name
        within the folder.
    """
    path = Path(path).expanduser()
    manifest, problems = _read_manifest(path)
    return problems or _verify_files(path, manifest)


def read_artefact(path: str | Path, name: str, *, manifest: dict | None = None, mmap: bool = False,
                  verify: bool = True):
    """Read the file ``name`` of the run folder ``path`` after checking it against the manifest.

    Parameters
    ----------
    manifest : dict, optional
        The manifest the run was opened with (read from the folder when omitted), so a file
        rewritten since is refused rather than mixed with the rest of the run.
    mmap : bool
        Memory-map a ``.npy`` file instead of reading it.

    Returns
    -------
    ndarray (``.npy``), dict of ndarray (``.npz``) or DataFrame (``.parquet``).

    Raises
    ------
    DamagedRunError
        The file is missing, does not match the manifest or cannot be read.
    """
    path = Path(path).expanduser()
    if manifest is None:
        manifest, problems = _read_manifest(path)
        if problems:
            raise DamagedRunError(problems)
    expected = manifest["artefacts"].get(name)
    if expected is None:
        raise DamagedRunError([RunProblem(name, "is not listed in manifest.json")])
    problem = _check_file(path, name, expected) if verify else None
    if problem is not None:
        raise DamagedRunError([problem])
    try:
        return _ARTEFACT_READERS[Path(name).suffix](path / name, mmap)
    except Exception as exc:  # whatever the reader says, the user learns which file and why
        detail = str(exc).replace(str(path / name), name).replace(str(path), "the run folder")
        raise DamagedRunError([RunProblem(name, f"cannot be read ({type(exc).__name__}: {detail})")]) from None


def _read_npz(file: Path, mmap: bool) -> dict[str, np.ndarray]:
    with np.load(file, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


_ARTEFACT_READERS: dict[str, Callable[[Path, bool], object]] = {
    ".json": lambda file, mmap: json.loads(file.read_text(encoding="utf-8")),
    ".npy": lambda file, mmap: np.load(file, allow_pickle=False, mmap_mode="r" if mmap else None),
    ".npz": _read_npz,
    ".parquet": lambda file, mmap: pd.read_parquet(file),
}


def _read_manifest(path: Path) -> tuple[dict | None, list[RunProblem]]:
    """The run's manifest, or None and why it cannot be used."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        return None, [RunProblem("manifest.json", "is missing: this is not a run folder")]
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, [RunProblem("manifest.json", f"is not valid JSON ({exc}): truncated or edited")]
    except OSError as exc:
        return None, [RunProblem("manifest.json", f"cannot be read ({type(exc).__name__})")]
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, [RunProblem("manifest.json", "is not a Data Cartographer run manifest")]
    if not isinstance(manifest.get("artefacts"), dict) or not isinstance(manifest.get("dataset"), dict):
        return None, [RunProblem("manifest.json", "is incomplete: it lacks the dataset or the files of the run")]
    return manifest, []


def _expected_files(manifest: dict) -> set[str]:
    """The files every run with this manifest has (slices are optional)."""
    expected = {"examples.parquet", "embeddings.npy", "neighbors.npz"}
    if manifest.get("dynamics"):
        expected |= {"dynamics.npy", "heldout_probs.npy"}
    if manifest.get("clusters"):
        expected.add("clusters.parquet")
    if manifest.get("issues"):
        expected.add(ISSUES_FILE)
    if manifest.get("annotators"):
        expected.add(ANNOTATORS_FILE)
    expected |= set((manifest.get("hardness") or {}).get("files", []))
    return expected


def _verify_files(path: Path, manifest: dict) -> list[RunProblem]:
    artefacts = manifest["artefacts"]
    problems = [RunProblem(name, "is not listed in manifest.json with its checksum")
                for name in sorted(_expected_files(manifest) - set(artefacts))]
    for name, expected in artefacts.items():
        problem = _check_file(path, name, expected)
        if problem is not None:
            problems.append(problem)
    return problems


def _check_file(path: Path, name: str, expected: object) -> RunProblem | None:
    """Why the file ``name`` does not match its manifest entry, or None when it does."""
    if not isinstance(name, str) or name in ("", ".", "..", "manifest.json") or Path(name).name != name:
        return RunProblem(str(name)[:80], "is not a file name of a run folder")
    if not isinstance(expected, dict) or not isinstance(expected.get("bytes"), int) or "sha256" not in expected:
        return RunProblem(name, "has no size and checksum in manifest.json")
    file = path / name
    if not file.is_file():
        return RunProblem(name, "is missing")
    size = file.stat().st_size
    if size != expected["bytes"]:
        return RunProblem(name, f"does not match its manifest ({size:,} bytes, {expected['bytes']:,} "
                                "expected): it was truncated, changed or only partly copied")
    if file_sha256(file) != expected["sha256"]:
        return RunProblem(name, "does not match its manifest (checksum differs): it was changed "
                                "or only partly copied")
    return None


# --------------------------------------------------------------------------- helpers


def _cached_knn(workspace: Workspace, fingerprint: str, params: dict, vectors: np.ndarray,
                config: AnalysisConfig, spec: EmbeddingSpec, progress=None) -> KnnGraph:
    indices = workspace.load(fingerprint, "knn_indices", params, fmt="npy")
    distances = workspace.load(fingerprint, "knn_distances", params, fmt="npy")
    info = workspace.load(fingerprint, "knn_info", params, fmt="json")
    if indices is not None and distances is not None and info is not None:
        return KnnGraph(indices, distances, info["metric"], info["method"], info["recall"], info["recall_queries"])
    graph = build_knn(vectors, k=config.k, metric=spec.metric, exact_max=config.exact_knn_max,
                      seed=config.seed or 0, progress=progress)
    workspace.save(fingerprint, "knn_indices", params, graph.indices, fmt="npy")
    workspace.save(fingerprint, "knn_distances", params, graph.distances, fmt="npy")
    workspace.save(fingerprint, "knn_info", params, {"metric": graph.metric, "method": graph.method,
                                                     "recall": graph.recall,
                                                     "recall_queries": graph.recall_queries}, fmt="json")
    return graph


def _cached_issues(workspace: Workspace, fingerprint: str, params: dict, dataset: Dataset, graph: KnnGraph,
                   options: IssueOptions, progress=None) -> DataIssues:
    """The data-issue checks on the run's kNN graph, kept in the workspace (columns as parquet,
    the summary as JSON) under the graph's and the options' parameters."""
    columns = workspace.load(fingerprint, "issues_columns", params, fmt="parquet")
    summary = workspace.load(fingerprint, "issues_summary", params, fmt="json")
    if columns is not None and summary is not None and len(columns) == dataset.n_examples:
        return DataIssues(columns, summary)
    issues = check_dataset(dataset, knn_indices=graph.indices, knn_distances=graph.distances, metric=graph.metric,
                           options=options, progress=progress)
    workspace.save(fingerprint, "issues_columns", params, issues.columns, fmt="parquet")
    workspace.save(fingerprint, "issues_summary", params, issues.summary, fmt="json")
    return issues


def _umap_init(config: AnalysisConfig, n: int) -> str:
    if config.umap_init != "auto":
        return config.umap_init
    return "pca" if n >= PCA_START_FROM else "spectral"


def _folds_used(probe: ProbeConfig, scheme: str | None, gold: np.ndarray) -> int:
    if scheme == "cross-fit":
        return probe.seeds + 1
    counts = np.bincount(gold)
    return max(2, min(probe.folds, int(counts[counts > 0].min())))


def _finetune_dir(workspace: Workspace, fingerprint: str) -> Path:
    """Where fine-tuning keeps its per-epoch cache, so a stopped run resumes from its last
    finished epoch (:mod:`analytics.finetune` keys each training run inside it by the dataset,
    the options and the rows it trains on)."""
    return Path(workspace.root) / "finetune" / fingerprint


def _cached_dynamics(workspace: Workspace, fingerprint: str, params: dict, dataset: Dataset,
                     vectors: np.ndarray, config: AnalysisConfig, notes: list[str], *,
                     scheme: str | None, heldout_params: dict, checked: CheckedSource | None,
                     executor, progress) -> TrainingDynamics:
    logits = workspace.load(fingerprint, "dynamics_logits", params, fmt="npy")
    info = workspace.load(fingerprint, "dynamics_info", params, fmt="json")
    gold = workspace.load(fingerprint, "dynamics_gold", params, fmt="npy")
    if logits is not None and info is not None and gold is not None:
        notes.extend(info["notes"])
        norms = workspace.load(fingerprint, "dynamics_norms", params, fmt="npy") if info["has_norms"] else None
        vog = workspace.load(fingerprint, "dynamics_vog", params, fmt="npy") if info.get("has_vog") else None
        return TrainingDynamics(logits=logits, gold=np.asarray(gold, dtype=np.int64),
                                source=info["source"], hidden_norms=norms, early_epoch=info["early_epoch"],
                                vog=vog)
    labels = dataset.label_codes
    source = config.dynamics_source
    if source == "folder":
        if checked is None or checked.reference is None:  # read by check_sources in a run
            checked = check_sources(dataset, config)
        notes.extend(checked.notes)
        dynamics = checked.reference
        dynamics = TrainingDynamics(logits=dynamics.logits, gold=dynamics.gold, source="reference",
                                    early_epoch=min(dynamics.n_epochs - 1, max(0, dynamics.n_epochs // 5)))
    elif source == "finetune":
        from analytics.finetune import finetune_dynamics  # torch: only when fine-tuning runs

        dynamics = finetune_dynamics(dataset, config.finetune, cache_dir=_finetune_dir(workspace, fingerprint),
                                     progress=progress)
    elif source == "checkpoints":
        dynamics = checkpoint_dynamics(
            config.checkpoints, labels, progress=progress, executor=executor, notes=notes,
            run_one=functools.partial(checkpoint_outputs, dataset, architecture=config.architecture,
                                      trust=config.trust, device=config.device, output="logits"))
    elif scheme == "cross-fit":
        # one set of probes gives both the dynamics and the held-out probabilities
        dynamics, heldout, _ = cross_fit_dynamics(vectors, labels, len(dataset.classes), config.probe,
                                                  progress=progress, executor=executor)
        workspace.save(fingerprint, "heldout", heldout_params, heldout, fmt="npy")
    else:
        dynamics = train_probe(vectors, labels, len(dataset.classes), config.probe, progress=progress,
                               executor=executor)
    # float32, not float16: imported logits must give the reference formulas' values to 1e-9.
    workspace.save(fingerprint, "dynamics_logits", params, dynamics.logits.astype(np.float32, copy=False), fmt="npy")
    if dynamics.hidden_norms is not None:
        workspace.save(fingerprint, "dynamics_norms", params, dynamics.hidden_norms, fmt="npy")
    if dynamics.vog is not None:
        workspace.save(fingerprint, "dynamics_vog", params, np.asarray(dynamics.vog, dtype=np.float64), fmt="npy")
    workspace.save(fingerprint, "dynamics_gold", params, dynamics.gold, fmt="npy")
    workspace.save(fingerprint, "dynamics_info", params, {
        "source": dynamics.source, "early_epoch": dynamics.early_epoch, "notes": notes,
        "has_norms": dynamics.hidden_norms is not None, "has_vog": dynamics.vog is not None}, fmt="json")
    return dynamics


def _cached_heldout(workspace: Workspace, fingerprint: str, probe_params: dict, dataset: Dataset,
                    vectors: np.ndarray, config: AnalysisConfig, *, scheme: str | None, dynamics_params: dict,
                    executor, progress) -> tuple[np.ndarray, str, str]:
    """Out-of-fold probabilities for the scores that need held-out predictions.

    Fine-tuning tries :func:`analytics.finetune.finetune_heldout` first (cross-fitting the same
    fine-tuning when asked, or when its time, estimated from the epochs just trained, fits the
    budget); when it declines, and for every other source, the probe's K-fold cross-fitting on
    the embeddings.

    Returns
    -------
    (ndarray of shape (n, classes), str, str)
        The probabilities, the note for the manifest (which procedure gave them), and where they
        came from: "finetune" or "probe".
    """
    labels = dataset.label_codes

    def probe() -> np.ndarray:
        return workspace.cached(fingerprint, "heldout", probe_params, lambda: cross_fit_probabilities(
            vectors, labels, len(dataset.classes), config.probe, executor=executor, progress=progress)[0], fmt="npy")

    folds = _folds_used(config.probe, scheme, labels)
    probe_note = f"probe out-of-fold ({folds} folds" + (", the probes of the dynamics)" if scheme == "cross-fit" else ")")
    if config.dynamics_source != "finetune":
        return probe(), probe_note, "probe"
    params = {**dynamics_params, "v": 1}
    info = workspace.load(fingerprint, "heldout_info", params, fmt="json")
    if info is not None and info.get("from") == "finetune":
        probs = workspace.load(fingerprint, "heldout", params, fmt="npy")
        if probs is not None:
            return probs, info["note"], "finetune"
    elif info is not None:
        return probe(), info["note"], "probe"
    from analytics.finetune import finetune_heldout  # torch: only when fine-tuning runs

    probs, how = finetune_heldout(dataset, config.finetune, cache_dir=_finetune_dir(workspace, fingerprint),
                                  progress=progress)
    if probs is None:  # the fine-tuning declined (budget, tiny class, or asked for the probe): say why
        probs, origin = probe(), "probe"
        note = f"{probe_note}; {how.removeprefix('probe:').strip()}"
    else:
        probs, origin, note = np.asarray(probs, dtype=np.float32), "finetune", how
        workspace.save(fingerprint, "heldout", params, probs, fmt="npy")
    workspace.save(fingerprint, "heldout_info", params, {"note": note, "from": origin}, fmt="json")
    return probs, note, origin


def _dynamics_manifest(config: AnalysisConfig, dynamics: TrainingDynamics, checked: CheckedSource | None,
                       notes: list[str], *, scheme: str | None, heldout_note: str, heldout_from: str) -> dict:
    """The manifest's "dynamics" entry: the source and its settings, and where the held-out
    probabilities came from."""
    entry = {"source": dynamics.source, "seeds": dynamics.n_seeds, "epochs": dynamics.n_epochs,
             "early_epoch": dynamics.early_epoch, "notes": notes, "heldout": heldout_note,
             "heldout_from": heldout_from}
    if dynamics.source == "probe":
        entry.update(probe=asdict(config.probe), scheme=scheme, folds=_folds_used(config.probe, scheme, dynamics.gold),
                     scheme_note=SCHEME_NOTES[scheme])
    elif dynamics.source == "finetune":
        entry["finetune"] = {k: v for k, v in asdict(config.finetune).items() if k != "device"}
    elif dynamics.source == "reference":
        entry["folder"] = str(checked.folder) if checked is not None and checked.folder else config.dynamics_dir
    elif dynamics.source == "checkpoints":
        entry.update(checkpoints=[Path(path).name for path in config.checkpoints], architecture=config.architecture)
    return entry


def _config_params(config: AnalysisConfig, dynamics: dict | None = None) -> dict:
    """The run's key: every setting that changes what the run folder holds (``dynamics``: the
    :func:`_dynamics_params` of ``config`` when already computed)."""
    params = {"embedding": config.embedding.cache_params() if config.embedding else None,
              "projection": config.projection, "k": config.k, "seed": config.seed,
              "exact_knn_max": config.exact_knn_max, "umap_fit_max": config.umap_fit_max}
    if config.umap_init != "auto":
        params["umap_init"] = config.umap_init
    if config.scores:
        params["scores"] = dynamics if dynamics is not None else _dynamics_params(config)
    if config.clusters is not None:
        params["clusters"] = {**config.clusters.params(), "slices": asdict(config.slices)}
    # Always in the key: a run from before the checks is recomputed (its stages from the cache)
    # rather than opened without them.
    params["issues"] = asdict(config.issues) if config.issues is not None else None
    return params


def _hardness_tables(examples: pd.DataFrame, dynamics: TrainingDynamics | None,
                     timings: dict[str, float]) -> dict[str, pd.DataFrame]:
    """The score summaries the Hardness and Data map pages read, computed once over every row
    (timed as ``timings["hardness"]``)."""
    start = time.perf_counter()
    tables = hardness_tables(examples, logits=dynamics.logits if dynamics is not None else None,
                             labels=dynamics.gold if dynamics is not None else None,
                             early_epoch=dynamics.early_epoch if dynamics is not None else 0)
    timings["hardness"] = round(time.perf_counter() - start, 3)
    return tables


def _score_column_names() -> set[str]:
    return {column for score in SCORES.values() for column in score.columns}


def _cached_clusters(workspace: Workspace, fingerprint: str, params: dict, vectors: np.ndarray,
                     coords: np.ndarray, config: ClusterConfig, metric: str, *, progress) -> Clustering:
    assignments = workspace.load(fingerprint, "clusters", params, fmt="npy")
    meta = workspace.load(fingerprint, "clusters_info", params, fmt="json")
    if assignments is not None and meta is not None:
        return Clustering.from_parts(assignments, meta)
    clustering = cluster_embeddings(vectors, config=config, metric=metric, coords=coords, progress=progress)
    workspace.save(fingerprint, "clusters", params, np.stack([clustering.coarse, clustering.fine]), fmt="npy")
    workspace.save(fingerprint, "clusters_info", params, clustering.to_meta(), fmt="json")
    return clustering


def cluster_tables(dataset: Dataset, examples: pd.DataFrame, clustering: Clustering,
                   score_columns: list[str]) -> pd.DataFrame:
    """``clusters.parquet``: one row per cluster and level, named from content."""
    correct = examples["correct"].to_numpy() if "correct" in examples.columns else None
    metadata_cols = [c for c in dataset.table.columns if c not in ROLE_COLUMNS + ("label", "split")]
    parts = []
    for level, column, assignments in (("coarse", "cluster", clustering.coarse), ("fine", "cluster_fine", clustering.fine)):
        names = name_clusters(
            assignments, kind=dataset.kind, ids=examples["id"].to_numpy(dtype=object), labels=examples["label"],
            texts=examples["text"].to_numpy(dtype=object) if "text" in examples.columns else None,
            table=dataset.table if dataset.kind == "tabular" else None,
            feature_columns=metadata_cols if dataset.kind == "tabular" else (),
            representatives=clustering.representatives.get(level))
        summary = cluster_summary(examples, column, names=names, correct=correct, score_columns=score_columns)
        summary.insert(0, "level", level)
        if level == "fine":
            summary.insert(2, "parent", [int(clustering.fine_parent[c]) if c >= 0 else -1 for c in summary["cluster"]])
        else:
            summary.insert(2, "parent", -1)
        parts.append(summary)
    table = pd.concat(parts, ignore_index=True)
    for column in ("terms", "features", "representatives"):
        if column in table.columns:
            table[column] = table[column].map(lambda v: list(v) if isinstance(v, (list, tuple, np.ndarray)) else [])
    return table


def _issues_manifest(summary: dict) -> dict:
    """The manifest's "issues" entry: the count and severity of each issue type."""
    entries = summary.get("issues", {})
    return {"counts": {name: entry["count"] for name, entry in entries.items()},
            "severity": {name: entry["severity"] for name, entry in entries.items()},
            "file": ISSUES_FILE}


def read_issues(run: AnalysisRun) -> dict | None:
    """The run's ``issues.json`` (checked against the manifest), or None for a run without one
    (analysed with the checks off, or before they existed).

    Raises
    ------
    DamagedRunError
        The file is listed but missing, changed or unreadable.
    """
    if ISSUES_FILE not in run.manifest.get("artefacts", {}):
        return None
    return run.read(ISSUES_FILE)


def cluster_display(clusters: pd.DataFrame) -> dict[str, dict[int, str]]:
    """Readable cluster values for slice descriptions: ``3 (gcc · compiler · build)``."""
    out: dict[str, dict[int, str]] = {}
    for level, column in (("coarse", "cluster"), ("fine", "cluster_fine")):
        rows = clusters[clusters["level"] == level]
        out[column] = {int(c): (f"{c} ({name})" if c >= 0 else "noise") for c, name in zip(rows["cluster"], rows["name"])}
    return out


def run_slice_features(examples: pd.DataFrame, clusters: pd.DataFrame | None, config: SliceConfig,
                       analysis_columns: set[str]):
    """The slice features of a run: metadata columns, label, split and both cluster levels."""
    columns = [c for c in examples.columns if c not in ROLE_COLUMNS and c not in MAP_COLUMNS
               and (c not in analysis_columns or c in CLUSTER_COLUMNS)]
    display = cluster_display(clusters) if clusters is not None else {}
    return slice_features(examples, columns, config=config, display=display,
                          categorical=[c for c in CLUSTER_COLUMNS if c in columns])


def analysis_columns(examples: pd.DataFrame) -> set[str]:
    """The columns of ``examples`` that the analysis added (scores, regions, predictions, clusters)."""
    return (_score_column_names() | {"region", "predicted_label", "heldout_correct", "correct", *CLUSTER_COLUMNS}
            | ISSUE_COLUMNS | set(ANNOTATOR_EXAMPLE_COLUMNS)) & set(examples.columns)


def discover_run_slices(examples: pd.DataFrame, clusters: pd.DataFrame | None, config: SliceConfig) -> pd.DataFrame:
    """``slices.parquet``: the run's slices ranked by error rate against overall."""
    features = run_slice_features(examples, clusters, config, analysis_columns(examples))
    return discover_slices(features, ~examples["correct"].to_numpy(dtype=bool), config=config,
                           no_pairs_between=[frozenset(CLUSTER_COLUMNS)])


def _dynamics_params(config: AnalysisConfig) -> dict:
    """What the training dynamics depend on: the source and its settings (part of the run's key,
    so runs from different sources never share a run folder)."""
    source = config.dynamics_source
    if source == "folder":
        folder = _epoch_folder(config.dynamics_dir)
        return {"source": "reference", "dir": str(folder), "stamp": _folder_stamp(folder)}
    if source == "checkpoints":
        from analytics.checkpoints import checkpoint_fingerprint

        # v2: checkpoint dynamics carry VoG; entries cached before it are computed again
        return {"source": "checkpoints", "checkpoints": [checkpoint_fingerprint(c) for c in config.checkpoints],
                "architecture": config.architecture, "v": 2}
    if source == "finetune":
        return {"source": "finetune", **config.finetune.params()}
    return {"source": "probe", **asdict(config.probe), "device": None}


def _epoch_folder(typed: str) -> Path:
    """The folder of the epoch files for either layout, or the typed folder when none is found
    (:func:`check_sources` then says what is wrong)."""
    try:
        return find_dynamics_folder(typed)
    except DynamicsError:
        return Path(typed).expanduser().resolve()


def _folder_stamp(folder: Path) -> list:
    try:
        return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
    except OSError:
        return []


def _save_npy_in_chunks(handle, array: np.ndarray, dtype) -> None:
    """Write ``array`` as ``dtype`` in .npy format without converting all of it at once."""
    from numpy.lib import format as npy_format

    npy_format.write_array_header_1_0(handle, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                               "fortran_order": False, "shape": array.shape})
    rows = max(1, (64 << 20) // max(1, array[:1].nbytes))  # about 64 MB per block
    for start in range(0, len(array), rows):
        handle.write(np.ascontiguousarray(array[start:start + rows], dtype=dtype).tobytes())


def _device_name(prefer: str | None) -> str:
    from analytics.device import default_device

    return str(default_device(prefer))


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in ("data-cartographer", "numpy", "pandas", "scikit-learn", "umap-learn",
                    "pynndescent", "torch", "sentence-transformers", "transformers"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def run_slice_config(manifest: dict) -> SliceConfig:
    """The slice settings a run was made with (the defaults for runs that predate them)."""
    saved = ((manifest.get("config") or {}).get("clusters") or {}).get("slices")
    return SliceConfig(**saved) if saved else SliceConfig()
