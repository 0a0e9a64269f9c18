"""The only place that caches engine calls for the app (bounded caches; no widget reads)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import streamlit as st

from analytics import datasets, overview, previews


_DATASET_CACHE_SIZE = 6
_datasets: OrderedDict[tuple, datasets.Dataset] = OrderedDict()
_datasets_lock = threading.Lock()


def load_dataset(path: str, roles: tuple[tuple[str, str | None], ...], drop_missing_labels: bool,
                 encoding: str, stamp: tuple,
                 progress: Callable[[float, str], None] | None = None) -> datasets.Dataset:
    """Cached :func:`analytics.datasets.load_dataset`; ``stamp`` invalidates it on file change.

    A small LRU shared by all sessions, rather than ``st.cache_resource``: loading an image
    folder reports progress to a Streamlit element, and a cached function may not draw into an
    element created outside it. The Dataset is immutable, so sharing it is safe.
    """
    key = (path, roles, drop_missing_labels, encoding, stamp)
    with _datasets_lock:
        if key in _datasets:
            _datasets.move_to_end(key)
            return _datasets[key]
    dataset = datasets.load_dataset(path, roles=datasets.ColumnRoles(**dict(roles)),
                                    drop_missing_labels=drop_missing_labels, encoding=encoding,
                                    progress=progress)
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
    """A run folder (``stamp`` = the manifest's mtime and size, so a re-run is picked up)."""
    from analytics.pipeline import load_run as _load_run

    return _load_run(path)


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
    """Where the run of ``config`` lives; the file hash behind a vectors file or checkpoint is
    computed once per file version, not on every rerun."""
    from pathlib import Path

    from analytics.datasets import source_stamp
    from analytics.workspace import default_root

    path = config.embedding.path if config.embedding else None
    stamp = source_stamp(path) if path else ()
    return Path(_run_dir(fingerprint, config, (stamp, str(default_root())), dataset))


@st.cache_data(max_entries=32, show_spinner=False)
def regions(run_path: str, stamp: tuple, _examples, confidence_threshold: float, variability_threshold: float):
    """Data-map regions for the given thresholds (recomputed only when a threshold moves)."""
    from analytics.scores import RegionThresholds, assign_regions

    return assign_regions(_examples["confidence"].to_numpy(), _examples["variability"].to_numpy(),
                          RegionThresholds(confidence=confidence_threshold, variability=variability_threshold))


@st.cache_data(max_entries=8, show_spinner="Comparing the scores across seeds…")
def seed_stability(run_path: str, stamp: tuple, early_epoch: int, _labels):
    import numpy as np

    from analytics.hardness import seed_stability as _seed_stability

    logits = np.load(f"{run_path}/dynamics.npy", mmap_mode="r")
    return _seed_stability(np.asarray(logits, dtype=np.float32), _labels, early_epoch)


@st.cache_data(max_entries=8, show_spinner=False)
def score_correlations(run_path: str, stamp: tuple, _examples, columns: tuple[str, ...]):
    from analytics.hardness import score_correlations as _correlations

    return _correlations(_examples, list(columns))


def numeric_scores(columns: tuple[str, ...]) -> list[str]:
    from analytics.hardness import numeric_scores as _numeric_scores

    return _numeric_scores(columns)


def harder_is_higher(score: str) -> bool:
    from analytics.hardness import HARDER_IS_HIGHER

    return HARDER_IS_HIGHER.get(score, True)


@st.cache_data(max_entries=64, show_spinner=False)
def quantiles_by_group(run_path: str, stamp: tuple, _examples, score: str, group_by: str):
    from analytics.hardness import quantiles_by_group as _quantiles

    return _quantiles(_examples[score], _examples[group_by].astype(str))


@st.cache_data(max_entries=64, show_spinner=False)
def hardest(run_path: str, stamp: tuple, _examples, score: str, n: int):
    from analytics.hardness import hardest as _hardest

    return _hardest(_examples, score, n=n)


@st.cache_data(max_entries=16, show_spinner=False)
def _run_table(run_path: str, stamp: tuple, name: str):
    import pandas as pd

    return pd.read_parquet(f"{run_path}/{name}")


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
def slices_within(run_path: str, stamp: tuple, column: str, cluster: int, _examples, _clusters, slice_config):
    """Slices inside one cluster, ranked against that cluster's own error rate."""
    from analytics.pipeline import discover_run_slices

    members = _examples[_examples[column] == cluster].reset_index(drop=True)
    if len(members) < 2 or "correct" not in members.columns:
        return None
    return discover_run_slices(members.drop(columns=["cluster", "cluster_fine"]), _clusters, slice_config)


@st.cache_data(max_entries=32, show_spinner=False)
def balanced_rows(run_path: str, stamp: tuple, column: str, _examples, size: int, cap: float, seed: int,
                  include_noise: bool):
    from analytics.clusters import balanced_sample

    return balanced_sample(_examples[column].to_numpy(), size, cap=cap, seed=seed, include_noise=include_noise)


# ----------------------------------------------------------------------------- review and export

