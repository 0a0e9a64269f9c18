"""The Issues page's glue: the run's issues.json as tables, each issue type's affected rows, and
the leak-free split as a download. No Streamlit drawing here beyond caching; views/issues.py
draws."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analytics.export import ExportDownload, Provenance, export_bytes, leak_free_split_frame, subset_frame
from analytics.pipeline import AnalysisRun, read_issues

__all__ = ["SEVERITY_ORDER", "issue_summary", "issue_table", "affected_rows", "dataset_table",
           "leak_free_download"]

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2, "none": 3}


def issue_summary(run: AnalysisRun) -> dict | None:
    """The run's issues.json (checked against its manifest), or None when the run has none."""
    return read_issues(run)


def issue_table(summary: dict) -> pd.DataFrame:
    """One row per issue type, the most severe first: issue type, affected, unit, severity, meaning."""
    rows = [{"issue type": name, "affected": int(entry["count"]), "unit": entry["unit"],
             "severity": entry["severity"], "meaning": entry["meaning"]}
            for name, entry in summary.get("issues", {}).items()]
    table = pd.DataFrame(rows, columns=["issue type", "affected", "unit", "severity", "meaning"])
    order = table["severity"].map(SEVERITY_ORDER).fillna(len(SEVERITY_ORDER))
    return table.assign(_order=order).sort_values(["_order", "affected"], ascending=[True, False],
                                                  kind="stable").drop(columns="_order").reset_index(drop=True)


def affected_rows(examples: pd.DataFrame, select: dict | None) -> np.ndarray | None:
    """Row numbers of ``examples`` an issue's ``select`` entry names, or None when the issue
    concerns columns, not examples (or its column is not in this run)."""
    if not select:
        return None
    if "rows" in select:
        rows = np.asarray(select["rows"], dtype=np.int64)
        return rows[(rows >= 0) & (rows < len(examples))]
    column = select.get("column")
    if column not in examples.columns:
        return None
    values = examples[column]
    if "below" in select:
        mask = values.to_numpy(dtype=float) < float(select["below"])
    elif "in" in select:
        mask = values.astype(str).isin([str(v) for v in select["in"]]).to_numpy()
    else:
        mask = values.fillna(False).to_numpy(dtype=bool)
    return np.flatnonzero(mask)


def dataset_table(summary: dict, key: str) -> pd.DataFrame:
    """A dataset-level table of the summary (``columns``, ``identifier_columns``,
    ``spurious_cues``, ``class_imbalance``'s classes or ``split_leaks``' pairs) as a frame."""
    value = summary.get(key)
    if key == "class_imbalance":
        value = (value or {}).get("classes")
    elif key == "split_leaks":
        value = [{"split A": p["splits"][0], "split B": p["splits"][1], "duplicate sets": p["sets"],
                  "examples": p["examples"]} for p in (value or {}).get("pairs", [])]
    return pd.DataFrame(value or [])


def leak_free_download(run: AnalysisRun, summary: dict, *, exported_by: str = "", fmt: str = "csv") -> ExportDownload:
    """Every example of the run with the leak-free split (the old split in ``original_split``),
    the manifest listing the run's issue counts and the number of examples moved."""
    frame = subset_frame(run.dataset)
    frame, moved = leak_free_split_frame(frame, run.examples)
    counts = {name: int(entry["count"]) for name, entry in summary.get("issues", {}).items()}
    provenance = Provenance(fingerprint=run.dataset.fingerprint, description="every example, leak-free split",
                            exported_by=exported_by, issue_counts=counts, leak_free_split=moved)
    return export_bytes(frame, provenance, fmt=fmt)
