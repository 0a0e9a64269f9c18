"""Subpopulations page (AppTest) on the analysed samples."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from analytics.pipeline import AnalysisConfig, load_run, run_dir_for
from analytics.workspace import Workspace
from tests.conftest import open_page
from ui import state


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


def points(values) -> int:
    """Number of points in a Plotly array (plain list or base64 typed array)."""
    if isinstance(values, dict):
        return len(base64.b64decode(values["bdata"])) // np.dtype(values["dtype"]).itemsize
    return len(values)


def selection_of(at):
    fingerprint = at.session_state[state.DATASET].fingerprint
    return at.session_state[state.SELECTIONS][fingerprint]


def run_examples(at):
    """The run the page shows (the default analysis of the sample)."""
    dataset = at.session_state[state.DATASET]
    return load_run(run_dir_for(dataset, AnalysisConfig(), Workspace.default()))


def test_cluster_list_with_names_and_harmony(use_analysed_workspace):
    at = open_page("views/subpopulations.py", "debian-packages")
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert {"Overall accuracy", "Harmony", "Worst cluster accuracy", "Best − worst"} <= set(metrics)
    table = at.dataframe[0].value
    assert {"name", "size", "purity", "label_mix", "accuracy", "label_issue_share"} <= set(table.columns)
    assert table["size"].sum() == 1549
    # text clusters are named by distinctive terms, e.g. the mail cluster
    assert any("mail" in name for name in table["name"])


def test_selecting_a_cluster_feeds_the_shared_selection(use_analysed_workspace):
    at = open_page("views/subpopulations.py", "digits")
    cluster = int(at.dataframe[0].value["cluster"].iloc[1])
    box = at.selectbox(key="subpop_open_coarse")
    box.set_value(cluster).run()
    assert box.value == cluster
    size = int(at.dataframe[0].value.set_index("cluster").loc[cluster, "size"])
    at.button(key="subpop_select_cluster").click().run()
    selection = selection_of(at)
    assert len(selection.ids) == size and selection.source.startswith(f"subpopulations: cluster {box.value} ")
    run = run_examples(at)
    expected = set(run.examples.loc[run.examples["cluster"] == box.value, "id"])
    assert set(selection.ids) == expected


def test_fine_level_and_renaming_a_cluster(use_analysed_workspace):
    at = open_page("views/subpopulations.py", "breast-cancer")
    at.radio(key="subpop_level").set_value("Fine").run()
    fine = at.dataframe[0].value
    assert "parent" in fine.columns and fine["size"].sum() == 569
    at.radio(key="subpop_level").set_value("Coarse").run()
    cluster = at.selectbox(key="subpop_open_coarse").value
    at.text_input(key=f"subpop_name_coarse_{cluster}").set_value("  <b>big</b> [cells](http://x)  ").run()
    at.button(key="subpop_save_name").click().run()  # nobody named: the store refuses the rename
    assert any("No acting identity was given" in e.value for e in at.error)
    at.session_state[state.REVIEWER] = "ann"
    at.button(key="subpop_save_name").click().run()
    assert not at.exception
    names = at.dataframe[0].value.set_index("cluster")["name"]
    assert names.loc[cluster] == "<b>big</b> [cells](http://x)"
    # the heading shows it as text, not as HTML or a link
    heading = [h.value for h in at.subheader if h.value.startswith(f"Cluster {cluster}")][0]
    assert "\\[cells\\]" in heading and "\\<b\\>" in heading
    # a fresh session sees the saved name
    again = open_page("views/subpopulations.py", "breast-cancer")
    assert again.dataframe[0].value.set_index("cluster")["name"].loc[cluster] == "<b>big</b> [cells](http://x)"


def test_selecting_a_slice(use_analysed_workspace):
    at = open_page("views/subpopulations.py", "debian-packages")
    slices = [df.value for df in at.dataframe if "lift" in df.value.columns and "errors" in df.value.columns][0]
    assert (slices["error_rate"] > 0).all() and list(slices["support"]) == list(slices["support"])
    at.selectbox(key="subpop_slice").set_value(0).run()
    at.button(key="subpop_select_slice").click().run()
    selection = selection_of(at)
    assert len(selection.ids) == slices["support"].iloc[0]
    assert selection.source == f"subpopulations: slice {slices['slice'].iloc[0]}"


def test_balanced_subset_respects_the_cap(use_analysed_workspace):
    at = open_page("views/subpopulations.py", "digits")
    fingerprint = at.session_state[state.DATASET].fingerprint
    at.number_input(key=f"subpop_balanced_size_{fingerprint}").set_value(500).run()
    at.slider(key="subpop_balanced_cap").set_value(0.1).run()
    at.button(key="subpop_balanced_send").click().run()
    selection = selection_of(at)
    run = run_examples(at)
    chosen = run.examples[run.examples["id"].isin(selection.ids)]
    assert 0 < len(chosen) <= 500
    assert chosen["cluster"].value_counts().max() <= 50
    preview = json.loads(at.get("plotly_chart")[-1].proto.spec)
    in_subset = [t for t in preview["data"] if t["name"] == "in the subset"][0]
    assert points(in_subset["x"]) == len(chosen)


def test_map_can_be_coloured_by_cluster(use_analysed_workspace):
    at = open_page("views/map.py", "debian-packages")
    at.selectbox(key="map_colour_by").set_value("cluster").run()
    assert not at.exception
    [scatter] = [e for e in at.get("component_instance") if e.proto.component_name == "ui.scatter.scatter"]
    args = json.loads(scatter.proto.json_args)  # the Map's browser scatter
    assert args["colour"]["kind"] == "categories" and args["colour"]["title"] == "cluster"
    assert any(name.startswith("0 · ") for name in args["colour"]["names"])
    assert args["n"] == 1549 and args["colour"]["codes"]["bytes"] == 1549
