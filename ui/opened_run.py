"""The analysis run a page has open, handed to the page's panels as one explicit argument
instead of module-level variables they would read."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analytics.datasets import Dataset
from ui import cached

__all__ = ["OpenedRun"]


@dataclass(frozen=True, eq=False)
class OpenedRun:
    """A dataset, its finished analysis run, and the run's file stamp (the cache key of
    :mod:`ui.cached`)."""

    dataset: Dataset
    run: object  # analytics.pipeline.AnalysisRun
    stamp: tuple

    @classmethod
    def of(cls, dataset: Dataset, run, **extra) -> "OpenedRun":
        """The run as :func:`ui.analysis.page_run` returns it, stamped now."""
        return cls(dataset, run, cached.run_stamp(run.path), **extra)

    @property
    def examples(self) -> pd.DataFrame:
        """``examples.parquet``: one row per example, keyed by ``id``."""
        return self.run.examples

    @property
    def path(self) -> str:
        """The run folder, as the string :mod:`ui.cached` keys its entries by."""
        return str(self.run.path)
