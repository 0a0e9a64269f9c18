"""The Issues page (AppTest) on the analysed samples: the table, a row per issue type, selecting
its examples, the dataset-level tables and the leak-free split."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from tests.conftest import open_page
from ui import state


pytestmark = pytest.mark.usefixtures("clean_app_caches")


def test_issues_page_lists_each_type_and_selects_the_duplicates(use_analysed_workspace):
    at = open_page("views/issues.py", "debian-packages")
    assert not at.exception
    table = at.dataframe[0].value
    summaries = [json.loads(p.read_text()) for p in use_analysed_workspace.glob("runs/*/*/issues.json")]
    summary = next(s for s in summaries if s["n_examples"] == 1549)  # the debian-packages run
    assert set(table["issue type"]) == set(summary["issues"])
    counts = dict(zip(table["issue type"], table["affected"]))
    assert counts["near_duplicate"] == summary["issues"]["near_duplicate"]["count"] > 0
    assert list(table["severity"].map({"high": 0, "medium": 1, "low": 2, "none": 3})) == \
        sorted(table["severity"].map({"high": 0, "medium": 1, "low": 2, "none": 3}))
    assert {"Each issue", "Leaks between splits", "Row order (non-IID)", "Class balance", "Columns"} <= \
        {s.value for s in at.subheader}
    assert [m.label for m in at.metric][0] == "p-value (row order)"

    at.button(key="issues_select_near_duplicate").click().run()
    assert not at.exception
    fingerprint = at.session_state[state.DATASET].fingerprint
    selection = at.session_state[state.SELECTIONS][fingerprint]
    assert len(selection.ids) == counts["near_duplicate"] and selection.source == "issues: near_duplicate"
    assert len(at.get("download_button")) == 2  # the leak-free split and its manifest


def test_the_leak_free_split_download_lists_the_moves_and_counts(use_analysed_workspace):
    from analytics.pipeline import load_run
    from ui.issues import affected_rows, issue_summary, leak_free_download

    at = open_page("views/issues.py", "debian-packages")
    assert not at.exception
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("Download the leak-free split (CSV, ") for label in labels)
    run = load_run(next(p.parent for p in use_analysed_workspace.glob("runs/*/*/issues.json")
                        if json.loads(p.read_text())["n_examples"] == 1549))
    summary = issue_summary(run)
    download = leak_free_download(run, summary)
    frame = pd.read_csv(io.BytesIO(download.data))
    moved = summary["split_leaks"]["leak_free_split"]["moved"]
    assert download.manifest["leak_free_split"]["moved"] == moved == (frame["split"] != frame["original_split"]).sum()
    assert download.manifest["issue_counts"]["split_leak"] == summary["issues"]["split_leak"]["count"]
    leaks = affected_rows(run.examples, summary["issues"]["split_leak"]["select"])
    assert len(leaks) == summary["issues"]["split_leak"]["count"]
    assert affected_rows(run.examples, None) is None
    below = affected_rows(run.examples, {"column": "non_iid_score", "below": 0.5})
    assert (run.examples["non_iid_score"].to_numpy()[below] < 0.5).all()
