"""Curation impact: what a curation decision does to a model, measured before anyone commits to it.

Three experiments retrain the probe of :mod:`analytics.dynamics` on the run's embeddings (the
same head, optimiser and batch rule as the analysis, or the cheaper linear head
:data:`IMPACT_PROBE`; :func:`analytics.dynamics.fit_probes` trains the many probes of one
step side by side) and measure accuracy on held-out rows:

- :func:`pruning_curves` — after Paul et al., "Deep Learning on a Data Diet" (NeurIPS 2021):
  rank the training rows by a score, keep a fraction (dropping the hardest first, the easiest
  first, or keeping a window of the ranking as the paper's offset experiments do), retrain, and
  plot accuracy against the kept fraction, with random pruning as the baseline.
- :func:`easy_to_hard` — after Hase et al., "The Unreasonable Effectiveness of Easy Training
  Data for Hard Tasks" (2024): buckets by a hardness score, stratified by class (and cluster);
  train on one bucket or on all, evaluate on every bucket.
- :func:`what_if` — the original data against the data with a review session's drops removed
  and relabels applied (or the current selection removed), and against a random removal of the
  same size; accuracy with confidence intervals overall and per cluster.

**Evaluation never touches a training row.** With a ``split`` column holding ``test`` rows the
probes train on the ``train`` rows (every non-test row when none is marked ``train``) and are
judged on the test rows. Otherwise: repeated stratified K-fold cross-validation; each fold's
probes train on (a pruned subset of) the other folds and are judged on the fold. Pruning ranks
only the training rows of the fold, features are standardised with the training rows' mean
and spread, and every fit checks that its training rows and its evaluation rows are disjoint
(:class:`ImpactError` otherwise).

**What the scores saw.** The run computed its scores on every row, evaluation rows included
(the probe, the cross-fitted probabilities and the neighbour graph all used them). The pruning
only *ranks* training rows by those scores, but a training row's score can still reflect the
evaluation rows; a strict protocol would recompute the scores inside every fold. The app and
the report say so (:data:`SCORE_NOTE`).

Every experiment returns an :class:`ImpactResult` of plain DataFrames and is cached in the
workspace under the dataset's fingerprint, keyed by the run (the digests of its examples and
embeddings) and every parameter.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterable, NamedTuple

import numpy as np
import pandas as pd

from analytics.dynamics import ProbeConfig, fit_probes, predict_probes
from analytics.hardness import numeric_scores
from analytics.scores import HIGHER, LOWER, NEITHER, score_columns
from analytics.slices import wilson_interval
from analytics.workspace import Workspace, params_key

__all__ = [
    "BUCKET_NAMES",
    "DEFAULT_FRACTIONS",
    "DIRECTIONS",
    "EXPERIMENTS",
    "IMPACT_PROBE",
    "PRUNING_SCORES",
    "RANDOM",
    "SCORE_NOTE",
    "VARIANTS",
    "Changes",
    "EasyHardConfig",
    "Evaluation",
    "ImpactData",
    "ImpactError",
    "ImpactResult",
    "PruningConfig",
    "Split",
    "WhatIfConfig",
    "changes_from_ids",
    "changes_from_outcome",
    "describe_evaluation",
    "describe_probe",
    "easy_to_hard",
    "evaluation_splits",
    "hardness_buckets",
    "impact_data",
    "kept_rows",
    "pruning_curves",
    "result_key",
    "run_experiment",
    "stored_result",
    "what_if",
]

Progress = Callable[[float, str], None]
_VERSION = 1

EXPERIMENTS = ("pruning", "easy-hard", "what-if")
#: Pruning directions and what they keep.
DIRECTIONS = {
    "drop-hardest": "drop the hardest first (keep the easiest)",
    "drop-easiest": "drop the easiest first (keep the hardest, as Data Diet does)",
    "window": "keep a window of the ranking, skipping the hardest `offset` (Data Diet's offsets)",
}
RANDOM = "random"
#: The scores a pruning curve shows by default (those the run has).
PRUNING_SCORES = ("el2n", "forgetting_events", "aum", "confidence", "label_quality", "knn_shapley")
DEFAULT_FRACTIONS = tuple(round(0.1 * i, 1) for i in range(1, 11))
#: The cheap probe for many retrainings: a linear head (with a higher learning rate, which a
#: linear head tolerates), otherwise trained as the analysis trains its probe.
IMPACT_PROBE = ProbeConfig(hidden=0, epochs=10, learning_rate=1e-2)
BUCKET_NAMES = {
    2: ("easy", "hard"),
    3: ("easy", "medium", "hard"),
    4: ("easy", "medium-easy", "medium-hard", "hard"),
    5: ("easy", "medium-easy", "medium", "medium-hard", "hard"),
}
ALL = "all"
VARIANTS = ("original", "curated", "random removal")
SCORE_NOTE = (
    "The scores come from the analysis run, which computed them on every row, evaluation rows "
    "included. The experiments only rank training rows by them, never train on an evaluation row "
    "and never evaluate on a training row; but a training row's score can still reflect the "
    "evaluation rows (through the probe and the neighbour graph that produced it), so a gain "
    "may be slightly optimistic. A strict protocol would recompute the scores inside every fold."
)


class ImpactError(ValueError):
    """An experiment cannot run as asked; the message says what to change."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, eq=False)
class ImpactData:
    """What the experiments need from a run.

    Attributes
    ----------
    features : ndarray of shape (n, d), float32 — the embeddings
    labels : ndarray of shape (n,), int64 — each row's class index in ``classes``
    classes : tuple of str
    ids : ndarray of shape (n,), object (str)
    scores : DataFrame with n rows — numeric score columns (``label_issue`` as 0/1)
    split : ndarray of shape (n,) of str, or None
    clusters : ndarray of shape (n,), int (-1 = noise), or None
    cluster_names : dict of int to str
    fingerprint : str — the dataset's
    key : str — identifies the run for the cache ("" = do not cache)
    probe : ProbeConfig or None — the probe the run trained, when it trained one
    harder : dict of str to str — for score columns of the caller's own (not registered scores),
        when an example is harder: ``"higher"`` or ``"lower"`` (registered columns declare theirs)
    """

    features: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    ids: np.ndarray
    scores: pd.DataFrame
    split: np.ndarray | None = None
    clusters: np.ndarray | None = None
    cluster_names: dict = field(default_factory=dict)
    fingerprint: str = "impact"
    key: str = ""
    probe: ProbeConfig | None = None
    harder: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.labels)
        if self.features.ndim != 2 or len(self.features) != n or len(self.ids) != n or len(self.scores) != n:
            raise ImpactError(f"features {self.features.shape}, ids ({len(self.ids)}) and scores "
                              f"({len(self.scores)} rows) must all have one row per label ({n}).")
        for name, values in (("split", self.split), ("clusters", self.clusters)):
            if values is not None and len(values) != n:
                raise ImpactError(f"{name} has {len(values)} values for {n} rows.")
        wrong = {column: harder for column, harder in self.harder.items() if harder not in (HIGHER, LOWER)}
        if wrong:
            raise ImpactError(f"harder must say '{HIGHER}' or '{LOWER}' for each column, not {wrong}.")

    @property
    def n(self) -> int:
        return len(self.labels)


def impact_data(run) -> ImpactData:
    """The inputs of the experiments from an :class:`analytics.pipeline.AnalysisRun`."""
    examples = run.examples
    columns = numeric_scores(examples.columns)
    scores = examples[columns].astype(float).reset_index(drop=True)
    if "label_issue" in examples.columns:
        scores["label_issue"] = examples["label_issue"].astype(float).to_numpy()
    manifest = run.manifest
    artefacts = manifest.get("artefacts", {})
    identity = json.dumps([run.dataset.fingerprint, artefacts.get("examples.parquet", {}).get("sha256"),
                           artefacts.get("embeddings.npy", {}).get("sha256")])
    probe = ((manifest.get("dynamics") or {}).get("probe"))
    names: dict[int, str] = {}
    clusters_path = run.path / "clusters.parquet"
    if "cluster" in examples.columns and clusters_path.is_file():
        table = pd.read_parquet(clusters_path, columns=["level", "cluster", "name"])
        coarse = table[table["level"] == "coarse"]
        names = {int(c): str(name) for c, name in zip(coarse["cluster"], coarse["name"])}
    return ImpactData(
        features=run.embeddings(), labels=run.dataset.label_codes, classes=tuple(run.dataset.classes),
        ids=examples["id"].astype(str).to_numpy(dtype=object), scores=scores,
        split=examples["split"].astype(str).to_numpy(dtype=object) if "split" in examples.columns else None,
        clusters=examples["cluster"].to_numpy(dtype=np.int64) if "cluster" in examples.columns else None,
        cluster_names=names, fingerprint=run.dataset.fingerprint,
        key=hashlib.sha256(identity.encode()).hexdigest()[:16],
        probe=ProbeConfig(**probe) if probe else None,
    )


@dataclass(frozen=True)
class Evaluation:
    """How accuracy is measured on rows no probe trained on.

    ``method``: "auto" (the test split when the data has one, else cross-validation),
    "test-split" or "cross-validation". ``test_split`` names the held-out split. ``folds`` ×
    ``repeats`` stratified folds (reshuffled with ``seed + repeat``) for cross-validation.
    """

    method: str = "auto"
    test_split: str = "test"
    folds: int = 5
    repeats: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.method not in ("auto", "test-split", "cross-validation"):
            raise ImpactError(f"evaluation method must be auto, test-split or cross-validation, not {self.method!r}")
        if self.folds < 2 or self.repeats < 1:
            raise ImpactError("cross-validation needs at least 2 folds and 1 repeat.")


class Split(NamedTuple):
    """One train/evaluate split: the probes train on (a subset of) ``train`` and are judged on
    ``evaluate`` (row positions, disjoint)."""

    repeat: int
    fold: int
    train: np.ndarray
    evaluate: np.ndarray


def _test_mask(data: ImpactData, evaluation: Evaluation) -> np.ndarray | None:
    if data.split is None:
        return None
    split = pd.Series(data.split).str.strip().str.lower()
    test = (split == evaluation.test_split.strip().lower()).to_numpy()
    return test if test.any() and (~test).any() else None


def _uses_test_split(data: ImpactData, evaluation: Evaluation) -> bool:
    test = _test_mask(data, evaluation)
    if evaluation.method == "test-split" and test is None:
        raise ImpactError(f"There is no '{evaluation.test_split}' split to evaluate on (with other rows to "
                          "train on); choose cross-validation.")
    return evaluation.method != "cross-validation" and test is not None


def _folds(labels: np.ndarray, folds: int) -> int:
    counts = np.bincount(labels)
    return max(2, min(folds, int(counts[counts > 0].min())))


def evaluation_splits(data: ImpactData, evaluation: Evaluation = Evaluation()) -> list[Split]:
    """The train/evaluate splits of ``evaluation`` on ``data`` (checked disjoint)."""
    from sklearn.model_selection import StratifiedKFold

    if _uses_test_split(data, evaluation):
        test = _test_mask(data, evaluation)
        named_train = (pd.Series(data.split).str.strip().str.lower() == "train").to_numpy()
        train = np.flatnonzero(named_train if named_train.any() else ~test)
        splits = [Split(0, 0, train, np.flatnonzero(test))]
    else:
        folds = _folds(data.labels, evaluation.folds)
        splits = []
        for repeat in range(evaluation.repeats):
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=evaluation.seed + repeat)
            for fold, (train, held_out) in enumerate(splitter.split(np.zeros(data.n), data.labels)):
                splits.append(Split(repeat, fold, train, held_out))
    for split in splits:
        _check_held_out(split.train, split.evaluate)
    return splits


def describe_evaluation(data: ImpactData, evaluation: Evaluation = Evaluation()) -> str:
    """One sentence on how accuracy is measured for ``data``."""
    if _uses_test_split(data, evaluation):
        split = evaluation_splits(data, evaluation)[0]
        return (f"held-out '{evaluation.test_split}' split ({len(split.evaluate):,} rows); probes train on "
                f"{len(split.train):,} training rows")
    folds = _folds(data.labels, evaluation.folds)
    reduced = f" (reduced from {evaluation.folds}: the smallest class is that small)" if folds < evaluation.folds else ""
    repeats = f" × {evaluation.repeats} repeats" if evaluation.repeats > 1 else ""
    return (f"{folds}-fold stratified cross-validation{reduced}{repeats}: every row is evaluated by probes "
            "that never trained on it")


def describe_probe(probe: ProbeConfig) -> str:
    """``linear head, 20 epochs`` or ``one hidden layer of 256, 10 epochs``."""
    head = "linear head" if probe.hidden <= 0 else f"one hidden layer of {probe.hidden}"
    batch = f", batch {probe.batch_size}" if probe.batch_size else ""
    return f"{head}, {probe.epochs} epochs, learning rate {probe.learning_rate:g}{batch}"


def _check_held_out(training: np.ndarray, evaluated: np.ndarray) -> None:
    """Refuse any overlap between rows a probe trains on and rows it is judged on."""
    overlap = np.intersect1d(np.asarray(training).ravel(), evaluated)
    if overlap.size:
        raise ImpactError(f"{overlap.size} evaluation rows are among the training rows (e.g. row "
                          f"{int(overlap[0])}): the evaluation would not be held out.")


# --------------------------------------------------------------------------- configuration


def _fractions(fractions: Iterable[float]) -> tuple[float, ...]:
    values = tuple(sorted({round(float(f), 4) for f in fractions}))
    if not values or values[0] <= 0 or values[-1] > 1:
        raise ImpactError("Kept fractions must lie in (0, 1].")
    return values


@dataclass(frozen=True)
class PruningConfig:
    """A pruning-curve experiment.

    ``scores``: score columns to rank by (random is added as the baseline when
    ``random_baseline``). ``direction``: a key of :data:`DIRECTIONS`; ``offset`` (window only):
    the share of the ranking skipped from the hardest end. ``fractions``: kept fractions of the
    training rows. ``seeds``: probe seeds (and random draws) per point. ``class_balanced``: keep
    the same fraction of every class. ``equal_steps``: train every subset for as many minibatch
    steps as the whole training set gets in ``probe.epochs`` epochs (epochs scaled up as the subset
    shrinks), so that a smaller subset is not also an under-trained probe; off, every subset gets
    ``probe.epochs`` epochs.
    """

    scores: tuple[str, ...] = PRUNING_SCORES
    direction: str = "drop-hardest"
    offset: float = 0.0
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seeds: int = 3
    class_balanced: bool = False
    random_baseline: bool = True
    evaluation: Evaluation = Evaluation()
    probe: ProbeConfig = IMPACT_PROBE
    equal_steps: bool = True

    def __post_init__(self):
        object.__setattr__(self, "scores", tuple(dict.fromkeys(s for s in self.scores if s != RANDOM)))
        object.__setattr__(self, "fractions", _fractions(self.fractions))
        if self.direction not in DIRECTIONS:
            raise ImpactError(f"direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        if not 0 <= self.offset < 1:
            raise ImpactError("offset must lie in [0, 1).")
        if self.seeds < 1:
            raise ImpactError("seeds must be at least 1.")
        if not self.scores and not self.random_baseline:
            raise ImpactError("Choose at least one score (or keep the random baseline).")


@dataclass(frozen=True)
class EasyHardConfig:
    """An easy-to-hard experiment: ``buckets`` (2-5) by ``score``, stratified by class (and by
    cluster with ``by_cluster``); probes train on each bucket and on all rows. ``equal_steps`` as
    in :class:`PruningConfig`."""

    score: str = "el2n"
    buckets: int = 3
    by_cluster: bool = False
    seeds: int = 3
    evaluation: Evaluation = Evaluation()
    probe: ProbeConfig = IMPACT_PROBE
    equal_steps: bool = True

    def __post_init__(self):
        if self.buckets not in BUCKET_NAMES:
            raise ImpactError(f"buckets must be between 2 and 5, not {self.buckets}.")
        if self.seeds < 1:
            raise ImpactError("seeds must be at least 1.")


@dataclass(frozen=True)
class WhatIfConfig:
    """A what-if experiment. ``evaluate_on``: "curated" (labels after the changes; removed rows
    are not evaluated) or "original" (the dataset's labels on every evaluation row). All
    variants are judged on the same rows with the same labels. ``equal_steps`` as in
    :class:`PruningConfig`."""

    seeds: int = 3
    evaluate_on: str = "curated"
    evaluation: Evaluation = Evaluation()
    probe: ProbeConfig = IMPACT_PROBE
    equal_steps: bool = True

    def __post_init__(self):
        if self.evaluate_on not in ("curated", "original"):
            raise ImpactError(f"evaluate_on must be curated or original, not {self.evaluate_on!r}")
        if self.seeds < 1:
            raise ImpactError("seeds must be at least 1.")


@dataclass(frozen=True)
class Changes:
    """Curation changes keyed by example id: rows to remove and (id, new label) relabels."""

    remove: frozenset = frozenset()
    relabel: tuple[tuple[str, str], ...] = ()
    source: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "remove", frozenset(str(i) for i in self.remove))
        object.__setattr__(self, "relabel", tuple(sorted((str(i), str(label)) for i, label in self.relabel)))

    @property
    def empty(self) -> bool:
        return not self.remove and not self.relabel

    def digest(self) -> str:
        """A hash of what changes (not of where it came from)."""
        blob = json.dumps([sorted(self.remove), list(self.relabel)]).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def changes_from_outcome(outcome: pd.DataFrame, *, source: str = "") -> Changes:
    """The changes of a review session's outcome (:meth:`analytics.store.ReviewStore.outcome`):
    drops are removed and relabels applied; keep, flag, conflict and undecided change nothing."""
    decision = outcome["final_decision"].astype(str)
    ids = outcome["example_id"].astype(str)
    relabels = outcome[decision == "relabel"]
    ignored = decision[~decision.isin(["drop", "relabel"])].value_counts()
    notes = tuple(f"{count:,} {name}" for name, count in ignored.items())
    return Changes(remove=frozenset(ids[decision == "drop"]),
                   relabel=tuple(zip(relabels["example_id"].astype(str), relabels["new_label"].astype(str))),
                   source=source, notes=notes)


def changes_from_ids(ids: Iterable[str], *, source: str = "selection") -> Changes:
    """Remove the examples ``ids`` (e.g. the current selection)."""
    return Changes(remove=frozenset(str(i) for i in ids), source=source)


# --------------------------------------------------------------------------- results and cache


@dataclass(frozen=True, eq=False)
class ImpactResult:
    """An experiment's numbers.

    ``table``: the summary (one row per plotted point or table cell); ``runs``: one row per
    training run (seed × repeat); ``info``: the configuration, protocol, probe, notes and
    timings (JSON-able); ``buckets``: easy-to-hard only, each row's bucket.
    """

    experiment: str
    table: pd.DataFrame
    runs: pd.DataFrame
    info: dict
    buckets: pd.DataFrame | None = None


def _config_params(config) -> dict:
    params = asdict(config)
    params["probe"] = {k: v for k, v in params["probe"].items() if k not in ("seeds", "folds", "device")}
    return params


def _labels_digest(labels: np.ndarray | None) -> str | None:
    if labels is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def _cache_params(experiment: str, data: ImpactData, config, changes: Changes | None,
                  evaluation_labels: np.ndarray | None) -> dict:
    if experiment == "what-if" and changes is None:
        changes = Changes()
    return {"experiment": experiment, "run": data.key, "config": _config_params(config),
            "changes": changes.digest() if changes is not None else None,
            "evaluation_labels": _labels_digest(evaluation_labels), "v": _VERSION}


def _stage(experiment: str) -> str:
    return "impact_" + experiment.replace("-", "_")


def _load(workspace: Workspace, data: ImpactData, experiment: str, params: dict) -> ImpactResult | None:
    stage = _stage(experiment)
    entry = workspace.load_entry(data.fingerprint, stage, params, lambda info: {
        stage: "parquet", stage + "_runs": "parquet",
        **({stage + "_buckets": "parquet"} if info.get("has_buckets") else {})})
    if entry is None:
        return None
    return ImpactResult(experiment=experiment, table=entry.files[stage], runs=entry.files[stage + "_runs"],
                        info={**entry.info, "cached": True}, buckets=entry.files.get(stage + "_buckets"))


def _cached(experiment: str, data: ImpactData, params: dict, compute: Callable[[], ImpactResult],
            workspace: Workspace | None) -> ImpactResult:
    if not data.key:
        return compute()
    workspace = workspace or Workspace.default()
    stored = _load(workspace, data, experiment, params)
    if stored is not None:
        return stored
    result = compute()
    stage = _stage(experiment)
    workspace.save_entry(data.fingerprint, stage, params, {
        stage: (result.table, "parquet"), stage + "_runs": (result.runs, "parquet"),
        stage + "_buckets": (result.buckets, "parquet")}, {**result.info, "has_buckets": result.buckets is not None})
    return result


def stored_result(experiment: str, data: ImpactData, config, *, changes: Changes | None = None,
                  evaluation_labels: np.ndarray | None = None,
                  workspace: Workspace | None = None) -> ImpactResult | None:
    """The cached result of an experiment, or None when it has not been run (computes nothing)."""
    if experiment not in EXPERIMENTS:
        raise ImpactError(f"experiment must be one of {', '.join(EXPERIMENTS)}, not {experiment!r}")
    if not data.key:
        return None
    params = _cache_params(experiment, data, config, changes, evaluation_labels)
    return _load(workspace or Workspace.default(), data, experiment, params)


def result_key(experiment: str, data: ImpactData, config, *, changes: Changes | None = None,
               evaluation_labels: np.ndarray | None = None) -> str:
    """A short key naming one experiment on one run with one configuration (and changes)."""
    return params_key({**_cache_params(experiment, data, config, changes, evaluation_labels),
                       "fingerprint": data.fingerprint})


def run_experiment(experiment: str, data: ImpactData, config, *, changes: Changes | None = None,
                   workspace: Workspace | None = None, progress: Progress | None = None,
                   evaluation_labels: np.ndarray | None = None) -> ImpactResult:
    """Run (or load) ``experiment`` — "pruning", "easy-hard" or "what-if" (which needs
    ``changes``) — with its configuration."""
    options = dict(workspace=workspace, progress=progress, evaluation_labels=evaluation_labels)
    if experiment == "pruning":
        return pruning_curves(data, config, **options)
    if experiment == "easy-hard":
        return easy_to_hard(data, config, **options)
    if experiment == "what-if":
        return what_if(data, changes if changes is not None else Changes(), config, **options)
    raise ImpactError(f"experiment must be one of {', '.join(EXPERIMENTS)}, not {experiment!r}")


def _info(experiment: str, data: ImpactData, config, started: float, **extra) -> dict:
    from analytics.device import default_device

    return {"experiment": experiment, "config": _config_params(config),
            "evaluation": describe_evaluation(data, config.evaluation),
            "probe": describe_probe(config.probe) + ("; every subset trained for as many steps as the whole "
                                                     "training set" if config.equal_steps else ""),
            "device": str(default_device(config.probe.device)), "n_examples": data.n, "run": data.key,
            "score_note": SCORE_NOTE, "seconds": round(time.perf_counter() - started, 2),
            "created": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"), **extra}


# --------------------------------------------------------------------------- shared machinery


def _standardised(features: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Features centred and scaled with the mean and spread of ``rows`` (the training rows)."""
    features = np.asarray(features, dtype=np.float32)
    mean = features[rows].mean(axis=0)
    scale = features[rows].std(axis=0)
    return (features - mean) / np.where(scale > 1e-8, scale, 1.0)


def _steps_per_epoch(probe: ProbeConfig, rows: int) -> int:
    return math.ceil(rows / probe.batch_for(rows))


def _probe_for(probe: ProbeConfig, rows: int, steps_of: int | None) -> ProbeConfig:
    """``probe``, with its epochs scaled up so that ``rows`` rows get as many minibatch steps as
    ``steps_of`` rows get in ``probe.epochs`` epochs (no scaling when ``steps_of`` is None)."""
    if steps_of is None or rows >= steps_of:
        return probe
    steps = probe.epochs * _steps_per_epoch(probe, steps_of)
    return replace(probe, epochs=math.ceil(steps / _steps_per_epoch(probe, rows)))


def _fit_predict(features: np.ndarray, members: list[np.ndarray], targets: list[np.ndarray],
                 seeds: list[int], evaluated: np.ndarray, n_classes: int, probe: ProbeConfig,
                 *, steps_of: int | None = None) -> np.ndarray:
    """Train one probe per member (its rows and targets) and predict ``evaluated``. With
    ``steps_of`` (the training pool's size) every member trains for as many minibatch steps as
    the whole pool would, so a smaller subset is not also a less trained one.

    Returns the predicted class of every probe on every evaluated row, shape (M, q).
    """
    _check_held_out(np.concatenate(members), evaluated)
    predictions = np.empty((len(members), len(evaluated)), dtype=np.int64)
    sizes = np.array([len(rows) for rows in members])
    for size in np.unique(sizes):
        group = np.flatnonzero(sizes == size)
        stack = fit_probes(features, np.stack([members[i] for i in group]), np.stack([targets[i] for i in group]),
                           n_classes, _probe_for(probe, int(size), steps_of), seeds=[seeds[i] for i in group])
        predictions[group] = predict_probes(stack, features, evaluated).argmax(axis=2)
    return predictions


def _harder_is_higher(data: ImpactData, score: str) -> bool:
    """The direction the score's registration declares (:func:`analytics.scores.harder_is_higher`);
    the flag ``label_issue`` (0/1) is harder when set. A column of the caller's own (not a
    registered score) needs its direction in ``data.harder``.

    Raises
    ------
    ImpactError
        A column neither registered nor given a direction.
    """
    if score == RANDOM:
        return True
    harder = score_columns().get(score) or data.harder.get(score)
    if harder is None:
        raise ImpactError(f"'{score}' is not a registered score column; give its direction "
                          f"(ImpactData.harder: '{HIGHER}' or '{LOWER}' is harder).")
    if harder == NEITHER:
        return True  # a flag: set = suspicious
    return harder == HIGHER


def _score_values(data: ImpactData, score: str) -> np.ndarray:
    if score not in data.scores.columns:
        available = ", ".join(data.scores.columns) or "none"
        raise ImpactError(f"The run has no score '{score}'; available: {available}.")
    values = data.scores[score].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        raise ImpactError(f"Score '{score}' has no finite values.")
    return values


def _hardest_first(values: np.ndarray, harder_is_higher: bool, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``values`` from the hardest to the easiest; ties in random order, missing
    values ranked as the median."""
    values = np.asarray(values, dtype=float)
    missing = ~np.isfinite(values)
    if missing.any():
        values = np.where(missing, np.median(values[~missing]) if (~missing).any() else 0.0, values)
    hardness = values if harder_is_higher else -values
    return np.lexsort((rng.random(len(values)), -hardness))


def _count(fraction: float, n: int) -> int:
    return min(n, max(1, int(math.floor(fraction * n + 0.5))))


def kept_rows(pool: np.ndarray, fraction: float, *, values: np.ndarray | None, labels: np.ndarray,
              harder_is_higher: bool = True, direction: str = "drop-hardest", offset: float = 0.0,
              class_balanced: bool = False, rng: np.random.Generator | None = None) -> np.ndarray:
    """The rows of ``pool`` that pruning keeps, sorted.

    Parameters
    ----------
    pool : ndarray of shape (m,), int — the training rows (the only rows ranked)
    fraction : float in (0, 1] — the share kept (of each class with ``class_balanced``)
    values : ndarray of shape (m,) — the score of each pool row; None for random pruning
    labels : ndarray of shape (m,) — each pool row's class (for ``class_balanced``)
    direction : a key of :data:`DIRECTIONS`
    offset : float — ``window`` only: the share of the ranking skipped from the hardest end; the
        window slides back so that it fits when ``offset + fraction > 1``
    """
    rng = rng or np.random.default_rng(0)
    pool = np.asarray(pool)
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if class_balanced else [np.arange(len(pool))]
    chosen = []
    for group in groups:
        if not len(group):
            continue
        count = _count(fraction, len(group))
        if values is None:
            chosen.append(group[rng.permutation(len(group))[:count]])
            continue
        order = _hardest_first(values[group], harder_is_higher, rng)
        if direction == "drop-hardest":
            kept = order[len(order) - count:]
        elif direction == "drop-easiest":
            kept = order[:count]
        else:
            start = min(int(math.floor(offset * len(order) + 0.5)), len(order) - count)
            kept = order[start:start + count]
        chosen.append(group[kept])
    return np.sort(pool[np.concatenate(chosen)])


def _interval_over_runs(values: pd.Series) -> tuple[float, float, float]:
    """Mean and 95% t-interval of the mean over runs, clipped to [0, 1] (NaN bounds for one run)."""
    from scipy.stats import t

    values = values.to_numpy(dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


def _progress(progress: Progress | None) -> Progress:
    return progress or (lambda fraction, message: None)


def _split_name(split: Split, splits: list[Split]) -> str:
    if len(splits) == 1:
        return "test split"
    folds = sum(1 for s in splits if s.repeat == 0)
    repeats = f", repeat {split.repeat + 1}" if splits[-1].repeat > 0 else ""
    return f"fold {split.fold + 1} of {folds}{repeats}"


# --------------------------------------------------------------------------- pruning curves


def pruning_curves(data: ImpactData, config: PruningConfig = PruningConfig(), *,
                   workspace: Workspace | None = None, progress: Progress | None = None,
                   evaluation_labels: np.ndarray | None = None) -> ImpactResult:
    """Accuracy against the kept fraction of the training rows, one curve per score and random.

    At each kept fraction and for each score, the training rows of every split are ranked by
    the score (within each class with ``class_balanced``) and pruned as ``config.direction``
    says; a probe is trained per seed on what is kept and judged on the split's held-out rows.
    Every score shares the probe seeds, so at one fraction the curves differ only by the rows
    kept; at 100% they coincide. ``evaluation_labels`` (n,) replaces the labels the held-out
    rows are judged against (e.g. the known clean labels in a benchmark; training always uses
    the dataset's labels).

    Returns
    -------
    ImpactResult
        ``table``: score, direction, kept_fraction, accuracy (mean over runs), ci_low, ci_high
        (95% t-interval of the mean over the seeds × repeats runs: training randomness and fold
        assignment, not the finite evaluation set, which all scores share), std, runs, n_train
        (rows kept per fit), n_eval (rows judged per run), vs_random (accuracy minus random's).
        ``runs``: score, kept_fraction, seed, repeat, accuracy, n_train.
    """
    for score in config.scores:
        _score_values(data, score)
    _check_labels(data, evaluation_labels)
    params = _cache_params("pruning", data, config, None, evaluation_labels)
    return _cached("pruning", data, params,
                   lambda: _compute_pruning(data, config, _progress(progress), evaluation_labels), workspace)


def _check_labels(data: ImpactData, evaluation_labels: np.ndarray | None) -> None:
    if evaluation_labels is not None and (len(evaluation_labels) != data.n or np.min(evaluation_labels) < 0
                                          or np.max(evaluation_labels) >= len(data.classes)):
        raise ImpactError(f"evaluation_labels must hold one class index (0..{len(data.classes) - 1}) per row.")


def _compute_pruning(data: ImpactData, config: PruningConfig, progress: Progress,
                     evaluation_labels: np.ndarray | None) -> ImpactResult:
    started = time.perf_counter()
    splits = evaluation_splits(data, config.evaluation)
    truth = data.labels if evaluation_labels is None else np.asarray(evaluation_labels, dtype=np.int64)
    names = list(config.scores) + ([RANDOM] if config.random_baseline else [])
    values = {name: _score_values(data, name) for name in config.scores}
    repeats = splits[-1].repeat + 1
    shape = (len(names), len(config.fractions), config.seeds, repeats)
    correct, kept = np.zeros(shape), np.zeros(shape)
    judged = np.zeros(repeats)
    fits = np.zeros(repeats)
    steps = len(splits) * len(config.fractions)
    for split_index, split in enumerate(splits):
        features = _standardised(data.features, split.train)
        pool, pool_labels = split.train, data.labels[split.train]
        for f_index, fraction in enumerate(config.fractions):
            progress((split_index * len(config.fractions) + f_index) / steps,
                     f"{_split_name(split, splits)} · keeping {fraction:.0%}")
            members, keys = [], []
            for s_index, name in enumerate(names):
                for seed in range(config.seeds):
                    rows = kept_rows(pool, fraction, values=None if name == RANDOM else values[name][pool],
                                     labels=pool_labels, harder_is_higher=_harder_is_higher(data, name),
                                     direction=config.direction, offset=config.offset,
                                     class_balanced=config.class_balanced,
                                     rng=_rng(config.evaluation.seed, seed, split.repeat, split.fold))
                    members.append(rows)
                    keys.append((s_index, seed))
            predictions = _fit_predict(features, members, [data.labels[rows] for rows in members],
                                       [seed for _, seed in keys], split.evaluate, len(data.classes), config.probe,
                                       steps_of=len(pool) if config.equal_steps else None)
            hits = (predictions == truth[split.evaluate]).sum(axis=1)
            for (s_index, seed), hit, rows in zip(keys, hits, members):
                correct[s_index, f_index, seed, split.repeat] += hit
                kept[s_index, f_index, seed, split.repeat] += len(rows)
        judged[split.repeat] += len(split.evaluate)
        fits[split.repeat] += 1
    progress(1.0, "Pruning curves ready")
    index = pd.MultiIndex.from_product([names, config.fractions, range(config.seeds), range(repeats)],
                                       names=["score", "kept_fraction", "seed", "repeat"])
    runs = pd.DataFrame({"accuracy": (correct / judged).ravel(), "n_train": (kept / fits).ravel()},
                        index=index).reset_index()
    rows = []
    for (name, fraction), group in runs.groupby(["score", "kept_fraction"], sort=False):
        mean, low, high = _interval_over_runs(group["accuracy"])
        rows.append({"score": name, "direction": RANDOM if name == RANDOM else config.direction,
                     "kept_fraction": fraction, "accuracy": mean, "ci_low": low, "ci_high": high,
                     "std": float(group["accuracy"].std(ddof=1)) if len(group) > 1 else math.nan,
                     "runs": len(group), "n_train": float(group["n_train"].mean()), "n_eval": int(judged[0])})
    table = pd.DataFrame(rows)
    if config.random_baseline:
        baseline = table[table["score"] == RANDOM].set_index("kept_fraction")["accuracy"]
        table["vs_random"] = table["accuracy"] - table["kept_fraction"].map(baseline)
    info = _info("pruning", data, config, started, splits=len(splits),
                 training_rows=int(np.mean([len(s.train) for s in splits])),
                 directions={name: ("higher = harder" if _harder_is_higher(data, name) else "lower = harder")
                             for name in config.scores},
                 evaluation_labels="given" if evaluation_labels is not None else "the dataset's")
    return ImpactResult("pruning", table, runs, info)


# --------------------------------------------------------------------------- easy to hard


def hardness_buckets(data: ImpactData, score: str, *, buckets: int = 3, by_cluster: bool = False,
                     seed: int = 0) -> pd.DataFrame:
    """Every row's hardness bucket by ``score``, stratified by class (and by cluster).

    Within each class (or class × cluster) the rows are ordered from easiest to hardest by the
    score's direction (ties at random with ``seed``) and cut into ``buckets`` parts of equal
    size (±1), so every bucket holds the same share of every class.

    Returns
    -------
    DataFrame with columns id, label, bucket (name), bucket_index (0 = easiest), group, score.
    """
    if buckets not in BUCKET_NAMES:
        raise ImpactError(f"buckets must be between 2 and 5, not {buckets}.")
    values = _score_values(data, score)
    if by_cluster and data.clusters is None:
        raise ImpactError("The run has no clusters to stratify by.")
    group_keys = pd.Series(data.labels.astype(str))
    if by_cluster:
        group_keys = group_keys + "|" + pd.Series(data.clusters.astype(str))
    codes, group_names = pd.factorize(group_keys)
    index = np.empty(data.n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    for code in range(len(group_names)):
        rows = np.flatnonzero(codes == code)
        easiest_first = _hardest_first(values[rows], _harder_is_higher(data, score), rng)[::-1]
        index[rows[easiest_first]] = np.arange(len(rows)) * buckets // len(rows)
    classes = np.asarray(data.classes, dtype=object)
    group = classes[data.labels].astype(str)
    if by_cluster:
        group = group + " · cluster " + data.clusters.astype(str)
    return pd.DataFrame({"id": data.ids, "label": classes[data.labels],
                         "bucket": np.asarray(BUCKET_NAMES[buckets], dtype=object)[index],
                         "bucket_index": index, "group": group, "score": values})


def easy_to_hard(data: ImpactData, config: EasyHardConfig = EasyHardConfig(), *,
                 workspace: Workspace | None = None, progress: Progress | None = None,
                 evaluation_labels: np.ndarray | None = None) -> ImpactResult:
    """Train on the easy bucket, on the hard one (each bucket) and on all training rows; judge
    every probe on the held-out rows of every bucket.

    Returns
    -------
    ImpactResult
        ``table``: train_on, evaluate_on (a bucket or "all"), accuracy (mean over runs), ci_low,
        ci_high (95% Wilson interval over the evaluated rows, run-averaged), std (over runs),
        runs, n_train, n_eval. ``runs``: train_on, evaluate_on, seed, repeat, accuracy.
        ``buckets``: :func:`hardness_buckets`, the named splits to export.
    """
    _score_values(data, config.score)
    _check_labels(data, evaluation_labels)
    params = _cache_params("easy-hard", data, config, None, evaluation_labels)
    return _cached("easy-hard", data, params,
                   lambda: _compute_easy_hard(data, config, _progress(progress), evaluation_labels), workspace)


def _compute_easy_hard(data: ImpactData, config: EasyHardConfig, progress: Progress,
                       evaluation_labels: np.ndarray | None) -> ImpactResult:
    started = time.perf_counter()
    buckets = hardness_buckets(data, config.score, buckets=config.buckets, by_cluster=config.by_cluster,
                               seed=config.evaluation.seed)
    bucket_of = buckets["bucket_index"].to_numpy()
    names = list(BUCKET_NAMES[config.buckets])
    train_sets = names + [ALL]
    eval_sets = names + [ALL]
    splits = evaluation_splits(data, config.evaluation)
    truth = data.labels if evaluation_labels is None else np.asarray(evaluation_labels, dtype=np.int64)
    repeats = splits[-1].repeat + 1
    correct = np.zeros((len(train_sets), len(eval_sets), config.seeds, repeats))
    judged = np.zeros((len(eval_sets), repeats))
    trained = np.zeros((len(train_sets), repeats))
    skipped: set[str] = set()
    for split_index, split in enumerate(splits):
        progress(split_index / len(splits), f"{_split_name(split, splits)}: training on each bucket")
        features = _standardised(data.features, split.train)
        members, keys = [], []
        for t_index, name in enumerate(train_sets):
            rows = split.train if name == ALL else split.train[bucket_of[split.train] == t_index]
            if not len(rows):
                skipped.add(name)
                continue
            trained[t_index, split.repeat] += len(rows)
            for seed in range(config.seeds):
                members.append(rows)
                keys.append((t_index, seed))
        hits = _fit_predict(features, members, [data.labels[rows] for rows in members], [s for _, s in keys],
                            split.evaluate, len(data.classes), config.probe,
                            steps_of=len(split.train) if config.equal_steps else None) == truth[split.evaluate]
        evaluated_bucket = bucket_of[split.evaluate]
        for e_index in range(len(eval_sets)):
            mask = np.ones(len(split.evaluate), bool) if eval_sets[e_index] == ALL else evaluated_bucket == e_index
            judged[e_index, split.repeat] += mask.sum()
            for (t_index, seed), row in zip(keys, hits):
                correct[t_index, e_index, seed, split.repeat] += row[mask].sum()
    progress(1.0, "Easy-to-hard results ready")
    folds_per_repeat = len(splits) / repeats
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = correct / judged[None, :, None, :]
    index = pd.MultiIndex.from_product([train_sets, eval_sets, range(config.seeds), range(repeats)],
                                       names=["train_on", "evaluate_on", "seed", "repeat"])
    runs = pd.DataFrame({"accuracy": accuracy.ravel()}, index=index).reset_index()
    runs = runs[~runs["train_on"].isin(skipped)].reset_index(drop=True)
    table = _easy_hard_table(accuracy, judged, trained, len(splits), train_sets, eval_sets, skipped)
    counts = buckets.groupby("bucket", sort=False).size()
    info = _info("easy-hard", data, config, started, splits=len(splits), folds_per_repeat=folds_per_repeat,
                 bucket_sizes={str(k): int(v) for k, v in counts.items()},
                 direction="higher = harder" if _harder_is_higher(data, config.score) else "lower = harder",
                 skipped=sorted(skipped))
    return ImpactResult("easy-hard", table, runs, info, buckets=buckets)


def _easy_hard_table(accuracy: np.ndarray, judged: np.ndarray, trained: np.ndarray, n_splits: int,
                     train_sets: list[str], eval_sets: list[str], skipped: set[str]) -> pd.DataFrame:
    """One row per (train_on, evaluate_on) pair, skipped training sets left out.

    ``accuracy`` has shape (train sets, eval sets, seeds, repeats), ``judged`` (eval sets,
    repeats) and ``trained`` (train sets, repeats): training rows summed over the folds;
    ``n_train`` is their mean over the ``n_splits`` fits.
    """
    rows = []
    for t_index, train_on in enumerate(train_sets):
        if train_on in skipped:
            continue
        for e_index, evaluate_on in enumerate(eval_sets):
            per_run = accuracy[t_index, e_index].ravel()
            n_eval = int(judged[e_index, 0])
            mean = float(np.mean(per_run)) if n_eval else math.nan
            low, high = wilson_interval(mean * n_eval, n_eval) if n_eval else (math.nan, math.nan)
            rows.append({"train_on": train_on, "evaluate_on": evaluate_on, "accuracy": mean,
                         "ci_low": float(low), "ci_high": float(high),
                         "std": float(np.std(per_run, ddof=1)) if len(per_run) > 1 else math.nan,
                         "runs": len(per_run), "n_train": float(trained[t_index].sum() / n_splits),
                         "n_eval": n_eval})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- what-if


def what_if(data: ImpactData, changes: Changes, config: WhatIfConfig = WhatIfConfig(), *,
            workspace: Workspace | None = None, progress: Progress | None = None,
            evaluation_labels: np.ndarray | None = None) -> ImpactResult:
    """Original data, curated data (``changes`` applied to the training rows) and a random
    removal of as many training rows as the changes remove, judged on the same held-out rows.

    Every variant trains with the same probe seeds, so with no changes the three coincide.
    ``evaluation_labels`` (known true labels in a benchmark) needs ``evaluate_on="original"``.

    Returns
    -------
    ImpactResult
        ``table``: scope ("overall" or a cluster), cluster, variant, n_eval, accuracy (mean over
        runs of each evaluated row's correctness), ci_low, ci_high (95% Wilson interval over the
        evaluated rows), delta (accuracy minus the original's on the same rows), delta_low,
        delta_high (95% normal interval of the paired per-row differences), n_train,
        n_removed. ``runs``: variant, seed, repeat, accuracy, n_train.
    """
    _check_labels(data, evaluation_labels)
    if evaluation_labels is not None and config.evaluate_on != "original":
        raise ImpactError("evaluation_labels replace the dataset's labels: use evaluate_on='original'.")
    _curated_labels(data, changes)  # fail early on unknown classes
    params = _cache_params("what-if", data, config, changes, evaluation_labels)
    return _cached("what-if", data, params,
                   lambda: _compute_what_if(data, changes, config, _progress(progress), evaluation_labels),
                   workspace)


def _curated_labels(data: ImpactData, changes: Changes) -> tuple[np.ndarray, np.ndarray, int]:
    """(labels after relabels, removed mask, ids not found)."""
    position = pd.Index(data.ids)
    labels = data.labels.copy()
    missing = 0
    if changes.relabel:
        ids, new = zip(*changes.relabel)
        found = position.get_indexer(list(ids))
        class_index = {name: i for i, name in enumerate(data.classes)}
        unknown = sorted({label for label in new if label not in class_index})
        if unknown:
            raise ImpactError(f"Relabels to classes this dataset does not have: {', '.join(unknown[:5])}.")
        hit = found >= 0
        labels[found[hit]] = [class_index[label] for label, ok in zip(new, hit) if ok]
        missing += int((~hit).sum())
    removed = pd.Index(data.ids).isin(changes.remove)  # hashing, not np.isin's sort of object arrays
    missing += len(changes.remove) - int(removed.sum())
    return labels, removed, missing


def _compute_what_if(data: ImpactData, changes: Changes, config: WhatIfConfig, progress: Progress,
                     evaluation_labels: np.ndarray | None) -> ImpactResult:
    started = time.perf_counter()
    curated, removed, missing = _curated_labels(data, changes)
    if config.evaluate_on == "curated":
        truth = curated
    else:
        truth = data.labels if evaluation_labels is None else np.asarray(evaluation_labels, dtype=np.int64)
    splits = evaluation_splits(data, config.evaluation)
    repeats = splits[-1].repeat + 1
    hits = np.zeros((len(VARIANTS), data.n))
    seen = np.zeros(data.n)
    correct = np.zeros((len(VARIANTS), config.seeds, repeats))
    judged = np.zeros(repeats)
    trained = np.zeros((len(VARIANTS), config.seeds, repeats))
    removed_from_training = []
    for split_index, split in enumerate(splits):
        progress(split_index / len(splits), f"{_split_name(split, splits)}: original, curated and random")
        features = _standardised(data.features, split.train)
        pool = split.train
        kept_pool = pool[~removed[pool]]
        n_removed = len(pool) - len(kept_pool)
        removed_from_training.append(n_removed)
        evaluated = split.evaluate if config.evaluate_on == "original" else split.evaluate[~removed[split.evaluate]]
        if not len(evaluated):
            continue
        members, targets, keys = _what_if_members(data.labels, curated, pool, kept_pool, split, config)
        right = _fit_predict(features, members, targets, [s for _, s in keys], evaluated, len(data.classes),
                             config.probe, steps_of=len(pool) if config.equal_steps else None) == truth[evaluated]
        for (v_index, seed), row, rows in zip(keys, right, members):
            hits[v_index, evaluated] += row
            correct[v_index, seed, split.repeat] += row.sum()
            trained[v_index, seed, split.repeat] += len(rows)
        seen[evaluated] += config.seeds
        judged[split.repeat] += len(evaluated)
    progress(1.0, "What-if results ready")
    if not seen.any():
        raise ImpactError("Every evaluation row is removed by the changes: nothing is left to judge.")
    folds_per_repeat = len(splits) / repeats
    index = pd.MultiIndex.from_product([VARIANTS, range(config.seeds), range(repeats)],
                                       names=["variant", "seed", "repeat"])
    runs = pd.DataFrame({"accuracy": (correct / judged).ravel(),
                         "n_train": (trained / folds_per_repeat).ravel()}, index=index).reset_index()
    evaluated_rows = seen > 0
    rate = np.divide(hits, seen, out=np.zeros_like(hits), where=evaluated_rows)
    table = _what_if_table(rate, _what_if_scopes(data, evaluated_rows), runs, removed_from_training)
    info = _info("what-if", data, config, started, splits=len(splits), source=changes.source,
                 removed=int(removed.sum()), relabeled=len(changes.relabel),
                 changed_labels=int((curated != data.labels).sum()), ids_not_in_run=missing,
                 unchanged_decisions=list(changes.notes),
                 removed_training_rows_per_fit=float(np.mean(removed_from_training)),
                 evaluate_on=config.evaluate_on,
                 evaluation_labels="given" if evaluation_labels is not None else "the dataset's")
    return ImpactResult("what-if", table, runs, info)


def _what_if_members(labels: np.ndarray, curated: np.ndarray, pool: np.ndarray, kept_pool: np.ndarray,
                     split: Split, config: WhatIfConfig) -> tuple[list, list, list]:
    """The probes of one split: (training rows, their targets, (variant index, seed)) per fit.

    For each probe seed: the original ``pool`` with ``labels``, the ``kept_pool`` with the
    ``curated`` labels, and as many random rows of ``pool`` as ``kept_pool`` holds.
    """
    members, targets, keys = [], [], []
    for seed in range(config.seeds):
        rng = _rng(config.evaluation.seed, seed, split.repeat, split.fold)
        random_rows = np.sort(rng.choice(pool, size=len(kept_pool), replace=False))
        for v_index, (rows, variant_labels) in enumerate(((pool, labels), (kept_pool, curated),
                                                          (random_rows, labels))):
            members.append(rows)
            targets.append(variant_labels[rows])
            keys.append((v_index, seed))
    return members, targets, keys


def _what_if_scopes(data: ImpactData, evaluated_rows: np.ndarray) -> list[tuple[str, int | None, np.ndarray]]:
    """(scope name, cluster, row mask): "overall", then one per cluster when the run has them."""
    scopes: list[tuple[str, int | None, np.ndarray]] = [("overall", None, evaluated_rows)]
    if data.clusters is not None:
        for cluster in np.unique(data.clusters):
            name = data.cluster_names.get(int(cluster), "noise" if cluster < 0 else "")
            label = f"cluster {int(cluster)}" + (f" · {name}" if name else "")
            scopes.append((label, int(cluster), evaluated_rows & (data.clusters == cluster)))
    return scopes


def _what_if_table(rate: np.ndarray, scopes: list[tuple[str, int | None, np.ndarray]], runs: pd.DataFrame,
                   removed_from_training: list[int]) -> pd.DataFrame:
    """One row per (scope, variant): accuracy with its Wilson interval, and the paired difference
    from the original with its normal interval.

    ``rate`` has shape (variants, n): each row's share of correct predictions per variant.
    """
    rows = []
    for scope, cluster, mask in scopes:
        n_eval = int(mask.sum())
        if not n_eval:
            continue
        for v_index, variant in enumerate(VARIANTS):
            accuracy = float(rate[v_index, mask].mean())
            low, high = wilson_interval(accuracy * n_eval, n_eval)
            difference = rate[v_index, mask] - rate[0, mask]
            delta = float(difference.mean())
            half = 1.959964 * float(difference.std(ddof=1)) / math.sqrt(n_eval) if n_eval > 1 else math.nan
            rows.append({"scope": scope, "cluster": cluster, "variant": variant, "n_eval": n_eval,
                         "accuracy": accuracy, "ci_low": float(low), "ci_high": float(high), "delta": delta,
                         "delta_low": delta - half, "delta_high": delta + half,
                         "n_train": float(runs.loc[runs["variant"] == variant, "n_train"].mean()),
                         "n_removed": float(np.mean(removed_from_training)) if variant != "original" else 0.0})
    table = pd.DataFrame(rows)
    table["cluster"] = table["cluster"].astype("Int64")
    return table
