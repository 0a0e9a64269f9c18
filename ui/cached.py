"""The only place that caches engine calls for the app (bounded caches; no widget reads)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import streamlit as st

from analytics import datasets, overview, previews
from analytics.names import MAP_COLUMNS


_DATASET_CACHE_SIZE = 6
_datasets: OrderedDict[tuple, datasets.Dataset] = OrderedDict()
_datasets_lock = threading.Lock()


def load_dataset(path: str, roles: tuple[tuple[str, str | None], ...], drop_missing_labels: bool,
                 encoding: str, stamp: tuple,
                 progress: Callable[[float, str], None] | None = None) -> datasets.Dataset:
    """Cached :func:`analytics.datasets.load_dataset`; ``stamp`` invalidates it on file change.

    The load runs in a worker process (:func:`ui.jobs.load_dataset`); this thread waits and
    draws its progress. A small LRU shared by all sessions, rather than ``st.cache_resource``:
    the progress goes to a Streamlit element, and a cached function may not draw into an
    element created outside it. The Dataset is immutable, so sharing it is safe.
    """
    key = (path, roles, drop_missing_labels, encoding, stamp)
    with _datasets_lock:
        if key in _datasets:
            _datasets.move_to_end(key)
            return _datasets[key]
    from ui import jobs

    # Reading and hashing run in a worker process (a huge or endless file never holds the page).
    dataset = jobs.load_dataset(path, dict(roles), drop_missing_labels, encoding, key=key, progress=progress)
    with _datasets_lock:
        _datasets[key] = dataset
        while len(_datasets) > _DATASET_CACHE_SIZE:
            _datasets.popitem(last=False)
    return dataset


def clear_all() -> None:
    """Empty every cache of the app (tests use it between app runs)."""
    with _datasets_lock:
        _datasets.clear()
    st.cache_data.clear()
    st.cache_resource.clear()


@st.cache_data(max_entries=32, show_spinner=False)
def peek_columns(path: str, encoding: str, stamp: tuple) -> list[str]:
    try:
        return datasets.peek_columns(path, encoding=encoding)
    except datasets.DatasetError:
        return []


@st.cache_resource(max_entries=6, show_spinner=False)
def summarize(fingerprint: str, _dataset: datasets.Dataset) -> overview.DatasetSummary:
    return overview.summarize(_dataset)


@st.cache_data(max_entries=4096, show_spinner=False)
def thumbnail(path: str, size: int = 64) -> str | None:
    return previews.image_thumbnail_uri(path, size=size)


@st.cache_resource(max_entries=8, show_spinner=False)
def load_run(path: str, stamp: tuple):
    """A run folder, every file checked against its manifest (``stamp`` = the manifest's mtime
    and size, so a re-run is picked up). Raises :class:`analytics.pipeline.RunError`."""
    from analytics.pipeline import load_run as _load_run

    return _load_run(path)


RECOMPUTE_HINT = ("To recompute it, run `cartographer analyze` on the dataset again (`--out` this "
                  "folder), or open the dataset itself and the app computes its map.")
_RELOADED = "damaged_run_reloads"  # {(run folder, manifest stamp)} reloaded once after a damaged file


def _checked(run_path: str, stamp: tuple, read: Callable):
    """``read()`` a file of a run; when the file is damaged (:class:`RunError`), say which file,
    never a traceback. A run the app computed is reloaded, which finds the damage and recomputes
    it (:func:`ui.analysis.current_run`) — once per manifest, so it cannot rerun endlessly; a run
    folder opened from the sidebar says how to recompute it."""
    from analytics.pipeline import RunError
    from ui import state

    try:
        return read()
    except RunError as exc:
        load_run.clear()  # the next load verifies the folder again
        opened = st.session_state.get(state.OPENED_RUN)
        reloaded = st.session_state.setdefault(_RELOADED, set())
        if (opened is None or str(opened.path) != run_path) and (run_path, stamp) not in reloaded:
            reloaded.add((run_path, stamp))
            st.rerun()
        st.error(f"{exc} {RECOMPUTE_HINT}")
        st.stop()


def run_stamp(path) -> tuple:
    from pathlib import Path

    manifest = Path(path) / "manifest.json"
    try:
        stat = manifest.stat()
    except OSError:
        return ()
    return (stat.st_mtime_ns, stat.st_size)


@st.cache_resource(max_entries=8, show_spinner=False)
def hover_previews(run_path: str, stamp: tuple, _examples) -> object:
    """Escaped hover previews for a run's points (built once per run)."""
    from ui.figures import hover_previews as _hover_previews

    texts = _examples["text"] if "text" in _examples.columns else None
    return _hover_previews(_examples["id"], texts)


@st.cache_data(max_entries=64, show_spinner=False)
def _run_dir(fingerprint: str, config, file_stamp: tuple, _dataset) -> str:
    from analytics.pipeline import run_dir_for
    from analytics.workspace import Workspace

    return str(run_dir_for(_dataset, config, Workspace.default()))


def run_dir(fingerprint: str, config, dataset):
    """Where the run of ``config`` lives; the file hash behind a vectors file or checkpoint (and
    the listing of a dynamics folder) is computed once per file version, not on every rerun."""
    from pathlib import Path

    from analytics.datasets import source_stamp
    from analytics.workspace import default_root

    path = config.embedding.path if config.embedding else None
    paths = [p for p in (path, *config.checkpoints, config.dynamics_dir, config.finetune.model) if p]
    stamp = tuple(source_stamp(p) for p in paths)
    return Path(_run_dir(fingerprint, config, (stamp, str(default_root())), dataset))


@st.cache_data(max_entries=32, show_spinner=False)
def regions(run_path: str, stamp: tuple, _examples, confidence_threshold: float, variability_threshold: float):
    """Data-map regions for the given thresholds (recomputed only when a threshold moves), as a
    pandas Categorical: one byte per example to store and compare, where names took an object
    each (0.1 s more to cache at a million examples)."""
    import pandas as pd

    from analytics.names import REGIONS
    from analytics.scores.regions import RegionThresholds, region_codes

    codes = region_codes(_examples["confidence"].to_numpy(), _examples["variability"].to_numpy(),
                         RegionThresholds(confidence=confidence_threshold, variability=variability_threshold))
    return pd.Categorical.from_codes(codes, categories=list(REGIONS))


def _hardness_file(run_path: str, stamp: tuple, name: str):
    """One of the run's score summaries (``analytics.hardness.HARDNESS_FILES``), checked against
    its manifest; None for a run written before them."""
    from pathlib import Path

    if not (Path(run_path) / name).is_file():
        return None
    return _run_table(run_path, stamp, name)


@st.cache_data(max_entries=8, show_spinner="Comparing the scores across seeds…")
def _seed_stability(run_path: str, stamp: tuple, early_epoch: int, _labels):
    import numpy as np

    from analytics.hardness import seed_stability as _stability
    from analytics.pipeline import read_artefact

    logits = read_artefact(run_path, "dynamics.npy", mmap=True)
    return _stability(np.asarray(logits, dtype=np.float32), _labels, early_epoch)


def seed_stability(run_path: str, stamp: tuple, early_epoch: int, labels):
    """Each score's rank agreement across the probe seeds: the run's ``seed_stability.parquet``,
    or computed from its checked dynamics.npy for a run written before it."""
    from analytics.hardness import SEED_STABILITY_FILE

    table = _hardness_file(run_path, stamp, SEED_STABILITY_FILE)
    if table is not None:
        return table
    return _checked(run_path, stamp, lambda: _seed_stability(run_path, stamp, early_epoch, labels))


@st.cache_data(max_entries=8, show_spinner="Comparing the scores…")
def _score_agreement(run_path: str, stamp: tuple, _examples, columns: tuple[str, ...]):
    from analytics.hardness import score_agreement as _agreement

    return _agreement(_examples, list(columns))


def score_agreement(run_path: str, stamp: tuple, examples, columns: tuple[str, ...]):
    """Spearman's rho between the score ``columns`` over every row: from the run's
    ``score_agreement.parquet``, or computed for a run written before it."""
    from analytics.hardness import SCORE_AGREEMENT_FILE

    table = _hardness_file(run_path, stamp, SCORE_AGREEMENT_FILE)
    if table is None or not set(columns) <= set(table.index) <= set(table.columns):
        table = _score_agreement(run_path, stamp, examples, tuple(columns))
    return table.loc[list(columns), list(columns)].rename_axis(index=None)


@st.cache_data(max_entries=64, show_spinner=False)
def _quantiles_by_group(run_path: str, stamp: tuple, _examples, score: str, group_by: str):
    from analytics.hardness import quantiles_by_group as _quantiles

    return _quantiles(_examples[score], _examples[group_by])


def quantiles_by_group(run_path: str, stamp: tuple, examples, score: str, group_by: str):
    """Box-plot statistics of ``score`` per group of ``group_by``: from the run's
    ``score_quantiles.parquet``, or computed for a run written before it."""
    from analytics.hardness import SCORE_QUANTILES_FILE

    table = _hardness_file(run_path, stamp, SCORE_QUANTILES_FILE)
    if table is not None:
        rows = table[(table["score"] == score) & (table["group_by"] == group_by)]
        if len(rows):
            return rows.drop(columns=["score", "group_by"]).reset_index(drop=True)
    return _quantiles_by_group(run_path, stamp, examples, score, group_by)


@st.cache_data(max_entries=64, show_spinner=False)
def score_axis(run_path: str, stamp: tuple, _examples, score: str) -> tuple[float, float, float]:
    """A score's median and the range of its finite values, widened by 2 % on each side (an
    axis of two scores against each other: its median line and its extent)."""
    import numpy as np

    values = _examples[score].to_numpy(dtype=np.float64, na_value=np.nan)
    finite = values[np.isfinite(values)]
    if not len(finite):
        return np.nan, 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    margin = (high - low) * 0.02 or 0.5
    return float(np.median(values[~np.isnan(values)])), low - margin, high + margin


@st.cache_data(max_entries=64, show_spinner=False)
def hardest(run_path: str, stamp: tuple, _examples, score: str, n: int):
    from analytics.hardness import hardest as _hardest

    return _hardest(_examples, score, n=n)


@st.cache_data(max_entries=16, show_spinner=False)
def _read_run_table(run_path: str, stamp: tuple, name: str):
    from analytics.pipeline import read_artefact

    return read_artefact(run_path, name)


def _run_table(run_path: str, stamp: tuple, name: str):
    return _checked(run_path, stamp, lambda: _read_run_table(run_path, stamp, name))


def clusters_table(run_path: str, stamp: tuple, fingerprint: str):
    """The run's ``clusters.parquet`` with the names users gave (never cached: names change)."""
    from pathlib import Path

    from analytics.clusters import apply_names, load_cluster_names
    from analytics.workspace import Workspace

    if not (Path(run_path) / "clusters.parquet").is_file():
        return None
    return apply_names(_run_table(run_path, stamp, "clusters.parquet"),
                       load_cluster_names(Workspace.default(), fingerprint, run_path))


def slices_table(run_path: str, stamp: tuple):
    from pathlib import Path

    if not (Path(run_path) / "slices.parquet").is_file():
        return None
    return _run_table(run_path, stamp, "slices.parquet")


@st.cache_resource(max_entries=8, show_spinner=False)
def slice_features(run_path: str, stamp: tuple, _examples, _clusters, slice_config):
    """The run's slice features, to rebuild a listed slice's members."""
    from analytics.pipeline import analysis_columns, run_slice_features

    return run_slice_features(_examples, _clusters, slice_config, analysis_columns(_examples))


@st.cache_data(max_entries=32, show_spinner="Finding the worst slices inside the cluster…")
def slices_within(run_path: str, stamp: tuple, column: str, cluster: int, _examples, slice_config):
    """Slices inside one cluster, ranked against that cluster's own error rate."""
    from analytics.pipeline import discover_run_slices

    members = _examples[_examples[column] == cluster].reset_index(drop=True)
    if len(members) < 2 or "correct" not in members.columns:
        return None
    # the cluster columns are constant inside one cluster: not slice features here
    return discover_run_slices(members.drop(columns=["cluster", "cluster_fine"]), None, slice_config)


@st.cache_data(max_entries=32, show_spinner=False)
def balanced_rows(run_path: str, stamp: tuple, column: str, _examples, size: int, cap: float, seed: int,
                  include_noise: bool):
    from analytics.clusters import balanced_sample

    return balanced_sample(_examples[column].to_numpy(), size, cap=cap, seed=seed, include_noise=include_noise)



# ----------------------------------------------------------------------------- review and export


@st.cache_resource(max_entries=4, show_spinner=False)
def _review_store(url: str | None, workspace_root: str, admins: tuple[str, ...], default_role: str):
    from analytics.store import ReviewStore

    return ReviewStore.open(url, workspace_root=workspace_root, admins=admins, default_role=default_role)


def review_store():
    """The review database, opened (created or upgraded) once per server and database: the
    ``CARTOGRAPHER_DATABASE_URL`` server when set, else ``review.sqlite`` in the workspace. With
    a sign-in configured (team mode) someone without a granted role is a viewer; locally, the one
    user may create sessions, export and rename clusters."""
    import os

    from analytics.store import DATABASE_URL_ENV, REVIEWER, VIEWER
    from analytics.workspace import default_root
    from ui.policy import policy

    rules = policy()
    return _review_store(os.environ.get(DATABASE_URL_ENV) or None, str(default_root().resolve()),
                         rules.admins, VIEWER if rules.team_mode else REVIEWER)


@st.cache_resource(max_entries=4, show_spinner=False)
def _neighbors(run_path: str, stamp: tuple, _run):
    return _run.neighbors()


def neighbors(run_path: str, stamp: tuple, _run):
    """The run's k-nearest-neighbour graph: (indices, distances), each of shape (n, k)."""
    return _checked(run_path, stamp, lambda: _neighbors(run_path, stamp, _run))


def reviewer_quality(current, run):
    """Each reviewer of a session as an annotator: quality by CROWDLAB with the run's out-of-fold
    probabilities, else by agreement with the majority (never cached: decisions arrive all the
    time; the probabilities are read once per run)."""
    from analytics.annotators import reviewer_quality as _quality

    stamp = run_stamp(run.path)
    probs = _checked(str(run.path), stamp, lambda: _heldout_probs(str(run.path), stamp, run))
    return _quality(current, ids=run.examples["id"].to_numpy(), labels=run.examples["label"].to_numpy(),
                    classes=run.dataset.classes, heldout_probs=probs)


@st.cache_resource(max_entries=4, show_spinner=False)
def _heldout_probs(run_path: str, stamp: tuple, _run):
    """The run's ``heldout_probs.npy`` (memory-mapped), or None when the run has none."""
    return _run.read("heldout_probs.npy", mmap=True) if "heldout_probs.npy" in _run.manifest["artefacts"] else None


@st.cache_data(max_entries=16, show_spinner=False)
def filter_columns(run_path: str, stamp: tuple, _examples, max_values: int) -> list[str]:
    """Columns a filter can pick values of: at most ``max_values`` distinct values (labels,
    splits, regions, clusters, metadata), not ids, texts, image paths or map coordinates."""
    skip = {"id", "text", "image", *MAP_COLUMNS}

    def few_values(column) -> bool:
        try:
            return column.nunique(dropna=True) <= max_values
        except TypeError:  # a column of vectors or lists
            return False

    return [c for c in _examples.columns if c not in skip and few_values(_examples[c])]


# ----------------------------------------------------------------------------- curation impact


@st.cache_resource(max_entries=2, show_spinner="Loading the embeddings for the experiments…")
def _impact_data(run_path: str, stamp: tuple, _run):
    from analytics.impact import impact_data as _impact_data

    return _impact_data(_run)


def impact_data(run_path: str, stamp: tuple, _run):
    """The run's embeddings, labels and scores for the impact experiments (read once per run)."""
    return _checked(run_path, stamp, lambda: _impact_data(run_path, stamp, _run))
