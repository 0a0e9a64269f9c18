"""Slice discovery, the Wilson interval and harmony."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analytics.slices import (
    SliceConfig,
    discover_slices,
    harmony,
    slice_features,
    slice_mask,
    uniformity,
    wilson_interval,
)


def planted(n: int = 6000, seed: int = 0):
    """Metadata with one value ("source = forum") that has 5x the base error rate."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "source": rng.choice(["news", "wiki", "books", "forum", "blogs"], size=n),
        "length": rng.gamma(2.0, 50.0, size=n),
        "split": rng.choice(["train", "test"], size=n),
    })
    base = 0.04
    rate = np.where(frame["source"] == "forum", 5 * base, base)
    errors = rng.random(n) < rate
    return frame, errors


def test_wilson_interval_matches_a_hand_computed_value():
    # 10 errors in 100: the 95% Wilson interval is [0.0552, 0.1744]
    low, high = wilson_interval(np.array([10]), np.array([100]))
    assert low[0] == pytest.approx(0.05523, abs=1e-4)
    assert high[0] == pytest.approx(0.17437, abs=1e-4)
    low, high = wilson_interval(np.array([0]), np.array([20]))
    assert low[0] == 0.0 and 0 < high[0] < 0.2


def test_the_planted_bad_slice_ranks_first():
    frame, errors = planted()
    features = slice_features(frame, ["source", "length", "split"])
    table = discover_slices(features, errors)
    top = table.iloc[0]
    assert top["slice"] == "source = forum"
    rest = errors[(frame["source"] != "forum").to_numpy()].mean()
    assert top["error_rate"] / rest == pytest.approx(5, rel=0.35)
    assert top["lift"] == pytest.approx(top["error_rate"] / errors.mean())
    assert top["ci_low"] > top["overall_error_rate"]
    assert top["support"] == (frame["source"] == "forum").sum()
    assert top["errors"] == errors[frame["source"] == "forum"].sum()
    assert (table["error_rate"] > table["overall_error_rate"]).all()
    assert list(table["gap_low"]) == sorted(table["gap_low"], reverse=True)
    # the slice's members can be rebuilt from the row
    mask = slice_mask(features, top["features"], top["codes"])
    assert (mask == (frame["source"] == "forum").to_numpy()).all()


def test_minimum_support_keeps_tiny_slices_off_the_list():
    frame, errors = planted(n=2000)
    frame["tiny"] = "common"
    frame.loc[:2, "tiny"] = "rare"  # three rows, all wrong: 100% error, but tiny
    errors = errors.copy()
    errors[:3] = True
    table = discover_slices(slice_features(frame, ["source", "tiny"]), errors, config=SliceConfig(min_support=20))
    assert "tiny = rare" not in set(table["slice"])
    assert (table["support"] >= 20).all()
    assert table.iloc[0]["slice"] == "source = forum"


def test_a_small_slice_with_a_high_rate_ranks_below_a_sizable_sure_one():
    frame, errors = planted(n=2000)
    frame["tiny"] = "common"
    frame.loc[:1, "tiny"] = "rare"  # two rows, one wrong: 50% error, interval [0.09, 0.91]
    errors = errors.copy()
    errors[:2] = [True, False]
    loose = discover_slices(slice_features(frame, ["source", "tiny"]), errors,
                            config=SliceConfig(min_support=1, pairs=False))
    assert loose.iloc[0]["slice"] == "source = forum"
    rare = loose.set_index("slice").loc["tiny = rare"]
    assert rare["error_rate"] > loose.iloc[0]["error_rate"] and rare["ci_high"] - rare["ci_low"] > 0.6


def test_numeric_columns_are_binned_and_pairs_must_beat_their_parents():
    rng = np.random.default_rng(3)
    n = 8000
    frame = pd.DataFrame({"a": rng.choice(["x", "y"], n), "b": rng.choice(["u", "v"], n),
                          "score": rng.uniform(0, 1, n)})
    # errors only where a = x AND b = u: the pair is worse than either parent
    errors = ((frame["a"] == "x") & (frame["b"] == "u")).to_numpy() & (rng.random(n) < 0.3)
    features = slice_features(frame, ["a", "b", "score"], config=SliceConfig(n_bins=4))
    score = next(f for f in features if f.name == "score")
    assert len(score.levels) == 4 and score.levels[0].startswith("in [") and score.levels[-1].endswith("]")
    table = discover_slices(features, errors)
    assert table.iloc[0]["slice"] == "a = x & b = u"
    assert list(table.iloc[0]["features"]) == ["a", "b"]
    no_pairs = discover_slices(features, errors, config=SliceConfig(pairs=False))
    assert not no_pairs["slice"].str.contains("&").any()
    nested = discover_slices(features, errors, no_pairs_between=[frozenset({"a", "b"})])
    assert "a = x & b = u" not in set(nested["slice"])


def test_display_names_and_skipped_columns():
    frame = pd.DataFrame({"cluster": [0, 1, 2] * 50, "id_like": [str(i) for i in range(150)],
                          "constant": ["same"] * 150})
    features = slice_features(frame, ["cluster", "id_like", "constant"],
                              display={"cluster": {0: "0 (kernel · driver)", 1: "1 (game)", 2: "2 (json)"}})
    assert [f.name for f in features] == ["cluster"]  # too many values; a single value
    assert features[0].levels == ["= 0 (kernel · driver)", "= 1 (game)", "= 2 (json)"]


def test_a_perfect_model_has_no_bad_slices():
    frame, _ = planted(n=500)
    table = discover_slices(slice_features(frame, ["source"]), np.zeros(500, bool))
    assert table.empty and "gap_low" in table.columns


def test_harmony_by_hand():
    assert harmony([0.8, 0.8, 0.8]) == pytest.approx(1.0)
    # accuracies 0.9 and 0.3: shares 0.75 / 0.25, entropy / log 2
    expected = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(2)
    assert harmony([0.9, 0.3]) == pytest.approx(expected)
    assert harmony([1.0, 0.0, 0.0]) == pytest.approx(0.0)
    assert np.isnan(harmony([0.0, 0.0])) and harmony([0.7]) == 1.0
    summary = uniformity([0.9, 0.3, np.nan])
    assert summary["clusters"] == 2 and summary["worst_accuracy"] == 0.3 and summary["gap"] == pytest.approx(0.6)
