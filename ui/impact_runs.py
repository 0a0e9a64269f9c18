"""The Impact page's link to the engine: configurations, results already in the workspace,
figures and downloads. Experiments run as background jobs of the app's one job manager,
:mod:`ui.jobs` (:func:`ui.jobs.start_impact`, keyed by :func:`ui.jobs.impact_key`: run ×
configuration × changes), shared by every session of the server; once one is done the page reads
its result from the workspace.
"""

from __future__ import annotations

import importlib.util

import plotly.graph_objects as go

from analytics.impact import (  # noqa: F401  (re-exported for the page)
    DEFAULT_FRACTIONS,
    DIRECTIONS,
    IMPACT_PROBE,
    SCORE_NOTE,
    VARIANTS,
    Changes,
    EasyHardConfig,
    Evaluation,
    ImpactData,
    ImpactError,
    ImpactResult,
    PruningConfig,
    WhatIfConfig,
    changes_from_ids,
    changes_from_outcome,
    describe_evaluation,
    describe_probe,
    run_experiment,
    stored_result,
)
from analytics.impact_report import figure_html, figure_spec, report_stem
from analytics.workspace import Workspace


def stored(experiment: str, data: ImpactData, config, changes: Changes | None = None) -> ImpactResult | None:
    """The result in the workspace, or None (reads a few small files; never computes)."""
    return stored_result(experiment, data, config, changes=changes, workspace=Workspace.default())


def figure(result: ImpactResult) -> go.Figure:
    return go.Figure(figure_spec(result))


def figure_html_bytes(result: ImpactResult) -> bytes:
    """The figure as a self-contained HTML page (built only when downloaded)."""
    return figure_html(figure_spec(result), title=f"Data Cartographer · {result.experiment}").encode("utf-8")


def png_available() -> bool:
    """Static PNG export needs kaleido, which the app does not install."""
    return importlib.util.find_spec("kaleido") is not None


def figure_png_bytes(result: ImpactResult) -> bytes:
    return figure(result).to_image(format="png", width=1200, height=600, scale=2)


def file_stem(result: ImpactResult, dataset_name: str) -> str:
    return f"{dataset_name}-{report_stem(result.experiment)}"


def probe_count(experiment: str, data: ImpactData, config) -> int:
    """How many probes the experiment trains (to say what the Run button costs)."""
    from analytics.impact import evaluation_splits

    splits = len(evaluation_splits(data, config.evaluation))
    if experiment == "pruning":
        per_split = (len(config.scores) + int(config.random_baseline)) * len(config.fractions)
    elif experiment == "easy-hard":
        per_split = config.buckets + 1
    else:
        per_split = len(VARIANTS)
    return per_split * config.seeds * splits


def save_buckets(fingerprint: str, buckets, *, score: str, author: str) -> list[str]:
    """Save each easy-to-hard bucket as a named selection ("easy by el2n", …); returns the names.
    Nothing is saved when one of the names is taken (raises the selection error)."""
    from analytics.selections import SelectionError, list_selections, save_selection

    workspace = Workspace.default()
    groups = list(buckets.sort_values("bucket_index", kind="stable").groupby("bucket", sort=False))
    names = [f"{bucket} by {score}" for bucket, _ in groups]
    taken = sorted(set(names) & {s.name for s in list_selections(workspace, fingerprint)})
    if taken:
        raise SelectionError(f"Selections named {', '.join(repr(t) for t in taken)} already exist; "
                             "rename or delete them first.")
    for name, (bucket, rows) in zip(names, groups):
        save_selection(workspace, fingerprint, name, rows["id"],
                       source=f"impact: easy-to-hard bucket '{bucket}' by {score}", author=author)
    return names


def selection_errors() -> tuple[type[Exception], ...]:
    from analytics.selections import SelectionError

    return (SelectionError,)
