"""The Map page (AppTest): every point handed to the browser scatter, colouring, filters, a
selection made in the browser, the shared selection."""

from __future__ import annotations

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


def scatter_of(at: AppTest) -> dict:
    """The arguments the page hands the browser scatter (its columns travel as media files)."""
    [scatter] = [e for e in at.get("component_instance") if e.proto.component_name == "ui.scatter.scatter"]
    return json.loads(scatter.proto.json_args)


def point_count(args: dict) -> int:
    points = args["points"]
    assert points["dtype"] == "float32" and points["bytes"] == 4 * points["length"] == 8 * args["n"]
    return args["n"]


def test_map_draws_every_point_coloured_by_label(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    assert not at.exception
    args = scatter_of(at)
    assert point_count(args) == 1549
    colour = args["colour"]
    assert colour["kind"] == "categories" and colour["title"] == "label"
    assert set(colour["names"]) == {"games", "science", "sound", "graphics", "mail", "database", "editors", "web"}
    assert colour["codes"]["dtype"] == "uint8" and colour["codes"]["bytes"] == 1549
    assert args["visible"] is None and args["selected"] is None  # nothing filtered or selected
    assert args["hover"]["dtype"] == "utf8" and set(args["labels"]["names"]) == set(colour["names"])
    assert any("All 1,549 points drawn" in c.value for c in at.caption)


def test_recolour_sends_a_new_colour_column_and_the_same_points(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    before = scatter_of(at)
    at.selectbox(key="map_colour_by").select("n_words").run()
    args = scatter_of(at)
    assert args["colour"]["kind"] == "values" and args["colour"]["title"] == "n_words"
    assert args["colour"]["values"]["dtype"] == "uint16" and args["colour"]["min"] < args["colour"]["max"]
    assert args["colour"]["exact"]["dtype"] == "float32"  # the exact values, fetched on hover
    assert args["points"]["url"] == before["points"]["url"]  # the browser keeps the coordinates
    assert args["colour"]["values"]["url"] != before["colour"]["codes"]["url"]
    # no column inside the arguments, only addresses (and each colour menu entry's legend)
    options = args["colour_options"]
    assert len(json.dumps({k: v for k, v in args.items() if k != "colour_options"})) < 4000
    assert all(len(json.dumps(option)) < 4000 for option in options)
    at.selectbox(key="map_colour_by").select("split").run()
    assert set(scatter_of(at)["colour"]["names"]) == {"train", "test"}


def test_the_map_menu_offers_every_colour_at_the_address_it_is_drawn_from(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    args = scatter_of(at)
    options = {option["title"]: option for option in args["colour_options"]}
    assert list(options) == at.selectbox(key="map_colour_by").options  # the same list as the page's menu
    assert not {"id", "text", "x", "y", "pca_x", "pca_y"} & set(options)
    assert options["label"]["codes"]["url"] == args["colour"]["codes"]["url"]  # the one the browser has
    assert options["n_words"]["kind"] == "values" and options["n_words"]["values"]["dtype"] == "uint16"
    assert options["cluster"]["kind"] == "categories" and all(len(o["digest"]) == 32 for o in options.values())
    # choosing a column in the page's own menu brings it from the same address
    at.selectbox(key="map_colour_by").select("n_words").run()
    assert scatter_of(at)["colour"]["values"]["url"] == options["n_words"]["values"]["url"]


def test_a_colour_chosen_in_the_map_sets_the_page_menu_once_and_is_not_sent_again(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    option = {o["title"]: o for o in scatter_of(at)["colour_options"]}["split"]
    # what the component sends once it has drawn "split" itself
    at.session_state["map_scatter"] = {"nonce": "s-1", "kind": "colour", "colour": "split", "digest": option["digest"]}
    at.run()
    assert at.selectbox(key="map_colour_by").value == "split"
    args = scatter_of(at)
    assert args["colour"]["title"] == "split" and args["colour"]["codes"]["url"] == option["codes"]["url"]
    assert args["colour"]["codes"]["inline"] is False  # the browser has these bytes: not sent again
    assert at.get("caption") and not at.exception
    # the same value again (any later rerun) does not undo a later choice in the page's menu
    at.selectbox(key="map_colour_by").select("n_words").run()
    assert at.selectbox(key="map_colour_by").value == "n_words" and scatter_of(at)["colour"]["title"] == "n_words"
    # a column the map does not offer, or a malformed value (as a hostile page could send), is ignored
    for nonce, value in enumerate([{"kind": "colour", "colour": "text", "digest": "x"},
                                   {"kind": "colour", "colour": ["label"], "digest": 7},
                                   {"kind": "colour"}, {"kind": "colour", "colour": "<b>split</b>" * 10_000}]):
        at.session_state["map_scatter"] = {"nonce": f"h-{nonce}", **value}
        at.run()
        assert at.selectbox(key="map_colour_by").value == "n_words" and not at.exception


def test_a_selection_made_in_the_browser_is_applied_in_its_mode(use_analysed_workspace):
    from analytics.pipeline import AnalysisConfig, run_dir_for
    from ui.scatter.encoding import encode_rows
    from ui.selection import Selection

    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    dataset = at.session_state[state.DATASET]
    fingerprint = dataset.fingerprint
    run = run_dir_for(dataset, AnalysisConfig(), Workspace(use_analysed_workspace))
    ids = pd.read_parquet(run / "examples.parquet", columns=["id"])["id"].astype(str).to_numpy()  # the map's rows
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(ids[:3]), "test")}
    # what the component sends after a lasso in the Add mode: rows 2..9
    at.session_state["map_scatter"] = {"nonce": "s-1", "kind": "lasso", "mode": "Add",
                                       "rows": encode_rows(np.arange(2, 10), len(ids))}
    at.run()
    selection = at.session_state[state.SELECTIONS][fingerprint]
    assert selection.ids == frozenset(ids[:10]) and selection.source == "map: lasso"
    assert "Selection · 10 examples" in [s.value for s in at.subheader]
    assert sorted(at.dataframe[-1].value["id"]) == sorted(ids[:10])  # the panel lists them in the same run
    assert scatter_of(at)["selected"]["bytes"] == (len(ids) + 7) // 8  # and the map draws them
    # the same event is applied once; a Remove event takes rows out
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(ids[:4]), "test")}
    at.run()
    assert len(at.session_state[state.SELECTIONS][fingerprint].ids) == 4
    at.session_state["map_scatter"] = {"nonce": "s-2", "kind": "box", "mode": "Remove",
                                       "rows": encode_rows(np.array([0, 1]), len(ids))}
    at.run()
    assert at.session_state[state.SELECTIONS][fingerprint].ids == frozenset(ids[2:4])
    assert sorted(at.dataframe[-1].value["id"]) == sorted(ids[2:4])


def test_search_filters_and_selects_matching_points(use_analysed_workspace):
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    at.text_input(key="map_search").input("compiler").run()
    caption = next(c.value for c in at.caption if "points match the filters" in c.value)
    matching = int(caption.split(" of ")[0].replace(",", ""))
    assert 0 < matching < 1549
    assert scatter_of(at)["visible"]["bytes"] == (1549 + 7) // 8  # a bitset of the matching points
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
    assert point_count(scatter_of(at)) == 120


def test_hover_text_is_never_inside_the_arguments(tmp_path, monkeypatch):
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
    args = scatter_of(at)
    # the text travels as a separate file the browser fetches on its first hover, and shows as
    # text (textContent), never as HTML
    # (the clusters' names, made of their frequent words, may hold "script": shown as text too)
    sent = json.dumps(args)
    assert "<script>" not in sent and "words here" not in sent and "<b>" not in sent, sent
    assert args["hover"]["length"] == 20


def test_the_app_opens_a_run_folder_from_the_command_line(tmp_path):
    from analytics.cli import main

    out = tmp_path / "cli-run"
    assert main(["analyze", str(sample_by_key("breast-cancer").path), "--label", "diagnosis",
                 "--projection", "pca", "--out", str(out)]) == 0
    earlier = set(jobs.keys())  # jobs that earlier tests of the session left for this sample
    at = open_map(**{state.DATASET_CHOICE: "Open a file or folder…", state.DATASET_PATH: str(out)})
    assert not at.exception
    assert at.session_state[state.OPENED_RUN].path == out
    assert point_count(scatter_of(at)) == 569
    assert any(str(out) in c.value for c in at.caption)
    fingerprint = at.session_state[state.DATASET].fingerprint
    assert not any(fingerprint in key for key in set(jobs.keys()) - earlier)  # opened as it is, not recomputed


def test_while_the_analysis_runs_the_pca_preview_shows_and_a_stopped_job_shows_none(monkeypatch):
    """The PCA map shows while the analysis runs (drawn by the page's run, below the progress
    poll); once the job has failed only the failure shows."""
    from ui.pool import RUNNING, Job

    rng = np.random.default_rng(0)
    job = Job(key="preview-test", kind="analysis", target="tests.pool_tasks:add", payload={}, owner="t", label="the map of x",
              state=RUNNING, stage="umap", fraction=0.2, partial={"pca": rng.normal(size=(1549, 2)).astype(np.float32)})
    monkeypatch.setattr(jobs, "start_analysis", lambda *args, **kwargs: job)
    at = open_map(**{state.DATASET_CHOICE: sample_by_key("debian-packages").title})
    assert not at.exception
    [preview] = [c for c in at.get("plotly_chart") if c.proto.id and "map_preview" in c.proto.id]
    assert any("instant PCA layout" in info.value for info in at.info)
    job.error, job.partial = "Worker died.", dict(job.partial)
    at.run()
    assert not [c for c in at.get("plotly_chart") if "map_preview" in c.proto.id]
    assert any("The analysis failed: Worker died." in e.value for e in at.error)
    job.error, job.stage, job.partial = None, "embeddings", {}
    at.run()
    assert any("Computing embeddings" in c.value for c in at.caption)
