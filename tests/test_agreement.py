"""Agreement statistics against hand-computed values and published examples."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from analytics.agreement import (
    cohen_kappa,
    decision_categories,
    fleiss_kappa,
    percent_agreement,
    rating_counts,
    reviewer_agreement,
)


def ratings_from_table(table):
    """Two raters' ratings from a 2×2 contingency table {(a, b): count}."""
    pairs = [pair for pair, count in table.items() for _ in range(count)]
    return [a for a, _ in pairs], [b for _, b in pairs]


# Wikipedia, "Cohen's kappa": 50 proposals, p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4 = 0.5, κ = 0.4.
CLASSIC = {("yes", "yes"): 20, ("yes", "no"): 5, ("no", "yes"): 10, ("no", "no"): 15}
# Same p_o = 0.6, different marginals: κ = 0.06/0.46 and 0.14/0.54.
SAME_AGREEMENT_LOW = {("yes", "yes"): 45, ("yes", "no"): 15, ("no", "yes"): 25, ("no", "no"): 15}
SAME_AGREEMENT_HIGH = {("yes", "yes"): 25, ("yes", "no"): 35, ("no", "yes"): 5, ("no", "no"): 35}


@pytest.mark.parametrize("table, observed, kappa", [
    (CLASSIC, 0.7, 0.4),
    (SAME_AGREEMENT_LOW, 0.6, 0.06 / 0.46),
    (SAME_AGREEMENT_HIGH, 0.6, 0.14 / 0.54),
])
def test_cohen_kappa_matches_the_textbook_examples(table, observed, kappa):
    a, b = ratings_from_table(table)
    assert percent_agreement(a, b) == pytest.approx(observed)
    assert cohen_kappa(a, b) == pytest.approx(kappa)


def test_cohen_kappa_matches_scikit_learn_and_is_symmetric_and_order_invariant():
    rng = np.random.default_rng(0)
    categories = np.array(["keep", "drop", "flag", "relabel:cat"])
    a = categories[rng.integers(0, 4, 200)]
    b = np.where(rng.random(200) < 0.6, a, categories[rng.integers(0, 4, 200)])
    expected = cohen_kappa_score(a, b)
    assert cohen_kappa(a, b) == pytest.approx(expected)
    assert cohen_kappa(b, a) == pytest.approx(expected)
    order = rng.permutation(200)
    assert cohen_kappa(a[order], b[order]) == pytest.approx(expected)
    renamed = {c: f"x{i}" for i, c in enumerate(categories)}
    assert cohen_kappa([renamed[v] for v in a], [renamed[v] for v in b]) == pytest.approx(expected)


def test_only_items_both_rated_count():
    a = ["keep", "drop", None, "keep", np.nan]
    b = ["keep", "keep", "drop", None, "flag"]
    assert percent_agreement(a, b) == pytest.approx(0.5)
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa(["keep", "drop"], ["keep", "keep"]))


def test_degenerate_cases():
    # Perfect agreement over two categories: kappa 1.
    assert cohen_kappa(["keep", "drop"], ["keep", "drop"]) == 1.0
    # Everyone chose one category: expected agreement is 1, kappa 0/0 -> NaN; percent stays 1.
    assert math.isnan(cohen_kappa(["keep"] * 5, ["keep"] * 5))
    assert percent_agreement(["keep"] * 5, ["keep"] * 5) == 1.0
    # Nothing rated by both.
    assert math.isnan(cohen_kappa(["keep", None], [None, "drop"]))
    assert math.isnan(percent_agreement([], []))
    # Systematic disagreement: negative.
    assert cohen_kappa(["keep", "drop"], ["drop", "keep"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="differ in length"):
        cohen_kappa(["keep"], ["keep", "drop"])


# Fleiss (1971) as worked on Wikipedia ("Fleiss' kappa"): 10 items, 14 raters, 5 categories;
# P̄ = 0.378, P̄_e = 0.213, κ = 0.210.
FLEISS_EXAMPLE = np.array([
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
])


def test_fleiss_kappa_matches_the_worked_example():
    assert fleiss_kappa(FLEISS_EXAMPLE) == pytest.approx(0.210, abs=5e-4)
    # Order of items and of categories does not matter.
    assert fleiss_kappa(FLEISS_EXAMPLE[::-1, ::-1]) == pytest.approx(fleiss_kappa(FLEISS_EXAMPLE))


def test_fleiss_kappa_hand_computed_small_case():
    # 3 items, 3 raters: (2 agree, 1 not), (all agree), (all agree) on two categories.
    counts = np.array([[2, 1], [3, 0], [0, 3]])
    p_bar = (1 / 3 + 1 + 1) / 3
    shares = np.array([5, 4]) / 9
    p_e = (shares**2).sum()
    assert fleiss_kappa(counts) == pytest.approx((p_bar - p_e) / (1 - p_e))


def test_fleiss_kappa_degenerate_and_invalid():
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) != fleiss_kappa(np.array([[3, 0], [0, 3]]))
    assert fleiss_kappa(np.array([[3, 0], [0, 3]])) == 1.0
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [3, 0]])))  # one category only
    assert math.isnan(fleiss_kappa(np.zeros((0, 2))))
    with pytest.raises(ValueError, match="same number of ratings"):
        fleiss_kappa([[3, 0], [1, 1]])
    with pytest.raises(ValueError, match="at least 2 ratings"):
        fleiss_kappa([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="2-D"):
        fleiss_kappa([1, 2, 3])


def test_rating_counts():
    counts = rating_counts([["a", "b", "a"], ["c", "c", "c"]])
    assert counts.tolist() == [[2, 1, 0], [0, 0, 3]]
    with pytest.raises(ValueError, match="unrated"):
        rating_counts([["a", None]])


def test_decision_categories_tell_relabels_apart_by_target():
    categories = decision_categories(["keep", "relabel", "relabel", "flag"], [None, "cat", "dog", None])
    assert categories.tolist() == ["keep", "relabel:cat", "relabel:dog", "flag"]


def current_frame(rows):
    return pd.DataFrame(rows, columns=["example_id", "reviewer", "decision", "new_label"])


def test_reviewer_agreement_pairs_and_fleiss():
    rows = []
    # e0..e3 all agree on keep; e4: relabels to different classes; e5 only ann and bob.
    for example in ("e0", "e1", "e2", "e3"):
        rows += [(example, r, "keep", None) for r in ("ann", "bob", "cy")]
    rows += [("e4", "ann", "relabel", "cat"), ("e4", "bob", "relabel", "dog"), ("e4", "cy", "relabel", "cat")]
    rows += [("e5", "ann", "drop", None), ("e5", "bob", "drop", None)]
    report = reviewer_agreement(current_frame(rows))
    assert report.reviewers == ("ann", "bob", "cy")
    pairs = report.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert list(report.pairs.columns) == ["reviewer_a", "reviewer_b", "n_items", "percent_agreement", "cohen_kappa"]
    assert pairs.loc[("ann", "bob"), "n_items"] == 6
    assert pairs.loc[("ann", "bob"), "percent_agreement"] == pytest.approx(5 / 6)
    a = ["keep"] * 4 + ["relabel:cat", "drop"]
    b = ["keep"] * 4 + ["relabel:dog", "drop"]
    assert pairs.loc[("ann", "bob"), "cohen_kappa"] == pytest.approx(cohen_kappa(a, b))
    assert pairs.loc[("ann", "cy"), "n_items"] == 5
    assert pairs.loc[("ann", "cy"), "percent_agreement"] == 1.0
    assert pairs.loc[("ann", "cy"), "cohen_kappa"] == pytest.approx(1.0)
    # Fleiss over e0..e4 (rated by all three).
    assert report.fleiss_n_items == 5
    counts = rating_counts([["keep"] * 3] * 4 + [["relabel:cat", "relabel:dog", "relabel:cat"]])
    assert report.fleiss_kappa == pytest.approx(fleiss_kappa(counts))


def test_reviewer_agreement_two_reviewers_has_no_fleiss():
    report = reviewer_agreement(current_frame([("e0", "ann", "keep", None), ("e0", "bob", "drop", None)]))
    assert report.fleiss_kappa is None and report.fleiss_n_items == 0
    assert report.pairs[["n_items", "percent_agreement", "cohen_kappa"]].values.tolist() == [[1, 0.0, 0.0]]


def test_reviewer_agreement_refuses_history():
    rows = [("e0", "ann", "keep", None), ("e0", "ann", "drop", None)]
    with pytest.raises(ValueError, match="several decisions on example 'e0'"):
        reviewer_agreement(current_frame(rows))
    with pytest.raises(ValueError, match="lack the columns"):
        reviewer_agreement(pd.DataFrame({"example_id": ["e0"]}))


def test_reviewer_agreement_on_store_output(tmp_path):
    from analytics.store import ReviewStore

    with ReviewStore.open(f"sqlite:///{tmp_path / 'r.sqlite'}") as store:
        session = store.create_session("s", ["a", "b", "c"], owner="o", fingerprint="f", classes=["x", "y"],
                                       reviewers=["ann", "bob", "cy"])
        for reviewer, decisions in {"ann": ["keep", "drop", "keep"], "bob": ["keep", "drop", "drop"],
                                    "cy": ["keep", "keep", "keep"]}.items():
            for example, decision in zip("abc", decisions):
                store.record_decision(session.id, example, reviewer, decision)
        store.record_decision(session.id, "c", "bob", "keep")  # changed mind: only the latest counts
        store.adjudicate(session.id, "b", "o", "drop")         # adjudications are not ratings
        report = reviewer_agreement(store.current_decisions(session.id))
    pairs = report.pairs.set_index(["reviewer_a", "reviewer_b"])
    assert pairs.loc[("ann", "bob"), "percent_agreement"] == 1.0
    assert pairs.loc[("ann", "cy"), "percent_agreement"] == pytest.approx(2 / 3)
    assert report.fleiss_n_items == 3
