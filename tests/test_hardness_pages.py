"""Data map and Hardness pages (AppTest) on the analysed samples."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import open_page
from ui import state


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


def test_data_map_shows_regions_with_counts(use_analysed_workspace):
    at = open_page("views/data_map.py", "digits")
    assert not at.exception
    counts = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    assert set(counts) == {"easy-to-learn", "ambiguous", "hard-to-learn"}
    assert sum(counts.values()) == 1797
    [scatter] = [e for e in at.get("component_instance") if e.proto.component_name == "ui.scatter.scatter"]
    args = json.loads(scatter.proto.json_args)  # the browser scatter's arguments: every point, drawn there
    assert args["n"] == 1797 and args["axes"]["x"] == "variability" and args["axes"]["y"] == "confidence"
    assert len(args["lines"]) == 2  # the two threshold lines
    assert sorted(a["text"].split(" (")[0] for a in args["annotations"]) == sorted(counts)


def test_moving_a_threshold_moves_examples_between_regions(use_analysed_workspace):
    at = open_page("views/data_map.py", "digits")
    before = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    at.slider(key="datamap_var").set_value(0.05).run()
    after = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    assert after["ambiguous"] > before["ambiguous"]
    assert sum(after.values()) == 1797


def test_selecting_a_region_feeds_the_shared_selection(use_analysed_workspace):
    at = open_page("views/data_map.py", "digits")
    counts = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    at.button(key="datamap_select_easy-to-learn").click().run()
    fingerprint = at.session_state[state.DATASET].fingerprint
    selection = at.session_state[state.SELECTIONS][fingerprint]
    assert len(selection.ids) == counts["easy-to-learn"] and selection.source == "data map: easy-to-learn"


def test_per_class_data_map(use_analysed_workspace):
    at = open_page("views/data_map.py", "digits")
    at.selectbox(key="datamap_class").select("3").run()
    counts = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    assert sum(counts.values()) == 183  # the digit 3s


def test_hardness_page_shows_every_part(use_analysed_workspace):
    at = open_page("views/hardness.py", "debian-packages")
    assert not at.exception
    subheaders = [s.value for s in at.subheader]
    for part in ("Distribution by class", "How the scores agree (Spearman)", "Hardest examples",
                 "Two scores against each other", "Stability across seeds"):
        assert part in subheaders
    at.selectbox(key="hardness_score").select("aum").run()
    ranked = at.dataframe[0].value
    assert ranked["aum"].is_monotonic_increasing  # lower AUM = harder, listed first
    stability = at.dataframe[1].value
    assert set(stability["score"]) >= {"confidence", "aum", "el2n"} and (stability["seeds"] == 3).all()
    at.button(key="hardness_select_top").click().run()
    fingerprint = at.session_state[state.DATASET].fingerprint
    assert len(at.session_state[state.SELECTIONS][fingerprint].ids) == 50


# ----------------------------------------------------------------------------- the run's score summaries


def _refuse(*args, **kwargs):
    raise AssertionError("computed over the rows: the page should read the run's summary file")


@pytest.fixture
def summaries_only(monkeypatch):
    """Fail any summary the pages would compute over the rows instead of reading the run's files."""
    import analytics.hardness

    for name in ("score_agreement", "quantiles_by_group", "seed_stability"):
        monkeypatch.setattr(analytics.hardness, name, _refuse)


def _values(encoded) -> np.ndarray:
    """A Plotly figure's array: a list, or a typed array ({"dtype", "bdata", "shape"})."""
    if isinstance(encoded, dict):
        values = np.frombuffer(base64.b64decode(encoded["bdata"]), dtype=encoded["dtype"])
        shape = [int(size) for size in str(encoded.get("shape", len(values))).split(",")]
        return values.reshape(shape).astype(float)
    return np.array(encoded, dtype=float)


def _chart(at, key: str) -> dict:
    [chart] = [c for c in at.get("plotly_chart") if c.proto.id and key in c.proto.id]
    return json.loads(chart.proto.spec)


def _heat(at) -> np.ndarray:
    return _values(_chart(at, "hardness_heat")["data"][0]["z"])


def _box_medians(at) -> list[float]:
    return [float(_values(trace["median"])[0]) for trace in _chart(at, "hardness_box")["data"]]


def test_the_pages_read_the_runs_score_summaries(use_analysed_workspace, summaries_only):
    from analytics.hardness import numeric_scores
    from analytics.pipeline import read_artefact

    run_dir = _analysed_run_dir(use_analysed_workspace, "debian-packages")
    at = open_page("views/hardness.py", "debian-packages")
    assert not at.exception
    agreement = read_artefact(run_dir, "score_agreement.parquet")
    scores = numeric_scores(agreement.index)
    assert np.allclose(_heat(at), agreement.loc[scores, scores].round(2).to_numpy(), equal_nan=True)
    quantiles = read_artefact(run_dir, "score_quantiles.parquet")
    score = at.selectbox(key="hardness_score").value
    rows = quantiles[(quantiles["score"] == score) & (quantiles["group_by"] == "label")]
    assert _box_medians(at) == pytest.approx(rows["median"].tolist())
    stability = read_artefact(run_dir, "seed_stability.parquet")
    shown = at.dataframe[1].value
    assert shown["score"].tolist() == stability["score"].tolist()
    assert np.allclose(shown["mean_spearman"], stability["mean_spearman"], equal_nan=True)
    at.radio(key="hardness_group").set_value("cluster").run()
    assert not at.exception
    at = open_page("views/data_map.py", "digits")
    assert not at.exception and len(at.metric) == 3


def test_the_quadrant_draws_every_point_in_the_browser(use_analysed_workspace):
    from tests.test_map_page import scatter_of

    at = open_page("views/hardness.py", "debian-packages")
    args = scatter_of(at)
    assert args["n"] == 1549 and args["axes"]["x"] == "knn_density" and args["axes"]["y"] == "loss"
    assert len(args["lines"]) == 2  # the medians
    at.selectbox(key="hardness_quad_y").select("aum").run()
    assert not at.exception and scatter_of(at)["axes"]["y"] == "aum"


def _without_summaries(run_dir, folder):
    """A copy of the run folder as a run written before the score summaries."""
    import shutil

    from analytics.hardness import HARDNESS_FILES

    copy = folder / "old-run"
    shutil.copytree(run_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for name in HARDNESS_FILES:
        (copy / name).unlink()
        del manifest["artefacts"][name]
    del manifest["hardness"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def _analysed_run_dir(workspace, sample: str):
    from analytics.datasets import load_dataset
    from analytics.pipeline import AnalysisConfig, run_dir_for
    from analytics.samples import sample_by_key
    from analytics.workspace import Workspace

    chosen = sample_by_key(sample)
    return run_dir_for(load_dataset(chosen.path, roles=chosen.roles), AnalysisConfig(), Workspace(workspace))


def _open_folder(page: str, folder):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = "Open a file or folder…"
    at.session_state[state.DATASET_PATH] = str(folder)
    at.run()
    return at.switch_page(page).run()


def test_a_run_written_before_the_summaries_still_opens(use_analysed_workspace, tmp_path):
    from analytics.pipeline import read_artefact, verify_run

    run_dir = _analysed_run_dir(use_analysed_workspace, "debian-packages")
    old = _without_summaries(run_dir, tmp_path)
    assert verify_run(old) == []
    at = _open_folder("views/hardness.py", old)
    assert not at.exception and at.session_state[state.OPENED_RUN].path == old
    # computed over the rows, the same figures as the run's files
    agreement = read_artefact(run_dir, "score_agreement.parquet")
    assert np.allclose(_heat(at), agreement.round(2).to_numpy(), equal_nan=True)
    stability = read_artefact(run_dir, "seed_stability.parquet")
    assert np.allclose(at.dataframe[1].value["mean_spearman"], stability["mean_spearman"], atol=0.01)
    at = _open_folder("views/data_map.py", old)
    assert not at.exception and sum(int(m.value.replace(",", "")) for m in at.metric) == 1549


def test_the_one_dimensional_warning_reads_the_agreement_file(use_analysed_workspace, tmp_path):
    import shutil

    from analytics.workspace import file_sha256

    copy = tmp_path / "run"
    shutil.copytree(_analysed_run_dir(use_analysed_workspace, "digits"), copy)
    agreement = pd.read_parquet(copy / "score_agreement.parquet")
    at = _open_folder("views/data_map.py", copy)
    assert not at.exception
    shown = any("nearly one-dimensional" in w.value for w in at.warning)
    assert shown == (abs(agreement.loc["confidence", "variability"]) > 0.95)
    # the file says the map is a line: the page says so, though the rows say otherwise
    agreement.loc["confidence", "variability"] = agreement.loc["variability", "confidence"] = -0.99
    agreement.to_parquet(copy / "score_agreement.parquet")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["artefacts"]["score_agreement.parquet"] = {"bytes": (copy / "score_agreement.parquet").stat().st_size,
                                                        "sha256": file_sha256(copy / "score_agreement.parquet")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    at = _open_folder("views/data_map.py", copy)
    assert not at.exception
    assert any("Spearman(confidence, variability) = -0.99" in w.value for w in at.warning)
