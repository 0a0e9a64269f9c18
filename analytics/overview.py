"""What a dataset holds, at a glance: size, class balance, columns and missing values."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analytics.datasets import Dataset

__all__ = ["DatasetSummary", "summarize"]


@dataclass(frozen=True, eq=False)
class DatasetSummary:
    """Attributes
    ----------
    n_examples, n_classes : int
    class_counts : DataFrame with columns ``label``, ``count``, ``share``, in class order.
    columns : DataFrame, one row per column: ``column``, ``role``, ``dtype``, ``missing``,
        ``missing_share``, ``distinct``.
    imbalance_ratio : float
        Size of the largest class over the smallest (1.0 = perfectly balanced).
    split_counts : DataFrame or None
        Rows per split and class when the dataset has a split column.
    """

    n_examples: int
    n_classes: int
    class_counts: pd.DataFrame
    columns: pd.DataFrame
    imbalance_ratio: float
    split_counts: pd.DataFrame | None


def summarize(dataset: Dataset) -> DatasetSummary:
    """Summarise ``dataset`` for the overview page and the command line."""
    table = dataset.table
    counts = table["label"].value_counts().reindex(list(dataset.classes), fill_value=0)
    class_counts = pd.DataFrame({"label": counts.index, "count": counts.to_numpy()})
    class_counts["share"] = class_counts["count"] / len(table)
    file_names = {role: col for role, col in dataset.roles.single_columns().items() if col}
    if dataset.roles.annotator and not dataset.roles.label:
        file_names["label"] = "(the annotators' majority vote)"
    annotators = set(dataset.roles.annotator)
    columns = pd.DataFrame({
        "column": table.columns,
        "role": [c if c in file_names else "annotator" if c in annotators else "feature / metadata"
                 for c in table.columns],
        "source column": [file_names.get(c, c) for c in table.columns],
        "dtype": [str(t) for t in table.dtypes],
        "missing": table.isna().sum().to_numpy(),
        "distinct": [table[c].nunique(dropna=True) if table[c].dtype != object or
                     not table[c].map(lambda v: isinstance(v, (list, dict))).any() else -1
                     for c in table.columns],
    })
    columns["missing_share"] = columns["missing"] / len(table)
    split_counts = None
    if "split" in table.columns:
        split_counts = pd.crosstab(table["split"], table["label"]).reindex(
            columns=list(dataset.classes), fill_value=0)
    return DatasetSummary(
        n_examples=len(table),
        n_classes=len(dataset.classes),
        class_counts=class_counts,
        columns=columns,
        imbalance_ratio=float(counts.max() / max(counts.min(), 1)),
        split_counts=split_counts,
    )
