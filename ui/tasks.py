"""What the app's worker processes run (:mod:`ui.pool`): one function per job kind.

Each function takes ``report`` (``report(stage=, fraction=, message=, partial=)`` sends progress
to the server) and the job's inputs, calls the engine, and returns something small: the engine
writes its results to the workspace, where the pages read them. No Streamlit here: these run in
a separate process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

Report = Callable[..., None]


def analysis(report: Report, *, dataset, config, workspace) -> str:
    """:func:`analytics.pipeline.run_analysis`; returns the run folder. The PCA map is sent back
    as soon as it exists (the Map shows it while UMAP runs)."""
    import numpy as np

    from analytics.pipeline import run_analysis

    def progress(stage: str, fraction: float, message: str) -> None:
        report(stage=stage, fraction=fraction, message=message)

    def on_stage(stage: str, result) -> None:
        if stage == "pca":
            report(partial=("pca", np.asarray(result, dtype=np.float32)))

    run = run_analysis(dataset, config, workspace=workspace, progress=progress, on_stage=on_stage)
    return str(run.path)


def impact(report: Report, *, experiment: str, data, config, changes, workspace) -> None:
    """:func:`analytics.impact.run_experiment`; the result stays in the workspace."""
    from analytics.impact import run_experiment

    def progress(fraction: float, message: str) -> None:
        report(stage=experiment, fraction=fraction, message=message)

    run_experiment(experiment, data, config, changes=changes, workspace=workspace, progress=progress)


@dataclass(frozen=True)
class Loaded:
    """A dataset load's outcome: the dataset, or the loader's message (and, for missing labels,
    how many rows lack one, so the sidebar can offer to drop them)."""

    dataset: object = None
    error: str | None = None
    missing_labels: int | None = None


def load(report: Report, *, path: str, roles: dict, drop_missing_labels: bool, encoding: str) -> Loaded:
    """:func:`analytics.datasets.load_dataset` (reading, validating and fingerprinting)."""
    from analytics import datasets

    def progress(fraction: float, message: str) -> None:
        report(stage="load", fraction=fraction, message=message)

    try:
        dataset = datasets.load_dataset(path, roles=datasets.ColumnRoles(**roles),
                                        drop_missing_labels=drop_missing_labels, encoding=encoding,
                                        progress=progress)
    except datasets.MissingLabelsError as exc:
        return Loaded(error=str(exc), missing_labels=exc.count)
    except datasets.DatasetError as exc:
        return Loaded(error=str(exc))
    return Loaded(dataset=dataset)


def warm_up_umap() -> None:
    """Compile UMAP's numba code in this worker (the first fit in a process spends 20-30 s on it)."""
    import numpy as np

    from analytics.projection import project_umap

    project_umap(np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32), n_neighbors=10, n_epochs=20)
