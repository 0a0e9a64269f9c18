"""Data issues beyond label noise, found on what the analysis already has: the dataset, its
shared kNN graph and its splits (cleanlab Datalab's issue types, CleanVision's image properties
and FiftyOne Brain's duplicates and leaky splits).

One entry point, :func:`check_dataset`, gives a :class:`DataIssues`: per-example columns for
``examples.parquet`` (row i = example i) and a JSON-ready summary for ``issues.json``.

Per-example columns (present when their check ran):

==============================  =========  ==================================================
column                          type       meaning
==============================  =========  ==================================================
``near_duplicate``              bool       in a set of exact or near copies
``duplicate_set``               int64      set id (0 = largest set), −1 for none
``duplicate_kind``              str        "exact", "near" or ""
``duplicate_label_conflict``    bool       its set holds more than one label
``split_leak``                  bool       its set has a member in another split
``non_iid_score``               float64    Datalab's score in (0, 1]; lower = its neighbours
                                           sit closer to it in the row order than chance
``<property>_score``            float64    CleanVision's score, lower = more of an issue
                                           (images only; NaN for unreadable files)
``is_<property>``               bool       the property's flag (images only)
==============================  =========  ==================================================

with ``<property>`` one of dark, light, blurry, low_information, odd_size, odd_aspect_ratio,
grayscale (so ``dark_score``/``is_dark`` … ``grayscale_score``/``is_grayscale``).

The summary (:attr:`DataIssues.summary`) has one entry per issue type under ``"issues"``
(:data:`~analytics.data_issues.registry.ISSUE_TYPES`): ``count`` (examples, or columns for
dataset-level issues: see ``unit``), ``severity``, ``meaning``, ``examples`` (2–3 row indices),
``select`` (how to select the affected rows of ``examples.parquet``: ``{"column": c}`` for a
bool column, ``{"column": c, "below": x}``, ``{"column": "label", "in": [...]}``,
``{"rows": [...]}``, or None), and the dataset-level figures beside it: ``duplicates``,
``split_leaks`` (per pair of splits, and the leak-free split's number of moved examples),
``non_iid`` (p-value, also along each date column), ``class_imbalance``, ``columns``,
``identifier_columns``, ``spurious_cues``, ``image_properties`` and ``timings_s``.

Definitions and references are in each module: :mod:`.duplicates`, :mod:`.splits`,
:mod:`.order`, :mod:`.columns`, :mod:`.images`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from analytics.data_issues.columns import (
    class_imbalance, column_table, identifier_leaks, null_rows, spurious_cues,
)
from analytics.data_issues.duplicates import DATALAB_THRESHOLD, find_duplicates, row_hashes, text_hashes
from analytics.data_issues.images import property_scores, read_images
from analytics.data_issues.order import check_order, time_columns
from analytics.data_issues.registry import IMAGE_PROPERTIES, ISSUE_TYPES, IssueType, issue_columns, severity
from analytics.data_issues.splits import leak_free_split, split_leaks

__all__ = ["IssueOptions", "DataIssues", "check_dataset", "leak_free_split", "ISSUE_TYPES", "IMAGE_PROPERTIES",
           "issue_columns"]

FORMAT_VERSION = 1
_SELECT_ROWS_MAX = 10_000  # a {"rows": [...]} selection lists at most this many rows
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class IssueOptions:
    """Which checks run, and their settings (defaults: Datalab's and CleanVision's).

    duplicates, non_iid, columns, images : bool
        Turn a family of checks off (``images`` covers the image properties; image files are
        still read for the duplicate check's hashes when ``duplicates`` is on).
    near_threshold : float
        Near-copy radius relative to the median nearest-neighbour distance (Datalab: 0.13).
    text_reach, text_jaccard, text_max_pairs : float, float, int
        Text: graph edges out to ``text_reach`` × that median are near copies when their
        character 5-gram shingles have a Jaccard similarity ≥ ``text_jaccard``.
    phash_bits : int
        Images: graph neighbours whose perceptual hashes differ in at most this many of 64 bits.
    num_permutations, significance : int, float
        Non-IID permutation test (Datalab: 25 permutations, 0.05).
    imbalance_threshold : float
        A class is under-represented below ``imbalance_threshold / K`` of the examples.
    cue_max_score, identifier_max_score, max_p_value : float
        Spurious-cue and identifier-leak cut-offs on Datalab's score and the binomial p-value.
    image_max_prevalence : float
        An image property found in more than this share of the images is reported as a
        property of the dataset (severity none), as Datalab drops it from its issue summary.
    folds, seed : int
    """

    duplicates: bool = True
    non_iid: bool = True
    columns: bool = True
    images: bool = True
    near_threshold: float = DATALAB_THRESHOLD
    text_reach: float = 0.5
    text_jaccard: float = 0.8
    text_max_pairs: int = 50_000
    phash_bits: int = 2
    num_permutations: int = 25
    significance: float = 0.05
    imbalance_threshold: float = 0.1
    cue_max_score: float = 0.3
    identifier_max_score: float = 0.8
    max_p_value: float = 1e-3
    image_max_prevalence: float = 0.1
    folds: int = 5
    seed: int = 0


@dataclass(frozen=True, eq=False)
class DataIssues:
    """Attributes
    ----------
    columns : DataFrame of shape (n_examples, n_columns)
        The per-example columns (see the module docstring), row i = example i.
    summary : dict
        Everything for ``issues.json`` (plain JSON types only).
    """

    columns: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def summary_json(self) -> str:
        return json.dumps(self.summary, indent=2)


def _plain(value):
    """numpy and pandas scalars, arrays and frames as plain JSON types (NaN and ±inf as None)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [_plain(row) for row in value.to_dict(orient="records")]
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def _first_rows(mask: np.ndarray, count: int = 3, order: np.ndarray | None = None) -> list[int]:
    rows = np.flatnonzero(mask)
    if order is not None and len(rows):
        rows = rows[np.argsort(order[rows], kind="stable")]
    return [int(r) for r in rows[:count]]


def _check_inputs(dataset, knn_indices: np.ndarray, knn_distances: np.ndarray, metric: str) -> None:
    n = dataset.n_examples
    if knn_indices.ndim != 2 or knn_indices.shape != knn_distances.shape:
        raise ValueError(f"knn_indices and knn_distances must both have shape (n, k); got "
                         f"{knn_indices.shape} and {knn_distances.shape}")
    if len(knn_indices) != n:
        raise ValueError(f"{dataset.name}: the neighbour graph has {len(knn_indices):,} rows but the dataset "
                         f"has {n:,} examples")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', not {metric!r}")
    if not np.issubdtype(knn_indices.dtype, np.integer) or (
            knn_indices.size and (knn_indices.min() < 0 or knn_indices.max() >= n)):
        raise ValueError(f"{dataset.name}: knn_indices must hold row numbers 0 … {n - 1:,}")


def _issue_entry(issue: IssueType, count: int, n: int, examples: list[int], select: dict | None, **extra) -> dict:
    return {"count": int(count), "unit": "examples" if issue.level == "examples" else "columns",
            "severity": severity(issue, count, n), "meaning": issue.meaning, "examples": examples,
            "select": select, "reference": issue.reference, **extra}


def check_dataset(dataset, *, knn_indices: np.ndarray, knn_distances: np.ndarray, metric: str,
                  options: IssueOptions | None = None, progress: Progress | None = None) -> DataIssues:
    """Run every data-issue check that ``options`` leaves on.

    Parameters
    ----------
    dataset : analytics.datasets.Dataset
    knn_indices, knn_distances : ndarray of shape (n, k)
        The run's shared neighbour graph (self excluded, nearest first), as
        :class:`analytics.neighbors.KnnGraph` holds it.
    metric : {"cosine", "euclidean"}
        The graph's metric (recorded in the summary; the near-copy radius is relative).
    options : IssueOptions, optional
    progress : callable ``progress(fraction, message)``, optional

    Returns
    -------
    DataIssues
    """
    options = options or IssueOptions()
    progress = progress or (lambda fraction, message: None)
    _check_inputs(dataset, knn_indices, knn_distances, metric)
    table = dataset.table
    n = dataset.n_examples
    labels = dataset.label_codes
    columns: dict[str, np.ndarray] = {}
    issues: dict[str, dict] = {}
    timings: dict[str, float] = {}
    summary: dict = {"format_version": FORMAT_VERSION, "n_examples": n, "metric": metric,
                     "k": int(knn_indices.shape[1]), "options": asdict(options)}
    is_image = dataset.kind == "image" and "image" in table.columns
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    readout = None
    if is_image and (options.images or options.duplicates):
        readout = read_images(table["image"].tolist(), phash=options.duplicates,
                              progress=lambda f, m: progress(0.4 * f, m))
        lap("read_images")

    if options.duplicates:
        progress(0.4, "Looking for duplicates")
        _duplicates(dataset, labels, knn_indices, knn_distances, readout, options, columns, issues, summary)
        lap("duplicates")

    if options.non_iid and dataset.source.is_dir():
        # An image folder's rows follow its class folders, by the loader's construction: the
        # row order would always "carry information" and say nothing about the data.
        summary["non_iid"] = {"skipped": "the rows of an image folder follow its class folders"}
    elif options.non_iid:
        progress(0.55, "Testing the row order (non-IID)")
        columns["non_iid_score"], issues["non_iid"], summary["non_iid"] = _order_issue(dataset, knn_indices, options)
        lap("non_iid")

    image_scores = None
    if readout is not None and options.images:
        image_scores = property_scores(readout.raw)
        _image_issues(image_scores, readout.readable, options, columns, issues, summary)
        lap("image_properties")

    if options.columns:
        progress(0.8, "Checking classes and columns")
        _column_checks(dataset, labels, image_scores, options, issues, summary)
        lap("columns")

    summary["issues"] = issues
    summary["timings_s"] = timings
    progress(1.0, "Data issues checked")
    frame = pd.DataFrame({name: columns[name] for name in issue_columns(images=is_image) if name in columns},
                         index=pd.RangeIndex(n))
    return DataIssues(frame, _plain(summary))


def _order_issue(dataset, knn_indices: np.ndarray, options: IssueOptions) -> tuple[np.ndarray, dict, dict]:
    """Datalab's non-IID check on the row order and along each date column.

    Returns
    -------
    scores : ndarray of shape (n,)
        The ``non_iid_score`` column.
    entry : dict
        The ``non_iid`` issue entry (at least medium severity when a date column drifts).
    info : dict
        The summary's ``non_iid`` figures.
    """
    candidates = time_columns(dataset.table, dataset.feature_columns)
    scores, flagged, info = check_order(knn_indices, table=dataset.table, time_candidates=candidates,
                                        num_permutations=options.num_permutations, seed=options.seed,
                                        significance=options.significance)
    drifting_dates = [name for name, test in info["time_columns"].items()
                      if test["p_value"] < options.significance]
    entry = _issue_entry(
        ISSUE_TYPES["non_iid"], int(flagged.sum()), dataset.n_examples, _first_rows(flagged, order=scores),
        {"column": "non_iid_score", "below": info["score_cut"]} if flagged.any() else None,
        p_value=info["p_value"], time_columns=drifting_dates)
    if drifting_dates and entry["severity"] == "none":  # the data drifts in time, whatever the row order
        entry["severity"] = "medium"
    return scores, entry, info


def _duplicates(dataset, labels, knn_indices, knn_distances, readout, options: IssueOptions,
                columns: dict, issues: dict, summary: dict) -> None:
    table = dataset.table
    n = dataset.n_examples
    texts = phashes = None
    if readout is not None:
        content, source = (readout.byte_hashes, readout.readable), "image file bytes"
        phashes = (readout.phashes, readout.readable)
    elif "text" in table.columns:
        content, source = text_hashes(table["text"]), "text, whitespace normalised"
        texts = table["text"]
    elif dataset.feature_columns:
        content, source = row_hashes(table[dataset.feature_columns]), "feature columns"
    else:
        content, source = None, None
    result = find_duplicates(labels, knn_indices, knn_distances, content_hashes=content, texts=texts,
                             phashes=phashes, threshold=options.near_threshold, text_reach=options.text_reach,
                             text_jaccard=options.text_jaccard, text_max_pairs=options.text_max_pairs,
                             phash_bits=options.phash_bits)
    sets = result.duplicate_set
    columns.update(near_duplicate=result.near_duplicate, duplicate_set=sets, duplicate_kind=result.duplicate_kind,
                   duplicate_label_conflict=result.duplicate_label_conflict)
    example_sets = [_first_rows(sets == s, count=5) for s in range(min(3, result.info["sets"]))]
    summary["duplicates"] = {**result.info, "exact_hash_of": source, "example_sets": example_sets}
    issues["near_duplicate"] = _issue_entry(
        ISSUE_TYPES["near_duplicate"], int(result.near_duplicate.sum()), n, _first_rows(sets == 0),
        {"column": "near_duplicate"}, sets=result.info["sets"])
    conflict = result.duplicate_label_conflict
    first_conflict = sets[conflict].min() if conflict.any() else -2
    issues["duplicate_label_conflict"] = _issue_entry(
        ISSUE_TYPES["duplicate_label_conflict"], int(conflict.sum()), n, _first_rows(sets == first_conflict),
        {"column": "duplicate_label_conflict"}, sets=result.info["conflicting_sets"])

    if "split" in table.columns:
        leak, pairs = split_leaks(table["split"], sets)
        _, moved = leak_free_split(table["split"], sets)
        summary["split_leaks"] = {"split_column": "split", "examples": int(leak.sum()), "pairs": pairs,
                                  "leak_free_split": {"moved": moved}}
    else:
        leak = np.zeros(n, bool)
        summary["split_leaks"] = None
    columns["split_leak"] = leak
    first_leak = sets[leak].min() if leak.any() else -2
    issues["split_leak"] = _issue_entry(
        ISSUE_TYPES["split_leak"], int(leak.sum()), n, _first_rows(sets == first_leak),
        {"column": "split_leak"})


def _image_issues(scores: pd.DataFrame, readable: np.ndarray, options: IssueOptions,
                  columns: dict, issues: dict, summary: dict) -> None:
    n = len(scores)
    properties = {}
    for name in IMAGE_PROPERTIES:
        score, flag = scores[f"{name}_score"].to_numpy(), scores[f"is_{name}"].to_numpy()
        columns[f"{name}_score"], columns[f"is_{name}"] = score, flag
        count = int(flag.sum())
        prevalent = count > options.image_max_prevalence * max(int(readable.sum()), 1)
        entry = _issue_entry(ISSUE_TYPES[name], count, n, _first_rows(flag, order=score),
                             {"column": f"is_{name}"}, prevalent=prevalent)
        if prevalent:  # a property of the whole dataset, not of a few images (Datalab drops it)
            entry["severity"] = "none"
        issues[name] = entry
        properties[name] = {"count": count, "prevalent": prevalent}
    summary["image_properties"] = {"properties": properties, "unreadable": int((~readable).sum())}


def _column_checks(dataset, labels: np.ndarray, image_scores: pd.DataFrame | None, options: IssueOptions,
                   issues: dict, summary: dict) -> None:
    table = dataset.table
    n = dataset.n_examples
    flagged, imbalance = class_imbalance(labels, dataset.classes, threshold=options.imbalance_threshold)
    summary["class_imbalance"] = imbalance
    issues["class_imbalance"] = _issue_entry(
        ISSUE_TYPES["class_imbalance"], int(flagged.sum()), n, _first_rows(flagged),
        {"column": "label", "in": imbalance["under_represented"]} if flagged.any() else None)

    content = (["text"] if "text" in table.columns else []) + dataset.feature_columns
    described = column_table(table, content)
    summary["columns"] = described
    empty = described[described["all_null"] | described["constant"]]
    issues["null_or_constant_column"] = _issue_entry(
        ISSUE_TYPES["null_or_constant_column"], len(empty), n, [], None, columns=empty["column"].tolist())
    missing = null_rows(table, content)
    rows = np.flatnonzero(missing)
    issues["null"] = _issue_entry(
        ISSUE_TYPES["null"], len(rows), n, _first_rows(missing),
        {"rows": rows[:_SELECT_ROWS_MAX].tolist(), "truncated": len(rows) > _SELECT_ROWS_MAX} if len(rows) else None)

    identifiers = described.loc[described["identifier_like"] & described["column"].isin(dataset.feature_columns),
                                "column"].tolist()
    # The id column too, unless the loader made it: content hashes carry nothing, and an image
    # folder's ids are paths that name the class folder by construction.
    if not dataset.ids_generated and not dataset.source.is_dir():
        identifiers = ["id", *identifiers]
    leaks = identifier_leaks(table, identifiers, labels, folds=options.folds, seed=options.seed,
                             max_score=options.identifier_max_score, max_p=options.max_p_value)
    summary["identifier_columns"] = leaks
    issues["identifier_column"] = _issue_entry(
        ISSUE_TYPES["identifier_column"], int(leaks["leak"].sum()), n, [], None,
        columns=leaks.loc[leaks["leak"], "column"].tolist())

    properties, kinds = {}, {}
    if dataset.kind != "tabular":  # a table's columns are the model's inputs, not side information
        for name in dataset.feature_columns:
            if name not in identifiers:
                properties[name], kinds[name] = table[name], "metadata"
    if "text" in table.columns:
        properties["text_length"], kinds["text_length"] = table["text"].astype("string").str.len(), "text_length"
    if image_scores is not None:
        for name in IMAGE_PROPERTIES:
            properties[f"{name}_score"], kinds[f"{name}_score"] = image_scores[f"{name}_score"], "image_property"
    cues = spurious_cues(pd.DataFrame(properties, index=table.index), labels, kinds=kinds, folds=options.folds,
                         seed=options.seed, max_score=options.cue_max_score, max_p=options.max_p_value)
    summary["spurious_cues"] = cues
    issues["spurious_cue"] = _issue_entry(
        ISSUE_TYPES["spurious_cue"], int(cues["cue"].sum()), n, [], None,
        properties=cues.loc[cues["cue"], "property"].tolist())
