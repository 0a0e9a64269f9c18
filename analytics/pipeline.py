"""Run the analysis stages in order and write a run folder that the app and the CLI share.

Stages: embeddings → neighbours (kNN graph) → PCA map → UMAP map → training dynamics →
held-out probabilities → scores → data issues → clusters → artefacts. Each stage's
result is cached in the workspace under the dataset fingerprint and the stage's parameters, so
a run that stopped after a stage resumes from there, and a second run with the same inputs is
instant.

Training dynamics come from the source ``AnalysisConfig.dynamics_from`` names, an entry of
:data:`analytics.analysis_config.DYNAMICS_REGISTRY` (the probe on the embeddings, fine-tuning,
per-epoch checkpoints, or a folder in the allenai/cartography format) that holds the source's
functions (:mod:`analytics.dynamics_sources`): the pipeline calls them and knows no source by
name. :func:`check_sources` checks the chosen source before any stage runs, so a wrong folder or
checkpoint fails in seconds, not after the embeddings and UMAP.

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

import json
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import pandas as pd

from analytics.access import Policy
from analytics.clusters import Clustering, cluster_summary, name_clusters
from analytics.annotators import ANNOTATORS_FILE, AnnotatorReport, dataset_annotators
from analytics.annotators import EXAMPLE_COLUMNS as ANNOTATOR_EXAMPLE_COLUMNS
from analytics.data_issues import DataIssues, check_dataset, issue_columns
from analytics.datasets import ColumnRoles, Dataset
from analytics.dynamics import TrainingDynamics, cross_fit_probabilities, heldout_folds
from analytics.dynamics_sources import SOURCE_ERRORS, CheckedSource, TrainedDynamics
from analytics.embeddings import compute_embeddings
from analytics import ahead, names
from analytics.hardness import SCORE_AGREEMENT_FILE, hardness_tables
from analytics.names import CLUSTER_COLUMNS, MAP_COLUMNS
from analytics.neighbors import KnnGraph, build_knn
from analytics.numba_cache import Prewarm, prewarm
from analytics.numba_cache import compiled as numba_compiled
from analytics.parallel import LOCAL, Executor
from analytics.projection import PCA_START_FROM, project_pca, project_umap
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
    "DYNAMICS_AHEAD_MAX",
    "train_ahead",
]

STAGES = ("embeddings", "neighbors", "pca", "umap", "dynamics", "heldout", "scores", "issues", "clusters",
          "artefacts")
ISSUE_COLUMNS = frozenset(issue_columns(images=True))
ISSUES_FILE = "issues.json"
ROLE_COLUMNS = (names.ID, names.TEXT, names.IMAGE)  # the columns that identify or show an example
FORMAT = "data-cartographer-run"
FORMAT_VERSION = 1
PROBE_HELDOUT = "probe"  # _HeldOut.origin of the probe's out-of-fold probabilities: its registry name
StageProgress = Callable[[str, float, str], None]
Progress = Callable[[float, str], None]
T = TypeVar("T")


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
from analytics.analysis_config import DYNAMICS_REGISTRY, DYNAMICS_SOURCES, AnalysisConfig  # noqa: E402


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


def check_sources(dataset: Dataset, config: AnalysisConfig, *, policy: Policy | None = None) -> CheckedSource:
    """Check the training-dynamics source of ``config`` on ``dataset``, before anything expensive.

    :func:`run_analysis` calls it first (the app also calls it when the user presses Compute).
    It runs the source's ``check`` (:mod:`analytics.dynamics_sources`):

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
    source = DYNAMICS_REGISTRY[config.dynamics_source]
    try:
        return source.check(dataset, config, policy or Policy.from_env())
    except SOURCE_ERRORS as exc:
        raise SourceError(str(exc)) from None


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

    The stages, in order: embeddings, neighbours, the PCA and UMAP maps, training dynamics and
    held-out probabilities, scores, data issues, clusters, and the run folder. Each is a function
    of what the earlier ones returned; each reads and writes only its own workspace entry.

    Parameters
    ----------
    out_dir : path, optional
        Where to write the artefacts; by default ``<workspace>/runs/<fingerprint>/<key>``.
    progress : callable, optional
        ``progress(stage, fraction, message)`` as stages advance.
    on_stage : callable, optional
        ``on_stage(stage, result)`` with what a stage returned when it finishes (the app shows
        the PCA map, an ndarray of shape (n, 2), while UMAP still runs).
    executor : Executor, optional
        Where the independent units of the parallel stages run (probe seeds and folds,
        checkpoints, embedding chunks): here by default, or on Ray (:mod:`analytics.ray_executor`).
        The artefacts are the same either way.
    """
    config = (config or AnalysisConfig()).resolved(dataset)
    # the dynamics source first: a wrong folder or checkpoint fails in seconds, before any stage
    checked = check_sources(dataset, config) if config.scores else None
    run = _RunInputs(dataset=dataset, config=config, workspace=workspace or Workspace.default(),
                     executor=executor or LOCAL, keys=_stage_keys(dataset, config), checked=checked)
    out = Path(out_dir) if out_dir else _run_path(dataset, config, run.workspace, run.keys.dynamics_source)
    stages = _Stages(progress, on_stage)
    vectors = stages.run("embeddings", lambda report: _embed_stage(run, report))
    clusters_ahead = _clusters_ahead(run, len(vectors))  # on the core the compiler leaves idle,
    dynamics_ahead = _dynamics_ahead(run, len(vectors))  # started before this process compiles
    compiling = _prewarm(run, len(vectors))  # the layout's code, compiled while the graph is built
    graph = stages.run("neighbors", lambda report: _neighbours_stage(run, vectors, report))
    pca = stages.run("pca", lambda report: _pca_stage(run, vectors))
    coords = stages.run("umap", lambda report: _umap_stage(run, vectors, graph, pca, report, compiling)) \
        if config.projection == "umap" else pca
    scored = None
    if config.scores:
        trained = stages.run("dynamics", lambda report: _dynamics_stage(run, vectors, report, dynamics_ahead))
        heldout = stages.run("heldout", lambda report: _heldout_stage(run, vectors, trained.heldout, report))
        scored = stages.run("scores", lambda report: _scores_stage(run, trained, heldout, graph, report))
    annotators = _annotators_stage(dataset, scored)
    issues = stages.run("issues", lambda report: _issues_stage(run, graph, report)) \
        if config.issues is not None else None
    clustering = stages.run("clusters", lambda report: _clusters_stage(run, vectors, coords, report, clusters_ahead)) \
        if config.clusters is not None else None
    results = _StageResults(vectors=vectors, graph=graph, pca=pca, coords=coords, scored=scored,
                            annotators=annotators, issues=issues, clustering=clustering)
    return _write_stage(run, results, out, stages)


# --------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class _StageKeys:
    """The workspace parameters of every stage of a run, derived once from the configuration.
    They are the cache keys: changing one makes existing cache entries unreachable."""

    embedding: dict
    knn: dict
    umap_init: str | None  # where UMAP starts ("pca" or "spectral"); None for the PCA map
    umap: dict | None
    scheme: str | None  # how the source fits its models (the probe: "independent" or "cross-fit"), or None
    dynamics_source: dict | None  # _dynamics_params: the source and its settings (part of the run's key)
    dynamics: dict | None
    heldout: dict | None  # the probe's out-of-fold probabilities
    source_heldout: dict | None  # the source's own (fine-tuning's cross-fitting), or the probe's in its place
    issues: dict | None
    clusters: dict | None


def _stage_keys(dataset: Dataset, config: AnalysisConfig) -> _StageKeys:
    spec = config.embedding
    embedding = {**spec.cache_params(), "n": dataset.n_examples}
    knn = {"embedding": embedding, "k": config.k, "metric": spec.metric, "exact_max": config.exact_knn_max}
    if dataset.n_examples > config.exact_knn_max:
        knn["refine"] = 1  # approximate graphs are refined to recall 0.96 since this version
    umap_init = umap = None
    if config.projection == "umap":
        umap_init = _umap_init(config, dataset.n_examples)
        umap = {"knn": knn, "seed": config.seed, "fit_max": config.umap_fit_max,
                **({"init": umap_init} if umap_init != "spectral" else {})}
    scheme = params = dynamics = heldout = source_heldout = None
    if config.scores:
        source = DYNAMICS_REGISTRY[config.dynamics_source]
        params = source.params(config)  # once: it may hash checkpoints
        scheme = source.scheme(config, dataset.label_codes) if source.scheme is not None else None
        dynamics = {**({"embedding": embedding} if source.keyed_on_embeddings else {}),
                    **params, **({"scheme": scheme} if scheme else {})}
        heldout = {"embedding": embedding, "probe": asdict(config.probe), "v": 1,
                   **({"scheme": scheme} if scheme == "cross-fit" else {})}
        source_heldout = {**params, "v": 1}
    clusters = None
    if config.clusters is not None:
        clusters = {"embedding": embedding, **config.clusters.params(),
                    **({"map": umap if umap is not None else "pca"} if config.clusters.method == "hdbscan" else {})}
    return _StageKeys(embedding=embedding, knn=knn, umap_init=umap_init, umap=umap, scheme=scheme,
                      dynamics_source=params, dynamics=dynamics, heldout=heldout, source_heldout=source_heldout,
                      issues={"knn": knn, "options": asdict(config.issues), "v": 1} if config.issues is not None
                      else None,
                      clusters=clusters)


@dataclass(frozen=True, eq=False)
class _RunInputs:
    """What every stage reads: the dataset, the resolved configuration, the workspace that keeps
    each stage's result under ``keys``, where parallel work runs, and the checked dynamics source."""

    dataset: Dataset
    config: AnalysisConfig
    workspace: Workspace
    executor: Executor
    keys: _StageKeys
    checked: CheckedSource | None

    @property
    def fingerprint(self) -> str:
        return self.dataset.fingerprint

    @property
    def scheme(self) -> str | None:
        return self.keys.scheme


class _Stages:
    """Runs a run's stages one by one: reports each one's start, progress and end, times it and
    hands its result to ``on_stage``. ``timings`` holds the seconds per stage, in order."""

    def __init__(self, progress: StageProgress | None, on_stage: Callable[[str, object], None] | None):
        self.report = progress or (lambda stage, fraction, message: None)
        self.on_stage = on_stage or (lambda stage, result: None)
        self.timings: dict[str, float] = {}

    def run(self, stage: str, compute: Callable[[Progress], T]) -> T:
        """``compute(report)``, where ``report(fraction, message)`` is the stage's progress."""
        start = time.perf_counter()
        self.report(stage, 0.0, f"{stage}: starting")
        result = compute(lambda fraction, message: self.report(stage, fraction, message))
        self.timings[stage] = round(time.perf_counter() - start, 3)
        self.report(stage, 1.0, f"{stage}: done in {self.timings[stage]:.1f} s")
        self.on_stage(stage, result)
        return result

    def measure(self, name: str, compute: Callable[[], T]) -> T:
        """``compute()``, timed as ``timings[name]`` (a part of a stage, reported with it)."""
        start = time.perf_counter()
        result = compute()
        self.timings[name] = round(time.perf_counter() - start, 3)
        return result


def _embed_stage(run: _RunInputs, report: Progress) -> np.ndarray:
    """The embeddings, ndarray of shape (n, d)."""
    config = run.config
    return run.workspace.cached(run.fingerprint, "embeddings", run.keys.embedding, lambda: compute_embeddings(
        run.dataset, config.embedding, device=config.device, executor=run.executor, progress=report), fmt="npy")


def _neighbours_stage(run: _RunInputs, vectors: np.ndarray, report: Progress) -> KnnGraph:
    """The kNN graph of the embeddings."""
    entry = run.workspace.load_entry(run.fingerprint, "knn", run.keys.knn, {"knn_indices": "npy",
                                                                            "knn_distances": "npy"})
    if entry is not None:
        info = entry.info
        return KnnGraph(entry.files["knn_indices"], entry.files["knn_distances"], info["metric"], info["method"],
                        info["recall"], info["recall_queries"], info.get("refine_passes", 0))
    config = run.config
    graph = build_knn(vectors, k=config.k, metric=config.embedding.metric, exact_max=config.exact_knn_max,
                      seed=config.seed or 0, progress=report)
    run.workspace.save_entry(run.fingerprint, "knn", run.keys.knn, {
        "knn_indices": (graph.indices, "npy"), "knn_distances": (graph.distances, "npy")},
        {"metric": graph.metric, "method": graph.method, "recall": graph.recall,
         "recall_queries": graph.recall_queries, "refine_passes": graph.refine_passes})
    return graph


def _pca_stage(run: _RunInputs, vectors: np.ndarray) -> np.ndarray:
    """The PCA map, ndarray of shape (n, 2)."""
    return run.workspace.cached(run.fingerprint, "pca", {"embedding": run.keys.embedding},
                                lambda: project_pca(vectors), fmt="npy")


def _prewarm(run: _RunInputs, n: int) -> Prewarm | None:
    """On a cold numba cache, umap-learn's layout compiled in a second process while this one
    builds the kNN graph by NN-descent (which keeps about one core of two busy, for 30-45 s at
    100k when cold); None otherwise."""
    config = run.config
    if config.projection != "umap" or n <= config.exact_knn_max:
        return None
    return prewarm(metric=config.embedding.metric, n_neighbors=config.k + 1, seed=config.seed,
                   init=run.keys.umap_init or "spectral")


def _wait_for(process: Prewarm | None, report: Progress,
              waiting: str = "Waiting for the compiled code (numba, compiling in a second process)") -> None:
    """Until the second ``process`` has finished (at once when there is none or it has), saying
    ``waiting`` meanwhile."""
    if process is None:
        return
    if process.running():
        report(0.0, waiting)
    process.wait()


def _umap_stage(run: _RunInputs, vectors: np.ndarray, graph: KnnGraph, pca: np.ndarray,
                report: Progress, compiling: Prewarm | None = None) -> np.ndarray:
    """The UMAP map, ndarray of shape (n, 2), on the kNN graph (started from the PCA map when
    ``keys.umap_init`` says so), once ``compiling`` has compiled its code."""
    config = run.config

    def layout() -> np.ndarray:
        _wait_for(compiling, report)
        return project_umap(vectors, knn=graph, n_neighbors=config.k + 1, metric=config.embedding.metric,
                            seed=config.seed, fit_max=config.umap_fit_max,
                            init=pca if run.keys.umap_init == "pca" else None, progress=report)

    return run.workspace.cached(run.fingerprint, "umap", run.keys.umap, layout, fmt="npy")


def _dynamics_files(info: dict) -> dict[str, str]:
    """The files of a dynamics cache entry; norms and VoG only when its info says it has them."""
    return {"dynamics_logits": "npy", "dynamics_gold": "npy",
            **({"dynamics_norms": "npy"} if info["has_norms"] else {}),
            **({"dynamics_vog": "npy"} if info.get("has_vog") else {})}


def _dynamics_stage(run: _RunInputs, vectors: np.ndarray, report: Progress,
                    training: Prewarm | None = None) -> TrainedDynamics:
    """The training dynamics: from the cache, from the second process ``training`` the probe
    once it has finished, or from the configured source."""
    _wait_for(training, report, "Waiting for the probe (it trains in a second process)")
    cached = _cached_dynamics(run)
    if cached is not None:
        return cached
    if training is not None:
        report(0.0, "The second process did not train the probe: training it here")
    trained = _train_dynamics(run, vectors, report)
    _save_dynamics(run, trained)
    return trained


def _cached_dynamics(run: _RunInputs) -> TrainedDynamics | None:
    entry = run.workspace.load_entry(run.fingerprint, "dynamics", run.keys.dynamics, _dynamics_files)
    if entry is None:
        return None
    info, files = entry.info, entry.files
    return TrainedDynamics(TrainingDynamics(
        logits=files["dynamics_logits"], gold=np.asarray(files["dynamics_gold"], dtype=np.int64),
        source=info["source"], hidden_norms=files.get("dynamics_norms"), early_epoch=info["early_epoch"],
        vog=files.get("dynamics_vog")), tuple(info["notes"]))


def _save_dynamics(run: _RunInputs, trained: TrainedDynamics) -> None:
    dynamics = trained.dynamics
    run.workspace.save_entry(run.fingerprint, "dynamics", run.keys.dynamics, {
        # float32, not float16: imported logits must give the reference formulas' values to 1e-9.
        "dynamics_logits": (dynamics.logits.astype(np.float32, copy=False), "npy"),
        "dynamics_norms": (dynamics.hidden_norms, "npy"),
        "dynamics_vog": (np.asarray(dynamics.vog, dtype=np.float64) if dynamics.vog is not None else None, "npy"),
        "dynamics_gold": (dynamics.gold, "npy"),
    }, {"source": dynamics.source, "early_epoch": dynamics.early_epoch, "notes": list(trained.notes),
        "has_norms": dynamics.hidden_norms is not None, "has_vog": dynamics.vog is not None})


# Up to this many examples the probe trains ahead (:func:`_dynamics_ahead`). Past it the compiler's
# idle core is a small share of the probe's time, and the second process's memory (the embeddings,
# their standardised copy and every epoch's logits) would add to the analysis's peak.
DYNAMICS_AHEAD_MAX = 250_000


@dataclass(frozen=True, eq=False)
class _Labels:
    """What the probe reads of a dataset: sent to the second process instead of the whole table."""

    fingerprint: str
    label_codes: np.ndarray
    classes: tuple


def _dynamics_ahead(run: _RunInputs, n: int) -> Prewarm | None:
    """While this process compiles (:func:`_compiles_ahead`), the probe's training dynamics
    computed in a second process (:mod:`analytics.ahead`, :func:`train_ahead`): for the probe on
    the CPU, here (not on Ray), up to :data:`DYNAMICS_AHEAD_MAX` examples; None otherwise, and
    when they are cached already."""
    config = run.config
    if not config.scores or not DYNAMICS_REGISTRY[config.dynamics_source].trains_ahead or n > DYNAMICS_AHEAD_MAX \
            or run.executor.name != "local" or not _compiles_ahead(run, n) \
            or run.workspace.load_entry(run.fingerprint, "dynamics", run.keys.dynamics, _dynamics_files) is not None:
        return None
    import torch

    from analytics.device import default_device

    if default_device(config.probe.device).type != "cpu":
        return None
    dataset = run.dataset
    labels = _Labels(dataset.fingerprint, np.asarray(dataset.label_codes), tuple(dataset.classes))
    return ahead.start("dynamics", {"run": replace(run, dataset=labels, executor=LOCAL),
                                    "threads": torch.get_num_threads()})


def train_ahead(run: _RunInputs) -> bool:
    """In the second process (:mod:`analytics.ahead`): train the probe on the embeddings stored
    in the workspace and store what the dynamics stage and the held-out stage would: the
    out-of-fold probabilities first (the cross-fitted probes', or K-fold probes' under the
    independent scheme), so that stored dynamics always come with them. False when the
    embeddings are not in the workspace."""
    vectors = run.workspace.load(run.fingerprint, "embeddings", run.keys.embedding, fmt="npy")
    if vectors is None:
        return False
    quiet = lambda fraction, message: None  # noqa: E731 - nobody watches this process's progress
    trained = _train_dynamics(run, vectors, quiet)
    _probe_heldout(run, vectors, trained.heldout, quiet)
    _save_dynamics(run, trained)
    return True


def _train_dynamics(run: _RunInputs, vectors: np.ndarray, report: Progress) -> TrainedDynamics:
    """The training dynamics from the configured source's ``train``."""
    source = DYNAMICS_REGISTRY[run.config.dynamics_source]
    if run.checked is None or run.checked.source != source.name:  # a stage run on its own: check first
        run = replace(run, checked=check_sources(run.dataset, run.config))
    return source.train(run, vectors, report)


@dataclass(frozen=True, eq=False)
class _HeldOut:
    """The held-out stage's result: ``probs`` (ndarray of shape (n, classes), out-of-fold), the
    manifest's note on how they were made, and where they came from: the probe
    (:data:`PROBE_HELDOUT`) or the dynamics source's own ``heldout`` (its name: "finetune")."""

    probs: np.ndarray
    note: str
    origin: str


def _heldout_stage(run: _RunInputs, vectors: np.ndarray, cross_fitted: np.ndarray | None,
                   report: Progress) -> _HeldOut:
    """Out-of-fold probabilities for the scores that need held-out predictions.

    ``cross_fitted``: those the dynamics stage's cross-fitted probes gave, stored here as this
    stage's entry. A source with its own ``heldout`` (fine-tuning:
    :func:`analytics.finetune.finetune_heldout`, cross-fitting the same fine-tuning when asked, or
    when its time, estimated from the epochs just trained, fits the budget) is asked first; when
    it declines, and for every other source, the probe's K-fold cross-fitting on the embeddings.
    """
    folds = heldout_folds(run.config.probe, run.keys.scheme, run.dataset.label_codes)
    probe_note = f"probe out-of-fold ({folds} folds" + (
        ", the probes of the dynamics)" if run.keys.scheme == "cross-fit" else ")")
    source = DYNAMICS_REGISTRY[run.config.dynamics_source]
    if source.heldout is None:
        return _HeldOut(_probe_heldout(run, vectors, cross_fitted, report), probe_note, PROBE_HELDOUT)
    params, own = run.keys.source_heldout, source.name
    entry = run.workspace.load_entry(run.fingerprint, "heldout", params,
                                     lambda info: {"heldout": "npy"} if info.get("from") == own else {})
    if entry is not None:
        if entry.info.get("from") == own:
            return _HeldOut(entry.files["heldout"], entry.info["note"], own)
        return _HeldOut(_probe_heldout(run, vectors, None, report), entry.info["note"], PROBE_HELDOUT)
    probs, how = source.heldout(run, report)
    if probs is None:  # the source declined (budget, tiny class, or asked for the probe): say why
        held = _HeldOut(_probe_heldout(run, vectors, None, report),
                        f"{probe_note}; {how.removeprefix('probe:').strip()}", PROBE_HELDOUT)
    else:
        held = _HeldOut(np.asarray(probs, dtype=np.float32), how, own)
    run.workspace.save_entry(run.fingerprint, "heldout", params,
                             {"heldout": (held.probs if held.origin == own else None, "npy")},
                             {"note": held.note, "from": held.origin})
    return held


def _probe_heldout(run: _RunInputs, vectors: np.ndarray, cross_fitted: np.ndarray | None,
                   report: Progress) -> np.ndarray:
    """The probe's out-of-fold probabilities: ``cross_fitted`` when given, else K-fold cross-fitting."""
    if cross_fitted is not None:
        run.workspace.save(run.fingerprint, "heldout", run.keys.heldout, cross_fitted, fmt="npy")
        return cross_fitted
    dataset = run.dataset
    return run.workspace.cached(run.fingerprint, "heldout", run.keys.heldout, lambda: cross_fit_probabilities(
        vectors, dataset.label_codes, len(dataset.classes), run.config.probe, executor=run.executor,
        progress=report)[0], fmt="npy")


@dataclass(frozen=True, eq=False)
class _Scored:
    """The scores stage's result: the dynamics and held-out probabilities it scored, its
    :class:`ScoreInputs`, ``table`` (the score columns, ``region``, ``heldout_correct``,
    ``predicted_label`` and ``correct``, row i = example i) and whose errors ``correct`` judges."""

    trained: TrainedDynamics
    heldout: _HeldOut
    inputs: ScoreInputs
    table: pd.DataFrame
    error_source: str


def _scores_stage(run: _RunInputs, trained: TrainedDynamics, heldout: _HeldOut, graph: KnnGraph,
                  report: Progress) -> _Scored:
    """Every score the inputs allow, the data-map regions and the predictions."""
    dynamics, labels = trained.dynamics, run.dataset.label_codes
    inputs = ScoreInputs(labels=dynamics.gold, logits_by_epoch=dynamics.logits, early_epoch=dynamics.early_epoch,
                         heldout_probs=heldout.probs, knn_indices=graph.indices, knn_distances=graph.distances,
                         hidden_norms=dynamics.hidden_norms, vog_raw=dynamics.vog)
    table = compute_scores(inputs, progress=report)
    table["region"] = assign_regions(table["confidence"].to_numpy(), table["variability"].to_numpy(),
                                     RegionThresholds())
    heldout_predicted = heldout.probs.argmax(axis=1)
    table["heldout_correct"] = heldout_predicted == labels
    # Whose errors the clusters and slices judge. The user's checkpoints: their model's, from
    # its last checkpoint (the source's last_epoch_errors). Otherwise the held-out predictions
    # (fine-tuning's own when it was cross-fitted, else the probe's), never the last epoch's
    # training-pass logits, which have seen the example and its label.
    source = DYNAMICS_REGISTRY[run.config.dynamics_source]
    if source.last_epoch_errors:
        predicted = dynamics.logits[0, -1].argmax(axis=1)
        error_source = source.last_epoch_errors
    else:
        predicted = heldout_predicted
        error_source = f"{DYNAMICS_REGISTRY[heldout.origin].model} (out-of-fold)"
    table["predicted_label"] = np.asarray(run.dataset.classes, dtype=object)[predicted]
    table["correct"] = predicted == labels
    return _Scored(trained=trained, heldout=heldout, inputs=inputs, table=table, error_source=error_source)


def _annotators_stage(dataset: Dataset, scored: _Scored | None) -> AnnotatorReport | None:
    """With several annotators, their consensus and each annotator's quality (from the held-out
    probabilities when there are scores); None otherwise."""
    if not dataset.roles.annotator:
        return None
    return dataset_annotators(dataset, heldout_probs=scored.heldout.probs if scored is not None else None)


def _issues_stage(run: _RunInputs, graph: KnnGraph, report: Progress) -> DataIssues:
    """The data-issue checks on the run's kNN graph (kept as the columns, and the summary as the
    entry's info)."""
    params = run.keys.issues
    entry = run.workspace.load_entry(run.fingerprint, "issues", params, {"issues_columns": "parquet"},
                                     info_name="summary")
    if entry is not None and len(entry.files["issues_columns"]) == run.dataset.n_examples:
        return DataIssues(entry.files["issues_columns"], entry.info)
    issues = check_dataset(run.dataset, knn_indices=graph.indices, knn_distances=graph.distances,
                           metric=graph.metric, options=run.config.issues, progress=report)
    run.workspace.save_entry(run.fingerprint, "issues", params, {"issues_columns": (issues.columns, "parquet")},
                             issues.summary, info_name="summary")
    return issues


def _compiles_ahead(run: _RunInputs, n: int) -> bool:
    """Whether this process is about to compile NN-descent and umap-learn: a cold numba cache,
    about 40 s at 100k, mostly on one core of two."""
    config = run.config
    return config.projection == "umap" and n > config.exact_knn_max and not numba_compiled()


def _clusters_ahead(run: _RunInputs, n: int) -> Prewarm | None:
    """While this process compiles (:func:`_compiles_ahead`), the k-means clusters computed in
    a second process (:mod:`analytics.ahead`); None otherwise, and when they are
    cached already. Started before this process imports pynndescent, whose import alone
    compiles for about 10 s. HDBSCAN clusters the map, which comes later."""
    config = run.config
    if config.clusters is None or config.clusters.method != "kmeans" or not _compiles_ahead(run, n) \
            or run.workspace.load_entry(run.fingerprint, "clusters", run.keys.clusters,
                                        {"clusters": "npy"}) is not None:
        return None
    return ahead.start("clusters", {"workspace": run.workspace, "fingerprint": run.fingerprint,
                                    "embedding_params": run.keys.embedding, "params": run.keys.clusters,
                                    "config": config.clusters, "metric": config.embedding.metric})


def _clusters_stage(run: _RunInputs, vectors: np.ndarray, coords: np.ndarray, report: Progress,
                    computing: Prewarm | None = None) -> Clustering:
    """Clusters at two levels, on the embeddings (or on the map, for HDBSCAN): from the cache,
    from the second process ``computing`` them once it has finished, or computed here."""
    params = run.keys.clusters
    _wait_for(computing, report, "Waiting for the clusters (computed in a second process)")
    entry = run.workspace.load_entry(run.fingerprint, "clusters", params, {"clusters": "npy"})
    if entry is not None:
        return Clustering.from_parts(entry.files["clusters"], entry.info)
    if computing is not None:
        report(0.0, "The second process did not compute the clusters: computing them here")
    return ahead.store_clusters(run.workspace, run.fingerprint, params, vectors, run.config.clusters,
                                run.config.embedding.metric, coords, report)


@dataclass(frozen=True, eq=False)
class _StageResults:
    """What the stages returned, for the run folder (None for a stage that did not run)."""

    vectors: np.ndarray
    graph: KnnGraph
    pca: np.ndarray
    coords: np.ndarray
    scored: _Scored | None
    annotators: AnnotatorReport | None
    issues: DataIssues | None
    clustering: Clustering | None

    def score_columns(self) -> dict[str, np.ndarray]:
        """The per-example columns the manifest lists as ``score_columns``, in order: the scores
        and what derives from them, the annotators' consensus, the clusters."""
        columns = {}
        if self.scored is not None:
            columns.update({column: self.scored.table[column].to_numpy() for column in self.scored.table.columns})
        if self.annotators is not None:
            columns.update({column: self.annotators.examples[column].to_numpy()
                            for column in ANNOTATOR_EXAMPLE_COLUMNS})
        if self.clustering is not None:
            columns.update(cluster=self.clustering.coarse, cluster_fine=self.clustering.fine)
        return columns


@dataclass(frozen=True, eq=False)
class _ClusterFiles:
    """``clusters.parquet``, ``slices.parquet`` (None without predictions to judge) and the
    manifest's "clusters" entry."""

    table: pd.DataFrame
    slices: pd.DataFrame | None
    info: dict


def _write_stage(run: _RunInputs, results: _StageResults, out: Path, stages: _Stages) -> AnalysisRun:
    """Write the run folder: the per-example table, the arrays, the cluster, slice, issue and
    score summaries, then ``manifest.json`` last (timed as "artefacts", less the score
    summaries' own "hardness" time)."""
    start = time.perf_counter()
    stages.report("artefacts", 0.0, f"Writing the run to {out}")
    # A folder being rewritten (a damaged run recomputed) is not a run until its new manifest lands.
    (out / "manifest.json").unlink(missing_ok=True)
    examples = _examples_table(run.dataset, results)
    clusters = _cluster_files(run, examples, results) if results.clustering is not None else None
    hardness = stages.measure("hardness", lambda: _hardness_tables(examples, results.scored)) \
        if results.scored is not None else {}
    artefacts = {}
    for name, write in _run_files(examples, results, clusters, hardness).items():
        atomic_write(out / name, write)
        artefacts[name] = {"bytes": (out / name).stat().st_size, "sha256": file_sha256(out / name)}
    timings = stages.timings
    timings["artefacts"] = round(time.perf_counter() - start - timings.get("hardness", 0.0), 3)
    timings["total"] = round(sum(timings.values()), 3)
    manifest = _manifest(run, results, clusters, hardness, timings=timings, artefacts=artefacts)
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, default=str))
    stages.report("artefacts", 1.0, f"Run written to {out}")
    return AnalysisRun(path=out, dataset=run.dataset, examples=examples, manifest=manifest)


def _examples_table(dataset: Dataset, results: _StageResults) -> pd.DataFrame:
    """``examples.parquet``: the dataset's columns, the maps, the score columns, the issue columns."""
    examples = dataset.table.copy()
    examples["x"], examples["y"] = results.coords[:, 0], results.coords[:, 1]
    examples["pca_x"], examples["pca_y"] = results.pca[:, 0], results.pca[:, 1]
    for column, values in results.score_columns().items():
        examples[column] = values
    if results.issues is not None:
        for column in results.issues.columns.columns:
            examples[column] = results.issues.columns[column].to_numpy()
    return examples


def _cluster_files(run: _RunInputs, examples: pd.DataFrame, results: _StageResults) -> _ClusterFiles:
    clustering = results.clustering
    score_names = [column for column in results.score_columns() if column in _score_column_names()]
    table = cluster_tables(run.dataset, examples, clustering, score_names)
    info = {**{k: v for k, v in clustering.to_meta().items() if k not in ("representatives", "fine_parent")},
            "config": run.config.clusters.params(), "n_fine": int(len(clustering.fine_parent)),
            "noise": int((clustering.coarse < 0).sum())}
    slices = None
    if results.scored is not None:
        coarse = table[(table["level"] == "coarse") & (table["cluster"] >= 0)]
        info["uniformity"] = uniformity(coarse["accuracy"].to_numpy())
        info["errors"] = results.scored.error_source
        slices = discover_run_slices(examples, table, run.config.slices)
    return _ClusterFiles(table=table, slices=slices, info=info)


def _run_files(examples: pd.DataFrame, results: _StageResults, clusters: _ClusterFiles | None,
               hardness: dict[str, pd.DataFrame]) -> dict[str, Callable]:
    """Every file of the run folder but the manifest, by name: ``write(handle)``."""
    graph, scored = results.graph, results.scored
    writers = {
        "examples.parquet": lambda handle: examples.to_parquet(handle, index=False),
        "embeddings.npy": lambda handle: _save_npy_in_chunks(handle, results.vectors, np.float16),
        "neighbors.npz": lambda handle: np.savez(handle, indices=graph.indices,
                                                 distances=graph.distances.astype(np.float16)),
    }
    if scored is not None:
        writers["dynamics.npy"] = lambda handle: _save_npy_in_chunks(handle, scored.trained.dynamics.logits,
                                                                     np.float16)
        writers["heldout_probs.npy"] = lambda handle: np.save(handle, scored.heldout.probs.astype(np.float32))
    if clusters is not None:
        writers["clusters.parquet"] = lambda handle: clusters.table.to_parquet(handle, index=False)
        if clusters.slices is not None:
            writers["slices.parquet"] = lambda handle: clusters.slices.to_parquet(handle, index=False)
    if results.annotators is not None:
        writers[ANNOTATORS_FILE] = lambda handle: results.annotators.annotators.to_parquet(handle, index=False)
    if results.issues is not None:
        writers[ISSUES_FILE] = lambda handle: handle.write(results.issues.summary_json().encode("utf-8"))
    for name, table in hardness.items():  # the agreement matrix keeps its index: the score names
        writers[name] = lambda handle, table=table, name=name: table.to_parquet(
            handle, index=name == SCORE_AGREEMENT_FILE)
    return writers


def _manifest(run: _RunInputs, results: _StageResults, clusters: _ClusterFiles | None,
              hardness: dict[str, pd.DataFrame], *, timings: dict[str, float], artefacts: dict) -> dict:
    """``manifest.json``: what the run is of, how it was made, and every file's size and SHA-256."""
    dataset, config, scored, issues = run.dataset, run.config, results.scored, results.issues
    spec, graph = config.embedding, results.graph
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name, "source": str(dataset.source), "fingerprint": dataset.fingerprint,
            "kind": dataset.kind, "n_examples": dataset.n_examples, "classes": list(dataset.classes),
            "roles": dataset.roles.as_dict(), "ids_generated": dataset.ids_generated,
            "notes": list(dataset.notes), "skipped": [asdict(s) for s in dataset.skipped],
        },
        "config": _config_params(config, run.keys.dynamics_source),
        "embedding": {**{k: v for k, v in asdict(spec).items() if k != "options"},
                      "options": dict(spec.options), "dims": int(results.vectors.shape[1]), "metric": spec.metric},
        "neighbors": {"k": graph.k, "metric": graph.metric, "method": graph.method,
                      "recall": round(float(graph.recall), 5), "recall_queries": graph.recall_queries,
                      **({"refine_passes": graph.refine_passes} if graph.refine_passes else {}),
                      **({"warning": graph.warning} if graph.warning else {})},
        "projection": {"method": config.projection, "seeded": config.seed is not None, "init": run.keys.umap_init,
                       "seed": config.seed, "umap_fit_max": config.umap_fit_max},
        "map_columns": list(MAP_COLUMNS),
        "score_columns": list(results.score_columns()),
        "issue_columns": list(issues.columns.columns) if issues is not None else [],
        "issues": _issues_manifest(issues.summary) if issues is not None else None,
        "annotators": results.annotators.summary() if results.annotators is not None else None,
        "scores": {score.name: {"columns": list(score.columns), "direction": score.direction,
                                "reference": score.reference, "description": score.description}
                   for score in (available_scores(scored.inputs) if scored is not None else [])},
        "dynamics": _dynamics_manifest(run, scored) if scored is not None else None,
        "region_thresholds": asdict(RegionThresholds()) if scored is not None else None,
        "hardness": {"files": sorted(hardness)} if hardness else None,
        "clusters": clusters.info if clusters is not None else None,
        "device": _device_name(config.device),
        "executor": run.executor.describe(),
        "versions": _versions(),
        "timings_s": timings,
        "artefacts": artefacts,
    }


def _dynamics_manifest(run: _RunInputs, scored: _Scored) -> dict:
    """The manifest's "dynamics" entry: the source (as the dynamics name it: a folder's are
    "reference") and its settings, and where the held-out probabilities came from."""
    dynamics = scored.trained.dynamics
    entry = {"source": dynamics.source, "seeds": dynamics.n_seeds, "epochs": dynamics.n_epochs,
             "early_epoch": dynamics.early_epoch, "notes": list(scored.trained.notes),
             "heldout": scored.heldout.note, "heldout_from": scored.heldout.origin}
    entry.update(DYNAMICS_REGISTRY[run.config.dynamics_source].manifest(run, scored))
    return entry


def _hardness_tables(examples: pd.DataFrame, scored: _Scored) -> dict[str, pd.DataFrame]:
    """The score summaries the Hardness and Data map pages read, computed once over every row."""
    dynamics = scored.trained.dynamics
    return hardness_tables(examples, logits=dynamics.logits, labels=dynamics.gold, early_epoch=dynamics.early_epoch)


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


def _umap_init(config: AnalysisConfig, n: int) -> str:
    if config.umap_init != "auto":
        return config.umap_init
    return "pca" if n >= PCA_START_FROM else "spectral"


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


def _score_column_names() -> set[str]:
    return {column for score in SCORES.values() for column in score.columns}


def cluster_tables(dataset: Dataset, examples: pd.DataFrame, clustering: Clustering,
                   score_columns: list[str]) -> pd.DataFrame:
    """``clusters.parquet``: one row per cluster and level, named from content."""
    correct = examples["correct"].to_numpy() if "correct" in examples.columns else None
    metadata_cols = [c for c in dataset.table.columns if c not in ROLE_COLUMNS + ("label", "split")]
    parts = []
    for (level, column), assignments in zip(names.CLUSTER_LEVELS.items(), (clustering.coarse, clustering.fine)):
        cluster_names = name_clusters(
            assignments, kind=dataset.kind, ids=examples["id"].to_numpy(dtype=object), labels=examples["label"],
            texts=examples["text"].to_numpy(dtype=object) if "text" in examples.columns else None,
            table=dataset.table if dataset.kind == "tabular" else None,
            feature_columns=metadata_cols if dataset.kind == "tabular" else (),
            representatives=clustering.representatives.get(level))
        summary = cluster_summary(examples, column, names=cluster_names, correct=correct, score_columns=score_columns)
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
    for level, column in names.CLUSTER_LEVELS.items():
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
    """What the training dynamics depend on: the source's ``params`` (part of the run's key, so
    runs from different sources never share a run folder)."""
    return DYNAMICS_REGISTRY[config.dynamics_source].params(config)


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
