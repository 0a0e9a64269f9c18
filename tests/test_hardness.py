"""analytics.hardness: the score summaries, checked by hand on small arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from analytics.hardness import (
    QUANTILE_COLUMNS,
    SCORE_AGREEMENT_FILE,
    SCORE_QUANTILES_FILE,
    SEED_STABILITY_FILE,
    hardest,
    hardness_tables,
    numeric_scores,
    quantiles_by_group,
    score_agreement,
    score_quantiles,
    seed_stability,
)


def test_score_agreement_by_hand():
    # loss ranks 1 2 3 4; confidence exactly reversed; aum ranks 1 3 2 4
    frame = pd.DataFrame({"loss": [0.1, 0.2, 0.3, 0.4], "confidence": [9.0, 8.0, 7.0, 6.0],
                          "aum": [1.0, 3.0, 2.0, 4.0]})
    rho = score_agreement(frame, ["loss", "confidence", "aum"])
    assert list(rho.index) == list(rho.columns) == ["loss", "confidence", "aum"]
    assert rho.loc["loss", "confidence"] == pytest.approx(-1.0)
    # rho = 1 - 6 Σd² / (n (n² - 1)) with d = (0, 1, 1, 0): 1 - 12 / 60
    assert rho.loc["loss", "aum"] == pytest.approx(0.8)
    assert rho.loc["aum", "confidence"] == pytest.approx(-0.8)
    assert np.allclose(np.diag(rho), 1.0) and np.allclose(rho, rho.T)


def test_score_agreement_ties_missing_values_and_constants():
    frame = pd.DataFrame({"a": [1.0, 1.0, 2.0, 3.0, 4.0], "b": [2.0, 1.0, 1.0, np.nan, 5.0],
                          "c": [7.0, 7.0, 7.0, 7.0, 7.0]})
    rho = score_agreement(frame, ["a", "b", "c"])
    # ties get average ranks; b is compared with a over the four rows where it has a value
    assert rho.loc["a", "b"] == pytest.approx(spearmanr([1, 1, 2, 4], [2, 1, 1, 5]).statistic)
    # a's ranks (1.5 1.5 3 4) against b's (3 1.5 1.5 4): Pearson on the ranks
    ra, rb = np.array([1.5, 1.5, 3, 4]), np.array([3, 1.5, 1.5, 4])
    assert rho.loc["a", "b"] == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert np.isnan(rho.loc["a", "c"]) and np.isnan(rho.loc["c", "c"])  # a constant score agrees with nothing


def test_score_agreement_matches_scipy_on_random_columns():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(500, 4)), columns=list("pqrs"))
    frame["q"] = frame["p"] + rng.normal(scale=0.5, size=500)
    frame["s"] = rng.integers(0, 4, 500).astype(float)  # many ties
    frame.loc[::9, "r"] = np.nan
    rho = score_agreement(frame, list("pqrs"))
    for a in "pqrs":
        for b in "pqrs":
            if a != b:
                both = frame[[a, b]].dropna()
                assert rho.loc[a, b] == pytest.approx(spearmanr(both[a], both[b]).statistic, abs=1e-9)


def test_score_agreement_names_a_missing_column():
    with pytest.raises(KeyError, match="'vog'"):
        score_agreement(pd.DataFrame({"loss": [1.0, 2.0]}), ["loss", "vog"])


def test_quantiles_by_group_by_hand():
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 100.0, 10.0, 20.0, np.nan])
    groups = pd.Series(["b", "b", "b", "b", "b", "a", "a", "a"])
    stats = quantiles_by_group(values, groups)
    assert list(stats.columns) == ["group", *QUANTILE_COLUMNS]
    a, b = stats.set_index("group").loc["a"], stats.set_index("group").loc["b"]  # groups sorted by name
    assert list(stats["group"]) == ["a", "b"]
    assert a["count"] == 2 and a["median"] == 15.0 and a["q1"] == 12.5 and a["q3"] == 17.5  # NaN left out
    # b = 1 2 3 4 100: q1 2, median 3, q3 4, IQR 2: the upper whisker stops at 4 + 3 = 7, the lower at the min
    assert (b["count"], b["min"], b["q1"], b["median"], b["q3"], b["max"]) == (5, 1.0, 2.0, 3.0, 4.0, 100.0)
    assert b["mean"] == pytest.approx(22.0)
    assert b["lower_fence"] == 1.0 and b["upper_fence"] == 7.0


def test_score_quantiles_is_quantiles_by_group_for_every_score_and_grouping():
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"loss": rng.random(200), "aum": rng.normal(size=200),
                          "label": rng.choice(["x", "y", "z"], 200), "cluster": rng.integers(-1, 3, 200)})
    long = score_quantiles(frame, ["loss", "aum"], ["label", "cluster"])
    assert list(long.columns) == ["score", "group_by", "group", *QUANTILE_COLUMNS]
    for score in ("loss", "aum"):
        for group_by in ("label", "cluster"):
            rows = long[(long["score"] == score) & (long["group_by"] == group_by)].drop(columns=["score", "group_by"])
            pd.testing.assert_frame_equal(rows.reset_index(drop=True), quantiles_by_group(frame[score], frame[group_by]))
    assert set(long.loc[long["group_by"] == "cluster", "group"]) == {"-1", "0", "1", "2"}  # groups as text


@pytest.mark.parametrize("score", ["loss", "aum"])  # loss: higher = harder; aum: lower = harder
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 9, 20])
def test_hardest_is_a_stable_sort_with_missing_values_last(score, n):
    values = [0.5, 2.0, np.nan, 2.0, -np.inf, 2.0, np.inf, np.nan, 0.1]
    frame = pd.DataFrame({score: values, "id": [f"r{i}" for i in range(len(values))]})
    expected = frame.sort_values(score, ascending=score == "aum", kind="stable").head(n)
    assert hardest(frame, score, n=n)["id"].tolist() == expected["id"].tolist()


def test_hardest_by_hand():
    frame = pd.DataFrame({"id": list("abcde"), "loss": [0.3, 0.9, 0.1, 0.9, 0.5]})
    assert hardest(frame, "loss", n=3)["id"].tolist() == ["b", "d", "e"]  # a tie keeps row order
    with pytest.raises(ValueError, match="n must be"):
        hardest(frame, "loss", n=-1)


def test_seed_stability_by_hand():
    labels = np.array([0, 0, 1, 1])
    # one epoch, two classes: the gold logit decides each score; seed 1 ranks the examples as seed 0,
    # seed 2 in reverse
    gold = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 3.0, 5.0, 9.0], [4.0, 3.0, 2.0, 1.0]])
    logits = np.zeros((3, 1, 4, 2), dtype=np.float32)
    logits[:, 0, np.arange(4), labels] = gold
    stability = seed_stability(logits, labels, early_epoch=0).set_index("score")
    for name in ("confidence", "aum", "el2n"):
        # pairs: (0, 1) = 1, (0, 2) = -1, (1, 2) = -1
        assert stability.loc[name, "mean_spearman"] == pytest.approx(-1 / 3)
        assert stability.loc[name, "min_spearman"] == pytest.approx(-1.0)
    assert np.isnan(stability.loc["variability", "mean_spearman"])  # one epoch: no spread, nothing to rank
    assert (stability["seeds"] == 3).all()
    assert seed_stability(logits[:1], labels, early_epoch=0).empty


def test_hardness_tables_names_the_run_files():
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"loss": rng.random(30), "confidence": rng.random(30), "label": rng.choice(["a", "b"], 30),
                          "region": rng.choice(["easy-to-learn", "ambiguous"], 30)})
    tables = hardness_tables(frame)
    assert set(tables) == {SCORE_AGREEMENT_FILE, SCORE_QUANTILES_FILE}
    assert list(tables[SCORE_AGREEMENT_FILE].index) == numeric_scores(frame.columns)  # registry order
    assert set(tables[SCORE_QUANTILES_FILE]["group_by"]) == {"label", "region"}
    labels = rng.integers(0, 2, 30)
    logits = rng.normal(size=(2, 3, 30, 2)).astype(np.float32)
    with_seeds = hardness_tables(frame, logits=logits, labels=labels, early_epoch=1)
    pd.testing.assert_frame_equal(with_seeds[SEED_STABILITY_FILE], seed_stability(logits, labels, 1))
    assert hardness_tables(frame[["label"]]) == {}
