"""The Map page (AppTest): every point drawn, colouring, filters, the shared selection."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analytics.samples import sample_by_key
from analytics.selections import list_selections
from analytics.workspace import Workspace
from tests.conftest import ROOT
from ui import jobs, state

APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


def open_map(**session) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    return at.switch_page("views/map.py").run()


def figure_of(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def point_count(figure: dict) -> int:
    total = 0
    for trace in figure["data"]:
        x = trace["x"]
        total += len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize if isinstance(x, dict) else len(x)
    return total


def test_map_draws_every_point_coloured_by_label(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    assert not at.exception
    figure = figure_of(at)
    assert point_count(figure) == 1549
    assert {t["name"] for t in figure["data"]} == {"games", "science", "sound", "graphics", "mail",
                                                   "database", "editors", "web"}
    assert all(t["type"] == "scattergl" for t in figure["data"])
    assert any("All 1,549 points drawn" in c.value for c in at.caption)


def test_recolour_by_a_numeric_metadata_column(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    at.selectbox(key="map_colour_by").select("n_words").run()
    figure = figure_of(at)
    assert len(figure["data"]) == 1 and figure["data"][0]["marker"]["showscale"] is True
    at.selectbox(key="map_colour_by").select("split").run()
    assert {t["name"] for t in figure_of(at)["data"]} == {"train", "test"}


def test_search_filters_and_selects_matching_points(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    at.text_input(key="map_search").input("compiler").run()
    caption = next(c.value for c in at.caption if "points match the filters" in c.value)
    matching = int(caption.split(" of ")[0].replace(",", ""))
    assert 0 < matching < 1549
    figure = figure_of(at)
    assert figure["data"][0]["name"] == "filtered out"
    at.button(key="map_select_filtered").click().run()
    fingerprint = at.session_state[state.DATASET].fingerprint
    selected = at.session_state[state.SELECTIONS][fingerprint]
    assert len(selected.ids) == matching and selected.source == "map: filter"
    assert f"Selection · {matching:,} examples" in [s.value for s in at.subheader]


def test_selection_is_shown_and_can_be_saved(use_analysed_workspace):
    from ui.selection import Selection

    at = open_map(**{state.DATASET_CHOICE: sample_by_key("digits").title})
    fingerprint = at.session_state[state.DATASET].fingerprint
    ids = ["0/digit_0000.png", "1/digit_0001.png", "2/digit_0002.png"]
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(ids), "test")}
    at.run()
    table = at.dataframe[-1].value
    assert sorted(table["id"]) == ids
    assert table["preview"].str.startswith("data:image/png;base64,").all()
    at.text_input(key="selection_name").input("three digits").run()
    at.button(key="selection_save").click().run()
    assert any("Saved 'three digits' (3 examples)" in s.value for s in at.success)
    saved = list_selections(Workspace(use_analysed_workspace), fingerprint)
    assert [s.name for s in saved] == ["three digits"] and sorted(saved[0].ids) == ids
    # a taken name is refused, not overwritten
    at.text_input(key="selection_name").input("three digits").run()
    at.button(key="selection_save").click().run()
    assert any("already exists" in e.value for e in at.error)


def test_map_of_a_new_dataset_is_computed_in_the_background(tmp_path):
    path = tmp_path / "small.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120),
                  "label": rng.choice(["x", "y"], 120)}).to_csv(path, index=False)
    at = open_map(**{state.DATASET_CHOICE: "Open a file or folder…", state.DATASET_PATH: str(path)})
    assert not at.exception
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception
    assert point_count(figure_of(at)) == 120


def test_hover_previews_are_escaped(tmp_path, monkeypatch):
    path = tmp_path / "hostile.csv"
    pd.DataFrame({"text": ["<script>alert(1)</script> words here", "<b>bold</b> and more words"] * 10,
                  "label": ["a", "b"] * 10, "score": np.arange(20.0)}).to_csv(path, index=False)
    from analytics.datasets import load_dataset
    from analytics.embeddings import EmbeddingSpec
    from analytics.pipeline import AnalysisConfig, run_analysis

    dataset = load_dataset(path)
    run_analysis(dataset, AnalysisConfig(embedding=EmbeddingSpec(source="tabular"), projection="pca"))
    from ui.analysis import ACTIVE_CONFIG

    at = open_map(**{state.DATASET_CHOICE: "Open a file or folder…", state.DATASET_PATH: str(path),
                     ACTIVE_CONFIG: {dataset.fingerprint: AnalysisConfig(
                         embedding=EmbeddingSpec(source="tabular"), projection="pca")}})
    spec = at.get("plotly_chart")[0].proto.spec
    assert "<script>" not in spec and "&lt;script&gt;" in spec


def test_the_app_opens_a_run_folder_from_the_command_line(tmp_path):
    from analytics.cli import main

    out = tmp_path / "cli-run"
    assert main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--out", str(out)]) == 0
    at = open_map(**{state.DATASET_CHOICE: "Open a file or folder…", state.DATASET_PATH: str(out)})
    assert not at.exception
    assert at.session_state[state.OPENED_RUN].path == out
    assert point_count(figure_of(at)) == 569
    assert any(str(out) in c.value for c in at.caption)
    fingerprint = at.session_state[state.DATASET].fingerprint
    assert not any(fingerprint in key for key in jobs.keys())  # opened as it is, not recomputed
