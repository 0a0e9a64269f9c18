"""Data map and Hardness pages (AppTest) on the analysed samples."""

from __future__ import annotations

import json

import numpy as np
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
