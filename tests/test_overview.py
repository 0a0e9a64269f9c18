"""Dataset summaries against a hand-made table."""

from __future__ import annotations

import pandas as pd

from analytics.datasets import load_dataset
from analytics.overview import summarize


def test_summary_counts_classes_missing_values_and_splits(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({
        "id": ["1", "2", "3", "4", "5"],
        "label": ["b", "a", "b", "b", "a"],
        "split": ["train", "train", "test", "train", "test"],
        "height": [1.0, None, 3.0, None, 5.0],
    }).to_csv(path, index=False)
    summary = summarize(load_dataset(path))
    assert summary.n_examples == 5 and summary.n_classes == 2
    assert summary.class_counts[["label", "count"]].values.tolist() == [["a", 2], ["b", 3]]
    assert summary.imbalance_ratio == 1.5
    height = summary.columns.set_index("column").loc["height"]
    assert height["missing"] == 2 and height["missing_share"] == 0.4
    assert height["role"] == "feature / metadata"
    assert summary.split_counts.loc["train"].tolist() == [1, 2]
