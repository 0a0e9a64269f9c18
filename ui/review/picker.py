"""Choosing examples for a review session or an export: the selection, a filter, a cluster, a
data-map region or the top of a score."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analytics.names import CLUSTER, CLUSTER_LEVELS, ID, LABEL, REGION
from ui import actions, cached
from ui.review.common import ReviewRun
from ui.selection import get_selection

__all__ = ["MAX_FILTER_VALUES", "pick_examples"]

SELECTION, FILTER, CLUSTER_SOURCE, REGION_SOURCE, TOP = ("The current selection", "A filter", "A cluster",
                                                         "A data-map region", "The top of a score")
MAX_FILTER_VALUES = 200


def pick_examples(page: ReviewRun, key: str) -> tuple[list[str], str]:
    """Widgets that choose examples; returns their ids (dataset order, or hardest first for a
    score) and a description for the session or the manifest. ``key`` prefixes the widgets' keys."""
    examples = page.examples
    scores = actions.numeric_scores(tuple(examples.columns))
    clusters = cached.clusters_table(page.path, page.stamp, page.dataset.fingerprint) \
        if CLUSTER in examples.columns else None
    sources = [SELECTION, FILTER] + ([CLUSTER_SOURCE] if clusters is not None else []) + \
        ([REGION_SOURCE] if REGION in examples.columns else []) + ([TOP] if scores else [])
    source = st.radio("Examples from", sources, horizontal=True, key=f"{key}_source")
    if source == SELECTION:
        return _from_selection(page)
    if source == FILTER:
        return _from_filter(page, key)
    if source == CLUSTER_SOURCE:
        return _from_cluster(page, key, clusters)
    if source == REGION_SOURCE:
        return _from_region(page, key)
    return _from_top(page, key, scores)


def _ids(examples: pd.DataFrame, mask) -> list[str]:
    return examples.loc[mask, ID].astype(str).tolist()


def _from_selection(page: ReviewRun) -> tuple[list[str], str]:
    selection = get_selection(page.dataset.fingerprint)
    ids = _ids(page.examples, page.examples[ID].isin(selection.ids))
    if not selection.ids:
        st.caption("The selection is empty: select examples on the Map, Data map, Hardness or "
                   "Subpopulations page first.")
    return ids, f"selection ({selection.source})" if selection.source else "selection"


def _from_filter(page: ReviewRun, key: str) -> tuple[list[str], str]:
    examples = page.examples
    columns = cached.filter_columns(page.path, page.stamp, examples, MAX_FILTER_VALUES)
    if not columns:
        st.caption(f"No column has {MAX_FILTER_VALUES} distinct values or fewer to filter on.")
        return [], "filter"
    left, right = st.columns([1, 2])
    column = left.selectbox("Column", columns, key=f"{key}_filter_column",
                            index=columns.index(LABEL) if LABEL in columns else 0)
    values = sorted(examples[column].dropna().astype(str).unique())
    chosen = right.multiselect("Values", values, key=f"{key}_filter_values_{column}")
    return _ids(examples, examples[column].astype(str).isin(chosen)), f"filter: {column} in [{', '.join(chosen)}]"


def _from_cluster(page: ReviewRun, key: str, clusters: pd.DataFrame) -> tuple[list[str], str]:
    examples = page.examples
    levels = {level.capitalize(): (level, column) for level, column in CLUSTER_LEVELS.items()
              if column in examples.columns}
    left, right = st.columns([1, 2])
    level, column = levels[left.radio("Level", list(levels), horizontal=True, key=f"{key}_cluster_level")]
    table = clusters[clusters["level"] == level].reset_index(drop=True)
    names = {row.cluster: f"{row.cluster} · {row.name} ({row.size:,})" for row in table.itertuples()}
    picked = right.selectbox("Cluster", list(names), format_func=names.get, key=f"{key}_cluster_{level}")
    name = table.set_index("cluster").loc[picked, "name"]
    return (_ids(examples, examples[column] == picked),
            f"{'fine ' if level == 'fine' else ''}cluster {picked} ({name})")


def _from_region(page: ReviewRun, key: str) -> tuple[list[str], str]:
    counts = page.examples[REGION].value_counts()
    region = st.selectbox("Region", list(counts.index), key=f"{key}_region",
                          format_func=lambda r: f"{r} ({counts[r]:,})",
                          help="At the run's thresholds (confidence 0.5, variability 0.2).")
    return _ids(page.examples, page.examples[REGION] == region), f"data-map region: {region}"


def _from_top(page: ReviewRun, key: str, scores: list[str]) -> tuple[list[str], str]:
    examples = page.examples
    left, right = st.columns([2, 1])
    score = left.selectbox("Score", scores, key=f"{key}_score")
    count = right.number_input("How many", 1, len(examples), min(50, len(examples)), key=f"{key}_top_n")
    ranked = cached.hardest(page.path, page.stamp, examples, score, int(count))
    order = "highest" if actions.harder_is_higher(score) else "lowest"
    st.caption(f"Hardest first: the {order} {score} values.")
    return ranked[ID].astype(str).tolist(), f"top {len(ranked)} by {score} ({order} first)"
