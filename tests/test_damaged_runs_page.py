"""Damaged run folders in the app (AppTest): a run the app computed is recomputed once, with a
message naming the file and no endless rerun; a run folder opened from the sidebar says which
file is damaged and how to recompute it. Never a traceback, never a server path."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import ui.analysis
from analytics.datasets import load_dataset
from analytics.embeddings import EmbeddingSpec
from analytics.pipeline import AnalysisConfig, run_dir_for, verify_run
from analytics.workspace import Workspace
from tests.conftest import ROOT
from tests.test_map_page import point_count, scatter_of
from ui import cached, jobs, state
from ui.analysis import ACTIVE_CONFIG

CONFIG = AnalysisConfig(embedding=EmbeddingSpec(source="tabular"), projection="pca", k=8)


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield


@pytest.fixture
def page_runs(monkeypatch):
    """How many times the pages asked for the run: bounded, or the app reruns endlessly."""
    calls = []
    real = ui.analysis.current_run
    monkeypatch.setattr(ui.analysis, "current_run", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def open_app(page: str, **session) -> AppTest:
    # A short timeout: an endless rerun fails here instead of hanging the suite.
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for key, value in session.items():
        at.session_state[key] = value
    at.run()
    return at.switch_page(page).run()


def truncate(file):
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def messages(at: AppTest) -> str:
    return " ".join(e.value for e in [*at.error, *at.warning, *at.sidebar.error])


def points_drawn(at: AppTest) -> int:
    return point_count(scatter_of(at))


def app_session(path) -> dict:
    dataset = load_dataset(path)
    return {state.DATASET_CHOICE: "Open a file or folder…", state.DATASET_PATH: str(path),
            ACTIVE_CONFIG: {dataset.fingerprint: CONFIG}}


def computed_by_the_app(path) -> AppTest:
    """The Map of ``path`` computed in the background by the app, the finished job kept."""
    at = open_app("views/map.py", **app_session(path))
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception and points_drawn(at) == 120
    return at


def test_a_damaged_app_run_is_recomputed_without_endless_reruns(small_csv, tmp_path, page_runs):
    at = computed_by_the_app(small_csv)
    run_dir = run_dir_for(load_dataset(small_csv), CONFIG, Workspace.default())
    truncate(run_dir / "examples.parquet")
    cached.load_run.clear()  # as after a restart: the run is opened again, its finished job still known
    page_runs.clear()

    at.run()  # finds the damage: says which file, starts a fresh analysis instead of reusing the old job
    assert not at.exception
    assert "examples.parquet does not match its manifest" in messages(at)
    assert str(tmp_path) not in messages(at)
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception and not at.warning and not at.error
    assert verify_run(run_dir) == []
    assert points_drawn(at) == 120
    assert len(page_runs) <= 4


def test_a_file_damaged_after_the_run_was_opened_is_recomputed(small_csv, tmp_path, page_runs):
    at = computed_by_the_app(small_csv)  # the run is loaded and cached
    run_dir = run_dir_for(load_dataset(small_csv), CONFIG, Workspace.default())
    truncate(run_dir / "seed_stability.parquet")  # read only by the Hardness page, later
    page_runs.clear()

    at.switch_page("views/hardness.py").run()
    assert not at.exception
    assert "seed_stability.parquet does not match its manifest" in messages(at)
    assert str(tmp_path) not in messages(at)
    assert jobs.wait_all(timeout=300)
    at.run()
    assert not at.exception and not at.error
    assert verify_run(run_dir) == []
    assert any(s.value == "Stability across seeds" for s in at.subheader)
    assert len(at.dataframe) >= 1
    assert len(page_runs) <= 5


@pytest.mark.parametrize("name", ["neighbors.npz", "manifest.json"])
def test_a_damaged_run_folder_opened_from_the_sidebar_says_how_to_recompute(small_csv, tmp_path, name):
    out = tmp_path / "cli-run"
    from analytics.pipeline import run_analysis

    run_analysis(load_dataset(small_csv), CONFIG, out_dir=out, workspace=Workspace(tmp_path / "ws"))
    truncate(out / name)
    at = open_app("views/map.py", **{state.DATASET_CHOICE: "Open a file or folder…",
                                     state.DATASET_PATH: str(out)})
    assert not at.exception
    error = " ".join(e.value for e in at.sidebar.error)
    assert name in error and "cartographer analyze" in error
    assert str(tmp_path) not in error
    assert state.OPENED_RUN not in at.session_state


def test_a_file_of_an_opened_run_damaged_later_is_named(small_csv, tmp_path):
    out = tmp_path / "cli-run"
    from analytics.pipeline import run_analysis

    run_analysis(load_dataset(small_csv), CONFIG, out_dir=out, workspace=Workspace(tmp_path / "ws"))
    at = open_app("views/map.py", **{state.DATASET_CHOICE: "Open a file or folder…",
                                     state.DATASET_PATH: str(out)})
    assert not at.exception and at.session_state[state.OPENED_RUN].path == out
    truncate(out / "seed_stability.parquet")
    at.switch_page("views/hardness.py").run()
    assert not at.exception
    error = " ".join(e.value for e in at.error)
    assert "seed_stability.parquet does not match its manifest" in error and "cartographer analyze" in error
    assert str(tmp_path) not in error
    assert not any(str(out) in key for key in jobs.keys())  # an opened run is not recomputed by the app
