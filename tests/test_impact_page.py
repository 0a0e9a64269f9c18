"""Impact page (AppTest) on the analysed samples: run an experiment, see its figure and numbers."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from analytics.samples import sample_by_key
from tests.conftest import ROOT
from ui import impact_runs, jobs, state

APP = str(ROOT / "app.py")


@pytest.fixture(autouse=True)
def clean_caches(clean_app_caches):
    yield
    assert jobs.wait_all(timeout=120), "an impact experiment did not finish"


def open_impact(sample: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[state.DATASET_CHOICE] = sample_by_key(sample).title
    at.run()
    return at.switch_page("views/impact.py").run()


def run_experiment(at: AppTest) -> AppTest:
    """Click Run, wait for the background experiment, and draw the page again."""
    at.button(key="impact_run").click().run()
    assert not at.exception
    assert jobs.wait_all(timeout=120)
    return at.run()


def frame_with(at: AppTest, column: str):
    """The first table on the page with ``column`` (AppTest does not expose dataframe keys)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def figure_of(at: AppTest) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def test_pruning_curves_from_the_button_to_the_figure(use_analysed_workspace):
    at = open_impact("breast-cancer")
    assert not at.exception
    captions = " ".join(c.value for c in at.caption)
    assert "held\\-out 'test' split \\(114 rows\\)" in captions and "Trains 120 probes" in captions
    at.multiselect(key="impact_scores").set_value(["aum", "el2n"]).run()
    at.pills(key="impact_fractions").set_value([0.5, 1.0]).run()
    at.number_input(key="impact_seeds").set_value(2).run()
    at = run_experiment(at)
    lines = [t for t in figure_of(at)["data"] if t.get("mode") == "lines+markers"]
    assert [t["name"] for t in lines] == ["aum", "el2n", "random"]
    assert any(t.get("fill") == "toself" for t in figure_of(at)["data"])  # confidence bands
    pivot = frame_with(at, "kept_fraction")
    assert list(pivot.columns) == ["kept_fraction", "aum", "el2n", "random"] and list(pivot["kept_fraction"]) == [0.5, 1.0]
    assert pivot.loc[1, "aum"] == pivot.loc[1, "random"]  # everything kept: the curves meet
    assert "The scores come from the analysis run" in " ".join(c.value for c in at.caption)
    labels = {b.label for b in at.get("download_button")}
    assert {"Numbers (CSV)", "Every run (CSV)", "Figure (HTML)"} <= labels
    # a fresh session finds the result in the workspace without running anything
    again = open_impact("breast-cancer")
    again.multiselect(key="impact_scores").set_value(["aum", "el2n"]).run()
    again.pills(key="impact_fractions").set_value([0.5, 1.0]).run()
    again.number_input(key="impact_seeds").set_value(2).run()
    assert again.get("plotly_chart") and not [b for b in again.button if b.key == "impact_run"]


def test_what_if_for_the_current_selection(use_analysed_workspace):
    at = open_impact("breast-cancer")
    fingerprint = at.session_state[state.DATASET].fingerprint
    from ui.selection import Selection

    ids = at.session_state[state.DATASET].table["id"].astype(str).tolist()[:40]
    at.session_state[state.SELECTIONS] = {fingerprint: Selection(frozenset(ids), "test")}
    at.radio(key="impact_experiment").set_value("what-if").run()
    at.radio(key="impact_source").set_value("The current selection").run()
    assert "the selection \\(40\\): 40 removed · 0 relabelled" in [c.value for c in at.caption]
    at.number_input(key="impact_seeds").set_value(1).run()
    at = run_experiment(at)
    metrics = {m.label: m for m in at.metric}
    assert set(metrics) == {"Original", "Curated", "Random removal"}
    table = frame_with(at, "delta_high")
    overall = table[table["scope"] == "overall"].set_index("variant")
    assert overall.loc["curated", "n_train"] == overall.loc["random removal", "n_train"]
    assert overall.loc["original", "n_train"] - overall.loc["curated", "n_train"] == pytest.approx(32, abs=8)
    assert any(s.startswith("cluster ") for s in table["scope"])  # per cluster too


def test_what_if_lists_review_sessions(use_analysed_workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("CARTOGRAPHER_DATABASE_URL", f"sqlite:///{tmp_path / 'review.sqlite'}")
    from ui import cached

    at = open_impact("breast-cancer")
    at.radio(key="impact_experiment").set_value("what-if").run()
    # the review store is read only with a name (or a sign-in on a team server)
    assert any("to test a review session's curation" in w.value for w in at.warning)
    at.session_state[state.REVIEWER] = "ana"
    at.run()
    assert any("No review session on this dataset yet" in i.value for i in at.info)
    dataset = at.session_state[state.DATASET]
    ids = dataset.table["id"].astype(str).tolist()
    store = cached.review_store()
    session = store.create_session("<b>impact</b> [x](http://x)", ids[:5], owner="ana",
                                   fingerprint=dataset.fingerprint, classes=dataset.classes)
    store.record_decisions(session.id, ids[:2], "ana", "drop")
    store.record_decision(session.id, ids[2], "ana", "flag")
    at.run()
    assert not at.exception
    caption = next(c.value for c in at.caption if "removed" in c.value)
    # user text is escaped, and the URL is not a link (a word joiner breaks the autolink)
    assert "\\<b\\>impact\\</b\\> \\[x\\]\\(http\\:\u2060//x\\)" in caption
    assert "2 removed · 0 relabelled · unchanged\\: 2 undecided, 1 flag" in caption


def test_easy_to_hard_and_saving_the_buckets(use_analysed_workspace):
    at = open_impact("breast-cancer")
    at.radio(key="impact_experiment").set_value("easy-hard").run()
    at.selectbox(key="impact_bucket_score").set_value("aum").run()
    at.checkbox(key="impact_by_cluster").check().run()
    at.number_input(key="impact_seeds").set_value(1).run()
    at = run_experiment(at)
    bars = figure_of(at)["data"]
    assert [b["name"] for b in bars] == ["trained on easy", "trained on medium", "trained on hard", "trained on all"]
    pivot = frame_with(at, "train_on")
    assert list(pivot.columns) == ["train_on", "easy", "medium", "hard", "all"]
    at.button(key="impact_buckets_save").click().run()
    assert any("Saved “easy by aum”" in s.value for s in at.success)
    at.button(key="impact_buckets_save").click().run()  # the names are taken now
    assert any("already exist" in e.value for e in at.error)
